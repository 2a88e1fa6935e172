"""Whether a FLAIR needs N4 bias correction and brain extraction.

Inputs come either raw from the scanner (head with skull and scalp, a bias field) or already
preprocessed by another pipeline (skull-stripped, usually bias-corrected, often registered to a
template, as in the public MS lesion datasets). Running N4 or brain extraction again on the latter
does harm (N4 on a masked image is fitted to the hard edge; template registration on a brain
without skull drifts), so each input is looked at first.

Evidence, strongest first:

1. the user's ``force_n4`` / ``force_skullstrip`` (command line), always obeyed;
2. sidecar keys: ``SkullStripped`` (the BIDS-derivatives key for preprocessed anatomical images)
   decides brain extraction; ``BiasCorrected`` or ``BiasFieldCorrected`` (not BIDS, used by some
   pipelines) decides N4. Booleans, or the strings "true"/"false"/"yes"/"no"/"1"/"0"; any other
   value is ignored with a warning;
3. the image itself (:func:`measure_background`): an image is taken as skull-stripped when a
   constant background (0, or the minimum if a pipeline wrote another constant) fills at least
   :data:`MIN_BACKGROUND_FRACTION` of the volume, the rest is essentially one connected blob, and
   that blob (holes filled) is brain-sized: at most :data:`MAX_STRIPPED_VOLUME_ML` and no axial
   cross-section larger than :data:`MAX_STRIPPED_AXIAL_CM2`. Raw scans have a noisy background or,
   when the scanner zeroed it, a head blob of ~2.8-3.5 L whose widest axial section is ~250-300 cm2;
   a brain is ~1.0-1.6 L with a widest section of ~130-190 cm2. The cross-section test keeps raw
   scans with partial coverage (few slices, hence a small blob volume) from passing as stripped.

Policy: a skull-stripped image is assumed to come from a pipeline that also bias-corrected it,
so it gets neither N4 nor brain extraction (its mask is its non-background); a raw image gets
both. A sidecar bias key or ``force_n4`` overrides the N4 half of that policy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

LOGGER = logging.getLogger(__name__)

#: Sidecar key deciding brain extraction (BIDS derivatives, preprocessed anatomical images).
SKULL_KEYS = ("SkullStripped",)
#: Sidecar keys deciding N4 (first present wins).
BIAS_KEYS = ("BiasCorrected", "BiasFieldCorrected")
#: Smallest share of constant background for an image to be considered skull-stripped.
MIN_BACKGROUND_FRACTION = 0.25
#: Largest volume (mL) of the non-background blob of a skull-stripped image.
MAX_STRIPPED_VOLUME_ML = 2200.0
#: Smallest volume (mL) of that blob: less cannot be a brain, even partly covered.
MIN_STRIPPED_VOLUME_ML = 150.0
#: Largest axial cross-section (cm2) of that blob (a head is wider than a brain).
MAX_STRIPPED_AXIAL_CM2 = 210.0
#: Smallest share of the non-background voxels in the largest blob (stray voxels are tolerated).
MIN_LARGEST_BLOB_FRACTION = 0.9

_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off"}


@dataclass(frozen=True)
class PreprocDecisions:
    """What to run on one FLAIR, and why (``reasons`` has keys ``"n4"`` and ``"skullstrip"``).

    ``evidence`` holds the image measurements the decision looked at (empty when not measured).
    """

    n4: bool
    skullstrip: bool
    reasons: dict[str, str]
    evidence: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        """The decisions as a JSON object (for sidecars, reports and crash files)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _sidecar_bool(sidecar: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, bool] | None:
    """The first of ``keys`` in ``sidecar`` holding a usable boolean, as (key, value)."""
    for key in keys:
        if key not in sidecar:
            continue
        value = sidecar[key]
        if isinstance(value, bool):
            return key, value
        if isinstance(value, int | float) and value in (0, 1):
            return key, bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return key, value.strip().lower() in _TRUE
        LOGGER.warning("sidecar key %s=%r is not a boolean: ignored", key, value)
    return None


def background_value(data: np.ndarray) -> float:
    """The constant background value of an image: 0, or its minimum if that is more frequent.

    Most pipelines write 0 outside the brain; some write their minimum (e.g. after rescaling),
    and z-scored images have negative brain voxels around a background of 0.
    """
    data = np.asarray(data)
    lo = float(np.min(data))
    if lo == 0.0:
        return 0.0
    tol = 1e-6 * float(np.max(np.abs(data)))  # relative: no floor that depends on the intensity scale
    n_zero = int(np.count_nonzero(np.abs(data) <= tol))
    n_min = int(np.count_nonzero(data <= lo + tol))
    return 0.0 if n_zero >= n_min else lo


def background_mask(data: np.ndarray) -> np.ndarray:
    """Voxels equal to :func:`background_value` (within float rounding): the constant background."""
    data = np.asarray(data)
    tol = 1e-6 * float(np.max(np.abs(data)))
    return np.abs(data - background_value(data)) <= tol


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of ``mask`` (empty in, empty out)."""
    labels, n = ndi.label(mask)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def measure_background(data: np.ndarray, zooms: tuple[float, float, float]) -> dict[str, float]:
    """Measurements of an image's constant background and of its non-background blob.

    ``data`` must be in RAS+ voxel order (axis 2 axial). Returns background fraction, blob volume
    (mL, holes filled), largest axial cross-section of the blob (cm2) and the share of the
    non-background voxels that the largest blob holds.
    """
    data = np.asarray(data)
    bg = background_mask(data)
    fg = ~bg
    n_fg = int(np.count_nonzero(fg))
    voxel_ml = float(np.prod(zooms[:3])) / 1000.0
    if n_fg == 0:
        return {"background_fraction": 1.0, "blob_volume_ml": 0.0, "blob_max_axial_cm2": 0.0,
                "largest_blob_fraction": 0.0}
    blob = largest_component(fg)
    n_blob = int(np.count_nonzero(blob))
    blob = ndi.binary_fill_holes(blob)
    area = blob.sum(axis=(0, 1)) * float(zooms[0]) * float(zooms[1]) / 100.0
    return {
        "background_fraction": round(float(np.count_nonzero(bg)) / data.size, 4),
        "blob_volume_ml": round(float(np.count_nonzero(blob)) * voxel_ml, 1),
        "blob_max_axial_cm2": round(float(area.max()), 1),
        "largest_blob_fraction": round(n_blob / n_fg, 4),
    }


def looks_skull_stripped(evidence: Mapping[str, float]) -> tuple[bool, str]:
    """Apply the skull-stripped rule (module docstring) to :func:`measure_background`'s output."""
    bg = evidence["background_fraction"]
    vol = evidence["blob_volume_ml"]
    area = evidence["blob_max_axial_cm2"]
    single = evidence["largest_blob_fraction"]
    summary = (f"constant background {100 * bg:.0f}% of the volume; non-background blob {vol:.0f} mL, "
               f"widest axial section {area:.0f} cm2, {100 * single:.0f}% in one piece")
    if bg < MIN_BACKGROUND_FRACTION:
        return False, f"image has skull (background is not constant: {summary})"
    if single < MIN_LARGEST_BLOB_FRACTION:
        return False, f"image has skull (non-background is in many pieces: {summary})"
    if vol > MAX_STRIPPED_VOLUME_ML or area > MAX_STRIPPED_AXIAL_CM2:
        return False, f"image has skull (non-background is head-sized: {summary})"
    if vol < MIN_STRIPPED_VOLUME_ML:
        return False, (f"image does not look skull-stripped (non-background is too small for a brain: "
                       f"{summary})")
    return True, f"image looks skull-stripped ({summary})"


def decide_preprocessing(
    data: np.ndarray,
    zooms: tuple[float, float, float],
    sidecar: Mapping[str, Any] | None = None,
    force_n4: bool | None = None,
    force_skullstrip: bool | None = None,
) -> PreprocDecisions:
    """Decide N4 and brain extraction for one FLAIR (RAS+ ``data``, voxel sizes ``zooms`` in mm).

    See the module docstring for the evidence used and the policy. The decision and its reasons
    are logged at INFO level.
    """
    sidecar = dict(sidecar or {})
    reasons: dict[str, str] = {}
    evidence: dict[str, float] = {}

    bias_hint = _sidecar_bool(sidecar, BIAS_KEYS)
    skull_hint = _sidecar_bool(sidecar, SKULL_KEYS)
    # Whether the input is skull-stripped: from the sidecar, else measured on the image (skipped
    # only when both steps are forced, since then nothing depends on it).
    if skull_hint is not None:
        stripped = skull_hint[1]
        why = f"sidecar {skull_hint[0]}={str(stripped).lower()}"
    elif force_skullstrip is not None and (force_n4 is not None or bias_hint is not None):
        stripped, why = not force_skullstrip, "not measured"
    else:
        evidence = measure_background(data, zooms)
        stripped, why = looks_skull_stripped(evidence)

    if force_skullstrip is not None:
        skullstrip = bool(force_skullstrip)
        reasons["skullstrip"] = f"forced {'on' if skullstrip else 'off'} by the user ({why})"
    else:
        skullstrip = not stripped
        reasons["skullstrip"] = why

    if force_n4 is not None:
        n4 = bool(force_n4)
        reasons["n4"] = f"forced {'on' if n4 else 'off'} by the user"
    elif bias_hint is not None:
        n4 = not bias_hint[1]
        reasons["n4"] = f"sidecar {bias_hint[0]}={str(bias_hint[1]).lower()}"
    elif stripped:
        n4 = False
        reasons["n4"] = "skull-stripped input assumed already bias-corrected by its pipeline"
    else:
        n4 = True
        reasons["n4"] = "raw input with skull: bias field expected"

    decisions = PreprocDecisions(n4=n4, skullstrip=skullstrip, reasons=reasons, evidence=evidence)
    LOGGER.info("preprocessing: N4 %s (%s); brain extraction %s (%s)", "yes" if n4 else "no",
                reasons["n4"], "yes" if skullstrip else "no", reasons["skullstrip"])
    return decisions
