"""The group-level HTML report: the cohort at a glance, QC pictures of every run, the evaluation.

``group_report.html`` at the output root shows the run counts (ok / failed / missing), the
distribution of total lesion volume, box plots per site (lesion volume, lesion count, brain
volume), the lesion location classes (a table per class, lesion counts and volumes per class, the
McDonald regions involved per run) and the cohort lesion-frequency map over the template
(:mod:`bids_msseg.frequency`), one small QC mosaic per run (three axial slices of the FLAIR with
the predicted lesions in colour and, where one exists, the expert mask's outline) linking to the
run's participant report, the table of runs, and, when expert masks exist, the evaluation (summary
over the cohort and per site, per-scan table, predicted against expert volume).

Pictures are PNG files under ``group_figures/`` (``group_figures/qc/`` for the mosaics), linked
with relative paths, so the report stays small for large cohorts and the folder can be moved as a
whole; ``group_*`` is in the derivatives' ``.bidsignore``. The page has no script and loads nothing
from outside.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bids_msseg.anatomy.template import mni152_template
from bids_msseg.derivatives import COHORT_TSV, EVALUATION_SUMMARY_TSV, EVALUATION_TSV, derivative_paths
from bids_msseg.frequency import FREQUENCY_MAP, CohortFrequency
from bids_msseg.io import atomic_path, load_3d, write_text_atomic
from bids_msseg.lesions import DIS_CLASSES, LOCATION_CLASSES, LOCATION_COLOURS
from bids_msseg.reports.common import EXPERT_COLOUR, LABELS, table_html
from bids_msseg.reports.participant import (
    LESION_RGBA,
    _bounding_box,
    _environment,
    _fmt,
    _lesion_overlay,
    _pick_slices,
    _ras_zooms,
    _tile,
    _to_ras,
    _version,
    draw_expert_outline,
)
from bids_msseg.sites import SITE_RULE

LOGGER = logging.getLogger(__name__)

TEMPLATE = "group.html.j2"
REPORT_NAME = "group_report.html"
FIGURES_DIR = "group_figures"
DPI = 80
#: Axial slices per QC mosaic, and its width in inches (at DPI: 512 px, sharp at a card's 300-400 px).
QC_SLICES = 3
QC_WIDTH = 6.4
STATUS_ORDER = ("ok", "failed", "missing")
#: (column, label) of the per-site box plots.
SITE_PLOTS = (("total_lesion_volume_ml", "Total lesion volume (mL)"), ("lesion_count", "Lesion count"),
              ("brain_volume_ml", "Brain volume (mL)"))
#: (column, label) of the evaluation summary table; each metric shows mean ± SD.
SUMMARY_METRICS = (("dice", "Dice"), ("iou", "IoU"), ("ppv", "PPV"), ("tpr", "TPR"), ("avd", "AVD"),
                   ("abs_volume_difference_ml", "|ΔV| (mL)"), ("ltpr", "LTPR"), ("lfpr", "LFPR"),
                   ("lesion_f1", "Lesion F1"), ("msseg_lesion_sensitivity", "MSSEG LTPR"),
                   ("msseg_lesion_ppv", "MSSEG LPPV"), ("msseg_lesion_f1", "MSSEG F1"))
#: (column, label) of the per-scan evaluation table.
SCAN_COLUMNS = (("dice", "Dice"), ("iou", "IoU"), ("ppv", "PPV"), ("tpr", "TPR"),
                ("pred_volume_ml", "Predicted (mL)"), ("true_volume_ml", "Expert (mL)"),
                ("abs_volume_difference_ml", "|ΔV| (mL)"), ("n_pred_lesions", "Predicted lesions"),
                ("n_true_lesions", "Expert lesions"), ("ltpr", "LTPR"), ("lfpr", "LFPR"), ("lesion_f1", "Lesion F1"),
                ("msseg_lesion_sensitivity", "MSSEG LTPR"), ("msseg_lesion_ppv", "MSSEG LPPV"),
                ("msseg_lesion_f1", "MSSEG F1"))


# ------------------------------------------------------------------------------------ figures


def _save_png(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor=fig.get_facecolor())
    return path


def qc_mosaic(flair_path: Path, mask_path: Path, brain_path: Path | None, target: Path,
              expert_path: Path | None = None) -> Path:
    """A small PNG: QC_SLICES axial slices of the FLAIR, predicted lesions in colour, expert outline.

    Slices are spread over those holding predicted or expert lesions (over the brain when there
    are none), cropped to the brain, shown in RAS+ in the neurological convention (L on the left).
    """
    flair, img = load_3d(flair_path)
    affine = img.affine
    flair = _to_ras(flair.astype(np.float32), affine)
    lesions = _to_ras(load_3d(mask_path)[0] > 0, affine)
    brain = _to_ras(load_3d(brain_path)[0] > 0, affine) if brain_path is not None else flair > 0
    expert = _to_ras(load_3d(expert_path)[0] > 0, affine) if expert_path is not None else None
    reference = brain if brain.any() else flair > 0
    values = flair[reference] if reference.any() else flair.ravel()
    low, high = np.percentile(values, (0.5, 99.5)) if values.size else (0.0, 1.0)
    anything = lesions | expert if expert is not None else lesions
    slices = _pick_slices(anything if anything.any() else reference, QC_SLICES)
    box = _bounding_box(reference)
    zooms = _ras_zooms(img)
    background = _tile(flair, slices, box, QC_SLICES)
    aspect = zooms[1] / zooms[0]
    width = QC_WIDTH
    fig = Figure(figsize=(width, width * background.shape[0] * aspect / background.shape[1]), facecolor="black")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(background, cmap="gray", vmin=float(low), vmax=float(max(high, low + 1.0)), aspect=aspect,
              interpolation="nearest")
    ax.imshow(_lesion_overlay(_tile(lesions, slices, box, QC_SLICES)), aspect=aspect, interpolation="nearest")
    if expert is not None:
        outline = _tile(expert.astype(np.float32), slices, box, QC_SLICES)
        if outline.max() > 0:
            draw_expert_outline(ax, outline, linewidth=1.3)
    ax.set_xlim(-0.5, background.shape[1] - 0.5)
    ax.set_ylim(background.shape[0] - 0.5, -0.5)
    return _save_png(fig, target)


def _box_by_site(ax: Any, frame: pd.DataFrame, column: str, label: str) -> None:
    """Box plot of ``column`` per site with the individual runs as jittered dots."""
    sites = sorted(frame["site"].fillna("n/a").astype(str).unique())
    data = [pd.to_numeric(frame.loc[frame["site"].fillna("n/a").astype(str) == s, column],
                          errors="coerce").dropna().to_numpy() for s in sites]
    ax.boxplot(data, tick_labels=sites, showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.plot(i + rng.uniform(-0.12, 0.12, values.size), values, "o", color="#c0392b", alpha=0.7, markersize=4)
    ax.set_title(label, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)


def cohort_figures(ok: pd.DataFrame, figures: Path) -> dict[str, Path]:
    """Lesion-volume distribution and per-site box plots of the completed runs."""
    out: dict[str, Path] = {}
    volumes = pd.to_numeric(ok["total_lesion_volume_ml"], errors="coerce").dropna()
    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.add_subplot()
    bins = max(5, min(30, int(math.sqrt(max(len(volumes), 1))) * 2))
    ax.hist(volumes, bins=bins, color="#5b8def", edgecolor="white")
    ax.plot(volumes, np.zeros(len(volumes)), "|", color="black", markersize=14)
    ax.set_xlabel("Total lesion volume (mL)")
    ax.set_ylabel("Runs")
    fig.tight_layout()
    out["volume_distribution"] = _save_png(fig, figures / "lesion_volume_distribution.png")

    fig = Figure(figsize=(11, 3.6))
    for i, (column, label) in enumerate(SITE_PLOTS, start=1):
        _box_by_site(fig.add_subplot(1, len(SITE_PLOTS), i), ok, column, label)
    fig.tight_layout()
    out["site_boxplots"] = _save_png(fig, figures / "site_boxplots.png")
    return out


def evaluation_figure(scored: pd.DataFrame, figures: Path) -> Path:
    """Predicted against expert lesion volume (identity line), and Dice per site."""
    fig = Figure(figsize=(10, 3.8))
    ax = fig.add_subplot(1, 2, 1)
    sites = scored["site"].fillna("n/a").astype(str)
    for site in sorted(sites.unique()):
        part = scored[sites == site]
        ax.plot(part["true_volume_ml"], part["pred_volume_ml"], "o", label=site, alpha=0.8)
    top = float(np.nanmax(np.r_[scored["true_volume_ml"], scored["pred_volume_ml"], 1e-3])) * 1.1
    ax.plot([0, top], [0, top], "--", color="grey", linewidth=1)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("Expert lesion volume (mL)")
    ax.set_ylabel("Predicted lesion volume (mL)")
    ax.legend(fontsize=8)
    _box_by_site(fig.add_subplot(1, 2, 2), scored, "dice", "Dice per site")
    fig.tight_layout()
    return _save_png(fig, figures / "evaluation.png")


#: Columns of the group_longitudinal.tsv shown in the report's longitudinal section (key columns first).
LONGITUDINAL_REPORT_COLUMNS = ("participant_id", "followup_session", "baseline_session", "days_between", "status",
                               "new_count", "enlarging_count", "shrinking_count", "disappearing_count",
                               "not_seen_count", "baseline_volume_ml", "followup_volume_ml", "volume_change_ml",
                               "paired_volume_change_ml")
#: Headers of the longitudinal columns in the group report.
LONGITUDINAL_LABELS = {"participant_id": "Participant", "followup_session": "Follow-up",
                       "baseline_session": "Baseline", "new_count": "New", "enlarging_count": "Enlarging",
                       "shrinking_count": "Shrinking", "disappearing_count": "Disappearing",
                       "not_seen_count": "Not seen", "days_between": "Days",
                       "baseline_volume_ml": "Baseline (mL)", "followup_volume_ml": "Follow-up (mL)",
                       "volume_change_ml": "Change (mL)", "paired_volume_change_ml": "Paired change (mL)"}
#: Short headers of the location classes in the table of runs (the location label TSV's abbreviations).
CLASS_ABBREVIATIONS = {"periventricular": "PV", "juxtacortical": "JC", "infratentorial": "IT", "subcortical": "SC"}


def longitudinal_figure(longitudinal: pd.DataFrame, figures: Path) -> Path:
    """New and enlarging lesions per follow-up, and the total lesion volume change against the time between visits."""
    ok = longitudinal[longitudinal["status"] == "ok"]
    labels = [f"{r['participant_id']} {r['followup_session']}" for _, r in ok.iterrows()]
    fig = Figure(figsize=(10, 3.8))
    ax = fig.add_subplot(1, 2, 1)
    x = np.arange(len(ok))
    ax.bar(x - 0.2, ok["new_count"].astype(float), width=0.4, label="new")
    ax.bar(x + 0.2, ok["enlarging_count"].astype(float), width=0.4, label="enlarging")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("Lesions")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    days = pd.to_numeric(ok["days_between"], errors="coerce")
    known = days.notna()
    xs = days.where(known, pd.Series(np.arange(len(ok)), index=ok.index))
    ax.plot(xs, ok["volume_change_ml"].astype(float), "o")
    ax.axhline(0, color="grey", linewidth=1, linestyle="--")
    ax.set_xlabel("Days between sessions" if known.all() and len(ok) else "Follow-up (days unknown)")
    ax.set_ylabel("Lesion volume change (mL, the runs' own)")
    fig.tight_layout()
    return _save_png(fig, figures / "longitudinal.png")


#: Template z levels (mm, MNI) of the lesion-frequency figure: cerebellum and pons to the centrum semiovale.
FREQUENCY_Z_MM = (-30, -15, 0, 10, 20, 30, 40, 50)


def located_runs(ok: pd.DataFrame) -> pd.DataFrame:
    """The completed runs whose lesions have location classes (``location_status`` ok)."""
    if "location_status" not in ok.columns:
        return ok.iloc[0:0]
    return ok[ok["location_status"] == "ok"]


def location_figure(located: pd.DataFrame, figures: Path) -> Path:
    """Per location class: lesions per run and lesion volume per run (box and dots), and the runs by
    number of McDonald regions involved."""
    fig = Figure(figsize=(12, 3.6))
    rng = np.random.default_rng(0)
    names = list(LOCATION_CLASSES)
    for i, (what, label) in enumerate((("count", "Lesions per run"), ("volume_ml", "Lesion volume per run (mL)")),
                                      start=1):
        ax = fig.add_subplot(1, 3, i)
        data = [pd.to_numeric(located[f"{name}_{what}"], errors="coerce").dropna().to_numpy() for name in names]
        boxes = ax.boxplot(data, tick_labels=names, showfliers=False, patch_artist=True)
        for patch, name in zip(boxes["boxes"], names, strict=True):
            patch.set(facecolor=LOCATION_COLOURS[name], alpha=0.35)
        for j, (values, name) in enumerate(zip(data, names, strict=True), start=1):
            ax.plot(j + rng.uniform(-0.12, 0.12, values.size), values, "o", color=LOCATION_COLOURS[name],
                    markersize=4)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        if what == "count":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax = fig.add_subplot(1, 3, 3)
    regions = pd.to_numeric(located["mcdonald_regions"], errors="coerce").dropna().astype(int)
    counts = [int((regions == k).sum()) for k in range(len(DIS_CLASSES) + 1)]
    ax.bar(range(len(counts)), counts, color="#7f7f7f")
    ax.set_xticks(range(len(counts)))
    ax.set_xlabel("McDonald regions involved (imaging count)")
    ax.set_ylabel("Runs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Regions involved per run", fontsize=10)
    fig.tight_layout()
    return _save_png(fig, figures / "lesion_location.png")


def frequency_figure(result: CohortFrequency, figures: Path) -> Path:
    """Axial slices of the lesion-frequency map over the template (:data:`FREQUENCY_Z_MM`), with its scale."""
    template = mni152_template()
    if result.frequency.shape != template.image.shape or not np.allclose(result.affine, template.affine, atol=1e-4):
        raise ValueError("the lesion-frequency map is not on the template's grid")
    affine = template.affine
    inverse = np.linalg.inv(affine)
    slices = sorted({int(round((inverse @ [0.0, 0.0, z, 1.0])[2])) for z in FREQUENCY_Z_MM})
    slices = [k for k in slices if 0 <= k < template.image.shape[2]]
    anatomy = _to_ras(template.image, affine)
    frequency = _to_ras(result.frequency, affine)
    box = _bounding_box(anatomy > 0)
    columns = len(slices) // 2 if len(slices) > 4 else len(slices)
    background = _tile(anatomy, slices, box, columns)
    overlay = np.ma.masked_less_equal(_tile(frequency, slices, box, columns), 0.0)
    top = max(float(result.frequency.max()), 1.0 / max(result.n_runs, 1))
    fig = Figure(figsize=(10, 10 * background.shape[0] / background.shape[1] + 0.6), facecolor="black")
    ax = fig.add_axes((0, 0.08, 1, 0.92))
    ax.set_axis_off()
    ax.imshow(background, cmap="gray", interpolation="nearest")
    shown = ax.imshow(overlay, cmap="hot", vmin=0.0, vmax=top, interpolation="nearest", alpha=0.85)
    tile_h, tile_w = background.shape[0] // math.ceil(len(slices) / columns), background.shape[1] // columns
    for i, k in enumerate(slices):
        r, c = divmod(i, columns)
        z = (affine @ [0.0, 0.0, k, 1.0])[2]
        ax.text(c * tile_w + 3, r * tile_h + 3, f"z={z:.0f} mm", color="yellow", fontsize=8, va="top")
    ax.text(3, tile_h - 3, "L", color="white", fontsize=9, va="bottom")
    bar = fig.colorbar(shown, cax=fig.add_axes((0.3, 0.025, 0.4, 0.018)), orientation="horizontal")
    bar.ax.set_title(f"share of the {result.n_runs} run(s) with a lesion here", color="white", fontsize=9)
    bar.ax.tick_params(colors="white")
    return _save_png(fig, figures / "lesion_frequency.png")


def _location_rows(located: pd.DataFrame) -> list[dict[str, Any]]:
    """Per class: runs with such lesions, lesions in all, median count and volume per run."""
    rows = []
    for name in LOCATION_CLASSES:
        counts = pd.to_numeric(located[f"{name}_count"], errors="coerce").dropna()
        volumes = pd.to_numeric(located[f"{name}_volume_ml"], errors="coerce").dropna()
        rows.append({"name": name, "colour": LOCATION_COLOURS[name], "runs": int((counts > 0).sum()),
                     "lesions": int(counts.sum()), "median_count": _cell(float(counts.median())) if len(counts) else
                     "n/a", "median_volume": _cell(float(volumes.median())) if len(volumes) else "n/a"})
    return rows


# ------------------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and not math.isnan(value):
        return f"{float(value):.3f}"
    return _fmt(value)


def _scan_rows(evaluation: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
    columns = [(c, label) for c, label in SCAN_COLUMNS if c in evaluation.columns]
    rows = []
    for _, row in evaluation.iterrows():
        rows.append({"name": _run_label(row), "site": _fmt(row.get("site")), "status": row["evaluation_status"],
                     "values": [_cell(row.get(c)) for c, _ in columns]})
    return [label for _, label in columns], rows


def _summary_rows(summary: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
    metrics = [(c, label) for c, label in SUMMARY_METRICS if f"{c}_mean" in summary.columns]
    header = [label for _, label in metrics] + ["Pearson r", "Spearman ρ", "Hybrid score"]  # metrics: mean ± SD
    rows = []
    for _, row in summary.iterrows():
        values = [_cell(row[f"{c}_mean"]) + (f" ± {_cell(row[f'{c}_sd'])}" if pd.notna(row[f"{c}_sd"]) else "")
                  for c, _ in metrics]
        values += [_cell(row["volume_pearson_r"]), _cell(row["volume_spearman_rho"]), _cell(row["hybrid_score"])]
        rows.append({"group": row["group"], "n": int(row["n_scans"]), "values": values})
    return header, rows


def _integer(value: Any) -> Any:
    """A count read back from a TSV (a float, NaN when n/a) as an int; other values as they are."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def _run_label(row: Mapping[str, Any]) -> str:
    return Path(str(row["source"])).name.split(".")[0]


# ------------------------------------------------------------------------------------- report


def _qc_cards(cohort: pd.DataFrame, output_dir: Path, bids_dir: Path, figures: Path,
              experts: Mapping[str, Path]) -> list[dict[str, Any]]:
    cards = []
    for _, row in cohort[cohort["status"] == "ok"].iterrows():
        paths = derivative_paths(output_dir, row["source"])
        name = _run_label(row)
        target = figures / "qc" / f"{name}_qc.png"
        try:
            qc_mosaic(Path(bids_dir) / row["source"], paths["mask"],
                      paths["brain"] if paths["brain"].is_file() else None, target, experts.get(row["source"]))
            picture = target.relative_to(output_dir).as_posix()
        except (OSError, ValueError) as err:
            LOGGER.warning("%s: no QC picture (%s)", row["source"], err)
            picture = None
        report = row.get("report")
        cards.append({"name": name, "site": _fmt(row["site"]), "picture": picture,
                      "report": report if isinstance(report, str) else None,
                      "volume": _cell(row["total_lesion_volume_ml"]), "count": _fmt(row["lesion_count"]),
                      "expert": row["source"] in experts})
    return cards


def render_group_report(output_dir: Path, bids_dir: Path, cohort: pd.DataFrame,
                        evaluation: pd.DataFrame | None = None, summary: pd.DataFrame | None = None,
                        longitudinal: pd.DataFrame | None = None, frequency: CohortFrequency | None = None) -> Path:
    """Write ``group_report.html`` and its pictures under ``group_figures/``; return the report path.

    ``cohort`` is :func:`bids_msseg.cohort.build_cohort_table`'s table; ``evaluation`` the
    per-scan rows of :func:`bids_msseg.evaluation.evaluate_cohort` (may be empty or None) and
    ``summary`` :func:`bids_msseg.evaluation.summarize_cohort`'s rows (None without evaluation);
    ``longitudinal`` the subjects' longitudinal summaries (:mod:`bids_msseg.longitudinal.outputs`);
    ``frequency`` the cohort lesion-frequency map (:func:`bids_msseg.frequency.cohort_frequency`).
    """
    output_dir = Path(output_dir)
    figures = output_dir / FIGURES_DIR
    evaluation = evaluation if evaluation is not None else pd.DataFrame()
    ok = cohort[cohort["status"] == "ok"]
    scored = (evaluation[evaluation["evaluation_status"] == "ok"] if len(evaluation) else evaluation)
    experts = ({r["source"]: Path(bids_dir) / r["expert_mask"] for _, r in scored.iterrows()}  # relative or absolute
               if len(scored) else {})

    stale = set((figures / "qc").glob("*.png")) if (figures / "qc").is_dir() else set()
    cards = _qc_cards(cohort, output_dir, bids_dir, figures, experts)
    for path in stale - {output_dir / c["picture"] for c in cards if c["picture"]}:
        path.unlink(missing_ok=True)
    plots = {k: p.relative_to(output_dir).as_posix() for k, p in cohort_figures(ok, figures).items()}
    if len(scored):
        plots["evaluation"] = evaluation_figure(scored, figures).relative_to(output_dir).as_posix()
    located = located_runs(ok)
    if len(located):
        plots["location"] = location_figure(located, figures).relative_to(output_dir).as_posix()
    if frequency is not None:
        try:
            plots["frequency"] = frequency_figure(frequency, figures).relative_to(output_dir).as_posix()
        except (OSError, RuntimeError, ValueError) as err:
            LOGGER.warning("no lesion-frequency picture: %s", err)
    for key, name in (("location", "lesion_location.png"), ("frequency", "lesion_frequency.png")):
        if key not in plots:  # from an earlier group run
            (figures / name).unlink(missing_ok=True)

    longitudinal = longitudinal if longitudinal is not None else pd.DataFrame()
    long_columns = [c for c in LONGITUDINAL_REPORT_COLUMNS if c in longitudinal.columns]
    long_table = (table_html(longitudinal[long_columns].map(_integer), labels={**LABELS, **LONGITUDINAL_LABELS},
                             css_class="longitudinal", table_id="longitudinal-table") if len(longitudinal) else "")
    if len(longitudinal) and (longitudinal["status"] == "ok").any():
        plots["longitudinal"] = longitudinal_figure(longitudinal, figures).relative_to(output_dir).as_posix()

    counts = {s: int((cohort["status"] == s).sum()) for s in STATUS_ORDER}
    run_rows = [{
        "name": _run_label(r), "status": r["status"], "site": _fmt(r["site"]), "scanner": _fmt(r["scanner"]),
        "volume": _cell(r["total_lesion_volume_ml"]), "count": _fmt(r["lesion_count"]),
        "brain": _cell(r["brain_volume_ml"]), "n4": _fmt(r["n4"]), "bet": _fmt(r["brain_extraction"]),
        "model": _fmt(r["model_id"]), "report": r["report"] if isinstance(r["report"], str) else None,
        "classes": [_fmt(_integer(r.get(f"{name}_count"))) for name in LOCATION_CLASSES],
        "regions": _fmt(_integer(r.get("mcdonald_regions"))),
    } for _, r in cohort.iterrows()]
    problems = [{"name": _run_label(r), "status": r["status"],
                 "detail": (f"{r['crash_file']}: {_fmt(r['failure_reason'])}" if r["status"] == "failed"
                            else "no participant outputs and no crash file (not run yet?)")}
                for _, r in cohort[cohort["status"] != "ok"].iterrows()]
    scan_header, scan_rows = _scan_rows(evaluation) if len(evaluation) else ([], [])
    summary_header, summary_rows = _summary_rows(summary) if summary is not None else ([], [])
    html = _environment().get_template(TEMPLATE).render(
        n_runs=len(cohort), counts=counts, run_rows=run_rows, problems=problems, cards=cards, plots=plots,
        scan_header=scan_header, scan_rows=scan_rows, summary_header=summary_header, summary_rows=summary_rows,
        has_evaluation=bool(len(evaluation)), n_scored=len(scored), site_rule=SITE_RULE,
        cohort_tsv=COHORT_TSV, evaluation_tsv=EVALUATION_TSV if len(evaluation) else None,
        summary_tsv=EVALUATION_SUMMARY_TSV if summary is not None else None,
        lesion_rgba=f"rgba({', '.join(str(int(255 * c)) for c in LESION_RGBA[:3])}, {LESION_RGBA[3]})",
        expert_colour=EXPERT_COLOUR, version=_version(), long_table=long_table,
        n_ok=len(ok), n_located=len(located), location_rows=_location_rows(located) if len(located) else [],
        class_names=[(CLASS_ABBREVIATIONS.get(name, name), name) for name in LOCATION_CLASSES],
        models=sorted({_fmt(m) for m in cohort.loc[cohort["status"] == "ok", "model_id"]}),
        frequency_map=FREQUENCY_MAP if frequency is not None else None,
        frequency_runs=frequency.n_runs if frequency is not None else 0,
    )
    target = output_dir / REPORT_NAME
    write_text_atomic(target, html)
    LOGGER.info("group report written to %s", target)
    return target


__all__: Sequence[str] = ("render_group_report", "qc_mosaic", "cohort_figures", "evaluation_figure",
                          "longitudinal_figure", "location_figure", "frequency_figure")
