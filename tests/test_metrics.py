"""The metrics of bids_msseg.metrics cross-checked against peer packages from PyPI on the same masks.

Peers (the ``test`` extra): ``medpy`` (``medpy.metric.binary``: dc, jc, precision, recall) for the
voxel-wise metrics, and ``lesion-metrics`` (Reinhold; skimage-labelled 26-connected components,
any overlap) for Dice, AVD, LTPR, LFPR (its ``lfdr``), the volume correlation and the ISBI-2015
score. MSSEG-2016 detection has no Python peer (Anima is C++): it is checked on hand-built cases
at each threshold and against an independent, loop-by-loop scipy re-implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_msseg.evaluation import EvaluationOptions, evaluate_scan, summarize_cohort
from bids_msseg.lesions import LesionDefinition, label_lesions
from bids_msseg.metrics import (
    Msseg2016Rule,
    hybrid_score,
    lesion_detection,
    lesion_metrics,
    msseg2016_lesion_metrics,
    volume_correlation,
    voxel_metrics,
)

medpy_binary = pytest.importorskip("medpy.metric.binary", reason="medpy (test extra) is not installed")
peer = pytest.importorskip("lesion_metrics.metrics", reason="lesion-metrics (test extra) is not installed")
TOL = 1e-6


def blobs(seed: int, shape=(40, 44, 30), level: float = 0.62, sigma: float = 1.3) -> np.ndarray:
    """Random blobs of many sizes: smoothed noise above a quantile."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return field > np.quantile(field, level + 0.3)


PAIRS = [(blobs(s, level=0.6 + 0.02 * s),
          blobs(s + 100, level=0.64 - 0.01 * s) | (blobs(s) & blobs(s + 200, level=0.5))) for s in range(4)]


@pytest.mark.parametrize("pred,truth", PAIRS)
def test_voxel_metrics_match_medpy(pred: np.ndarray, truth: np.ndarray) -> None:
    ours = voxel_metrics(pred, truth)
    assert ours["dice"] == pytest.approx(medpy_binary.dc(pred, truth), abs=TOL)
    assert ours["iou"] == pytest.approx(medpy_binary.jc(pred, truth), abs=TOL)
    assert ours["ppv"] == pytest.approx(medpy_binary.precision(pred, truth), abs=TOL)
    assert ours["tpr"] == pytest.approx(medpy_binary.recall(pred, truth), abs=TOL)
    assert ours["dice"] == pytest.approx(peer.dice(pred, truth), abs=TOL)
    assert ours["avd"] == pytest.approx(peer.avd(pred, truth), abs=TOL)


@pytest.mark.parametrize("pred,truth", PAIRS)
def test_lesion_metrics_match_lesion_metrics(pred: np.ndarray, truth: np.ndarray) -> None:
    # No minimum size: both label 26-connected components and count any overlap.
    ours = lesion_metrics(pred, truth, 1.0, LesionDefinition(3, 0.0))
    assert ours["n_pred_lesions"] > 5 and ours["n_true_lesions"] > 5  # the check means something
    assert ours["ltpr"] == pytest.approx(peer.ltpr(pred, truth), abs=TOL)
    assert ours["lfpr"] == pytest.approx(peer.lfdr(pred, truth), abs=TOL)
    # With a minimum size, ours equals the peer on masks cleaned by the same lesion definition.
    definition = LesionDefinition(3, 10.0)
    ours = lesion_metrics(pred, truth, 1.0, definition)
    clean_p = label_lesions(pred, 1.0, definition)[0] > 0
    clean_g = label_lesions(truth, 1.0, definition)[0] > 0
    assert ours["ltpr"] == pytest.approx(peer.ltpr(clean_p, clean_g), abs=TOL)
    assert ours["lfpr"] == pytest.approx(peer.lfdr(clean_p, clean_g), abs=TOL)
    precision = 1 - ours["lfpr"]
    assert ours["lesion_f1"] == pytest.approx(2 * precision * ours["ltpr"] / (precision + ours["ltpr"]), abs=TOL)


def test_cohort_correlation_and_hybrid_score_match_peers() -> None:
    scans = [evaluate_scan(p, t, 0.5, EvaluationOptions(LesionDefinition(3, 0.0))) for p, t in PAIRS]
    scans += [evaluate_scan(PAIRS[0][0], PAIRS[1][1], 0.5, EvaluationOptions(LesionDefinition(3, 0.0)))]
    frame = pd.DataFrame(scans).assign(site=["a", "a", "b", "b", "b"])
    corr = volume_correlation(frame["pred_volume_ml"], frame["true_volume_ml"])
    assert corr["pearson_r"] == pytest.approx(peer.corr(frame["pred_volume_ml"].tolist(),
                                                        frame["true_volume_ml"].tolist()), abs=TOL)
    assert corr["spearman_rho"] == pytest.approx(frame["pred_volume_ml"].corr(frame["true_volume_ml"],
                                                                               method="spearman"), abs=TOL)
    expected = np.mean([peer.isbi15_score_from_metrics(r.dice, r.ppv, r.lfpr, r.ltpr, reweighted=False)
                        for r in frame.itertuples()]) + corr["pearson_r"] / 4
    score = hybrid_score(frame["dice"], frame["ppv"], frame["lfpr"], frame["ltpr"], corr["pearson_r"])
    assert score == pytest.approx(expected, abs=TOL)

    summary = summarize_cohort(frame, by="site").set_index("group")
    assert list(summary.index) == ["all", "a", "b"]
    assert summary.loc["all", "hybrid_score"] == pytest.approx(expected, abs=TOL)
    assert summary.loc["b", "dice_mean"] == pytest.approx(frame.loc[frame.site == "b", "dice"].mean(), abs=TOL)
    assert math.isnan(summary.loc["a", "hybrid_score"])  # 2 scans: no correlation


def test_hybrid_score_counts_an_empty_prediction_as_ppv_zero() -> None:
    score = hybrid_score([0.5, 0.0, 0.4], [0.6, float("nan"), 0.5], [0.2, 0.0, 0.3], [0.7, 0.0, 0.5], 0.8)
    expected = np.mean([0.5 / 8 + 0.6 / 8 + 0.8 / 4 + 0.7 / 4, 0.0 + 0.0 + 1 / 4 + 0.0,
                        0.4 / 8 + 0.5 / 8 + 0.7 / 4 + 0.5 / 4]) + 0.8 / 4
    assert score == pytest.approx(expected)
    assert math.isnan(hybrid_score([0.5], [0.5], [0.5], [0.5], float("nan")))


# ------------------------------------------------------------------------------- MSSEG-2016


def _cube(mask: np.ndarray, corner: tuple[int, int, int], size: tuple[int, int, int]) -> None:
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))] = True


def test_msseg_coverage_threshold_alpha() -> None:
    truth = np.zeros((40, 40, 40), bool)
    _cube(truth, (0, 0, 0), (10, 10, 10))  # 1000 voxels
    pred = np.zeros_like(truth)
    _cube(pred, (0, 0, 0), (10, 10, 1))  # covers exactly 10%: not more than alpha
    assert msseg2016_lesion_metrics(pred, truth, 1.0)["msseg_lesion_sensitivity"] == 0.0
    _cube(pred, (0, 0, 1), (1, 10, 1))  # 11%
    assert msseg2016_lesion_metrics(pred, truth, 1.0)["msseg_lesion_sensitivity"] == 1.0


def test_msseg_outside_threshold_beta() -> None:
    truth = np.zeros((40, 40, 40), bool)
    _cube(truth, (0, 0, 0), (10, 10, 3))  # 300 voxels
    pred = np.zeros_like(truth)
    _cube(pred, (0, 0, 0), (10, 10, 3))  # 300 inside ...
    _cube(pred, (0, 0, 3), (10, 10, 7))  # ... 700 outside: exactly 70% out, allowed
    result = msseg2016_lesion_metrics(pred, truth, 1.0)
    assert result["msseg_lesion_sensitivity"] == 1.0
    # Seen from the prediction: 30% of it is covered, and the truth lies 0% outside it.
    assert result["msseg_lesion_ppv"] == 1.0
    _cube(pred, (0, 0, 10), (1, 1, 1))  # one more voxel outside: 70.03% > beta
    assert msseg2016_lesion_metrics(pred, truth, 1.0)["msseg_lesion_sensitivity"] == 0.0


def test_msseg_covering_components_gamma() -> None:
    truth = np.zeros((60, 60, 60), bool)
    _cube(truth, (10, 10, 10), (10, 10, 10))
    good = np.zeros_like(truth)
    _cube(good, (10, 10, 10), (10, 10, 7))  # 700 voxels, all inside: explains 70% of the overlap
    bad = np.zeros_like(truth)
    _cube(bad, (10, 10, 18), (10, 10, 2))  # 200 inside ...
    _cube(bad, (10, 10, 20), (30, 30, 30))  # ... and far more outside (separate from `good`)
    pred = good | bad
    # good alone explains 700/900 = 78% >= gamma: bad is never examined -> detected
    assert msseg2016_lesion_metrics(pred, truth, 1.0)["msseg_lesion_sensitivity"] == 1.0
    small_good = np.zeros_like(truth)
    _cube(small_good, (10, 10, 10), (10, 10, 3))  # 300 inside: 300/500 = 60% < gamma -> bad is examined
    assert msseg2016_lesion_metrics(small_good | bad, truth, 1.0)["msseg_lesion_sensitivity"] == 0.0


def test_msseg_components_are_face_connected_and_over_3_mm3() -> None:
    truth = np.zeros((20, 20, 20), bool)
    truth[2, 2, 2] = truth[3, 3, 3] = truth[4, 4, 4] = truth[5, 5, 5] = True  # diagonal: 4 lesions of 1 voxel
    pred = truth.copy()
    assert msseg2016_lesion_metrics(pred, truth, 4.0)["msseg_n_true_lesions"] == 4  # 4 mm3 > 3
    assert msseg2016_lesion_metrics(pred, truth, 3.0)["msseg_n_true_lesions"] == 0  # 3 mm3 is not > 3
    assert Msseg2016Rule().definition(1.0).min_size_mm3 == 4.0
    assert lesion_metrics(pred, truth, 4.0, LesionDefinition(3, 0.0))["n_true_lesions"] == 1  # 26-connected


def _msseg_reference(pred: np.ndarray, truth: np.ndarray, v: float, a=0.1, b=0.7, g=0.65) -> tuple[float, float]:
    """A loop-by-loop reading of animaSegPerfAnalyzer, independent of bids_msseg.metrics."""
    structure = ndimage.generate_binary_structure(3, 1)

    def components(mask):
        labels, n = ndimage.label(mask, structure)
        keep = [i for i in range(1, n + 1) if (labels == i).sum() > math.floor(3.0 / v)]
        return [labels == i for i in keep]

    lt, lp = components(truth), components(pred)
    union_t = np.any(lt, axis=0) if lt else np.zeros(truth.shape, bool)
    union_p = np.any(lp, axis=0) if lp else np.zeros(pred.shape, bool)

    def detected(rows, cols, union_rows):
        count = 0
        for r in rows:
            overlaps = [(int((r & c).sum()), c) for c in cols]
            total = sum(o for o, _ in overlaps)
            if total / r.sum() <= a:
                continue
            ok, explained = True, 0.0
            for o, c in sorted(overlaps, key=lambda x: -x[0]):
                if explained >= g or o == 0:
                    break
                if (c & ~union_rows).sum() / c.sum() > b:
                    ok = False
                    break
                explained += o / total
            count += ok
        return count

    sens = detected(lt, lp, union_t) / len(lt)
    ppv = detected(lp, lt, union_p) / len(lp)
    return sens, ppv


@pytest.mark.parametrize("seed", range(3))
def test_msseg_matches_an_independent_reading(seed: int) -> None:
    pred, truth = blobs(seed, shape=(30, 30, 24), sigma=1.0), blobs(seed + 50, shape=(30, 30, 24), sigma=1.0)
    truth |= ndimage.binary_dilation(pred & blobs(seed + 7, shape=(30, 30, 24), level=0.4, sigma=1.0))
    result = msseg2016_lesion_metrics(pred, truth, 1.0)
    assert result["msseg_n_true_lesions"] > 5 and result["msseg_n_pred_lesions"] > 5
    sens, ppv = _msseg_reference(pred, truth, 1.0)
    assert 0.0 < result["msseg_lesion_sensitivity"] < 1.0
    assert result["msseg_lesion_sensitivity"] == pytest.approx(sens, abs=TOL)
    assert result["msseg_lesion_ppv"] == pytest.approx(ppv, abs=TOL)


def test_lesion_detection_counts_by_expert_size_and_false_lesions() -> None:
    truth, pred = np.zeros((40, 40, 40), bool), np.zeros((40, 40, 40), bool)
    _cube(truth, (2, 2, 2), (2, 2, 3))  # 12 mm3 at 1 mm: small, detected
    _cube(truth, (10, 2, 2), (3, 3, 3))  # 27 mm3: small, missed
    _cube(truth, (2, 10, 2), (5, 6, 10))  # 300 mm3: medium (the bound belongs to medium), detected
    _cube(truth, (20, 20, 20), (8, 8, 8))  # 512 mm3: large, detected by a touching prediction
    _cube(pred, (3, 3, 3), (1, 1, 1))
    _cube(pred, (4, 12, 4), (2, 2, 2))
    _cube(pred, (27, 27, 27), (3, 3, 3))  # overlaps the large lesion's corner and spills out
    _cube(pred, (30, 2, 30), (2, 3, 5))  # 30 mm3 false lesion
    _cube(pred, (2, 30, 30), (2, 2, 2))  # 8 mm3 false lesion
    out = lesion_detection(pred, truth, 1.0, LesionDefinition(min_size_mm3=0.0))
    assert (out["n_true_small"], out["detected_small"]) == (2, 1)
    assert (out["n_true_medium"], out["detected_medium"]) == (1, 1)
    assert (out["n_true_large"], out["detected_large"]) == (1, 1)
    assert out["n_false_lesions"] == 2 and out["false_volume_ml"] == pytest.approx(0.038)
    # the minimum lesion size applies to both masks, as in every other lesion count
    big = lesion_detection(pred, truth, 1.0, LesionDefinition(min_size_mm3=10.0))
    assert big["n_true_small"] == 2 and big["n_false_lesions"] == 1
    half = lesion_detection(pred, truth, 0.5, LesionDefinition(min_size_mm3=0.0))  # sizes in mm3, not voxels
    assert (half["n_true_small"], half["n_true_medium"], half["n_true_large"]) == (2, 2, 0)
