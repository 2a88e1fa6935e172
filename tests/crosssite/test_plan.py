"""The cross-site plan (bids_msseg/crosssite/plan.py): training sets, arms, the test split."""

from __future__ import annotations

import pytest

from bids_msseg.cli import parser as cli_parser
from bids_msseg.crosssite import plan as plan_module
from bids_msseg.crosssite.plan import Arm, arms, split_test, training_sets
from bids_msseg.errors import UsageError

# ------------------------------------------------------------------------------------ plan


def test_training_sets() -> None:
    assert training_sets(["B", "A"], ["single", "leave-one-out", "all"]) == [("A",), ("B",), ("A", "B")]
    three = training_sets(["A", "B", "C"], ["single", "leave-one-out", "all"])
    assert three == [("A",), ("B",), ("C",), ("A", "B"), ("A", "C"), ("B", "C"), ("A", "B", "C")]
    assert training_sets(["A", "B", "C"], ["all-pairs"]) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert training_sets(["A", "B", "C"], ["all"]) == [("A", "B", "C")]
    assert training_sets(["A", "B", "C"], ["merged"]) == three[3:]
    with pytest.raises(UsageError):
        training_sets(["A", "B"], ["everything"])


def test_arms_and_parser_choices_agree() -> None:
    assert arms(None, None, []) == [Arm("UnetPlusPlus", "quantile")]
    assert [a.label for a in arms("Unet", None, ["normalization", "architecture"])] == [
        "Unet-quantile", "Unet-linear", "UnetPlusPlus-quantile"]
    assert arms(None, "linear", ["normalization"])[1] == Arm("UnetPlusPlus", "quantile", "normalization")
    assert cli_parser.CROSSSITE_COMBINATIONS == plan_module.COMBINATIONS
    assert cli_parser.CROSSSITE_ABLATIONS == plan_module.ABLATIONS


def test_split_test_is_by_subject_and_seeded(make_scan) -> None:
    scans = [make_scan(f"{i:02d}", s) for i in range(1, 7) for s in ("1", "2")]
    for seed in range(5):
        test, dev = split_test(scans, 0.3, seed)
        assert sorted(test + dev) == sorted(s.key for s in scans) and not set(test) & set(dev)
        subjects = {k.split("__")[1].split("_")[0] for k in test}
        assert len(subjects) == 2 and not subjects & {k.split("__")[1].split("_")[0] for k in dev}  # round(0.3 * 6)
        assert (test, dev) == split_test(scans, 0.3, seed)
    assert len({tuple(split_test(scans, 0.3, seed)[0]) for seed in range(8)}) > 1
    # at least one test subject, never all
    assert len(split_test(scans[:4], 0.01, 0)[0]) == 2 and split_test(scans[:4], 0.99, 0)[1]
