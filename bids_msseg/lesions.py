"""The one definition of a lesion, used by statistics and by evaluation alike.

A lesion is a connected component of the binary mask under ``connectivity`` (1 = face, 6
neighbours; 2 = edge, 18; 3 = corner, 26 neighbours, the default as in WMH-2017) whose volume is
at least ``min_size_mm3``. Smaller components are removed from the mask before anything is
counted, so a lesion count, a lesion table and a lesion-wise metric always agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

#: Neighbours of a voxel for each ``scipy.ndimage`` connectivity (1, 2, 3), as the outputs record it.
NEIGHBOURS = {1: 6, 2: 18, 3: 26}


def connectivity_of(neighbours: int, default: int = 3) -> int:
    """The connectivity (1, 2, 3) of a neighbourhood of 6, 18 or 26 voxels; ``default`` for any other."""
    return {n: c for c, n in NEIGHBOURS.items()}.get(int(neighbours), default)


@dataclass(frozen=True)
class LesionDefinition:
    """Connectivity (1, 2 or 3) and minimum lesion volume in mm^3."""

    connectivity: int = 3
    min_size_mm3: float = 5.0

    def __post_init__(self) -> None:
        if self.connectivity not in (1, 2, 3):
            raise ValueError("connectivity must be 1 (6-), 2 (18-) or 3 (26-neighbourhood)")
        if self.min_size_mm3 < 0:
            raise ValueError("the minimum lesion size cannot be negative")

    @property
    def neighbours(self) -> int:
        return NEIGHBOURS[self.connectivity]


def label_lesions(
    mask: np.ndarray, voxel_volume_mm3: float, definition: LesionDefinition
) -> tuple[np.ndarray, int]:
    """Number the lesions 1..N (largest first) after dropping components below the minimum size."""
    structure = ndimage.generate_binary_structure(3, definition.connectivity)
    labels, n = ndimage.label(np.asarray(mask, bool), structure=structure)
    if n == 0:
        return labels.astype(np.int32), 0
    sizes = np.bincount(labels.ravel())[1:]
    keep = sizes * voxel_volume_mm3 >= definition.min_size_mm3 - 1e-9
    order = np.argsort(-sizes, kind="stable")
    order = order[keep[order]]
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[order + 1] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[labels], int(order.size)


#: A scan whose thickest voxel side is at least this (mm) is a thick-slice scan: a 2D acquisition, whose
#: lesions the network sees with partial volume, so their probability peaks lie lower than on 3D scans
#: (the leave-site-out study's finding, ``docs/protocol_v7/``); the protocol's operating grid may give such
#: scans a seed threshold of their own. ISBI-2015's thinnest 2D FLAIR has 2.2 mm slices, 3D FLAIRs ~1 mm.
THICK_SLICE_MM = 2.0


def is_thick_slice(zooms: Sequence[float]) -> bool:
    """Whether a scan of voxel sizes ``zooms`` (mm) is a thick-slice one (:data:`THICK_SLICE_MM`)."""
    return float(max(zooms[:3])) >= THICK_SLICE_MM


def seed_threshold_for(zooms: Sequence[float], seed_threshold: float,
                       seed_threshold_thick: float | None = None) -> float:
    """The seed threshold (hysteresis) of a scan of voxel sizes ``zooms``: ``seed_threshold_thick`` on a
    thick-slice scan (:func:`is_thick_slice`) where it is given, else ``seed_threshold``."""
    if seed_threshold_thick is not None and is_thick_slice(zooms):
        return float(seed_threshold_thick)
    return float(seed_threshold)


def seed_threshold_of_image(path: str | Path, seed_threshold: float,
                            seed_threshold_thick: float | None = None) -> float:
    """:func:`seed_threshold_for` of an image file, from its header's voxel sizes; ``seed_threshold`` when
    the header cannot be read (the preprocessing then reports the file)."""
    if seed_threshold_thick is None:
        return float(seed_threshold)
    try:
        zooms = nib.load(str(path)).header.get_zooms()
    except (OSError, ValueError, nib.filebasedimages.ImageFileError):
        return float(seed_threshold)
    return seed_threshold_for(zooms, seed_threshold, seed_threshold_thick)


def binarize(
    probability: np.ndarray, threshold: float, voxel_volume_mm3: float, definition: LesionDefinition,
    seed_threshold: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Threshold a probability map and apply the lesion definition.

    With ``seed_threshold`` above ``threshold`` (hysteresis), a component of the thresholded map is
    kept only when its probability reaches ``seed_threshold`` somewhere: a lesion needs a confident
    core, its extent follows the lower threshold. Faint, uncertain blobs (mostly normal FLAIR-bright
    anatomy) are dropped without shrinking the lesions that are kept.

    Returns the binary mask (uint8), the numbered lesion map (int32) and the lesion count.
    """
    probability = np.asarray(probability)
    labels, n = label_lesions(probability >= threshold, voxel_volume_mm3, definition)
    if seed_threshold > threshold and n:
        inside = labels > 0
        peaks = np.zeros(n + 1, np.float64)
        np.maximum.at(peaks, labels[inside], probability[inside])  # lesion voxels only: fast
        keep = peaks[1:] >= seed_threshold
        lut = np.concatenate([[0], np.where(keep, np.cumsum(keep), 0)]).astype(np.int32)
        labels, n = lut[labels], int(keep.sum())  # still numbered largest first
    return (labels > 0).astype(np.uint8), labels, n


def lesion_table(
    labels: np.ndarray, n: int, affine: np.ndarray, probability: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per lesion: index, name, volume, voxels, centroid (scanner mm), mean/max probability."""
    columns = ["index", "name", "volume_mm3", "voxels", "centroid_x_mm", "centroid_y_mm",
               "centroid_z_mm", "mean_probability", "max_probability"]
    if n == 0:
        return pd.DataFrame(columns=columns)
    index = np.arange(1, n + 1)
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    stats = label_statistics(labels, n, probability)
    voxels = stats["voxels"]
    mm = stats["centroid"] @ affine[:3, :3].T + affine[:3, 3]
    table = pd.DataFrame({
        "index": index,
        "name": [f"lesion-{i:03d}" for i in index],
        "volume_mm3": np.round(voxels * voxel_volume, 3),
        "voxels": voxels,
        "centroid_x_mm": np.round(mm[:, 0], 2),
        "centroid_y_mm": np.round(mm[:, 1], 2),
        "centroid_z_mm": np.round(mm[:, 2], 2),
    })
    if probability is not None:
        table["mean_probability"] = np.round(stats["mean"], 4)
        table["max_probability"] = np.round(stats["max"], 4)
    else:
        table["mean_probability"] = np.nan
        table["max_probability"] = np.nan
    return table[columns]


def label_statistics(
    labels: np.ndarray, n: int, values: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Voxel count, centroid (voxel coordinates) and, with ``values``, mean and maximum of labels 1..``n``.

    The same numbers, bit for bit, as ``scipy.ndimage.sum_labels`` / ``center_of_mass`` / ``mean`` /
    ``maximum`` with ``index=range(1, n + 1)``, which each sweep the whole volume (a few tenths of a
    second apiece on a 1 mm head): here the labelled voxels are found once and every sum is a
    ``np.bincount`` over them alone. ``bincount`` adds each label's voxels in the order they come,
    C order in both cases, so the float64 sums are the same. A label with no voxel gets count 0,
    a NaN centroid and mean, and maximum 0, as in ``scipy.ndimage``.

    Returns ``voxels`` (int, n), ``centroid`` (float64, n x ndim) and, with ``values``, ``mean`` and
    ``max`` (float64, n).
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    ids = flat[inside].astype(np.intp, copy=False)
    counts = np.bincount(ids, minlength=n + 1)[1 : n + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = np.stack([np.bincount(ids, weights=axis.astype(np.float64), minlength=n + 1)[1 : n + 1] / counts
                             for axis in np.unravel_index(inside, labels.shape)], axis=1)
        out: dict[str, np.ndarray] = {"voxels": counts.astype(int), "centroid": centroid}
        if values is not None:
            picked = np.asarray(values).ravel()[inside]
            out["mean"] = np.bincount(ids, weights=picked, minlength=n + 1)[1 : n + 1] / counts.astype(np.float64)
            peak = np.full(n + 1, -np.inf)
            np.maximum.at(peak, ids, picked)
            peak[np.bincount(ids, minlength=n + 1) == 0] = 0.0
            out["max"] = peak[1 : n + 1]
    return out


# ----------------------------------------------------- lesion location vocabulary (bids_msseg.anatomy.location)

#: Location classes and their values in the location label map (0 = no lesion).
LOCATION_CLASSES: dict[str, int] = {"periventricular": 1, "juxtacortical": 2, "infratentorial": 3,
                                    "subcortical": 4}
#: ``location_status`` of a run made with ``--no-location`` (a failed registration says ``failed: <why>``).
LOCATION_OFF = "off: --no-location"
#: The classes that are McDonald "dissemination in space" brain regions.
DIS_CLASSES = ("periventricular", "juxtacortical", "infratentorial")
#: Display colours (report, label TSV): Okabe & Ito's colour-blind-safe palette (sky blue, vermillion,
#: bluish green, reddish purple), none of them the yellow of the expert outline (bids_msseg.reports.common).
LOCATION_COLOURS: dict[str, str] = {"periventricular": "#56b4e9", "juxtacortical": "#d55e00",
                                    "infratentorial": "#009e73", "subcortical": "#cc79a7"}
LOCATION_DESCRIPTIONS: dict[str, str] = {
    "periventricular": "In contact with the lateral ventricles, no white matter in between (McDonald 2017).",
    "juxtacortical": "Cortical or juxtacortical: touching or inside the cortex (McDonald 2017).",
    "infratentorial": "Brainstem, cerebellar peduncles or cerebellum (McDonald 2017).",
    "subcortical": "Deep or subcortical white matter (or deep grey matter): not a McDonald region.",
}


def location_label_table() -> pd.DataFrame:
    """The TSV of the location label map: index, name, abbreviation, colour, description."""
    return pd.DataFrame({
        "index": list(LOCATION_CLASSES.values()),
        "name": list(LOCATION_CLASSES),
        "abbreviation": ["PV", "JC", "IT", "SC"],
        "color": [LOCATION_COLOURS[n] for n in LOCATION_CLASSES],
        "description": [LOCATION_DESCRIPTIONS[n] for n in LOCATION_CLASSES],
    })


def location_columns() -> Mapping[str, dict[str, str]]:
    """Sidecar descriptions of the new lesion-table and summary columns."""
    columns: dict[str, dict[str, str]] = {
        "location": {"Description": "McDonald 2017 / MAGNIMS 2016 location class (see the location dseg TSV); "
                                    "n/a when the template registration failed.",
                     "Levels": dict(LOCATION_DESCRIPTIONS)},
        "confluent": {"Description": "true when the lesion touches the regions of more than one class; "
                                     "its class is the first by priority (infratentorial, periventricular, "
                                     "juxtacortical)."},
        "touches": {"Description": "The class regions the lesion touches, ';'-separated (none: subcortical)."},
        "confluent_count": {"Description": "Number of lesions touching the regions of more than one class."},
        "mcdonald_regions": {"Description": "Number of McDonald 2017 brain regions (periventricular, "
                                            "cortical/juxtacortical, infratentorial; the spinal cord is not "
                                            "imaged) holding at least one lesion. An imaging count, not a "
                                            "diagnosis of dissemination in space."},
        "location_status": {"Description": "ok, or why lesion locations are n/a: 'failed: <reason>' (the template "
                                            "registration failed) or 'off: --no-location'."},
        "registration_seconds": {"Description": "Wall time of the template registration.", "Units": "s"},
    }
    for name in LOCATION_CLASSES:
        columns[f"{name}_count"] = {"Description": f"Number of {name} lesions."}
        columns[f"{name}_volume_ml"] = {"Description": f"Total volume of {name} lesions.", "Units": "mL"}
    return columns
