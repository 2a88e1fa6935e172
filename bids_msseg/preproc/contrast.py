"""Does the image look like a FLAIR? A cheap screen of the tissue ordering inside the brain mask.

Users misname files: a T1-weighted image or an inverted contrast named ``*_FLAIR`` was segmented
without a word (42.8 mL of "lesions" on a T1). In FLAIR, CSF is dark, white matter is a little
darker than grey matter, and lesions are bright; in T1, white matter is the brightest tissue; in
T2 or an inverted FLAIR, CSF is the brightest. Two statistics of the brain voxels tell them apart:

* ``deep_upper_tail`` = (p99 - p50) / (p50 - p5) of the voxels more than :data:`DEEP_MM` below the
  brain mask's surface: how far the bright tail reaches compared with the dark one, in the deep
  brain, where the ventricles are. FLAIR: a short bright tail (lesions), a long dark one (CSF). A
  bright CSF (T2, inverted FLAIR) makes the bright tail long. The brain's rim is left out: on
  thick-slice clinical scans (MS3SEG, 1.5 T, 6.5-8 mm slices) it mixes brain with skull, scalp fat
  and partial volume, which gave real FLAIRs whole-brain tails up to 2.16, as long as those of
  inverted FLAIRs. Brains too small to have :data:`MIN_VOXELS` deep voxels use the whole mask.
* ``bright_depth`` = mean depth (distance to the brain mask's surface) of the voxels between p75
  and p95, over that of the voxels between p25 and p50. In FLAIR the brighter tissue is the
  cortex (near the surface); in T1 it is the white matter (deep).

Calibration (``docs/bad_inputs.md``, ``scripts/measure_contrast.py``): on all 35 real FLAIRs of
``../shared/data`` (MS3SEG, ISBI-2015, MSLesSeg, 3D-MR-MS, the raw Ljubljana and SynthSR FLAIRs,
the GG-853 template), preprocessed as a run does it, ``deep_upper_tail`` is 0.63-1.56 and
``bright_depth`` 0.70-1.36; the same FLAIRs made T2-like (fluid not suppressed) give
``deep_upper_tail`` 2.62 and more, inverted inside the brain 1.53 and more (all but one above
1.75); T1-weighted images (nilearn's MNI152, ROBEX's head) give ``bright_depth`` 1.67-1.87.
Hence a warning above :data:`WARN_UPPER_TAIL` / :data:`WARN_BRIGHT_DEPTH` and a refusal (unless
``--force-contrast``) above :data:`REFUSE_UPPER_TAIL` / :data:`REFUSE_BRIGHT_DEPTH`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

#: Above this, warn: the deep brain's bright tail is long for a FLAIR (real FLAIRs: at most 1.56).
WARN_UPPER_TAIL = 1.6
#: Above this, refuse: CSF-bright contrast (T2-like: at least 2.62; inverted FLAIRs: 1.53, then 1.75 and more).
REFUSE_UPPER_TAIL = 1.7
#: Above this, warn: the bright tissue is deep for a FLAIR (real FLAIRs: at most 1.36).
WARN_BRIGHT_DEPTH = 1.45
#: Above this, refuse: T1-like ordering (T1-weighted images: 1.67-1.87).
REFUSE_BRIGHT_DEPTH = 1.55
#: Depth below the brain mask's surface (mm) from which a voxel counts as deep brain.
DEEP_MM = 10.0
#: Fewest brain voxels (on the strided grid) for the screen to say anything.
MIN_VOXELS = 1000
#: The depth map is computed on every n-th voxel per axis (cost: ~0.1 s on a 1 mm brain).
STRIDE = 2


@dataclass(frozen=True)
class ContrastCheck:
    """Outcome of :func:`check_contrast`: ``verdict`` is ``ok``, ``warn`` or ``refuse``."""

    verdict: str
    message: str = ""
    stats: dict[str, float] = field(default_factory=dict)


def _tail(values: np.ndarray) -> float:
    """(p99 - p50) / (p50 - p5) of ``values``."""
    p5, p50, p99 = np.percentile(values, [5, 50, 99])
    return float((p99 - p50) / max(p50 - p5, 1e-6 * max(abs(p50), 1.0)))


def contrast_stats(data: np.ndarray, brain_mask: np.ndarray, zooms: tuple[float, ...]) -> dict[str, float]:
    """``deep_upper_tail`` and ``bright_depth`` (module docstring) of ``data`` inside ``brain_mask``."""
    s = (slice(None, None, STRIDE),) * 3
    mask = np.asarray(brain_mask, bool)[s]
    image = np.asarray(data, np.float32)[s]
    values = image[mask]
    if values.size < MIN_VOXELS:
        return {}
    depth_map = ndi.distance_transform_edt(mask, sampling=[float(z) * STRIDE for z in zooms[:3]])
    deep = image[mask & (depth_map > DEEP_MM)]
    stats = {"deep_upper_tail": _tail(deep if deep.size >= MIN_VOXELS else values)}
    p25, p50, p75, p95 = np.percentile(values, [25, 50, 75, 95])
    depth = depth_map[mask]
    bright = depth[(values >= p75) & (values <= p95)]
    middle = depth[(values >= p25) & (values <= p50)]
    if bright.size and middle.size and middle.mean() > 0:
        stats["bright_depth"] = float(bright.mean() / middle.mean())
    return {k: round(v, 3) for k, v in stats.items()}


#: An image with at most this many distinct intensities in the brain is a label map or mask (a uint8
#: FLAIR still has a hundred or more), refused before the tissue statistics, which it would make absurd.
MAX_LABEL_VALUES = 16


def check_contrast(data: np.ndarray, brain_mask: np.ndarray, zooms: tuple[float, ...]) -> ContrastCheck:
    """Whether ``data`` looks like a FLAIR inside ``brain_mask`` (rule and margins: module docstring).

    The message says in words what was measured and what it suggests, then gives the statistics.
    """
    stats = contrast_stats(data, brain_mask, zooms)
    if not stats:
        return ContrastCheck("ok", "", stats)
    n_values = np.unique(np.asarray(data)[np.asarray(brain_mask, bool)]).size
    if n_values <= MAX_LABEL_VALUES:
        return ContrastCheck("refuse", f"the image holds only {n_values} distinct intensities in the brain, as a label "
                                       "map or mask does, not a grey-scale MR image; check that the file named "
                                       "*_FLAIR is the FLAIR", {**stats, "distinct_values": float(n_values)})
    tail, depth = stats["deep_upper_tail"], stats.get("bright_depth", 1.0)
    reasons = []
    if tail > WARN_UPPER_TAIL:
        reasons.append(
            f"deep in the brain, the brightest voxels stand {tail:.1f} times as far above the typical intensity as "
            f"the darkest stand below it (real FLAIRs: at most {WARN_UPPER_TAIL}), so CSF looks bright, as in "
            "T2-weighted or inverted images, where a FLAIR has dark CSF")
    if depth > WARN_BRIGHT_DEPTH:
        reasons.append(
            f"the brighter voxels lie {depth:.1f} times as deep below the brain's surface as the darker ones (real "
            f"FLAIRs: at most {WARN_BRIGHT_DEPTH}), so white matter looks brighter than grey matter, as in T1-weighted "
            "images, where a FLAIR has grey matter a little brighter")
    if not reasons:
        return ContrastCheck("ok", "", stats)
    verdict = "refuse" if tail > REFUSE_UPPER_TAIL or depth > REFUSE_BRIGHT_DEPTH else "warn"
    message = ("the image does not look like a FLAIR: " + "; and ".join(reasons)
               + "; check that the file named *_FLAIR is the FLAIR")
    return ContrastCheck(verdict, message, stats)
