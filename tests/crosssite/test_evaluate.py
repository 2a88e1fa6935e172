"""Per-scan metrics and pairwise agreement (bids_msseg/crosssite/evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_msseg.crosssite.evaluate import pairwise_dice, scan_metrics
from bids_msseg.lesions import LesionDefinition

# ------------------------------------------------------------------------------- evaluation


def test_scan_metrics_and_consistency() -> None:
    truth = np.zeros((10, 10, 10), bool)
    truth[2:4, 2:4, 2:4] = True  # 8 voxels
    pred = np.zeros_like(truth)
    pred[2:4, 2:4, 2:3] = True  # 4 of them
    pred[7:9, 7:9, 7:9] = True  # a false-positive lesion of 8 voxels
    m = scan_metrics(pred, truth, 1.0, LesionDefinition(min_size_mm3=1.0))
    assert m["dice"] == pytest.approx(2 * 4 / (12 + 8)) and m["ppv"] == pytest.approx(4 / 12)
    assert m["ltpr"] == 1.0 and m["lfpr"] == 0.5 and m["true_volume_ml"] == pytest.approx(0.008)
    agree = pairwise_dice({"x": pred, "y": truth, "z": np.zeros_like(truth)})
    assert [(a, b) for a, b, _ in agree] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert agree[0][2] == pytest.approx(m["dice"]) and agree[1][2] == 0.0
