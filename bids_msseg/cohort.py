"""The cohort table of the group level: one row per FLAIR run, read from the participant outputs.

``bids_msseg bids_dir output_dir group`` (without ``--train``) runs :func:`run_cohort`:

1. list the FLAIRs the participant level would segment (same labels and filters, pybids);
2. read each run's ``*_desc-lesions_summary.tsv`` from ``output_dir`` (written last by the
   participant level, so its presence marks a complete run). Nothing is recomputed: a run
   without a summary is ``failed`` when a crash file in ``output_dir/logs`` names it, else
   ``missing``; both are listed, neither stops the group level nor changes its exit code (0: the group's
   own outputs are complete; the participant level exited 1 for them), a closing warning counts them;
3. name each run's site and scanner (:func:`bids_msseg.sites.site_of`) and write ``group_lesions.tsv`` with its
   JSON data dictionary at the output root;
4. evaluate the runs that have expert masks (:mod:`bids_msseg.evaluation`): ``group_evaluation.tsv``
   and ``group_evaluation_summary.tsv`` (+ JSON);
5. average the runs' template-space lesion masks into the cohort lesion-frequency map
   (:mod:`bids_msseg.frequency`);
6. write the HTML report ``group_report.html`` (:mod:`bids_msseg.reports.group`).

The site of a run follows :data:`bids_msseg.sites.SITE_RULE` (:func:`~bids_msseg.sites.site_of`);
``site_source`` records which source applied. It is written into ``group_lesions.json`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_msseg.bids import collect_flair_runs
from bids_msseg.crashfiles import crash_reason, flair_wf_name, latest_crash_by_workflow
from bids_msseg.derivatives import (
    COHORT_TSV,
    EVALUATION_SUMMARY_TSV,
    EVALUATION_TSV,
    derivative_paths,
    parse_source,
    required_outputs,
    write_json,
    write_tsv,
)
from bids_msseg.errors import EXIT_OK, NoInputError
from bids_msseg.evaluation import EVALUATION_COLUMNS, evaluate_cohort, find_expert_masks, summarize_cohort
from bids_msseg.frequency import FREQUENCY_JSON, FREQUENCY_MAP, cohort_frequency, write_frequency_map
from bids_msseg.lesions import location_columns
from bids_msseg.longitudinal.outputs import GROUP_TSV as LONGITUDINAL_TSV
from bids_msseg.longitudinal.outputs import SUMMARY_COLUMNS as LONGITUDINAL_COLUMNS
from bids_msseg.longitudinal.outputs import collect_summaries
from bids_msseg.reports.group import render_group_report
from bids_msseg.settings import Options
from bids_msseg.sites import SITE_RULE, read_participants, scanner_of, site_of
from bids_msseg.workdirs import check_work_dir

LOGGER = logging.getLogger(__name__)


#: Columns of group_lesions.tsv with their descriptions (its JSON data dictionary).
COHORT_COLUMNS: dict[str, dict[str, str]] = {
    "participant_id": {"Description": "Participant label with its sub- prefix."},
    "session_id": {"Description": "Session label with its ses- prefix (n/a without sessions)."},
    "acq": {"Description": "acq entity of the FLAIR (n/a when absent)."},
    "run": {"Description": "run entity of the FLAIR (n/a when absent)."},
    "source": {"Description": "Source FLAIR, relative to the BIDS dataset."},
    "site": {"Description": "Site: the --site-column of participants.tsv (default 'site'), else the sidecar's "
                            "InstitutionName, else the scanner; n/a when none is known."},
    "site_source": {"Description": "Where the site came from: participants.tsv:<column>, InstitutionName, "
                                   "scanner or n/a."},
    "scanner": {"Description": "Manufacturer, ManufacturersModelName and MagneticFieldStrength of the FLAIR "
                               "sidecar (n/a when none is given)."},
    "status": {"Description": "ok (participant outputs complete), failed (a crash file names the run) or "
                              "missing (no outputs, no crash file)."},
    "total_lesion_volume_ml": {"Description": "Total volume of all lesions.", "Units": "mL"},
    "lesion_count": {"Description": "Number of lesions (see connectivity and min_lesion_size_mm3)."},
    "brain_volume_ml": {"Description": "Volume of the brain mask.", "Units": "mL"},
    "n4": {"Description": "Whether N4 bias-field correction was applied."},
    "n4_reason": {"Description": "Why N4 was or was not applied."},
    "brain_extraction": {"Description": "Whether brain extraction was applied."},
    "brain_extraction_reason": {"Description": "Why brain extraction was or was not applied."},
    "model_id": {"Description": "Identifier of the model bundle (name@sha256 prefix of the weights)."},
    "threshold": {"Description": "Probability threshold of the lesion mask."},
    "min_lesion_size_mm3": {"Description": "Smallest lesion kept.", "Units": "mm^3"},
    "connectivity": {"Description": "Neighbourhood of connected components (6, 18 or 26)."},
    "report": {"Description": "The run's participant report, relative to the output directory."},
    "crash_file": {"Description": "Crash file of a failed run, relative to the output directory."},
    "failure_reason": {"Description": "The innermost exception of the crash file, or what is wrong with the "
                                      "run's outputs (incomplete, corrupt summary)."},
    "contrast_warning": {"Description": "Why the image may not be a FLAIR (contrast check of the participant "
                                        "level; n/a when it looked like one)."},
}
#: Summary TSV columns copied as they are.
_SUMMARY_COPY = ("total_lesion_volume_ml", "lesion_count", "brain_volume_ml", "model_id", "threshold",
                 "min_lesion_size_mm3", "connectivity")
#: Lesion-location columns of the summary (docs/lesion_location.md), copied as they are, last in the table.
_LOCATION_COPY = tuple(c for c in location_columns() if c not in ("location", "confluent", "touches"))
COHORT_COLUMNS.update({c: dict(location_columns()[c]) for c in _LOCATION_COPY})
_SUMMARY_COPY += _LOCATION_COPY
_SUMMARY_RENAME = {"preproc_n4": "n4", "preproc_reasons_n4": "n4_reason",
                   "preproc_skullstrip": "brain_extraction", "preproc_reasons_skullstrip": "brain_extraction_reason",
                   "preproc_contrast_warning": "contrast_warning"}
#: Summary columns that must hold finite numbers (a corrupt summary is not an "ok" run).
_SUMMARY_NUMERIC = ("total_lesion_volume_ml", "lesion_count", "brain_volume_ml", "threshold", "min_lesion_size_mm3",
                    "connectivity")
#: Largest summary TSV read (bytes): one row of a few hundred bytes.
_MAX_SUMMARY_BYTES = 1_000_000


# ------------------------------------------------------------------------------- cohort table


def _read_summary(path: Path) -> dict[str, Any]:
    """The one row of a run's summary TSV, checked: raises ``ValueError`` saying what is wrong."""
    if path.stat().st_size > _MAX_SUMMARY_BYTES:
        raise ValueError(f"{path.stat().st_size} bytes, not a one-row summary")
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(str(err).strip().splitlines()[-1]) from err
    if len(table) != 1:
        raise ValueError(f"expected one row, found {len(table)}")
    row = table.iloc[0].to_dict()
    for column in _SUMMARY_NUMERIC:
        value = pd.to_numeric(pd.Series([row.get(column)]), errors="coerce").iloc[0]
        if column not in row or pd.isna(value) or not np.isfinite(value):
            raise ValueError(f"column {column} holds {row.get(column)!r}, not a number")
        row[column] = value
    if int(row["connectivity"]) not in (6, 18, 26) or row["lesion_count"] < 0 or row["total_lesion_volume_ml"] < 0:
        raise ValueError(f"impossible values (connectivity {row['connectivity']}, lesion_count "
                         f"{row['lesion_count']}, total_lesion_volume_ml {row['total_lesion_volume_ml']})")
    row["lesion_count"] = int(row["lesion_count"])
    row["connectivity"] = int(row["connectivity"])
    return row


def build_cohort_table(runs: Sequence[Any], output_dir: Path, participants: Mapping[str, Mapping[str, Any]],
                       site_column: str | None) -> pd.DataFrame:
    """One row per run (a :class:`~bids_msseg.bids.FlairRun`), columns of :data:`COHORT_COLUMNS`."""
    output_dir = Path(output_dir)
    crashes = latest_crash_by_workflow(output_dir / "logs")
    rows = []
    for run in runs:
        _, entities, _ = parse_source(run.relpath)
        participant_id = f"sub-{entities['sub']}"
        site, site_source = site_of(run.metadata, participants.get(participant_id), site_column)
        row: dict[str, Any] = {
            "participant_id": participant_id,
            "session_id": f"ses-{entities['ses']}" if "ses" in entities else None,
            "acq": entities.get("acq"), "run": entities.get("run"), "source": run.relpath,
            "site": site, "site_source": site_source, "scanner": scanner_of(run.metadata),
        }
        paths = derivative_paths(output_dir, run.relpath)
        summary = None
        problem = None
        if paths["summary"].is_file():
            try:
                summary = _read_summary(paths["summary"])
            except (OSError, ValueError) as err:
                problem = f"corrupt summary {paths['summary'].relative_to(output_dir).as_posix()}: {err}"
                LOGGER.error("%s: %s", run.relpath, problem)
                summary = None
            if summary is not None:
                absent = sorted(key for key, path in required_outputs(paths).items() if not path.is_file())
                if absent:
                    problem = f"incomplete participant outputs (missing: {', '.join(absent)}); run it again"
                    summary = None
        if summary is not None:
            row["status"] = "ok"
            row.update({k: summary.get(k) for k in _SUMMARY_COPY})
            row.update({new: summary.get(old) for old, new in _SUMMARY_RENAME.items()})
            if paths["report"].is_file():
                row["report"] = paths["report"].relative_to(output_dir).as_posix()
        else:
            crash = crashes.get(flair_wf_name(run))
            row["status"] = "failed" if crash or problem else "missing"
            if crash:
                row["crash_file"] = crash.relative_to(output_dir).as_posix()
                row["failure_reason"] = crash_reason(crash)
            if problem:
                row["failure_reason"] = problem + (f"; last crash: {row['failure_reason']}" if crash else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COHORT_COLUMNS))


#: Columns of the evaluation summary that are not statistics of a per-scan metric.
SUMMARY_COLUMNS: dict[str, dict[str, str]] = {
    "group": {"Description": "'all' (every evaluated scan) or a site."},
    "n_scans": {"Description": "Number of evaluated scans in the group."},
    "volume_pearson_r": {"Description": "Pearson correlation of predicted and expert lesion volumes over the "
                                        "group's scans (n/a below 3 scans)."},
    "volume_pearson_p": {"Description": "Two-sided p-value of volume_pearson_r."},
    "volume_spearman_rho": {"Description": "Spearman rank correlation of predicted and expert lesion volumes."},
    "volume_spearman_p": {"Description": "Two-sided p-value of volume_spearman_rho."},
    "hybrid_score": {"Description": "ISBI-2015 / DeepLesionBrain score: mean of Dice/8 + PPV/8 + (1-LFPR)/4 + "
                                    "LTPR/4 over the scans, plus Pearson r/4 (n/a below 3 scans)."},
}
_STATISTICS = {"mean": "Mean", "sd": "Standard deviation", "median": "Median"}


def _describe_column(column: str, known: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The data-dictionary entry of ``column``: its own, else that of a ``<metric>_<statistic>``
    built from the metric's, else one that says more than the key."""
    if column in known:
        return dict(known[column])
    if column in SUMMARY_COLUMNS:
        return dict(SUMMARY_COLUMNS[column])
    metric, _, statistic = column.rpartition("_")
    if statistic in _STATISTICS and metric in EVALUATION_COLUMNS:
        entry = dict(EVALUATION_COLUMNS[metric])
        entry["Description"] = f"{_STATISTICS[statistic]} over the group's scans of: {entry['Description']}"
        return entry
    return {"Description": f"{column.replace('_', ' ')} (see the bids_msseg documentation)"}


def _data_dictionary(columns: Sequence[str], known: Mapping[str, Mapping[str, str]], description: str) -> dict:
    return {"Description": description, **{c: _describe_column(c, known) for c in columns}}


def write_table(output_dir: Path, name: str, frame: pd.DataFrame, known: Mapping[str, Mapping[str, str]],
                description: str, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``frame`` as ``output_dir/name`` (BIDS TSV) with its JSON data dictionary beside it."""
    path = Path(output_dir) / name
    write_tsv(path, frame)
    write_json(path.with_suffix(".json"), {**_data_dictionary(frame.columns, known, description),
                                            **dict(extra or {})})
    return path


def _remove_stale(output_dir: Path, names: Sequence[str]) -> None:
    """Remove group tables of an earlier run that this run does not write (no masks any more)."""
    for name in names:
        for path in (Path(output_dir) / name, (Path(output_dir) / name).with_suffix(".json")):
            if path.is_file():
                LOGGER.info("removing %s from an earlier group run", path)
                path.unlink()


# ---------------------------------------------------------------------------------- the level


def run_cohort(options: Options) -> int:
    """The group level without ``--train`` (steps in the module docstring); return the exit code."""
    settings = options.group.cohort
    # The work directory holds the pybids index: never inside the dataset.
    check_work_dir(options.bids_dir, options.work_dir, options.output_dir)
    runs = collect_flair_runs(options.bids_dir, participant_labels=options.participant_label,
                              session_labels=options.session_label, bids_filters=options.flair_filters,
                              skip_validation=options.skip_bids_validation,
                              database_dir=options.work_dir / "bids_db")
    participants, site_column = read_participants(options.bids_dir, settings.site_column)
    cohort = build_cohort_table(runs, options.output_dir, participants, site_column)
    counts = cohort["status"].value_counts().to_dict()
    if not counts.get("ok"):
        raise NoInputError(f"none of the {len(cohort)} selected FLAIR run(s) has participant outputs in "
                           f"{options.output_dir}; run the participant level first")
    for _, row in cohort[cohort["status"] != "ok"].iterrows():
        LOGGER.warning("%s: %s%s", row["source"], row["status"],
                       f" ({row['crash_file']}: {row['failure_reason']})" if row["status"] == "failed" else "")
    write_table(options.output_dir, COHORT_TSV, cohort, COHORT_COLUMNS,
                "One row per FLAIR run: lesion load, brain volume, preprocessing decisions, model, site.",
                {"SiteRule": SITE_RULE})

    masks = find_expert_masks(options.bids_dir, settings.masks_dir, exclude=[options.output_dir])
    evaluation = evaluate_cohort(cohort, options.output_dir, masks, msseg2016=settings.msseg2016,
                                 relative_to=options.bids_dir)
    summary = None
    if len(evaluation):
        write_table(options.output_dir, EVALUATION_TSV, evaluation, EVALUATION_COLUMNS,
                    "Per-scan evaluation of the predicted lesion masks against the expert masks.")
        scored = evaluation[evaluation["evaluation_status"] == "ok"]
        if len(scored):
            summary = summarize_cohort(scored, by="site")
            write_table(options.output_dir, EVALUATION_SUMMARY_TSV, summary, {},
                        "Evaluation over the cohort (group 'all') and per site: mean, SD and median of each "
                        "per-scan metric, Pearson/Spearman correlation of predicted and expert volumes, and the "
                        "ISBI-2015 / DeepLesionBrain hybrid score (mean of Dice/8 + PPV/8 + (1-LFPR)/4 + "
                        "LTPR/4, plus Pearson r/4).")
        if summary is None:
            _remove_stale(options.output_dir, [EVALUATION_SUMMARY_TSV])
    else:
        LOGGER.info("no expert lesion masks match the runs: no evaluation")
        _remove_stale(options.output_dir, [EVALUATION_TSV, EVALUATION_SUMMARY_TSV])
    longitudinal = collect_summaries(options.output_dir)
    if len(longitudinal):
        write_table(options.output_dir, LONGITUDINAL_TSV, longitudinal, LONGITUDINAL_COLUMNS,
                    "Longitudinal lesion change: one row per follow-up session compared with its subject's baseline.")
    else:
        _remove_stale(options.output_dir, [LONGITUDINAL_TSV])
    frequency = cohort_frequency(cohort, options.output_dir)
    if frequency is not None:
        write_frequency_map(options.output_dir, frequency)
    else:
        LOGGER.info("no run has a template-space lesion mask: no lesion-frequency map")
        for name in (FREQUENCY_MAP, FREQUENCY_JSON):
            (options.output_dir / name).unlink(missing_ok=True)
    report = render_group_report(options.output_dir, options.bids_dir, cohort, evaluation, summary,
                                 longitudinal=longitudinal, frequency=frequency)
    LOGGER.info("group level: %d ok, %d failed, %d missing; %d run(s) evaluated; %s and %s written",
                counts.get("ok", 0), counts.get("failed", 0), counts.get("missing", 0),
                int((evaluation.get("evaluation_status", pd.Series(dtype=str)) == "ok").sum()),
                options.output_dir / COHORT_TSV, report)
    not_ok = len(cohort) - counts.get("ok", 0)
    if not_ok:
        # Exit 0 all the same: the group level's own work (tables, evaluation, report) is complete; the
        # participant level's exit code (1) reported those runs, and a group job that failed on them
        # would look, to a scheduler, as if the cohort tables were not written.
        LOGGER.warning("group level: %d of %d run(s) failed or missing at the participant level: listed in %s "
                       "with their status and left out of the statistics; rerun the participant level for them "
                       "(exit code 0: the group outputs are complete)", not_ok, len(cohort), COHORT_TSV)
    return EXIT_OK
