"""The ``bids_msseg`` entry point: from the command line to derivatives and an exit code.

Order of work, each step failing with the exit code of the BIDS Apps spec:

1. parse the options (64 usage, 17 unknown analysis level);
2. set the offline environment (``configure_environment``) before nipype or torch is imported;
3. check the output directory (73);
4. ``group``: hand over to :func:`bids_msseg.group.run_group`; ``--boilerplate-only``: write
   ``logs/CITATION.md`` and stop;
5. check the work directory (64 inside the dataset, 73 not creatable);
6. find the FLAIRs (16 not BIDS, 18 labels/filters match nothing, 66 no FLAIR);
7. check the model bundle (64 when it is missing or corrupt);
8. write ``dataset_description.json`` and ``logs/CITATION.md``;
9. refuse runs whose image header, sidecar or name is unusable (``bids_msseg.validate.screen_runs``:
   each gets a crash file in ``logs/`` and a FAILED line, the others go on);
10. skip runs whose outputs are complete (unless ``--overwrite``), run the workflow, report.

``main`` returns 0 when every run succeeded, 1 when some failed (each with a crash file in
``<output_dir>/logs``), or the ``exit_code`` of a :class:`~bids_msseg.errors.MsSegError`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bids_msseg import __version__
from bids_msseg._compat import configure_environment
from bids_msseg.bids import FlairRun, collect_flair_runs
from bids_msseg.boilerplate import decision_counts, write_citation
from bids_msseg.cli.parser import parse_args
from bids_msseg.cli.progress import BarAwareHandler, ProgressDisplay, format_seconds
from bids_msseg.crashfiles import flair_wf_name
from bids_msseg.derivatives import derivative_paths, required_outputs, segmented_runs, write_dataset_description
from bids_msseg.errors import EXIT_OK, EXIT_RUNS_FAILED, MsSegError, UsageError
from bids_msseg.io import file_sha256
from bids_msseg.lesions import LOCATION_OFF, NEIGHBOURS, LesionDefinition, seed_threshold_of_image
from bids_msseg.longitudinal import run_longitudinal
from bids_msseg.longitudinal.outputs import citation_context as longitudinal_citation
from bids_msseg.model.bundle import DEFAULT_BUNDLE, BundleError, ModelCard, verify_bundle
from bids_msseg.provenance import describe, provenance
from bids_msseg.runtime import check_device
from bids_msseg.settings import Options, SegmentationSettings
from bids_msseg.validate import screen_runs
from bids_msseg.workdirs import check_output_dir, check_work_dir, discard_damaged_cache, temporary_folder_in

if TYPE_CHECKING:
    pass

__all__ = ["check_output_dir", "check_work_dir", "configure_logging", "container_info", "main", "outputs_complete",
           "resolve_bundle", "write_run_citation"]

LOGGER = logging.getLogger("bids_msseg.cli")
_HANDLER_FLAG = "_bids_msseg_cli_handler"


def configure_logging(verbose: int) -> None:
    """Messages of bids_msseg on stderr: INFO by default, DEBUG with ``-v``; nipype's from ``-vv``.

    Idempotent: calling it again (tests call ``main`` repeatedly) replaces the handler.
    """
    logger = logging.getLogger("bids_msseg")
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            logger.removeHandler(handler)
    handler = BarAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    setattr(handler, _HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)


def _configure_nipype_logging(verbose: int) -> None:
    """nipype's own loggers (in this process; workers are set up by the workflow runner)."""
    # lazy: nipype, only for participant runs
    from bids_msseg.workflows.participant import format_nipype_logging, nipype_log_level

    for name in ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
        logging.getLogger(name).setLevel(nipype_log_level(verbose))
    format_nipype_logging()


def resolve_bundle(model: Path | None) -> tuple[Path, ModelCard]:
    """The bundle directory and its card, checked (card readable, weights' sha256 as recorded).

    The weights are not loaded here (each worker loads them once); a bad or missing bundle is a
    usage error (64) reported before any work starts.
    """
    path = Path(model) if model is not None else DEFAULT_BUNDLE
    if model is None and not (path / "model.json").is_file():
        raise UsageError(f"the packaged model is missing ({path}); pass a model bundle with --model")
    try:
        card = verify_bundle(path)
    except BundleError as err:
        raise UsageError(f"--model: {err}") from err
    return path, card


def container_info() -> dict[str, str] | None:
    """``GeneratedBy.Container`` when running in Docker or Apptainer/Singularity."""
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("APPTAINER_NAME"):
        return {"Type": "apptainer"}
    if os.environ.get("SINGULARITY_CONTAINER") or os.environ.get("SINGULARITY_NAME"):
        return {"Type": "singularity"}
    if Path("/.dockerenv").exists():
        return {"Type": "docker"}
    return None


def outputs_complete(run: FlairRun, output_dir: Path, settings: SegmentationSettings) -> bool:
    """True when every derivative of ``run`` exists and was made with the same model and settings."""
    paths = derivative_paths(output_dir, run.relpath)
    if not all(p.is_file() for p in required_outputs(paths).values()):
        return False
    try:
        meta = json.loads(paths["mask_json"].read_text())
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(meta, dict):
        return False
    neighbours = NEIGHBOURS[settings.connectivity]
    recorded = (meta.get("ModelID"), meta.get("Threshold"), meta.get("SeedThreshold", 0.0),
                meta.get("MinimumLesionSize_mm3"), meta.get("Connectivity"), meta.get("NormalizationMethod"))
    seed = seed_threshold_of_image(run.path, settings.seed_threshold, settings.seed_threshold_thick)
    wanted = (settings.model_id, settings.threshold, seed, settings.min_lesion_size_mm3, neighbours,
              settings.normalization)
    if recorded != wanted:
        LOGGER.info("%s: existing outputs were made with other settings %s; recomputing", run.name, recorded)
        return False
    if not _same_source(run, meta.get("SourceSHA256")):
        return False
    if (_summary_row(paths["summary"]).get("location_status") != LOCATION_OFF) != settings.location:
        LOGGER.info("%s: existing outputs were made with lesion location %s; recomputing", run.name,
                    "on" if not settings.location else "off (--no-location)")
        return False
    return True


def _same_source(run: FlairRun, recorded: Any) -> bool:
    """Whether the source FLAIR is the file the outputs were made from (``SourceSHA256`` of the mask
    sidecar). A replaced FLAIR, or outputs that record no checksum (an older version), are recomputed:
    keeping them would report the lesions of another image."""
    try:
        current = file_sha256(run.path)
    except OSError:
        return False  # unreadable now: the run is recomputed and fails with its own message
    if recorded == current:
        return True
    if recorded is None:
        LOGGER.info("%s: existing outputs record no checksum of their source FLAIR (made by an older version); "
                    "recomputing", run.name)
    else:
        LOGGER.warning("%s: the source FLAIR changed since its outputs were made (sha256 %.12s..., now %.12s...); "
                       "recomputing", run.name, recorded, current)
    return False


def _summary_row(summary: Path) -> dict[str, str]:
    """The one row of a run's summary TSV as text by column ({} when unreadable or absent)."""
    try:
        lines = summary.read_text().splitlines()
        return dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=False))
    except (OSError, IndexError, UnicodeDecodeError):
        return {}


def _summary_line(output_dir: Path, run: FlairRun) -> str:
    """``12 lesions, 3.41 mL`` from a run's summary TSV (empty when unreadable)."""
    row = _summary_row(derivative_paths(output_dir, run.relpath)["summary"])
    try:
        return f"{row['lesion_count']} lesions, {float(row['total_lesion_volume_ml']):.2f} mL"
    except (KeyError, ValueError):
        return ""


def _run_group(options: Options) -> int:
    """The group level (:func:`bids_msseg.group.run_group`)."""
    from bids_msseg.group import run_group  # lazy: torch and matplotlib, only for the group level

    result = run_group(options)
    if not (options.group.train or options.group.cross_site):
        write_run_citation(options)  # the methods of every run in the output folder, whoever made them
    return EXIT_OK if result is None else int(result)


def write_run_citation(options: Options, pending: Sequence[FlairRun] = ()) -> Path | None:
    """Write ``logs/CITATION.md`` for every run segmented in the output folder plus ``pending`` ones.

    Counting the output folder (not this invocation's runs) keeps the text right after partial runs
    (``--participant-label``, one cluster job per participant); ``group`` rewrites it the same way.
    Returns None (and writes nothing) when the model cannot be read.
    """
    try:
        _, card = resolve_bundle(options.model)
    except UsageError as err:
        LOGGER.warning("%s; logs/CITATION.md not rewritten", err)
        return None
    context: dict[str, Any] = SegmentationSettings.resolve(options, card).citation_context(options, card)
    recorded = segmented_runs(options.output_dir)
    sources = set(recorded) | {run.relpath for run in pending}
    if sources:
        subjects = {Path(source).name.split("_")[0] for source in sources}
        context.update(n_runs=len(sources), n_subjects=len(subjects))
        if sources == set(recorded):  # every run described has its decisions: say how many got each step
            context.update(decision_counts(recorded.values()) or {})
    context.update(longitudinal_citation(options.output_dir))  # the sessions compared in the output folder
    return write_citation(options.logs_dir, context)


def _boilerplate_only(options: Options) -> int:
    """Write logs/CITATION.md for the chosen model and options, and nothing else."""
    try:
        _, card = resolve_bundle(options.model)
        context = SegmentationSettings.resolve(options, card).citation_context(options, card)
    except UsageError as err:
        LOGGER.warning("%s; the boilerplate names no model", err)
        context = {}
    path = write_citation(options.logs_dir, context)
    LOGGER.info("methods boilerplate written to %s", path)
    return EXIT_OK


def _participant(options: Options) -> int:
    """Step 5 of the module docstring, then :func:`_participant_runs` with its own temporary folder."""
    if options.boilerplate_only:
        return _boilerplate_only(options)

    check_work_dir(options.bids_dir, options.work_dir, options.output_dir)
    with temporary_folder_in(options.work_dir):  # nothing left in the system's temporary folder
        return _participant_runs(options)


def _participant_runs(options: Options) -> int:
    """Steps 6-10 of the module docstring, in a checked work directory."""
    from bids_msseg.workflows.participant import (  # lazy: nipype, only once the inputs are checked
        RunStatus,
        RunTracker,
        init_participant_wf,
        run_participant_wf,
    )

    _configure_nipype_logging(options.verbose)
    runs = collect_flair_runs(
        options.bids_dir,
        participant_labels=options.participant_label,
        session_labels=options.session_label,
        bids_filters=options.flair_filters,
        skip_validation=options.skip_bids_validation,
        database_dir=options.work_dir / "bids_db",
    )
    bundle_path, card = resolve_bundle(options.model)
    check_device(options.device)
    settings = SegmentationSettings.resolve(options, card)  # once per run, passed down
    write_dataset_description(options.output_dir, options.bids_dir, version=__version__,
                              container=container_info(),
                              description=describe(provenance(card.model_id, card.weights_sha256)))
    write_run_citation(options, pending=runs)

    runs, rejected = screen_runs(runs, options.output_dir, options.logs_dir)
    refused = [RunStatus(r.run, state="failed", failed_node="validate", crash_file=r.crash_file, reason=r.message)
               for r in rejected]
    todo = [r for r in runs if options.overwrite or not outputs_complete(r, options.output_dir, settings)]
    skipped = [r for r in runs if r not in todo]
    for run in skipped:
        LOGGER.info("%s: outputs complete, skipped (--overwrite recomputes)", run.name)
    if not todo:
        longitudinal_rc = _longitudinal(options, runs, settings)
        if refused:
            return max(_log_summary(refused, len(skipped), 0.0, options.output_dir), longitudinal_rc)
        LOGGER.info("all %d run(s) already have complete outputs in %s", len(runs), options.output_dir)
        write_run_citation(options)
        return longitudinal_rc

    threads = max(1, min(options.omp_nthreads, options.nprocs))
    parallel = min(len(todo), max(1, options.nprocs // threads))
    LOGGER.info("segmenting %d FLAIR run(s) with model %s (threshold %.2f, minimum lesion %.1f mm3, random seed %s)",
                len(todo), settings.model_id, settings.threshold, settings.min_lesion_size_mm3,
                options.random_seed)
    if options.nipype_plugin == "MultiProc":
        LOGGER.info("%d CPU(s): %d run(s) at a time, %d thread(s) each (--nprocs, --omp-nthreads)",
                    options.nprocs, parallel, threads)
    display = ProgressDisplay(len(todo), parallel, detail=lambda status: _summary_line(options.output_dir,
                                                                                       status.run))
    cache_dir = options.work_dir / f"bids_msseg_{__version__.replace('.', '_')}"
    discard_damaged_cache(cache_dir / "bids_msseg_participant_wf", only=[flair_wf_name(run) for run in todo])
    workflow = init_participant_wf(todo, options=options, bundle_path=bundle_path, work_dir=cache_dir,
                                   settings=settings)
    tracker = RunTracker(todo, on_finish=display.on_finish, on_start=display.on_start, on_step=display.on_step)
    start = time.perf_counter()
    try:
        run_participant_wf(workflow, options=options, tracker=tracker)
    finally:
        display.close()
    elapsed = time.perf_counter() - start
    code = _log_summary(refused + list(tracker.status.values()), len(skipped), elapsed, options.output_dir)
    code = max(code, _longitudinal(options, runs, settings))
    citation = write_run_citation(options)  # what the output folder now holds, the longitudinal step included
    if citation is not None:
        LOGGER.info("methods text for your paper (every run in %s): %s", options.output_dir, citation)
    _mention_work_dir(options)
    return code


def _longitudinal(options: Options, runs: Sequence[FlairRun], settings: SegmentationSettings) -> int:
    """After the runs: compare the sessions of every subject with two or more segmented ones
    (:func:`bids_msseg.longitudinal.run_longitudinal`); 1 when the step itself broke, else 0 (a pair
    that cannot be registered is reported in its subject's summary, not as a failure)."""
    if not options.longitudinal:
        LOGGER.info("longitudinal comparison of sessions turned off (--no-longitudinal)")
        return EXIT_OK
    complete = [r for r in runs if outputs_complete(r, options.output_dir, settings)]
    try:
        run_longitudinal(options.output_dir, complete, bids_dir=options.bids_dir, threshold=settings.threshold,
                         definition=LesionDefinition(settings.connectivity, settings.min_lesion_size_mm3),
                         seed_threshold=settings.seed_threshold, seed_threshold_thick=settings.seed_threshold_thick,
                         seed=options.random_seed or 0,
                         meta={"ModelID": settings.model_id}, overwrite=options.overwrite)
    except (OSError, ValueError, MsSegError) as err:
        LOGGER.error("longitudinal step failed: %s", err)
        return EXIT_RUNS_FAILED
    return EXIT_OK


def _mention_work_dir(options: Options) -> None:
    """Say where the intermediate files are, how big, and that they may go (they only serve resuming)."""
    try:
        size = sum(p.stat().st_size for p in options.work_dir.rglob("*") if p.is_file())
    except OSError:
        return
    LOGGER.info("intermediate files: %s (%.0f MB); reusing it with -w resumes, deleting it is safe",
                options.work_dir, size / 1e6)


def _log_summary(statuses: Sequence[Any], n_skipped: int, elapsed: float, output_dir: Path) -> int:
    """The end-of-run summary: counts, then one line per run (failed ones with step, crash file and
    reason); returns 1 when any run failed, else 0."""
    failed = [s for s in statuses if s.state != "ok"]
    LOGGER.info("summary: %d ok, %d failed, %d skipped (complete) in %.0f s; outputs in %s",
                len(statuses) - len(failed), len(failed), n_skipped, elapsed, output_dir)
    for status in statuses:
        if status.state == "ok":
            details = [format_seconds(status.seconds)] if getattr(status, "seconds", None) is not None else []
            if getattr(status, "peak_memory_gb", None):
                details.append(f"peak memory {status.peak_memory_gb:.1f} GB")
            LOGGER.info("  ok      %s%s", status.run.relpath, f" ({', '.join(details)})" if details else "")
        else:
            where = f"crash file {status.crash_file}" if status.crash_file else "no crash file"
            what = f"failed at {status.failed_node}" if status.failed_node else "not run"
            LOGGER.error("  FAILED  %s (%s; %s)%s", status.run.relpath, what, where,
                         f"\n          {status.reason}" if status.reason else "")
    return EXIT_RUNS_FAILED if failed else EXIT_OK


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C: the same clean stop (workers ended,
    temporary files removed, one log line) with the shell's exit code ``128 + signal``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run bids_msseg with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    SIGTERM and SIGHUP (a scheduler's time limit, a closed terminal) stop it as Ctrl-C does (exit
    143 / 129, 130 for Ctrl-C); the previous handlers are restored on return.
    """
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        return _main(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: Sequence[str] | None) -> int:
    """:func:`main` without the signal handling."""
    try:
        options = parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0), usage (64), analysis level (17)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 64)

    try:
        configure_environment(options.work_dir)
    except OSError:  # an unusable work dir is reported below with its exit code
        configure_environment(None)
    configure_logging(options.verbose)
    try:
        # the group level's cohort tables read the participant outputs: a missing folder is a mistake;
        # group --train and --cross-site write their own outputs there
        reads_outputs = options.analysis_level == "group" and not (options.group.train or options.group.cross_site)
        check_output_dir(options.bids_dir, options.output_dir, create=not reads_outputs)
        if options.analysis_level == "group":
            return _run_group(options)
        return _participant(options)
    except MsSegError as err:
        LOGGER.error("%s", err)
        return err.exit_code
    except Terminated as err:
        LOGGER.error("stopped by %s: finished runs are kept, running ones are lost; run the same command again "
                     "to resume", signal.Signals(err.signum).name)
        return 128 + err.signum
    except KeyboardInterrupt:
        LOGGER.error("interrupted: finished runs are kept, running ones are lost; run the same command again to "
                     "resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
