"""Segmentation metrics against expert masks (definitions in ../shared/docs/conventions.md).

Voxel-wise Dice, IoU, PPV, TPR and absolute volume difference, and lesion-wise detection under the
project's single lesion definition (:mod:`bids_msseg.lesions`): a true lesion is detected when any
predicted lesion voxel overlaps it (ISBI-2015 / WMH-2017 rule), a predicted lesion is a false
positive when it overlaps no true lesion.
"""

from __future__ import annotations

import numpy as np

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


def median_mad_baseline(flair: np.ndarray, brain: np.ndarray, k: float = 3.0) -> np.ndarray:
    """The naive baseline: brain voxels brighter than the brain median + k median absolute deviations."""
    values = np.asarray(flair, np.float64)[np.asarray(brain, bool)]
    med = np.median(values)
    mad = np.median(np.abs(values - med))
    return np.asarray(brain, bool) & (flair > med + k * mad)
