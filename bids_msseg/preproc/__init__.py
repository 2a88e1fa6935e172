"""Preprocessing of one FLAIR: load and check, reorient to RAS+, decide, N4, brain mask.

:func:`preprocess_flair` chains :func:`~bids_msseg.preproc.orient.load_flair`,
:func:`~bids_msseg.preproc.orient.to_ras`, :func:`~bids_msseg.normalize.standardize_scale` (one intensity
scale for every later step, so results do not depend on how the file stores intensities),
:func:`~bids_msseg.preproc.decisions.decide_preprocessing`,
:func:`~bids_msseg.preproc.n4.n4_correct` (when decided) and either
:func:`~bids_msseg.preproc.brain.extract_brain` (image with skull) or
:func:`~bids_msseg.preproc.brain.mask_from_background` (skull-stripped image). Everything it
returns is on the RAS+ grid; :func:`~bids_msseg.preproc.orient.from_ras` maps results back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_msseg.errors import InputError
from bids_msseg.normalize import standardize_scale
from bids_msseg.preproc.brain import extract_brain, mask_from_background
from bids_msseg.preproc.contrast import check_contrast
from bids_msseg.preproc.decisions import PreprocDecisions, decide_preprocessing
from bids_msseg.preproc.n4 import n4_correct
from bids_msseg.preproc.orient import load_flair, to_ras

__all__ = ["BRAIN_VOLUME_RANGE_ML", "PreprocDecisions", "PreprocResult", "preprocess_flair"]

LOGGER = logging.getLogger(__name__)

#: Accepted brain-mask volume (mL). Adult brains are ~1.0-1.6 L (mask with CSF up to ~1.9 L); a
#: clinical 2D FLAIR may cover only part of the brain. Outside this range no brain was found.
BRAIN_VOLUME_RANGE_ML = (300.0, 2500.0)
#: Below the range but above this (mL), a mask may be a small brain (an infant's) or partial coverage:
#: the message then suggests ``--min-brain-volume`` (the decisions take blobs from 150 mL as brains).
SMALL_BRAIN_ML = 150.0


@dataclass
class PreprocResult:
    """One preprocessed FLAIR; arrays are on the RAS+ grid of ``ras``."""

    original: nib.Nifti1Image
    ras: nib.Nifti1Image
    corrected: np.ndarray
    brain_mask: np.ndarray
    zooms: tuple[float, float, float]
    decisions: PreprocDecisions
    timings: dict[str, float] = field(default_factory=dict)
    #: Why the image may not be a FLAIR (:func:`~bids_msseg.preproc.contrast.check_contrast`), else None.
    contrast_warning: str | None = None

    @property
    def brain_volume_ml(self) -> float:
        """Volume of the brain mask in mL."""
        return float(np.count_nonzero(self.brain_mask)) * float(np.prod(self.zooms)) / 1000.0


def preprocess_flair(
    path: str | Path,
    sidecar: Mapping[str, Any] | None = None,
    force_n4: bool | None = None,
    force_skullstrip: bool | None = None,
    random_seed: int | None = None,
    force_contrast: bool = False,
    min_brain_ml: float | None = None,
) -> PreprocResult:
    """Load, check, reorient, bias-correct and brain-mask one FLAIR (see the module docstring).

    Raises :class:`InputError` for unusable inputs (see ``load_flair``) and when the brain mask's
    volume is outside :data:`BRAIN_VOLUME_RANGE_ML` (no brain found). ``random_seed`` seeds the
    registration of the brain extraction (default: its fixed seed).
    """
    path = Path(path)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal start
        now = time.perf_counter()
        timings[step] = round(now - start, 3)
        start = now

    original = load_flair(path)
    lap("load")
    ras = to_ras(original)
    data, factor = standardize_scale(np.asarray(ras.dataobj, dtype=np.float32))
    LOGGER.debug("%s: intensities multiplied by %.4g (standard scale)", path.name, factor)
    zooms = tuple(float(z) for z in ras.header.get_zooms()[:3])
    lap("reorient")
    decisions = decide_preprocessing(data, zooms, sidecar or {}, force_n4=force_n4,
                                     force_skullstrip=force_skullstrip)
    lap("decide")

    brain_mask = None if decisions.skullstrip else mask_from_background(data)
    if decisions.n4:
        corrected = n4_correct(data, ras.affine, mask=brain_mask)
    else:
        corrected = data.copy()
    lap("n4")
    if decisions.skullstrip:
        brain_mask = extract_brain(ras, corrected, seed=random_seed)
    lap("brain")

    result = PreprocResult(original=original, ras=ras, corrected=corrected, brain_mask=brain_mask,
                           zooms=zooms, decisions=decisions, timings=timings)
    volume = result.brain_volume_ml
    lo, hi = BRAIN_VOLUME_RANGE_ML
    if min_brain_ml is not None:
        lo = float(min_brain_ml)
    if not lo <= volume <= hi:
        raise InputError(f"no brain found in {path}: {_volume_hint(decisions, volume, lo, hi)}")
    check = check_contrast(corrected, brain_mask, zooms)
    if check.verdict == "refuse" and not force_contrast:
        raise InputError(f"cannot use FLAIR {path}: {check.message} (contrast statistics {check.stats}); if it "
                         "is a FLAIR, run with --force-contrast")
    if check.verdict != "ok":
        result.contrast_warning = f"{check.message} (contrast statistics {check.stats})"
        LOGGER.warning("%s: %s%s", path.name, result.contrast_warning,
                       "; segmented anyway (--force-contrast)" if check.verdict == "refuse" else "")
    LOGGER.info("%s: brain mask %.0f mL; timings %s", path.name, volume,
                ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return result


def _volume_hint(decisions: PreprocDecisions, volume: float, lo: float, hi: float) -> str:
    """Why a brain-mask volume is implausible, and what to do, given how the mask was made."""
    small = volume < lo and volume >= SMALL_BRAIN_ML
    if decisions.skullstrip:
        what = f"brain extraction gave a {volume:.0f} mL mask, outside the plausible {lo:.0f}-{hi:.0f} mL."
        if volume < lo:
            return (f"{what} If the image is already skull-stripped, run with --skullstrip off"
                    + ("; if it is a small brain (a child's) or covers only part of the brain, lower "
                       f"--min-brain-volume (e.g. --min-brain-volume {int(volume * 0.8)})." if small else "."))
        return f"{what} Check the image's voxel sizes (header) and that it is a brain FLAIR."
    what = (f"the non-background of an image taken as skull-stripped gave a {volume:.0f} mL mask, outside the "
            f"plausible {lo:.0f}-{hi:.0f} mL.")
    if small:
        return (f"{what} If it is a small brain (a child's) or a scan covering part of the brain, lower "
                f"--min-brain-volume (e.g. --min-brain-volume {int(volume * 0.8)}); if the image still has its "
                "skull, run with --skullstrip on.")
    return f"{what} If the image still has its skull, run with --skullstrip on."
