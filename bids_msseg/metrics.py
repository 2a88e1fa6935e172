"""Segmentation metrics against expert masks (definitions in ../shared/docs/conventions.md).

Per scan: voxel-wise Dice, IoU, PPV, TPR and relative absolute volume difference
(:func:`voxel_metrics`), volumes in mL (:func:`volume_metrics`), and lesion-wise detection under
the project's single lesion definition (:mod:`bids_msseg.lesions`, :func:`lesion_metrics`): a true
lesion is detected when any predicted lesion voxel overlaps it (ISBI-2015 / WMH-2017 rule), a
predicted lesion is a false positive when it overlaps no true lesion. As an option, the
MSSEG-2016 detection rules of Anima's ``animaSegPerfAnalyzer`` (:func:`msseg2016_lesion_metrics`).

Over a cohort: the correlation of predicted and expert volumes (:func:`volume_correlation`) and
the ISBI-2015 score that DeepLesionBrain calls "hybrid" (:func:`hybrid_score`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bids_msseg.lesions import LesionDefinition, label_lesions


def voxel_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU, PPV, TPR and AVD of two binary masks on the same grid."""
    p, g = np.asarray(pred, bool), np.asarray(truth, bool)
    if p.shape != g.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {g.shape}")
    tp = float(np.count_nonzero(p & g))
    n_p, n_g = float(p.sum()), float(g.sum())
    nan = float("nan")
    return {
        "dice": 2 * tp / (n_p + n_g) if n_p + n_g else 1.0,
        "iou": tp / (n_p + n_g - tp) if n_p + n_g else 1.0,
        "ppv": tp / n_p if n_p else nan,
        "tpr": tp / n_g if n_g else nan,
        "avd": abs(n_p - n_g) / n_g if n_g else nan,
    }


def lesion_metrics(
    pred: np.ndarray, truth: np.ndarray, voxel_volume_mm3: float, definition: LesionDefinition
) -> dict[str, float]:
    """Lesion-wise TPR (LTPR), FPR (LFPR) and F1, with both masks labelled by ``definition``."""
    lp, n_p = label_lesions(pred, voxel_volume_mm3, definition)
    lg, n_g = label_lesions(truth, voxel_volume_mm3, definition)
    detected = np.unique(lg[(lp > 0) & (lg > 0)]).size
    true_pred = np.unique(lp[(lp > 0) & (lg > 0)]).size
    ltpr = detected / n_g if n_g else float("nan")
    lfpr = (n_p - true_pred) / n_p if n_p else 0.0
    precision = true_pred / n_p if n_p else float("nan")
    f1 = 2 * precision * ltpr / (precision + ltpr) if n_p and n_g and (precision + ltpr) else 0.0
    return {"n_true_lesions": n_g, "n_pred_lesions": n_p, "ltpr": ltpr, "lfpr": lfpr, "lesion_f1": f1}


#: Upper bounds (mm3) of the expert lesion size classes of :func:`lesion_detection`: small < 30,
#: medium 30-300, large > 300 (the sizes of the issue's protocol v2).
SIZE_CLASSES = {"small": 30.0, "medium": 300.0, "large": math.inf}


def lesion_detection(
    pred: np.ndarray, truth: np.ndarray, voxel_volume_mm3: float, definition: LesionDefinition
) -> dict[str, float]:
    """Detection by expert lesion size and the false lesions of one scan (both masks labelled by ``definition``).

    ``n_true_<size>`` / ``detected_<size>``: expert lesions of each :data:`SIZE_CLASSES` class and how
    many of them a predicted lesion touches (summed over scans, they give a pooled TPR by size);
    ``n_false_lesions`` / ``false_volume_ml``: predicted lesions that touch no expert lesion and their volume.
    """
    lp, n_p = label_lesions(pred, voxel_volume_mm3, definition)
    lg, n_g = label_lesions(truth, voxel_volume_mm3, definition)
    sizes = np.bincount(lg.ravel(), minlength=n_g + 1)[1:] * voxel_volume_mm3
    hit = np.zeros(n_g + 1, bool)
    hit[np.unique(lg[(lp > 0) & (lg > 0)])] = True
    size_class = np.digitize(sizes, [SIZE_CLASSES["small"], SIZE_CLASSES["medium"]], right=False)
    size_class[sizes == SIZE_CLASSES["medium"]] = 1  # 300 mm3 itself is medium
    out: dict[str, float] = {}
    for index, name in enumerate(SIZE_CLASSES):
        in_class = size_class == index
        out[f"n_true_{name}"] = int(in_class.sum())
        out[f"detected_{name}"] = int((in_class & hit[1:]).sum())
    touching = np.zeros(n_p + 1, bool)
    touching[np.unique(lp[(lp > 0) & (lg > 0)])] = True
    false = ~touching[1:]
    volumes = np.bincount(lp.ravel(), minlength=n_p + 1)[1:] * voxel_volume_mm3
    out["n_false_lesions"] = int(false.sum())
    out["false_volume_ml"] = float(volumes[false].sum() / 1000.0)
    return out


def volume_metrics(pred: np.ndarray, truth: np.ndarray, voxel_volume_mm3: float) -> dict[str, float]:
    """Predicted and expert volumes, their signed and absolute difference, all in mL."""
    v_p = float(np.count_nonzero(pred)) * voxel_volume_mm3 / 1000.0
    v_g = float(np.count_nonzero(truth)) * voxel_volume_mm3 / 1000.0
    return {"pred_volume_ml": v_p, "true_volume_ml": v_g, "volume_difference_ml": v_p - v_g,
            "abs_volume_difference_ml": abs(v_p - v_g)}


@dataclass(frozen=True)
class Msseg2016Rule:
    """The detection thresholds of MSSEG-2016 (Commowick et al. 2018, section 11; Anima's defaults then).

    A lesion of one mask is detected by the other when more than ``alpha`` of its voxels are
    covered, and the components of the other mask covering it, taken by decreasing overlap until
    they explain ``gamma`` of that overlap, each lie at most ``beta`` outside the first mask.
    Components are ``connectivity``-connected (1 = faces, as ITK's default) and kept only when
    strictly larger than ``min_volume_mm3``.
    """

    alpha: float = 0.10
    beta: float = 0.70
    gamma: float = 0.65
    min_volume_mm3: float = 3.0
    connectivity: int = 1

    def definition(self, voxel_volume_mm3: float) -> LesionDefinition:
        """The :class:`LesionDefinition` keeping exactly the components Anima keeps.

        Anima keeps components of at least ``floor(min_volume / voxel volume) + 1`` voxels (strictly
        more than the minimum volume); :func:`label_lesions` keeps volumes >= its minimum.
        """
        voxels = math.floor(self.min_volume_mm3 / voxel_volume_mm3) + 1
        return LesionDefinition(self.connectivity, voxels * voxel_volume_mm3)


def _detected(overlap: np.ndarray, rule: Msseg2016Rule) -> int:
    """How many lesions of the rows of ``overlap`` the columns detect (row/column 0: background).

    ``overlap[i, j]`` counts the voxels of row-lesion i in column-lesion j. This is Anima's
    ``getTruePositiveLesions`` + ``falsePositiveRatioTester``, except that the loop over covering
    components is not cut short by the number of row lesions (an indexing quirk of Anima).
    """
    column_sizes = overlap.sum(axis=0)
    detected = 0
    for i in range(1, overlap.shape[0]):
        covered = overlap[i, 1:].sum()
        if covered / overlap[i].sum() <= rule.alpha:
            continue
        order = np.argsort(-overlap[i, 1:], kind="stable") + 1
        explained, ok = 0.0, True
        for j in order:
            if explained >= rule.gamma or overlap[i, j] == 0:
                break
            if overlap[0, j] / column_sizes[j] > rule.beta:
                ok = False
                break
            explained += overlap[i, j] / covered
        detected += ok
    return detected


def msseg2016_lesion_metrics(
    pred: np.ndarray, truth: np.ndarray, voxel_volume_mm3: float, rule: Msseg2016Rule = Msseg2016Rule()
) -> dict[str, float]:
    """Lesion-wise sensitivity, PPV and F1 under the MSSEG-2016 rules (``animaSegPerfAnalyzer``).

    Components smaller than the rule's minimum count as background in the overlap table, as in
    Anima. Sensitivity is NaN without expert lesions, PPV NaN without predicted lesions; F1 is 0
    when either is missing or both are 0.
    """
    definition = rule.definition(voxel_volume_mm3)
    lg, n_g = label_lesions(truth, voxel_volume_mm3, definition)
    lp, n_p = label_lesions(pred, voxel_volume_mm3, definition)
    overlap = np.bincount((lg.astype(np.int64) * (n_p + 1) + lp).ravel(),
                          minlength=(n_g + 1) * (n_p + 1)).reshape(n_g + 1, n_p + 1)
    sens = _detected(overlap, rule) / n_g if n_g else float("nan")
    ppv = _detected(overlap.T, rule) / n_p if n_p else float("nan")
    f1 = 2 * sens * ppv / (sens + ppv) if n_g and n_p and sens + ppv else 0.0
    return {"msseg_n_true_lesions": n_g, "msseg_n_pred_lesions": n_p, "msseg_lesion_sensitivity": sens,
            "msseg_lesion_ppv": ppv, "msseg_lesion_f1": f1}


def volume_correlation(pred_ml: Sequence[float], true_ml: Sequence[float]) -> dict[str, float]:
    """Pearson r and Spearman rho (with p-values) of predicted against expert volumes over scans.

    NaN pairs are dropped; fewer than 3 scans, or a constant volume, give NaN.
    """
    p, g = np.asarray(pred_ml, np.float64), np.asarray(true_ml, np.float64)
    keep = np.isfinite(p) & np.isfinite(g)
    p, g = p[keep], g[keep]
    nan = float("nan")
    out = {"n_scans": int(p.size), "pearson_r": nan, "pearson_p": nan, "spearman_rho": nan, "spearman_p": nan}
    if p.size < 3 or np.ptp(p) == 0 or np.ptp(g) == 0:
        return out
    pearson = stats.pearsonr(p, g)
    spearman = stats.spearmanr(p, g)
    out.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
               spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    return out


def hybrid_score(dice: Sequence[float], ppv: Sequence[float], lfpr: Sequence[float], ltpr: Sequence[float],
                 corr: float) -> float:
    """ISBI-2015 score (DeepLesionBrain's "hybrid"): mean over scans of Dice/8 + PPV/8 + (1-LFPR)/4 +
    LTPR/4, plus Corr/4 with Corr the Pearson r of the volumes over the same scans.

    A scan without predicted voxels has no PPV: it counts as 0 (nothing predicted is right), so
    predicting nothing is not rewarded. Scans whose LTPR is NaN (no expert lesion) are left out.
    NaN when no scan is left or Corr is NaN.
    """
    d, p, f, t = (np.asarray(x, np.float64) for x in (dice, ppv, lfpr, ltpr))
    p = np.where(np.isnan(p), 0.0, p)
    keep = np.isfinite(t) & np.isfinite(d) & np.isfinite(f)
    if not keep.any() or not math.isfinite(corr):
        return float("nan")
    per_scan = d[keep] / 8 + p[keep] / 8 + (1 - f[keep]) / 4 + t[keep] / 4
    return float(per_scan.mean() + corr / 4)


def median_mad_baseline(flair: np.ndarray, brain: np.ndarray, k: float = 3.0) -> np.ndarray:
    """The naive baseline: brain voxels brighter than the brain median + k median absolute deviations."""
    values = np.asarray(flair, np.float64)[np.asarray(brain, bool)]
    med = np.median(values)
    mad = np.median(np.abs(values - med))
    return np.asarray(brain, bool) & (flair > med + k * mad)
