"""Preprocessing of one FLAIR: load and check, reorient to RAS+, decide, N4, brain mask.

:func:`preprocess_flair` chains :func:`~bids_msseg.preproc.orient.load_flair`,
:func:`~bids_msseg.preproc.orient.to_ras`, :func:`~bids_msseg.preproc.decisions.decide_preprocessing`,
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
from bids_msseg.preproc.brain import extract_brain, mask_from_background
from bids_msseg.preproc.decisions import PreprocDecisions, decide_preprocessing
from bids_msseg.preproc.n4 import n4_correct
from bids_msseg.preproc.orient import load_flair, to_ras

__all__ = ["BRAIN_VOLUME_RANGE_ML", "PreprocDecisions", "PreprocResult", "preprocess_flair"]

LOGGER = logging.getLogger(__name__)

#: Accepted brain-mask volume (mL). Adult brains are ~1.0-1.6 L (mask with CSF up to ~1.9 L); a
#: clinical 2D FLAIR may cover only part of the brain. Outside this range no brain was found.
BRAIN_VOLUME_RANGE_ML = (300.0, 2500.0)


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
    data = np.asarray(ras.dataobj, dtype=np.float32)
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
    if not lo <= volume <= hi:
        how = ("brain extraction" if decisions.skullstrip
               else "the non-background of an image taken as skull-stripped")
        hint = (" If the image still has its skull, run with brain extraction forced on."
                if not decisions.skullstrip else
                " If the image is already skull-stripped, run with brain extraction forced off.")
        raise InputError(f"no brain found in {path}: {how} gave a {volume:.0f} mL mask, outside the "
                         f"plausible {lo:.0f}-{hi:.0f} mL.{hint}")
    LOGGER.info("%s: brain mask %.0f mL; timings %s", path.name, volume,
                ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return result
