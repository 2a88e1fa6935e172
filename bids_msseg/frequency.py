"""The cohort lesion-frequency map of the group level: the share of runs with a lesion at each template voxel.

The participant level writes each run's lesion mask resampled to the template
(``*_space-MNI152NLin2009aSym_label-lesion_mask.nii.gz``, when its registration succeeded and
location was not turned off). :func:`cohort_frequency` reads those masks for the cohort's
completed runs and :func:`lesion_frequency` averages them: a voxel's value is the number of runs
whose lesion mask covers it divided by the number of runs that contributed a mask. Runs without a
template-space mask (``--no-location``, a failed registration, a mask on another grid) are left
out of both counts and listed, with the reason, in the sidecar. The share is of runs, not of
subjects: a subject with several sessions counts once per session.

:func:`write_frequency_map` writes the map at the output root, next to the other group files
(``group_*`` is in the derivatives' ``.bidsignore``, since BIDS has no group-level names).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.derivatives import derivative_paths, write_json
from bids_msseg.io import atomic_path
from bids_msseg.settings import TEMPLATE_SPACE

LOGGER = logging.getLogger(__name__)

#: The map and its sidecar at the output root.
FREQUENCY_MAP = f"group_space-{TEMPLATE_SPACE}_label-lesion_desc-frequency_probseg.nii.gz"
FREQUENCY_JSON = FREQUENCY_MAP.replace(".nii.gz", ".json")


def lesion_frequency(masks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """The share of ``masks`` (binary, one grid) that hold a lesion at each voxel, and their number.

    Returns float32 values in [0, 1] (all zero when no mask is given: the shape is then (0,)).
    """
    counts: np.ndarray | None = None
    n = 0
    for mask in masks:
        mask = np.asarray(mask) > 0
        if counts is None:
            counts = np.zeros(mask.shape, np.uint32)
        elif mask.shape != counts.shape:
            raise ValueError(f"mask {n + 1} has shape {mask.shape}, the others {counts.shape}")
        counts += mask
        n += 1
    if counts is None:
        return np.zeros(0, np.float32), 0
    return (counts / np.float32(n)).astype(np.float32), n


@dataclass
class CohortFrequency:
    """The frequency map of a cohort, the template grid it is on and which runs made it."""

    frequency: np.ndarray
    affine: np.ndarray
    runs: list[str]  # sources of the runs that contributed
    left_out: dict[str, str] = field(default_factory=dict)  # source -> why it did not contribute

    @property
    def n_runs(self) -> int:
        return len(self.runs)


def cohort_frequency(cohort: pd.DataFrame, output_dir: Path) -> CohortFrequency | None:
    """The frequency map of the cohort table's completed runs (None when no run has a template-space mask).

    The first mask found sets the grid; a mask on another grid, or with an unreadable header, is
    left out with the reason.
    """
    output_dir = Path(output_dir)
    found: list[tuple[str, nib.Nifti1Image]] = []
    left_out: dict[str, str] = {}
    for _, row in cohort[cohort["status"] == "ok"].iterrows():
        source = str(row["source"])
        path = derivative_paths(output_dir, source)["tpl_mask"]
        if not path.is_file():
            status = row.get("location_status")
            left_out[source] = "no template-space mask" + (f" (location {status})" if isinstance(status, str) else "")
            continue
        try:
            img = nib.load(path)
        except (OSError, ValueError) as err:
            left_out[source] = f"unreadable template-space mask: {err}"
            continue
        first = found[0][1] if found else img
        if img.shape != first.shape or not np.allclose(img.affine, first.affine, atol=1e-4):
            left_out[source] = f"template-space mask on another grid ({img.shape})"
            continue
        found.append((source, img))
    for source, reason in left_out.items():
        LOGGER.info("%s: not in the lesion-frequency map: %s", source, reason)
    if not found:
        return None
    frequency, _ = lesion_frequency(np.asanyarray(img.dataobj) for _, img in found)
    return CohortFrequency(frequency, found[0][1].affine, [source for source, _ in found], left_out)


def write_frequency_map(output_dir: Path, result: CohortFrequency) -> Path:
    """Write :data:`FREQUENCY_MAP` (float32, template grid) and its JSON sidecar; return the map's path."""
    path = Path(output_dir) / FREQUENCY_MAP
    img = nib.Nifti1Image(result.frequency.astype(np.float32), result.affine)
    img.set_qform(result.affine, 4)
    img.set_sform(result.affine, 4)
    img.header.set_intent("estimate")
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    sources = [f"bids::{derivative_paths(Path('.'), s)['tpl_mask'].as_posix()}" for s in result.runs]
    write_json(path.with_name(FREQUENCY_JSON), {
        "Description": "Cohort lesion frequency: at each voxel, the share of runs whose lesion mask (resampled to "
                       "the template by the participant level) covers it. Runs, not subjects: a subject with "
                       "several sessions counts once per session.",
        "SpatialReference": f"{TEMPLATE_SPACE}: nilearn's mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz (1 mm)",
        "NumberOfRuns": result.n_runs,
        "NumberOfSubjects": len({Path(s).name.split("_")[0] for s in result.runs}),
        "Units": "share of runs (0-1)",
        "Sources": sources,
        "RunsLeftOut": dict(result.left_out),
    })
    LOGGER.info("lesion-frequency map of %d run(s) written to %s", result.n_runs, path)
    return path
