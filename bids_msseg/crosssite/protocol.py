"""The protocol tables of a cross-site study: per site and pooled, and the operating-point grid.

* :func:`summary_table` (``summary.tsv``): for each model group (the leave-one-site-out models of
  an arm taken together, each scan scored by the model that did not train on its site; or one
  given / single training set), per test site and ``pooled`` over every test scan: mean Dice,
  mean lesion F1, lesion TPR by expert lesion size (pooled counts, :data:`~bids_msseg.metrics.SIZE_CLASSES`),
  false lesions and false volume per scan (mean and maximum); ``site_mean`` averages the sites'
  means, so a site with many scans does not dominate.
* :func:`operating_points` (``operating.tsv``): the same groups rescored from the stored probability
  maps at every (threshold, seed threshold) of a grid, and its best points on pooled leave-site-out
  figures, never on one site (:func:`best_operating_point`: by lesion F1, and by the mean of Dice and
  lesion F1, among the points that leave at most :data:`MAX_FALSE_LESIONS` false lesions on any scan).
  Where the study has both thin- and thick-slice scans (:func:`~bids_msseg.lesions.is_thick_slice`), the
  grid also pairs each seed threshold of the thin-slice scans with every other for the thick-slice ones
  (``seed_threshold_thick``; equal to ``seed_threshold`` where both are treated alike): the network's
  probability peaks on 2D acquisitions lie lower, so one seed for all can be too strict for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.crosssite.evaluate import scan_metrics
from bids_msseg.crosssite.plan import Experiment, StudyPlan
from bids_msseg.lesions import LesionDefinition, binarize
from bids_msseg.metrics import SIZE_CLASSES

LOGGER = logging.getLogger(__name__)

#: The grid of :func:`operating_points`: thresholds, and seed thresholds (0: no hysteresis). The seeds are
#: dense near 1 because that is where the false-lesion bound is decided: at 0.9 the network's normal
#: FLAIR-bright anatomy seeds up to 13 false lesions on a scan, at 0.97 at most 4 (version 3's study).
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SEED_THRESHOLDS = (0.0, 0.9, 0.93, 0.95, 0.97, 0.99)
LEAVE_SITE_OUT = "leave-one-site-out"


def model_group(experiment: Experiment, plan: StudyPlan) -> str:
    """The group an experiment's rows are summarized in: ``leave-one-site-out`` for the models of an
    arm trained on all sites but one (under ``holdout="site"``), else its training set."""
    if plan.holdout == "site" and not experiment.model and len(experiment.train_sites) == len(plan.sites) - 1:
        return LEAVE_SITE_OUT
    return experiment.train_set


def _summarize(part: pd.DataFrame) -> dict[str, float]:
    """One summary row of a set of per-scan rows (module docstring)."""
    row: dict[str, float] = {"n_scans": len(part), "dice": part["dice"].mean(), "lesion_f1": part["lesion_f1"].mean()}
    for size in SIZE_CLASSES:
        n_true = part[f"n_true_{size}"].sum()
        row[f"ltpr_{size}"] = part[f"detected_{size}"].sum() / n_true if n_true else np.nan
    row.update(false_lesions_mean=part["n_false_lesions"].mean(), false_lesions_max=part["n_false_lesions"].max(),
               false_ml_mean=part["false_volume_ml"].mean(), false_ml_max=part["false_volume_ml"].max())
    return row


def summary_table(per_scan: pd.DataFrame, groups: Mapping[str, str], keys: Sequence[str] = ("arm",)) -> pd.DataFrame:
    """Per (``keys``, model group) rows for each test site, ``pooled`` and ``site_mean`` (module docstring).

    ``groups`` maps each row's ``train_set`` to its model group (:func:`model_group`).
    """
    if per_scan.empty:
        return pd.DataFrame()
    frame = per_scan.assign(model=per_scan["train_set"].map(groups))
    rows = []
    for key, part in frame.groupby([*keys, "model"], sort=False):
        labels = dict(zip([*keys, "model"], key if isinstance(key, tuple) else (key,), strict=True))
        sites = {site: _summarize(rows_site) for site, rows_site in part.groupby("test_site", sort=True)}
        rows += [{**labels, "test_site": site, **values} for site, values in sites.items()]
        rows.append({**labels, "test_site": "pooled", **_summarize(part)})
        means = pd.DataFrame(sites.values()).mean(numeric_only=True).to_dict()
        rows.append({**labels, "test_site": "site_mean", **means, "n_scans": len(part)})
    return pd.DataFrame(rows)


def operating_points(
    plan: StudyPlan,
    truth_of: Callable[[str], tuple[np.ndarray, float]],
    probability_path: Callable[[Experiment, str], Path],
    definition: LesionDefinition,
    thresholds: Sequence[float] = THRESHOLDS,
    seeds: Sequence[float] = SEED_THRESHOLDS,
    thick_of: Callable[[str], bool] | None = None,
) -> pd.DataFrame:
    """Every model group's summary (pooled and per site) at each (threshold, seed, thick-slice seed) of the grid.

    ``truth_of(key)`` gives a test scan's expert mask and voxel volume; ``probability_path`` the
    stored probability map of an experiment on a scan (scans without one are skipped); ``thick_of(key)``
    whether the scan is a thick-slice one (without it, none is). The scans are binarized once per
    (threshold, seed); a thick-slice seed only recombines those per-scan rows.
    """
    rows: list[dict] = []
    tested = {experiment: set(plan.tested(experiment)) for experiment in plan.experiments}
    for key in plan.test_scans:
        truth, voxel_volume = truth_of(key)
        for experiment in plan.experiments:
            path = probability_path(experiment, key)
            if key not in tested[experiment] or not path.is_file():
                continue
            probability = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            for threshold in thresholds:
                for seed in seeds:
                    if seed and seed <= threshold:
                        continue
                    mask, _, _ = binarize(probability, threshold, voxel_volume, definition, seed)
                    rows.append({"arm": experiment.arm.label, "model": model_group(experiment, plan),
                                 "threshold": threshold, "seed_threshold": seed,
                                 "test_site": plan.site_of[key], "scan": key,
                                 **scan_metrics(mask, truth, voxel_volume, definition)})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    frame["thick"] = frame["scan"].map(thick_of) if thick_of is not None else False
    out = []
    for (arm, model, threshold), part in frame.groupby(["arm", "model", "threshold"], sort=False):
        grid = part["seed_threshold"].unique()
        both = part["thick"].any() and not part["thick"].all()
        for seed in grid:
            for seed_thick in grid if both else (seed,):
                chosen = part[part["seed_threshold"].to_numpy() == np.where(part["thick"], seed_thick, seed)]
                labels = {"arm": arm, "model": model, "threshold": threshold, "seed_threshold": seed,
                          "seed_threshold_thick": seed_thick}
                out += [{**labels, "test_site": site, **_summarize(p)}
                        for site, p in chosen.groupby("test_site", sort=True)]
                out.append({**labels, "test_site": "pooled", **_summarize(chosen)})
    return pd.DataFrame(out)


#: Criteria of :func:`best_operating_point`: the protocol's lesion F1, and the mean of Dice and lesion F1
#: (the default model's selection rule since version 2: F1 alone lets the masks' Dice fall).
CRITERIA = {"lesion_f1": ("lesion_f1",), "mean_dice_f1": ("dice", "lesion_f1")}


#: Most false lesions a usable operating point leaves on any one test scan (issue 24's bound): a point that
#: floods one scan with false lesions is not chosen, however high its pooled lesion F1.
MAX_FALSE_LESIONS = 5


def best_operating_point(table: pd.DataFrame, max_false_lesions: float | None = MAX_FALSE_LESIONS) -> pd.DataFrame:
    """Per criterion of :data:`CRITERIA` and (arm, model group), the pooled row that maximizes it
    (the mean of its metrics; ties: the higher Dice) among the points that leave at most
    ``max_false_lesions`` false lesions on every scan (all points of a group when none does, or
    with None); a ``criterion`` column names it, ``within_bound`` says whether the point keeps the bound."""
    if table.empty:
        return table
    pooled = table[table["test_site"] == "pooled"]
    within = pooled["false_lesions_max"] <= (np.inf if max_false_lesions is None else max_false_lesions)
    pooled = pooled.assign(within_bound=within)
    rows = []
    for criterion, metrics in CRITERIA.items():
        scored = pooled.assign(criterion=criterion, score=pooled[list(metrics)].mean(axis=1))
        ranked = scored.sort_values(["within_bound", "score", "dice"], ascending=False)
        rows.append(ranked.groupby(["arm", "model"], sort=False).head(1))
    out = pd.concat(rows, ignore_index=True)
    return out[["criterion", *[c for c in out.columns if c not in ("criterion", "score")]]]
