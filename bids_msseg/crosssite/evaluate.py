"""Per-scan metrics and consistency of the cross-site study.

Per-scan metrics are the group level's (:func:`bids_msseg.evaluation.evaluate_scan`); the study's
tables keep the columns of :data:`METRICS`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from bids_msseg.evaluation import EvaluationOptions, evaluate_scan
from bids_msseg.lesions import LesionDefinition
from bids_msseg.metrics import SIZE_CLASSES, lesion_detection, voxel_metrics

#: Columns of the per-scan table, in order (voxel-wise, lesion-wise, then detection by expert lesion
#: size and the false lesions of :func:`~bids_msseg.metrics.lesion_detection`).
METRICS = ("dice", "iou", "ppv", "tpr", "avd", "ltpr", "lfpr", "lesion_f1", "n_true_lesions", "n_pred_lesions",
           "true_volume_ml", "pred_volume_ml",
           *(f"{kind}_{size}" for size in SIZE_CLASSES for kind in ("n_true", "detected")),
           "n_false_lesions", "false_volume_ml")


def scan_metrics(pred: np.ndarray, truth: np.ndarray, voxel_volume_mm3: float,
                 definition: LesionDefinition) -> dict[str, float]:
    """Voxel- and lesion-wise metrics of one predicted mask against its expert mask (same grid)."""
    values = evaluate_scan(pred, truth, voxel_volume_mm3, EvaluationOptions(definition=definition))
    values.update(lesion_detection(pred, truth, voxel_volume_mm3, definition))
    return {name: values[name] for name in METRICS}


def pairwise_dice(masks: Mapping[str, np.ndarray]) -> list[tuple[str, str, float]]:
    """Dice between every two masks of ``masks`` (name -> mask), names in the given order.

    DeepLesionBrain's consistency: models trained on different data should agree on one scan.
    Two empty masks agree fully (Dice 1, as :func:`~bids_msseg.metrics.voxel_metrics` defines it).
    """
    return [(a, b, voxel_metrics(masks[a], masks[b])["dice"]) for a, b in itertools.combinations(masks, 2)]
