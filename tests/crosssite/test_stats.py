"""The cross-site statistics (bids_msseg/crosssite/stats.py) against known values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_msseg.crosssite.stats import anova_tukey, study_stats, wilcoxon_paired

# ----------------------------------------------------------------------------------- stats


def test_anova_tukey_known_values() -> None:
    groups = {"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0], "c": [5.0, 6.0, 7.0, float("nan")]}
    anova, pairs = anova_tukey(groups)
    # by hand: group means 2, 3, 6; SS between 26 (2 dof), SS within 6 (6 dof): F = 13
    assert anova["statistic"] == pytest.approx(13.0) and anova["n"] == 9 and anova["note"] == ""
    assert anova["pvalue"] == pytest.approx(stats.f.sf(13.0, 2, 6))
    clean = [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]
    tukey = stats.tukey_hsd(*clean)
    ci = tukey.confidence_interval()
    assert [(p["group_a"], p["group_b"]) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    for p, (i, j) in zip(pairs, [(0, 1), (0, 2), (1, 2)], strict=True):
        assert p["statistic"] == pytest.approx(p["mean_a"] - p["mean_b"]) == pytest.approx(tukey.statistic[i, j])
        assert p["pvalue"] == pytest.approx(tukey.pvalue[i, j])
        assert (p["ci_low"], p["ci_high"]) == (pytest.approx(ci.low[i, j]), pytest.approx(ci.high[i, j]))
    assert pairs[1]["pvalue"] < 0.05 < pairs[0]["pvalue"]  # a vs c differ, a vs b do not


def test_anova_tukey_undefined_cases() -> None:
    for groups, note in (({"a": [1.0, 2.0]}, "fewer than two"), ({"a": [1.0], "b": [2.0]}, "degrees of freedom"),
                         ({"a": [1.0, 1.0], "b": [2.0, 2.0]}, "no variance")):
        anova, pairs = anova_tukey(groups)
        assert np.isnan(anova["pvalue"]) and note in anova["note"]
        assert all(np.isnan(p["pvalue"]) for p in pairs)
    # a test site with one scan: the ANOVA runs, Tukey's HSD (two values per group) does not
    anova, pairs = anova_tukey({"a": [0.5], "b": [0.2, 0.3, 0.25]})
    assert anova["pvalue"] == pytest.approx(stats.f_oneway([0.5], [0.2, 0.3, 0.25]).pvalue)
    assert "single value" in anova["note"] and all(np.isnan(p["pvalue"]) for p in pairs)


def test_wilcoxon_known_values() -> None:
    a = [0.50, 0.60, 0.70, 0.80, 0.90]
    b = [0.55, 0.68, 0.71, 0.90, 0.93]  # every difference positive: exact two-sided p = 2 / 2**5
    result = wilcoxon_paired(a, b)
    assert result["statistic"] == 0.0 and result["pvalue"] == pytest.approx(0.0625) and result["n"] == 5
    x, y = [0.1, 0.5, 0.3, 0.9, 0.4, 0.2, float("nan")], [0.2, 0.4, 0.35, 0.7, 0.45, 0.1, 0.3]
    reference = stats.wilcoxon(x[:6], y[:6])
    assert wilcoxon_paired(x, y)["pvalue"] == pytest.approx(reference.pvalue) and wilcoxon_paired(x, y)["n"] == 6
    assert "zero" in wilcoxon_paired([1.0, 2.0], [1.0, 2.0])["note"]
    assert wilcoxon_paired([], [])["note"] == "no pairs"


def test_study_stats_rows() -> None:
    rng = np.random.default_rng(0)
    rows = [{"arm": arm, "ablation": ablation, "train_set": t, "test_site": site, "scan": f"{site}{k}",
             "dice": rng.uniform()}
            for arm, ablation in (("U-quantile", ""), ("U-linear", "normalization"))
            for t in ("A", "B", "A+B") for site in ("A", "B") for k in range(4)]
    table = study_stats(pd.DataFrame(rows))
    assert len(table[table.test == "anova"]) == 2 * 3  # arms x (A, B, all)
    assert len(table[table.test == "tukey_hsd"]) == 2 * 3 * 3
    wil = table[table.test == "wilcoxon"]
    assert list(wil.scope) == ["A", "B", "all"] and set(wil.n) == {12, 24}
    frame = pd.DataFrame(rows)
    base = frame[frame.arm == "U-quantile"].dice.to_numpy()
    abl = frame[frame.arm == "U-linear"].dice.to_numpy()
    assert wil[wil.scope == "all"].pvalue.iloc[0] == pytest.approx(stats.wilcoxon(base, abl).pvalue)
