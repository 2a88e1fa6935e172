"""The McDonald 2017 / MAGNIMS 2016 location class of each lesion (rules in docs/lesion_location.md).

Each lesion is a component of the one lesion definition (:mod:`bids_msseg.lesions`): lesions are
never merged or dilated into each other here, so a subcortical lesion next to a confluent one keeps
its own class (the pitfall LST-AI's users report). For each lesion, in this order of priority:

1. ``infratentorial``: at least ``INFRATENTORIAL_SHARE`` of its volume in brainstem or cerebellum;
2. ``periventricular``: at least ``MIN_CONTACT_MM3`` of lateral ventricle (refined on the FLAIR) within
   ``PERIVENTRICULAR_MM`` of the lesion (in contact, no white matter in between, up to partial volume);
3. ``juxtacortical`` (cortical/juxtacortical): at least ``MIN_CONTACT_MM3`` of cortex within
   ``JUXTACORTICAL_MM`` of the lesion, or the lesion inside the cortex;
4. ``subcortical``: anything else (deep and subcortical white matter, deep grey matter).

A lesion that touches the regions of more than one class (a confluent lesion reaching both the
ventricle and the cortex) gets the first of them and is marked ``confluent``; ``touches`` lists
every region it touches. The number of McDonald brain regions involved counts the classes
periventricular, juxtacortical and infratentorial that hold at least one lesion (spinal cord, the
fourth region, is not imaged): an imaging count, not a diagnosis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from bids_msseg.anatomy.core import LabelledTemplate
from bids_msseg.anatomy.registration import (
    RunAnatomy,
    points_to_template,
    refine_ventricles,
    register_run,
    to_template,
)
from bids_msseg.anatomy.template import REGIONS, mni152_template
from bids_msseg.lesions import DIS_CLASSES, LOCATION_CLASSES

LOGGER = logging.getLogger(__name__)

PERIVENTRICULAR_MM = 3.0
JUXTACORTICAL_MM = 2.0
INFRATENTORIAL_SHARE = 0.5
MIN_CONTACT_MM3 = 3.0


@dataclass(frozen=True)
class LesionLocations:
    """One entry per lesion 1..N: its class, whether it is confluent, the regions it touches."""

    classes: list[str]
    confluent: list[bool]
    touches: list[str]  # ";"-joined region names, "" for none

    def map(self, lesion_labels: np.ndarray) -> np.ndarray:
        """The location label map: each lesion's voxels carry its class value."""
        lut = np.zeros(len(self.classes) + 1, np.uint8)
        lut[1:] = [LOCATION_CLASSES[c] for c in self.classes]
        return lut[np.asarray(lesion_labels)]


def classify_lesions(lesion_labels: np.ndarray, n_lesions: int, anatomy: np.ndarray, ventricles: np.ndarray,
                     zooms: Sequence[float]) -> LesionLocations:
    """Classify lesions 1..``n_lesions`` of ``lesion_labels`` on the grid of ``anatomy``.

    ``anatomy`` holds the template's region values (:data:`bids_msseg.anatomy.template.REGIONS`) on
    the run's grid; ``ventricles`` is the run's lateral-ventricle mask (refined on the FLAIR).
    """
    zooms = tuple(float(z) for z in zooms[:3])
    voxel = float(np.prod(zooms))
    min_contact = max(1, int(np.ceil(MIN_CONTACT_MM3 / voxel - 1e-9)))
    ventricles = np.asarray(ventricles, bool)
    cortex = np.asarray(anatomy) == REGIONS["cortex"]
    infra = np.asarray(anatomy) == REGIONS["infratentorial"]
    reach = max(PERIVENTRICULAR_MM, JUXTACORTICAL_MM)
    pad = [int(np.ceil(reach / z)) + 1 for z in zooms]
    classes, confluent, touches = [], [], []
    objects = ndimage.find_objects(np.asarray(lesion_labels), max_label=n_lesions)
    for index, box in enumerate(objects, start=1):
        if box is None:
            classes.append("subcortical")
            confluent.append(False)
            touches.append("")
            continue
        crop = tuple(slice(max(0, s.start - p), min(dim, s.stop + p))
                     for s, p, dim in zip(box, pad, lesion_labels.shape, strict=True))
        lesion = np.asarray(lesion_labels[crop]) == index
        distance = ndimage.distance_transform_edt(~lesion, sampling=zooms)
        size = int(lesion.sum())
        touched = []
        if infra[crop][lesion].sum() >= max(1, INFRATENTORIAL_SHARE * size):
            touched.append("infratentorial")
        if (ventricles[crop] & (distance <= PERIVENTRICULAR_MM)).sum() >= min_contact:
            touched.append("periventricular")
        if (cortex[crop] & (distance <= JUXTACORTICAL_MM)).sum() >= min_contact:
            touched.append("juxtacortical")
        classes.append(touched[0] if touched else "subcortical")
        confluent.append(len(touched) > 1)
        touches.append(";".join(touched))
    return LesionLocations(classes, confluent, touches)


def location_summary(table: pd.DataFrame, locations: LesionLocations | None) -> dict[str, object]:
    """Counts and volumes per class, confluent lesions and McDonald regions involved (``None`` = n/a)."""
    row: dict[str, object] = {}
    for name in LOCATION_CLASSES:
        if locations is None:
            row[f"{name}_count"] = None
            row[f"{name}_volume_ml"] = None
            continue
        chosen = np.asarray(locations.classes) == name
        row[f"{name}_count"] = int(chosen.sum())
        volumes = table["volume_mm3"].to_numpy(float)[chosen] if len(table) else np.zeros(0)
        row[f"{name}_volume_ml"] = round(float(volumes.sum()) / 1000.0, 4)
    row["confluent_count"] = None if locations is None else int(sum(locations.confluent))
    row["mcdonald_regions"] = None if locations is None else int(
        sum(1 for name in DIS_CLASSES if name in set(locations.classes)))
    return row


def summary_columns(table: pd.DataFrame, locations: LesionLocations | None, status: str,
                    seconds: float | None) -> dict[str, object]:
    """The summary's location columns: :func:`location_summary`, the status and the registration time."""
    return {**location_summary(table, locations), "location_status": status,
            "registration_seconds": None if seconds is None else round(seconds, 2)}


#: The lesion table's columns of the lesion centroid in template coordinates (MNI152 2009a mm).
TEMPLATE_CENTROID_COLUMNS = ("centroid_x_template_mm", "centroid_y_template_mm", "centroid_z_template_mm")
_SCANNER_CENTROID_COLUMNS = ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm")


def template_centroids(anatomy: RunAnatomy, table: pd.DataFrame) -> np.ndarray | None:
    """The lesion table's centroids (scanner mm) in template mm through the run's registration (N x 3,
    rounded to 0.1 mm), or None when there is no registration or no centroid column; never raises."""
    if not anatomy.ok or not set(_SCANNER_CENTROID_COLUMNS) <= set(table.columns):
        return None
    if not len(table):
        return np.zeros((0, 3))
    try:
        points = table[list(_SCANNER_CENTROID_COLUMNS)].to_numpy(np.float64)
        return np.round(points_to_template(anatomy, points), 1)
    except Exception as err:  # noqa: BLE001 - a failure of ANTs leaves the columns n/a, the run goes on
        LOGGER.warning("lesion centroids not mapped to the template: %s", err)
        return None


def with_locations(table: pd.DataFrame, locations: LesionLocations | None,
                   centroids: np.ndarray | None = None) -> pd.DataFrame:
    """The lesion table with ``location``, ``confluent`` and ``touches`` columns (n/a when unknown) and the
    template-space centroids of :func:`template_centroids` (:data:`TEMPLATE_CENTROID_COLUMNS`, n/a without)."""
    out = table.copy()
    n = len(out)
    if locations is None:
        out["location"] = [None] * n
        out["confluent"] = [None] * n
        out["touches"] = [None] * n
    else:
        out["location"] = locations.classes
        out["confluent"] = [str(bool(c)).lower() for c in locations.confluent]
        out["touches"] = [t or "none" for t in locations.touches]
    for axis, column in enumerate(TEMPLATE_CENTROID_COLUMNS):
        out[column] = [None] * n if centroids is None else np.asarray(centroids, np.float64).reshape(-1, 3)[:, axis]
    return out


@dataclass
class RunLocations:
    """Everything lesion location gives one run: the classes (None when anatomy failed), the
    location map, the run's maps in template space, and the registration's status and timing."""

    anatomy: RunAnatomy
    locations: LesionLocations | None
    location_map: np.ndarray | None
    template_mask: np.ndarray | None
    template_probability: np.ndarray | None
    ventricles_from: str = "n/a"

    @property
    def status(self) -> str:
        return self.anatomy.status


def locate_run(flair: np.ndarray, affine: np.ndarray, brain: np.ndarray, lesion_labels: np.ndarray,
               n_lesions: int, probability: np.ndarray, *, seed: int = 0,
               template: LabelledTemplate | None = None, template_space: bool = True,
               **registration: object) -> RunLocations:
    """Register the template to one run, classify its lesions and map its lesions to the template.

    All arrays are on the run's own grid (``affine``). A failed registration gives a result whose
    ``locations`` and maps are None (the caller writes n/a); it never raises for it.
    """
    try:
        template = template or mni152_template()
    except (OSError, RuntimeError) as err:
        return RunLocations(RunAnatomy(status=f"failed: no template: {err}"[:300]), None, None, None, None)
    anatomy = register_run(flair, brain, affine, template, seed=seed, **registration)  # type: ignore[arg-type]
    if not anatomy.ok:
        return RunLocations(anatomy, None, None, None, None)
    zooms = tuple(float(z) for z in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
    ventricles, source = refine_ventricles(flair, brain, anatomy.labels == REGIONS["lateral_ventricles"], zooms,
                                           lesions=lesion_labels > 0)
    locations = classify_lesions(lesion_labels, n_lesions, anatomy.labels, ventricles, zooms)
    template_mask = template_probability = None
    if template_space:
        template_probability = np.clip(to_template(anatomy, probability, affine, interpolator="linear"), 0, 1)
        template_mask = to_template(anatomy, (lesion_labels > 0).astype(np.float32), affine,
                                    interpolator="linear") >= 0.5
    return RunLocations(anatomy, locations, locations.map(lesion_labels), template_mask, template_probability,
                        source)
