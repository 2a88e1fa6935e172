"""The tables and the HTML report of a cross-site study, all under ``<output_dir>/crosssite/``.

* ``scans.tsv``: one row per (model, test scan): arm, training set, test site, in-domain flag,
  the scan and every metric of :data:`bids_msseg.crosssite.evaluate.METRICS`;
* ``matrix.tsv``: mean Dice per model (arm x training set) and test site, like Badea & Popa's
  tables, plus the mean over all test scans and over the out-of-domain ones;
* ``consistency.tsv``: Dice between the predictions of two models of one arm on one test scan;
* ``stats.tsv``: ANOVA, Tukey HSD and Wilcoxon rows (:func:`bids_msseg.crosssite.stats.study_stats`);
* ``report.html``: self-contained page with the matrix as a heatmap (matplotlib), the consistency
  summary, the statistics and the experiments (jinja2 template ``crosssite.html.j2``).
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from bids_msseg.crosssite.plan import Experiment, StudyPlan
from bids_msseg.crosssite.protocol import best_operating_point
from bids_msseg.crosssite.stats import study_stats
from bids_msseg.io import write_text_atomic
from bids_msseg.model.bundle import read_card

LOGGER = logging.getLogger(__name__)

TEMPLATE = "crosssite.html.j2"
OUTPUT_NAMES = {"scans": "scans.tsv", "matrix": "matrix.tsv", "consistency": "consistency.tsv",
                "stats": "stats.tsv", "summary": "summary.tsv", "operating": "operating.tsv", "report": "report.html"}


def dice_matrix(per_scan: pd.DataFrame, plan: StudyPlan, metric: str = "dice") -> pd.DataFrame:
    """Mean ``metric`` per (arm, training set) row and test site column; rows by arm, then as planned.

    ``all`` is the mean over every test scan, ``out_of_domain`` over the scans of sites the model
    was not trained on (NaN when it was trained on every site).
    """
    keys = ["arm", "train_set"]
    arms = dict.fromkeys(e.arm.label for e in plan.experiments)
    train_sets = dict.fromkeys(e.train_set for e in plan.experiments)
    rows = pd.MultiIndex.from_tuples([(a, t) for a in arms for t in train_sets], names=keys)
    sites = list(plan.sites)
    if per_scan.empty:
        return pd.DataFrame(index=rows, columns=[*sites, "all", "out_of_domain"], dtype=float).reset_index()
    cells = per_scan.pivot_table(index=keys, columns="test_site", values=metric, aggfunc="mean")
    matrix = cells.reindex(index=rows, columns=sites)
    matrix["all"] = per_scan.groupby(keys)[metric].mean().reindex(rows)
    matrix["out_of_domain"] = per_scan[~per_scan["in_domain"].astype(bool)].groupby(keys)[metric].mean().reindex(rows)
    matrix.columns.name = None
    return matrix.reset_index()


def consistency_summary(consistency: pd.DataFrame) -> pd.DataFrame:
    """Mean and count of the consistency Dice per arm and pair of training sets."""
    if consistency.empty:
        return pd.DataFrame(columns=["arm", "train_set_a", "train_set_b", "mean_dice", "n_scans"])
    grouped = consistency.groupby(["arm", "train_set_a", "train_set_b"], sort=False)["dice"]
    return grouped.agg(mean_dice="mean", n_scans="count").reset_index()


def write_tsv(frame: pd.DataFrame, path: Path) -> Path:
    """A table as TSV (``n/a`` for missing values, 6 significant digits), written atomically."""
    return write_text_atomic(path, frame.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g"))


def heatmap(matrix: pd.DataFrame, sites: list[str], arm: str) -> str:
    """One arm's matrix as an annotated heatmap, a PNG ``data:`` URI."""
    part = matrix[matrix["arm"] == arm]
    values = part[sites].to_numpy(dtype=float)
    fig = Figure(figsize=(3.0 + 1.1 * len(sites), 1.2 + 0.45 * len(part)), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(sites)), sites)
    ax.set_yticks(range(len(part)), part["train_set"])
    ax.set_xlabel("test site")
    ax.set_ylabel("training set")
    ax.set_title(f"mean Dice, {arm}")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def experiments_summary(out: Path, experiments: Sequence[Experiment]) -> pd.DataFrame:
    """One row per experiment: model id, validation Dice, threshold, epochs and best epoch (bundle cards)."""
    rows = []
    for e in experiments:
        card = read_card(Path(e.model) if e.model else out / "models" / e.id)
        rows.append({"experiment": e.id, "arm": e.arm.label, "train_set": e.train_set, "n_train": len(e.train),
                     "n_val": len(e.val), "model_id": card.model_id, "val_dice": card.metrics.get("val_dice"),
                     "threshold": card.threshold, "epochs": card.training.get("recipe", {}).get("epochs"),
                     "best_epoch": card.training.get("best_epoch")})
    return pd.DataFrame(rows)


def _environment() -> jinja2.Environment:
    templates = resources.files("bids_msseg.reports").joinpath("templates")
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: templates.joinpath(name).read_text(encoding="utf-8")),
        autoescape=True, undefined=jinja2.StrictUndefined)


def _html_table(frame: pd.DataFrame) -> Markup:
    return Markup(frame.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.4g}", border=0))


def write_outputs(out: Path, plan: StudyPlan, per_scan: pd.DataFrame, consistency: pd.DataFrame,
                  plan_json: Mapping[str, Any], summary: pd.DataFrame | None = None,
                  operating: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write every table and the report (module docstring); return their paths by name.

    ``summary`` and ``operating`` are the tables of :mod:`bids_msseg.crosssite.protocol` (the latter
    only under ``--holdout site``; not written when empty or None)."""
    summary = pd.DataFrame() if summary is None else summary
    operating = pd.DataFrame() if operating is None else operating
    paths = {name: out / filename for name, filename in OUTPUT_NAMES.items()}
    matrix = dice_matrix(per_scan, plan)
    stats = study_stats(per_scan) if not per_scan.empty else study_stats(pd.DataFrame(
        columns=["arm", "ablation", "train_set", "test_site", "scan", "dice"]))
    write_tsv(per_scan, paths["scans"])
    write_tsv(matrix, paths["matrix"])
    write_tsv(consistency, paths["consistency"])
    write_tsv(stats, paths["stats"])
    for name, frame in (("summary", summary), ("operating", operating)):
        if not frame.empty:
            write_tsv(frame, paths[name])
    sites = list(plan.sites)
    arms = list(dict.fromkeys(e.arm.label for e in plan.experiments))
    html = _environment().get_template(TEMPLATE).render(
        sites=[(s, len(plan.sites[s]), len(plan.test[s])) for s in sites],
        site_rule=plan_json.get("site_rule", {}),
        heatmaps=[(arm, heatmap(matrix, sites, arm)) for arm in arms],
        matrix=_html_table(matrix),
        consistency=_html_table(consistency_summary(consistency)),
        stats=_html_table(stats),
        experiments=_html_table(experiments_summary(out, plan.experiments)),
        summary=_html_table(summary) if not summary.empty else None,
        best=_html_table(best_operating_point(operating)) if not operating.empty else None,
        holdout=plan.holdout,
        n_test=len(plan.test_scans),
        files=OUTPUT_NAMES,
    )
    write_text_atomic(paths["report"], html)
    LOGGER.info("cross-site study: %d model(s) x %d test scan(s); matrix in %s, report %s", len(plan.experiments),
                len(plan.test_scans), paths["matrix"], paths["report"])
    return paths
