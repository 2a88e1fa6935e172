"""Statistics of a cross-site study: ANOVA + Tukey HSD across training sets, Wilcoxon for ablations.

Plain functions on plain numbers (:func:`anova_tukey`, :func:`wilcoxon_paired`) do the tests with
scipy.stats; :func:`study_stats` applies them to the per-scan table and returns one row per test.

* Training sets are compared per arm and test site (and over all test scans, ``scope = all``) by
  a one-way ANOVA of the per-scan metric grouped by training set, then Tukey's HSD for every pair,
  as Badea & Popa compared their training sets. Every model is tested on the same scans, so the
  groups are not independent; the ANOVA ignores that pairing (as the paper's does) and is
  therefore conservative.
* Each ablation arm is compared with the baseline by a Wilcoxon signed-rank test over the pairs
  (training set, test scan) both arms were evaluated on: the same scan, predicted by two models
  trained on the same data with one option changed.

A test that is undefined (too few values, no variance, all differences zero) gives NaN with a
``note`` saying why instead of a warning or an exception.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: Columns of the statistics table.
STATS_COLUMNS = ("test", "metric", "arm", "scope", "group_a", "group_b", "n", "mean_a", "mean_b", "statistic",
                 "pvalue", "ci_low", "ci_high", "note")
_NAN = float("nan")


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def anova_tukey(groups: Mapping[str, Sequence[float]]) -> tuple[dict, list[dict]]:
    """One-way ANOVA of ``groups`` (name -> values) and Tukey's HSD for every pair of them.

    Returns ``({"statistic", "pvalue", "n", "note"}, [{"group_a", "group_b", "mean_a", "mean_b",
    "statistic" (mean_a - mean_b), "pvalue", "ci_low", "ci_high"} ...])``. Non-finite values are
    dropped; empty groups are left out; NaN (with a note) when fewer than two groups remain, when
    there are no degrees of freedom within groups or no variance within them; the Tukey rows stay
    NaN (with a note) when a group has a single value (a test site with one scan).
    """
    data = {name: _clean(values) for name, values in groups.items()}
    data = {name: values for name, values in data.items() if values.size}
    names = list(data)
    n = int(sum(v.size for v in data.values()))
    anova = {"statistic": _NAN, "pvalue": _NAN, "n": n, "note": ""}
    pairs = [{"group_a": a, "group_b": b, "mean_a": float(data[a].mean()), "mean_b": float(data[b].mean()),
              "statistic": float(data[a].mean() - data[b].mean()), "pvalue": _NAN, "ci_low": _NAN, "ci_high": _NAN}
             for i, a in enumerate(names) for b in names[i + 1:]]
    if len(names) < 2:
        anova["note"] = "fewer than two groups with values"
        return anova, pairs
    if n <= len(names):
        anova["note"] = "no degrees of freedom within groups (one value per group)"
        return anova, pairs
    if all(np.ptp(v) == 0 for v in data.values()):
        anova["note"] = "no variance within groups"
        return anova, pairs
    arrays = [data[name] for name in names]
    result = stats.f_oneway(*arrays)
    anova.update(statistic=float(result.statistic), pvalue=float(result.pvalue))
    if min(v.size for v in arrays) < 2:  # scipy's Tukey HSD needs two values in every group
        anova["note"] = "Tukey HSD not run: a group has a single value"
        return anova, pairs
    tukey = stats.tukey_hsd(*arrays)
    ci = tukey.confidence_interval()
    index = {name: i for i, name in enumerate(names)}
    for row in pairs:
        i, j = index[row["group_a"]], index[row["group_b"]]
        row.update(statistic=float(tukey.statistic[i, j]), pvalue=float(tukey.pvalue[i, j]),
                   ci_low=float(ci.low[i, j]), ci_high=float(ci.high[i, j]))
    return anova, pairs


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """Wilcoxon signed-rank test of paired ``a`` and ``b`` (two-sided; pairs with a NaN dropped).

    Returns ``{"statistic", "pvalue", "n", "mean_a", "mean_b", "note"}``; NaN with a note when
    there are no pairs or every difference is zero (the test is then undefined).
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"statistic": _NAN, "pvalue": _NAN, "n": int(x.size), "mean_a": float(x.mean()) if x.size else _NAN,
           "mean_b": float(y.mean()) if y.size else _NAN, "note": ""}
    if not x.size:
        out["note"] = "no pairs"
    elif not np.any(x - y):
        out["note"] = "all differences are zero"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy's normal approximation on tiny samples
            result = stats.wilcoxon(x, y)
        out.update(statistic=float(result.statistic), pvalue=float(result.pvalue))
    return out


def _scopes(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(str(site), part) for site, part in frame.groupby("test_site", sort=True)] + [("all", frame)]


def study_stats(per_scan: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Every test of the module docstring on the per-scan table (columns ``arm``, ``ablation``,
    ``train_set``, ``test_site``, ``scan`` and ``metric``); one row per test, :data:`STATS_COLUMNS`."""
    rows: list[dict] = []
    for arm, arm_frame in per_scan.groupby("arm", sort=False):
        for scope, frame in _scopes(arm_frame):
            groups = {str(t): part[metric].to_numpy() for t, part in frame.groupby("train_set", sort=False)}
            anova, pairs = anova_tukey(groups)
            rows.append({"test": "anova", "metric": metric, "arm": arm, "scope": scope,
                         "group_a": ",".join(groups), **anova})
            rows += [{"test": "tukey_hsd", "metric": metric, "arm": arm, "scope": scope, "n": anova["n"],
                      "note": anova["note"], **pair} for pair in pairs]
    baseline = per_scan[per_scan["ablation"].isna() | (per_scan["ablation"] == "")]
    base_arm = baseline["arm"].iloc[0] if len(baseline) else None
    ablations = per_scan.loc[~per_scan.index.isin(baseline.index)]
    for arm, arm_frame in ablations.groupby("arm", sort=False):
        merged = baseline.merge(arm_frame, on=["train_set", "test_site", "scan"], suffixes=("_a", "_b"))
        for scope, frame in _scopes(merged):
            test = wilcoxon_paired(frame[f"{metric}_a"], frame[f"{metric}_b"])
            rows.append({"test": "wilcoxon", "metric": metric, "arm": f"{base_arm} vs {arm}", "scope": scope,
                         "group_a": base_arm, "group_b": arm, **test})
    return pd.DataFrame(rows, columns=list(STATS_COLUMNS))
