"""The change rule on one grid (bids_msseg.longitudinal.change), on the synthetic pair."""

from __future__ import annotations

import numpy as np
import pytest

from bids_msseg.longitudinal.change import ChangeRule, detect_change, normalize_visit, subtraction_change
from tests.longitudinal.helpers import DEFINITION, LESIONS, NETWORK_ONLY, grid_affine, lesion_at, phantom


def test_change_rule_on_one_grid_finds_new_and_enlarging_and_ignores_network_only_lesions():
    move = np.eye(4)
    b_flair, brain, b_prob, b_true = phantom(0, move)
    f_flair, _, f_prob, f_true = phantom(1, move)
    result = detect_change(normalize_visit(b_flair, brain), normalize_visit(f_flair, brain), b_prob, f_prob, brain,
                           grid_affine(), threshold=0.5, definition=DEFINITION)
    table = result.table
    assert sorted(table["change"]) == ["enlarging", "new", "stable", "stable"]
    assert lesion_at(table, np.array(LESIONS["new"][0]))["change"] == "new"
    assert lesion_at(table, np.array(LESIONS["enlarging"][0]))["change"] == "enlarging"
    assert lesion_at(table, np.array(LESIONS["stable"][0]))["change"] == "stable"
    assert lesion_at(table, np.array(NETWORK_ONLY[0]))["change"] == "stable"  # the image did not change
    grown = np.isin(result.change_map, (2, 3))
    truth = f_true & ~b_true
    dice = 2 * (grown & truth).sum() / (grown.sum() + truth.sum())
    assert dice > 0.8
    # the naive subtraction also calls the network-only lesion new
    naive = subtraction_change(b_prob >= 0.5, f_prob >= 0.5)
    assert naive.sum() > grown.sum()


def test_change_rule_growth_thresholds_and_mirror_classes():
    move = np.eye(4)
    b_flair, brain, b_prob, _ = phantom(0, move)
    f_flair, _, f_prob, _ = phantom(1, move)
    nb, nf = normalize_visit(b_flair, brain), normalize_visit(f_flair, brain)
    # the other way round: the new lesion disappears, the enlarging one shrinks
    reverse = detect_change(nf, nb, f_prob, b_prob, brain, grid_affine(), threshold=0.5, definition=DEFINITION)
    assert lesion_at(reverse.table, np.array(LESIONS["new"][0]))["change"] == "disappearing"
    assert lesion_at(reverse.table, np.array(LESIONS["enlarging"][0]))["change"] == "shrinking"
    # growth below the relative rule is stable
    strict = detect_change(nb, nf, b_prob, f_prob, brain, grid_affine(), threshold=0.5, definition=DEFINITION,
                           rule=ChangeRule(relative_growth=5.0))
    assert lesion_at(strict.table, np.array(LESIONS["enlarging"][0]))["change"] == "stable"
    # without an intensity change nothing appears: identical visits are all stable
    same = detect_change(nb, nb, b_prob, b_prob, brain, grid_affine(), threshold=0.5, definition=DEFINITION)
    assert set(same.table["change"]) == {"stable"} and set(np.unique(same.change_map)) <= {0, 1}
    with pytest.raises(ValueError):
        ChangeRule(joint_threshold=0.0)


def test_change_rule_masks_follow_the_runs_hysteresis():
    """With a seed threshold, lesions the network never calls confidently are not lesions at either
    visit (as in the participant masks); a lesion whose appearance the image confirms is still new."""
    move = np.eye(4)
    b_flair, brain, b_prob, _ = phantom(0, move)
    f_flair, _, f_prob, _ = phantom(1, move)
    nb, nf = normalize_visit(b_flair, brain), normalize_visit(f_flair, brain)
    confident = np.where(b_prob > 0, 0.99, 0.0).astype(np.float32)  # only the baseline's lesions are confident
    f_seeded = np.maximum(f_prob, confident)
    result = detect_change(nb, nf, confident, f_seeded, brain, grid_affine(), threshold=0.5, definition=DEFINITION,
                           seed_threshold=0.97)
    table = result.table
    assert lesion_at(table, np.array(LESIONS["new"][0]))["change"] == "new"  # peak 0.95 < 0.97, image confirms it
    assert lesion_at(table, np.array(LESIONS["stable"][0]))["change"] == "stable"
    far = np.linalg.norm(table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)
                         - np.array(NETWORK_ONLY[0]), axis=1)
    assert far.min() > 5  # the network-only blob (peak 0.9) is no lesion at all
    without = detect_change(nb, nf, confident, f_seeded, brain, grid_affine(), threshold=0.5, definition=DEFINITION)
    assert len(without.table) == len(table) + 1


def test_a_lesion_gone_at_follow_up_is_disappearing_only_on_strong_evidence():
    """Gone at follow-up: disappearing when the network sees nothing there, the image got clearly darker
    and the lesion was large enough; else not seen (label 6), never silently stable."""
    move = np.eye(4)
    b_flair, brain, b_prob, _ = phantom(0, move)
    f_flair, _, f_prob, _ = phantom(1, move)
    nb, nf = normalize_visit(b_flair, brain), normalize_visit(f_flair, brain)
    where = np.array(LESIONS["new"][0])  # the other way round, the phantom's new lesion is gone

    def gone(followup_prob=b_prob, rule=ChangeRule()):
        result = detect_change(nf, nb, f_prob, followup_prob, brain, grid_affine(), threshold=0.5,
                               definition=DEFINITION, rule=rule)
        row = lesion_at(result.table, where)
        return row, set(np.unique(result.change_map[result.lesions == row["index"]]))

    row, labels = gone()
    assert row["change"] == "disappearing" and labels == {5}
    assert row["followup_max_probability"] < 0.3 and row["mean_intensity_change"] <= -0.3
    # the network still sees something there, under its threshold: not seen
    hesitant = np.maximum(b_prob, np.where(f_prob > 0.5, 0.4, 0.0)).astype(np.float32)
    row, labels = gone(hesitant)
    assert row["change"] == "not_seen" and labels == {6}
    # the image darkened less than the rule asks, or the lesion was too small to tell: not seen
    assert gone(rule=ChangeRule(vanish_intensity=5.0))[0]["change"] == "not_seen"
    assert gone(rule=ChangeRule(min_vanish_mm3=1e6))[0]["change"] == "not_seen"
    with pytest.raises(ValueError):
        ChangeRule(absent_probability=0.0)
