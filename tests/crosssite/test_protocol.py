"""Protocol tables of the cross-site study (bids_msseg/crosssite/protocol.py): per site, pooled, operating points."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.crosssite.plan import Arm, Experiment, StudyPlan
from bids_msseg.crosssite.protocol import (
    LEAVE_SITE_OUT,
    best_operating_point,
    model_group,
    operating_points,
    summary_table,
)
from bids_msseg.lesions import LesionDefinition, is_thick_slice


def _row(site: str, scan: str, train_set: str, **values) -> dict:
    base = {"arm": "UnetPlusPlus-quantile", "train_set": train_set, "test_site": site, "scan": scan, "dice": 0.5,
            "lesion_f1": 0.5, "n_false_lesions": 0, "false_volume_ml": 0.0}
    for size in ("small", "medium", "large"):
        base |= {f"n_true_{size}": 0, f"detected_{size}": 0}
    return base | values


def test_summary_pools_scans_and_averages_sites() -> None:
    rows = pd.DataFrame([
        _row("A", "a1", "B+C", dice=0.2, lesion_f1=0.1, n_true_small=4, detected_small=1, n_false_lesions=3),
        _row("B", "b1", "A+C", dice=0.6, lesion_f1=0.5, n_true_small=2, detected_small=2, false_volume_ml=0.4),
        _row("B", "b2", "A+C", dice=0.8, lesion_f1=0.9, n_true_large=1, detected_large=1, n_false_lesions=1),
        _row("B", "b1", "model:v2", dice=0.1),
    ])
    table = summary_table(rows, {"B+C": LEAVE_SITE_OUT, "A+C": LEAVE_SITE_OUT, "model:v2": "model:v2"})
    loso = table[table.model == LEAVE_SITE_OUT].set_index("test_site")
    assert list(loso.index) == ["A", "B", "pooled", "site_mean"]
    assert loso.loc["pooled", "dice"] == pytest.approx(1.6 / 3) and loso.loc["site_mean", "dice"] == pytest.approx(0.45)
    assert loso.loc["pooled", "ltpr_small"] == pytest.approx(3 / 6)  # pooled counts, not a mean of ratios
    assert np.isnan(loso.loc["A", "ltpr_medium"]) and loso.loc["pooled", "ltpr_large"] == 1.0
    assert loso.loc["pooled", "false_lesions_max"] == 3 and loso.loc["pooled", "false_ml_max"] == pytest.approx(0.4)
    assert loso.loc["pooled", "n_scans"] == 3
    given = table[table.model == "model:v2"].set_index("test_site")
    assert list(given.index) == ["B", "pooled", "site_mean"] and given.loc["pooled", "dice"] == pytest.approx(0.1)


def _plan() -> tuple[StudyPlan, list[Experiment]]:
    loo = [Experiment(Arm(), ("B",), ("b",), ("b2",)), Experiment(Arm(), ("A",), ("a",), ("a2",))]
    given = Experiment(Arm(), (), model="/m/default_model")
    plan = StudyPlan(sites={"A": ["a"], "B": ["b"]}, test={"A": ["a"], "B": ["b"]},
                     experiments=[*loo, given], holdout="site")
    return plan, [*loo, given]


def test_model_groups() -> None:
    plan, (left_a, left_b, given) = _plan()
    assert model_group(left_a, plan) == LEAVE_SITE_OUT == model_group(left_b, plan)
    assert model_group(given, plan) == "model:default_model"
    plan.holdout = "subjects"
    assert model_group(left_a, plan) == "B"


def test_operating_points_rescore_stored_probabilities(tmp_path: Path) -> None:
    plan, experiments = _plan()
    truth = np.zeros((20, 20, 20), bool)
    truth[2:5, 2:5, 2:5] = True  # a lesion the model sees at 0.6 (peak 0.95)
    truth[10:13, 10:13, 10:13] = True  # one it sees faintly at 0.45
    probability = np.zeros(truth.shape, np.float32)
    probability[2:5, 2:5, 2:5] = 0.6
    probability[3, 3, 3] = 0.95
    probability[10:13, 10:13, 10:13] = 0.45
    probability[15:18, 15:18, 15:18] = 0.75  # a false lesion without a confident core

    def path(experiment: Experiment, key: str) -> Path:
        target = tmp_path / experiment.id / f"{key}.nii.gz"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(probability, np.eye(4)), str(target))
        return target

    table = operating_points(plan, lambda key: (truth, 1.0), path, LesionDefinition(min_size_mm3=0.0),
                             thresholds=(0.4, 0.5), seeds=(0.0, 0.9))
    pooled = table[(table.test_site == "pooled") & (table.model == LEAVE_SITE_OUT)].set_index(
        ["threshold", "seed_threshold"])
    assert pooled.loc[(0.4, 0.0), "lesion_f1"] == pytest.approx(0.8)  # 2 of 2 found, 1 of 3 predictions false
    assert pooled.loc[(0.5, 0.0), "lesion_f1"] == pytest.approx(0.5)  # 1 of 2 found, 1 of 2 false
    assert pooled.loc[(0.5, 0.9), "lesion_f1"] == pytest.approx(2 / 3)  # the seed drops the false lesion
    assert pooled.loc[(0.4, 0.9), "n_scans"] == 2  # each site's scan scored once, by the model without its site
    assert set(table.model) == {LEAVE_SITE_OUT, "model:default_model"}
    best = best_operating_point(table)
    assert list(best.criterion) == ["lesion_f1", "lesion_f1", "mean_dice_f1", "mean_dice_f1"]
    by_f1 = best[(best.criterion == "lesion_f1") & (best.model == LEAVE_SITE_OUT)].iloc[0]
    assert by_f1["lesion_f1"] == pytest.approx(0.8) and (by_f1["threshold"], by_f1["seed_threshold"]) == (0.4, 0.0)
    by_mean = best[(best.criterion == "mean_dice_f1") & (best.model == LEAVE_SITE_OUT)].iloc[0]
    grid = pooled.assign(score=(pooled.dice + pooled.lesion_f1) / 2)
    assert (by_mean["threshold"], by_mean["seed_threshold"]) == grid.score.idxmax()
    # A bound of 0 false lesions per scan rules out the points that keep the false lesion.
    bounded = best_operating_point(table, max_false_lesions=0)
    by_f1 = bounded[(bounded.criterion == "lesion_f1") & (bounded.model == LEAVE_SITE_OUT)].iloc[0]
    assert by_f1["within_bound"] and by_f1["false_lesions_max"] == 0 and by_f1["seed_threshold"] == 0.9


def test_thick_slice_scans_get_a_seed_of_their_own(tmp_path: Path) -> None:
    """Site A's scan is a thick-slice one whose true lesion peaks at 0.92; site B's thin-slice scan has a
    false lesion peaking at 0.92. One seed for both finds the lesion with the false one or neither; a seed of
    0.9 for the thick-slice scans and 0.95 for the others finds the lesion alone."""
    plan, _ = _plan()
    truth = {"a": np.zeros((20, 20, 20), bool), "b": np.zeros((20, 20, 20), bool)}
    truth["a"][2:5, 2:5, 2:5] = True
    truth["b"][10:13, 10:13, 10:13] = True
    probability = {key: np.zeros((20, 20, 20), np.float32) for key in truth}
    probability["a"][2:5, 2:5, 2:5], probability["a"][3, 3, 3] = 0.6, 0.92  # a faint true lesion
    probability["b"][10:13, 10:13, 10:13], probability["b"][11, 11, 11] = 0.6, 0.99  # a confident one
    probability["b"][15:18, 15:18, 15:18], probability["b"][16, 16, 16] = 0.6, 0.92  # a false one

    def path(experiment: Experiment, key: str) -> Path:
        target = tmp_path / experiment.id / f"{key}.nii.gz"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(probability[key], np.eye(4)), str(target))
        return target

    args = (plan, lambda key: (truth[key], 1.0), path, LesionDefinition(min_size_mm3=0.0), (0.5,), (0.9, 0.95))
    table = operating_points(*args, thick_of=lambda key: key == "a")
    pooled = table[(table.test_site == "pooled") & (table.model == LEAVE_SITE_OUT)].set_index(
        ["seed_threshold", "seed_threshold_thick"])
    assert sorted(pooled.index) == [(0.9, 0.9), (0.9, 0.95), (0.95, 0.9), (0.95, 0.95)]
    assert pooled.loc[(0.9, 0.9), "lesion_f1"] == pytest.approx((1 + 2 / 3) / 2)  # the false lesion kept
    assert pooled.loc[(0.95, 0.95), "lesion_f1"] == pytest.approx(0.5)  # the faint lesion lost
    assert pooled.loc[(0.95, 0.9), "lesion_f1"] == 1.0 and pooled.loc[(0.95, 0.9), "false_lesions_max"] == 0
    best = best_operating_point(table)
    by_f1 = best[(best.criterion == "lesion_f1") & (best.model == LEAVE_SITE_OUT)].iloc[0]
    assert (by_f1["seed_threshold"], by_f1["seed_threshold_thick"]) == (0.95, 0.9)
    # Without slice information (or with one kind of scan only) the grid is one seed for all, as before.
    plain = operating_points(*args)
    assert (plain.seed_threshold == plain.seed_threshold_thick).all() and len(plain) == len(table) / 2


def test_thick_slice_rule() -> None:
    assert is_thick_slice((0.9, 0.9, 4.4)) and is_thick_slice((6.5, 0.45, 0.45)) and is_thick_slice((1, 1, 2.0))
    assert not is_thick_slice((1.0, 1.0, 1.2)) and not is_thick_slice((0.5, 0.5, 0.5, 2.0))  # 4th: time
