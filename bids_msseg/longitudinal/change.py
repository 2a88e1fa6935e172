"""Lesion change between two visits on one grid: which voxels changed, and what each lesion did.

Inputs are already on one grid (the baseline's): both visits' FLAIR intensities, each normalized
the same way (:func:`normalize_visit`), both lesion probability maps and the brain. The rule
(docs/longitudinal.md says why):

1. **Voxels.** ``M0``/``M1`` are the two visits' lesion masks, made as the participant level makes
   them (:func:`~bids_msseg.lesions.binarize`: the run's threshold, its hysteresis seed threshold
   and the lesion definition). A voxel
   *appeared* (``A``) when the follow-up calls it lesion at least at the lower, joint threshold
   ``ChangeRule.joint_threshold``, the baseline does not (below the threshold), **and** the FLAIR got
   brighter by at least ``ChangeRule.intensity_increase`` (a fraction of the brain's median
   intensity, after light smoothing). *Disappeared* (``V``) is the mirror image. A voxel on which the
   two masks disagree without such an intensity change is taken as lesion at both visits: the
   network missed it once, the image did not change. So lesions that the network calls at both
   visits (true or not: the default model over-segments raw clinical FLAIRs) are stable unless the
   image itself changed.
2. **Lesions.** ``L0 = M0 | V | (M1 & ~A)`` and ``L1 = M1 | A | (M0 & ~V)`` are the lesions at each
   visit; their union is split into lesions by the project's one lesion definition
   (:class:`~bids_msseg.lesions.LesionDefinition`; a lesion that merged with another is one lesion).
   With ``v0``/``v1`` its volume at each visit and ``m`` the definition's minimum lesion size:
   *new* when ``v0 < m`` (no lesion there at baseline), *enlarging* when ``v1 - v0 >=
   max(relative_growth * v0, absolute_growth_mm3)``, *shrinking* the mirror, else *stable*.
3. **Gone at follow-up** (``v1 < m``). An MS lesion seldom vanishes from FLAIR within a year or two,
   while a small lesion is easily lost to partial volume in a thicker follow-up slice or to a
   probability just under the threshold. So a lesion is *disappearing* only on strong evidence from
   both the network and the image: the follow-up's probability stays below
   ``ChangeRule.absent_probability`` everywhere in it (the network sees nothing there, not merely
   less than its threshold), its mean FLAIR change is at least ``ChangeRule.vanish_intensity`` darker,
   and it was at least ``ChangeRule.min_vanish_mm3`` large (larger than partial volume hides). Any
   other lesion gone at follow-up is *not seen*: not found at follow-up, without the evidence to
   call it gone; a reader should look at it.

The change map numbers the classes (``CHANGE_LABELS``): the lesion at both visits is 1, a new lesion
2, the grown part of an enlarging lesion 3, the lost part of a shrinking one 4, a disappeared lesion 5,
a lesion not seen at follow-up 6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from bids_msseg.lesions import LesionDefinition, binarize, label_lesions

#: Values of the change map and their names (the dseg TSV of the change map lists them).
CHANGE_LABELS: dict[int, str] = {1: "stable", 2: "new", 3: "enlarging", 4: "shrinking", 5: "disappearing",
                                 6: "not_seen"}
#: Change classes of a lesion, in the order tables and reports list them.
CHANGE_CLASSES = ("new", "enlarging", "shrinking", "disappearing", "not_seen", "stable")
#: How the reports name each class.
CHANGE_NAMES = {"new": "new", "enlarging": "enlarging", "shrinking": "shrinking", "disappearing": "disappearing",
                "not_seen": "not seen at follow-up", "stable": "stable"}
#: Labels of the voxels that became lesion (new lesions and the grown part of enlarging ones).
POSITIVE_LABELS = (2, 3)
#: Labels of the voxels that stopped being lesion (the lost part of shrinking lesions, disappeared lesions).
NEGATIVE_LABELS = (4, 5)
#: Labels of lesions not found at follow-up without the evidence to call them gone.
UNCERTAIN_LABELS = (6,)

CHANGE_COLUMNS = ["index", "change", "baseline_volume_mm3", "followup_volume_mm3", "volume_change_mm3",
                  "relative_change", "appeared_mm3", "disappeared_mm3", "mean_intensity_change",
                  "baseline_max_probability", "followup_max_probability", "centroid_x_mm", "centroid_y_mm",
                  "centroid_z_mm"]


@dataclass(frozen=True)
class ChangeRule:
    """The numbers of the change rule (module docstring).

    ``relative_growth`` (25 %) and ``absolute_growth_mm3`` (15 mm3, about ten voxels of a 0.7 x 0.7
    x 3 mm clinical FLAIR) make a lesion enlarging; ``intensity_increase`` is the FLAIR change (as a
    fraction of the brain's median) a voxel needs to count as appeared or disappeared;
    ``joint_threshold`` the follow-up (baseline) probability it needs then; ``smoothing_mm`` the
    Gaussian sigma applied to both visits before their difference is taken. ``intensity_increase``
    and ``joint_threshold`` were chosen on a development set that excludes the scored Ljubljana
    patients (``scripts/develop_longitudinal_rule.py``, docs/longitudinal.md); the growth steps and
    the smoothing follow common practice.

    A lesion gone at follow-up is *disappearing* only when the follow-up's maximum probability in it
    is below ``absent_probability`` (0.3: well under every threshold the network's masks use), its
    mean FLAIR change is ``vanish_intensity`` (0.3: twice the voxel step) or more darker, and its
    baseline volume is at least ``min_vanish_mm3`` (30 mm3: a sphere of about 4 mm, one clinical
    slice thick); else it is *not seen* (module docstring). These three were set from the
    properties of the images (thresholds, slice thickness), not tuned on the scored patients.
    """

    relative_growth: float = 0.25
    absolute_growth_mm3: float = 15.0
    intensity_increase: float = 0.15
    joint_threshold: float = 0.5
    smoothing_mm: float = 1.0
    absent_probability: float = 0.3
    vanish_intensity: float = 0.3
    min_vanish_mm3: float = 30.0

    def __post_init__(self) -> None:
        if min(self.relative_growth, self.absolute_growth_mm3, self.intensity_increase, self.vanish_intensity,
               self.min_vanish_mm3) < 0:
            raise ValueError("growth, intensity and size thresholds cannot be negative")
        if not 0.0 < self.joint_threshold <= 1.0:
            raise ValueError("the joint threshold is a probability in (0, 1]")
        if not 0.0 < self.absent_probability <= 1.0:
            raise ValueError("the absent probability is a probability in (0, 1]")

    def sidecar(self) -> dict[str, float]:
        """The rule as recorded in the sidecars (``ChangeRule``)."""
        return {"RelativeGrowth": self.relative_growth, "AbsoluteGrowth_mm3": self.absolute_growth_mm3,
                "IntensityIncrease": self.intensity_increase, "JointThreshold": self.joint_threshold,
                "Smoothing_mm": self.smoothing_mm, "AbsentProbability": self.absent_probability,
                "VanishIntensity": self.vanish_intensity, "MinimumVanished_mm3": self.min_vanish_mm3}


@dataclass(frozen=True)
class ChangeResult:
    """The change between two visits on the baseline grid."""

    change_map: np.ndarray  # uint8, CHANGE_LABELS
    lesions: np.ndarray  # int32, the union's lesions numbered 1..N (as in ``table``)
    table: pd.DataFrame  # one row per lesion, CHANGE_COLUMNS
    difference: np.ndarray  # float32, smoothed follow-up minus baseline normalized FLAIR

    def count(self, change: str) -> int:
        return int((self.table["change"] == change).sum())

    def volume_mm3(self, column: str, change: str | None = None) -> float:
        rows = self.table if change is None else self.table[self.table["change"] == change]
        return float(rows[column].sum())


def normalize_visit(flair: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The FLAIR divided by its brain's median (bias-corrected input assumed): 1 is typical brain
    tissue, lesions are well above 1, so the difference of two visits is in units of brain intensity.
    """
    data = np.asarray(flair, dtype=np.float32)
    inside = data[np.asarray(brain, bool)]
    inside = inside[inside > 0]
    median = float(np.median(inside)) if inside.size else 0.0
    if not median > 0:
        raise ValueError("the brain has no signal to normalize by")
    return data / median


def match_intensities(moving: np.ndarray, reference: np.ndarray, mask: np.ndarray,
                      quantiles: np.ndarray = np.linspace(1, 99, 99)) -> np.ndarray:
    """``moving`` with its intensity quantiles inside ``mask`` mapped onto ``reference``'s (piecewise linear).

    Two visits may come from different scanners or protocols (another slice thickness, another
    contrast between lesion and white matter): dividing each by its median makes typical tissue
    agree, matching the quantiles makes the whole brain's intensity distribution agree, so what
    is left in the difference is local change (lesion load changes by far less than 1 % of the brain).
    Outside ``[q1, q99]`` the map continues with the end segments' slopes.
    """
    inside = np.asarray(mask, bool)
    src = np.percentile(np.asarray(moving)[inside], quantiles)
    dst = np.percentile(np.asarray(reference)[inside], quantiles)
    src = np.maximum.accumulate(src + np.arange(src.size) * 1e-7)  # strictly increasing for interp
    out = np.interp(moving, src, dst).astype(np.float32)
    lo = np.asarray(moving) < src[0]
    hi = np.asarray(moving) > src[-1]
    slope_lo = (dst[1] - dst[0]) / max(src[1] - src[0], 1e-6)
    slope_hi = (dst[-1] - dst[-2]) / max(src[-1] - src[-2], 1e-6)
    out[lo] = dst[0] + (np.asarray(moving)[lo] - src[0]) * slope_lo
    out[hi] = dst[-1] + (np.asarray(moving)[hi] - src[-1]) * slope_hi
    return out


def _smooth(data: np.ndarray, zooms: tuple[float, ...], sigma_mm: float) -> np.ndarray:
    if sigma_mm <= 0:
        return np.asarray(data, np.float32)
    sigma = [sigma_mm / float(z) for z in zooms[:3]]
    return ndimage.gaussian_filter(np.asarray(data, np.float32), sigma=sigma, truncate=3.0)


def detect_change(baseline: np.ndarray, followup: np.ndarray, baseline_prob: np.ndarray, followup_prob: np.ndarray,
                  brain: np.ndarray, affine: np.ndarray, *, threshold: float, definition: LesionDefinition,
                  rule: ChangeRule = ChangeRule(), seed_threshold: float = 0.0) -> ChangeResult:
    """Classify lesion change between two visits on one grid (module docstring).

    ``baseline``/``followup`` are normalized FLAIRs (:func:`normalize_visit`), ``*_prob`` lesion
    probabilities, ``brain`` where both visits have brain, ``affine`` the grid's (RAS+) affine;
    ``threshold`` and ``seed_threshold`` make the lesion masks as in the participant level.
    """
    shape = np.shape(baseline)
    for name, array in (("followup", followup), ("baseline_prob", baseline_prob),
                        ("followup_prob", followup_prob), ("brain", brain)):
        if np.shape(array) != shape:
            raise ValueError(f"{name} has shape {np.shape(array)}, baseline {shape}")
    zooms = tuple(float(z) for z in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    brain = np.asarray(brain, bool)
    p0, p1 = np.asarray(baseline_prob, np.float32), np.asarray(followup_prob, np.float32)
    diff = (_smooth(followup, zooms, rule.smoothing_mm) - _smooth(baseline, zooms, rule.smoothing_mm)) * brain
    diff = diff.astype(np.float32)

    m0, m1 = (binarize(p, threshold, voxel_mm3, definition, seed_threshold)[0] > 0 for p in (p0, p1))
    joint = min(rule.joint_threshold, threshold)
    appeared = brain & (p1 >= joint) & ~m0 & (diff >= rule.intensity_increase)
    vanished = brain & (p0 >= joint) & ~m1 & (diff <= -rule.intensity_increase)
    l0 = (m0 | vanished | (m1 & ~appeared)) & brain
    l1 = (m1 | appeared | (m0 & ~vanished)) & brain

    lesions, n = label_lesions(l0 | l1, voxel_mm3, definition)
    change_map = np.zeros(shape, np.uint8)
    if n == 0:
        return ChangeResult(change_map, lesions, pd.DataFrame(columns=CHANGE_COLUMNS), diff)
    index = np.arange(1, n + 1)
    ones = np.ones(shape, np.uint8)

    def volume(mask: np.ndarray) -> np.ndarray:
        return ndimage.sum_labels(mask.astype(np.uint8), lesions, index) * voxel_mm3

    v0, v1 = volume(l0), volume(l1)
    grown, lost = volume(appeared & l1), volume(vanished & l0)
    minimum = max(definition.min_size_mm3, voxel_mm3 / 2)
    classes = np.full(n, "stable", dtype=object)
    step_up = np.maximum(rule.relative_growth * v0, rule.absolute_growth_mm3)
    classes[(v1 - v0) >= step_up] = "enlarging"
    classes[(v0 - v1) >= step_up] = "shrinking"
    followup_max = ndimage.maximum(p1, lesions, index)
    mean_change = ndimage.mean(diff, lesions, index)
    gone = v1 < minimum
    evidence = ((followup_max < rule.absent_probability) & (mean_change <= -rule.vanish_intensity)
                & (v0 >= rule.min_vanish_mm3))
    classes[gone & evidence] = "disappearing"
    classes[gone & ~evidence] = "not_seen"
    classes[v0 < minimum] = "new"

    lut = {name: np.zeros(n + 1, bool) for name in CHANGE_CLASSES}
    for name in CHANGE_CLASSES:
        lut[name][1:] = classes == name
    in_class = {name: lut[name][lesions] for name in CHANGE_CLASSES}
    change_map[(l0 | l1) & (lesions > 0)] = 1
    change_map[in_class["new"]] = 2
    change_map[in_class["enlarging"] & appeared] = 3
    change_map[in_class["shrinking"] & vanished] = 4
    change_map[in_class["disappearing"]] = 5
    change_map[in_class["not_seen"]] = 6

    centroids = np.array(ndimage.center_of_mass(ones, lesions, index)).reshape(n, 3)
    mm = centroids @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(v0 > 0, (v1 - v0) / np.where(v0 > 0, v0, 1.0), np.nan)
    table = pd.DataFrame({
        "index": index,
        "change": classes.astype(str),
        "baseline_volume_mm3": np.round(v0, 3),
        "followup_volume_mm3": np.round(v1, 3),
        "volume_change_mm3": np.round(v1 - v0, 3),
        "relative_change": np.round(relative, 4),
        "appeared_mm3": np.round(grown, 3),
        "disappeared_mm3": np.round(lost, 3),
        "mean_intensity_change": np.round(mean_change, 4),
        "baseline_max_probability": np.round(ndimage.maximum(p0, lesions, index), 4),
        "followup_max_probability": np.round(followup_max, 4),
        "centroid_x_mm": np.round(mm[:, 0], 2),
        "centroid_y_mm": np.round(mm[:, 1], 2),
        "centroid_z_mm": np.round(mm[:, 2], 2),
    })
    return ChangeResult(change_map, lesions, table[CHANGE_COLUMNS], diff)


def subtraction_change(baseline_mask: np.ndarray, followup_mask: np.ndarray) -> np.ndarray:
    """The naive baseline: follow-up lesion voxels that are not lesion at baseline (segment each
    visit alone, subtract the masks)."""
    return np.asarray(followup_mask, bool) & ~np.asarray(baseline_mask, bool)
