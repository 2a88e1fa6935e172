"""Does the image look like a FLAIR? A cheap screen of the tissue ordering inside the brain mask.

Users misname files: a T1-weighted image or an inverted contrast named ``*_FLAIR`` was segmented
without a word (42.8 mL of "lesions" on a T1). In FLAIR, CSF is dark, white matter is a little
darker than grey matter, and lesions are bright; in T1, white matter is the brightest tissue; in
T2 or an inverted FLAIR, CSF is the brightest. Two statistics of the brain voxels tell them apart:

* ``upper_tail`` = (p99 - p50) / (p50 - p5): how far the bright tail reaches compared with the
  dark one. FLAIR: a short bright tail (lesions, grey matter), a long dark one (CSF). A bright
  CSF (T2, inverted FLAIR) makes the bright tail long.
* ``bright_depth`` = mean depth (distance to the brain mask's surface) of the voxels between p75
  and p95, over that of the voxels between p25 and p50. In FLAIR the brighter tissue is the
  cortex (near the surface); in T1 it is the white matter (deep).

Calibration (``docs/bad_inputs.md``): on every real FLAIR of ``../shared/data`` (patient 26,
MSLesSeg P14 T1-T3, the 9 raw FLAIRs after brain extraction, the GG-853 FLAIR template)
``upper_tail`` is 0.52-0.94 and ``bright_depth`` 0.70-1.23; the same FLAIRs inverted inside the
brain give ``upper_tail`` 2.24-4.46; nilearn's MNI152 T1 template gives ``bright_depth`` 1.67 (2 mm)
and 1.74 (1 mm). The refusal levels lie midway.
Hence a warning above :data:`WARN_UPPER_TAIL` / :data:`WARN_BRIGHT_DEPTH` and a refusal (unless
``--force-contrast``) above :data:`REFUSE_UPPER_TAIL` / :data:`REFUSE_BRIGHT_DEPTH`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

#: Above this, warn: the bright tail is long for a FLAIR (real FLAIRs: at most 0.94).
WARN_UPPER_TAIL = 1.4
#: Above this, refuse: CSF-bright contrast (inverted FLAIRs: at least 2.24; midway: 1.6).
REFUSE_UPPER_TAIL = 1.6
#: Above this, warn: the bright tissue is deep for a FLAIR (real FLAIRs: at most 1.23).
WARN_BRIGHT_DEPTH = 1.35
#: Above this, refuse: T1-like ordering (MNI152 T1: 1.67 at 2 mm, 1.74 at 1 mm; midway: 1.45).
REFUSE_BRIGHT_DEPTH = 1.45
#: Fewest brain voxels for the screen to say anything.
MIN_VOXELS = 1000
#: The depth map is computed on every n-th voxel per axis (cost: ~0.1 s on a 1 mm brain).
STRIDE = 2


@dataclass(frozen=True)
class ContrastCheck:
    """Outcome of :func:`check_contrast`: ``verdict`` is ``ok``, ``warn`` or ``refuse``."""

    verdict: str
    message: str = ""
    stats: dict[str, float] = field(default_factory=dict)


def contrast_stats(data: np.ndarray, brain_mask: np.ndarray, zooms: tuple[float, ...]) -> dict[str, float]:
    """``upper_tail`` and ``bright_depth`` (module docstring) of ``data`` inside ``brain_mask``."""
    s = (slice(None, None, STRIDE),) * 3
    mask = np.asarray(brain_mask, bool)[s]
    values = np.asarray(data, np.float32)[s][mask]
    if values.size < MIN_VOXELS:
        return {}
    p5, p25, p50, p75, p95, p99 = np.percentile(values, [5, 25, 50, 75, 95, 99])
    depth = ndi.distance_transform_edt(mask, sampling=[float(z) * STRIDE for z in zooms[:3]])[mask]
    bright = depth[(values >= p75) & (values <= p95)]
    middle = depth[(values >= p25) & (values <= p50)]
    stats = {"upper_tail": float((p99 - p50) / max(p50 - p5, 1e-6 * max(abs(p50), 1.0)))}
    if bright.size and middle.size and middle.mean() > 0:
        stats["bright_depth"] = float(bright.mean() / middle.mean())
    return {k: round(v, 3) for k, v in stats.items()}


def check_contrast(data: np.ndarray, brain_mask: np.ndarray, zooms: tuple[float, ...]) -> ContrastCheck:
    """Whether ``data`` looks like a FLAIR inside ``brain_mask`` (rule and margins: module docstring)."""
    stats = contrast_stats(data, brain_mask, zooms)
    if not stats:
        return ContrastCheck("ok", "", stats)
    tail, depth = stats["upper_tail"], stats.get("bright_depth", 1.0)
    reasons = []
    if tail > WARN_UPPER_TAIL:
        reasons.append(f"the brightest tissue is far brighter than the rest (bright tail {tail:.2f}, FLAIRs "
                       f"<= {WARN_UPPER_TAIL}): CSF looks bright, as in T2 or an inverted image")
    if depth > WARN_BRIGHT_DEPTH:
        reasons.append(f"the brighter tissue lies deep in the brain (depth ratio {depth:.2f}, FLAIRs <= "
                       f"{WARN_BRIGHT_DEPTH}): white matter looks brighter than grey matter, as in T1")
    if not reasons:
        return ContrastCheck("ok", "", stats)
    verdict = "refuse" if tail > REFUSE_UPPER_TAIL or depth > REFUSE_BRIGHT_DEPTH else "warn"
    message = ("the image does not look like a FLAIR: " + "; ".join(reasons)
               + "; check that the file named *_FLAIR is the FLAIR")
    return ContrastCheck(verdict, message, stats)
