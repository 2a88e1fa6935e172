"""The participant-level workflow: one independent sub-workflow per FLAIR run.

::

    bids_msseg_participant_wf
    ├── single_flair_sub_01_ses_1_FLAIR_wf
    │     inputnode -> preprocess -> segment -> lesion_stats -> lesion_location -> write_derivatives -> report
    │                                     (lesion_location is left out with --no-location)
    ├── single_flair_sub_01_ses_2_FLAIR_wf
    └── ...

Sub-workflows share no node, so under MultiProc a failing FLAIR only removes its own downstream
nodes and every other run goes on (``stop_on_first_crash`` is off unless asked for). Nodes pass
file paths; each step's intermediates are NIfTI/JSON/TSV in its node directory under the work
directory, which makes a second invocation resume from the last completed step (changing the
threshold, for instance, re-runs only ``lesion_stats`` onwards).

:func:`run_participant_wf` executes the workflow with a MultiProc scheduler whose worker
processes start from a clean interpreter (``forkserver``: no inherited torch/OpenMP state),
with the thread limits of ``--omp-nthreads`` and quiet nipype logging, and reports progress
through :class:`RunTracker` (one line per finished run).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from nipype.pipeline.plugins import MultiProcPlugin

from bids_msseg.bids import FlairRun
from bids_msseg.crashfiles import crash_files, crash_node, crash_reason, flair_wf_name
from bids_msseg.derivatives import derivative_paths
from bids_msseg.interfaces import LesionLocation, LesionStats, ParticipantReport, Preprocess, Segment, WriteDerivatives
from bids_msseg.io import file_sha256
from bids_msseg.lesions import seed_threshold_of_image
from bids_msseg.masks import index_masks, mask_roots, name_entities, pick_mask
from bids_msseg.model.bundle import read_card
from bids_msseg.provenance import provenance
from bids_msseg.runtime import THREAD_VARIABLES
from bids_msseg.settings import SegmentationSettings

if TYPE_CHECKING:
    from bids_msseg.settings import Options

__all__ = ["FINAL_NODE", "RunStatus", "RunTracker", "STEPS", "SegmentationSettings", "crash_reason", "flair_wf_name",
           "format_nipype_logging",
           "init_participant_wf", "init_single_flair_wf", "nipype_log_level", "run_participant_wf"]

LOGGER = logging.getLogger(__name__)

#: The node whose completion marks a run as done.
FINAL_NODE = "report"
#: Seconds between passes of the MultiProc scheduler for up to POLL_FAST_RUNS runs, and beyond.
POLL_S, POLL_SLOW_S, POLL_FAST_RUNS = 0.05, 0.25, 8
#: Memory the scheduler plans per node, GB (a 1 mm head FLAIR; small images need far less).
NODE_MEM_GB = {"preprocess": 3.0, "segment": 3.0, "lesion_stats": 1.0, "write_derivatives": 1.0,
               "report": 1.0, "lesion_location": 2.0}


def init_participant_wf(
    runs: Sequence[FlairRun],
    *,
    options: Options,
    bundle_path: Path,
    work_dir: Path,
    settings: SegmentationSettings | None = None,
    name: str = "bids_msseg_participant_wf",
) -> pe.Workflow:
    """The participant-level workflow: one :func:`init_single_flair_wf` per FLAIR run.

    Parameters
    ----------
    runs
        The FLAIRs to segment (:func:`bids_msseg.bids.collect_flair_runs`).
    options
        The parsed command line.
    bundle_path
        The model bundle directory; its card gives the default threshold and lesion definition.
    work_dir
        Base directory of the nipype cache.
    settings
        The options resolved against the bundle's card, resolved once by the caller (the command
        line); read from ``bundle_path`` when not given.
    name
        Name of the workflow (and of its folder in ``work_dir``).

    The workflow's ``execution`` config writes text crash files into ``<output_dir>/logs``.
    """
    if settings is None:
        settings = SegmentationSettings.resolve(options, read_card(bundle_path))
    workflow = pe.Workflow(name=name, base_dir=str(work_dir))
    workflow.config["execution"] = {
        "crashdump_dir": str(options.logs_dir),
        "crashfile_format": "txt",
        "stop_on_first_crash": str(options.stop_on_first_crash).lower(),
        # Each pass of the scheduler's loop sums a sparse dependency matrix, CPU the workers need, and
        # each next node waits for the next pass: 50 ms between passes for a few runs (the passes are
        # cheap, the waits add up over a run's 6 steps), 250 ms for large workflows.
        "poll_sleep_duration": POLL_S if len(runs) <= POLL_FAST_RUNS else POLL_SLOW_S,
        "remove_unnecessary_outputs": "false",
        "get_linked_libs": "false",
        "check_version": "false",
    }
    experts = expert_masks_of(runs, options)
    names: set[str] = set()
    for run in runs:
        wf_name = flair_wf_name(run)
        if wf_name in names:  # cannot happen with valid BIDS names; keep nipype's names unique anyway
            wf_name = f"{wf_name[:-3]}_{len(names)}_wf"
        names.add(wf_name)
        workflow.add_nodes([init_single_flair_wf(run, options=options, bundle_path=bundle_path,
                                                 settings=settings, name=wf_name,
                                                 expert_mask=experts.get(run.relpath))])
    return workflow


def expert_masks_of(runs: Sequence[FlairRun], options: Options) -> dict[str, Path]:
    """Expert lesion masks of the runs (``--expert-masks``, else ``bids_dir/derivatives/*/``), by relpath.

    Shown as an outline in the participant reports; the group level evaluates against them.
    """
    try:
        index = index_masks(mask_roots(options.bids_dir, options.group.cohort.masks_dir, [options.output_dir]))
    except OSError:
        return {}
    found = {}
    for run in runs:
        entities, _ = name_entities(run.path.name)
        candidates = index.get(frozenset(entities.items()))
        if candidates:
            found[run.relpath] = pick_mask(candidates)
    return found


def _preprocess_extras(options: Options) -> dict[str, Any]:
    """Inputs of the preprocess node that are set only when not default (default runs keep their cache)."""
    extras: dict[str, Any] = {}
    if getattr(options, "force_contrast", False):
        extras["force_contrast"] = True
    if getattr(options, "min_brain_volume", None) is not None:
        extras["min_brain_volume"] = float(options.min_brain_volume)
    return extras


def init_single_flair_wf(
    run: FlairRun,
    *,
    options: Options,
    bundle_path: Path,
    settings: SegmentationSettings,
    name: str | None = None,
    expert_mask: Path | None = None,
) -> pe.Workflow:
    """Segment one FLAIR and write its derivatives and report.

    Parameters
    ----------
    run
        The FLAIR (path, path relative to the BIDS root, sidecar metadata).
    options
        The parsed command line (devices, threads, preprocessing switches, output directory).
    bundle_path
        The model bundle directory.
    settings
        Model id, threshold and lesion definition resolved against the bundle.
    name
        Workflow name (default :func:`flair_wf_name`).
    expert_mask
        An expert lesion mask of this FLAIR, outlined in the report.

    Inputs
    ------
    in_file
        The FLAIR image (set from ``run``).
    metadata
        Its sidecar metadata (set from ``run``).

    Outputs
    -------
    mask, summary, report
        The lesion mask, the per-run summary TSV and the HTML report in the output dataset.
    """
    workflow = pe.Workflow(name=name or flair_wf_name(run))
    threads = max(1, min(options.omp_nthreads, options.nprocs))

    def mem(node_name: str) -> float:
        planned = NODE_MEM_GB[node_name]
        return min(planned, options.mem_gb) if options.mem_gb else planned

    inputnode = pe.Node(IdentityInterface(fields=["in_file", "metadata"]), name="inputnode")
    inputnode.inputs.in_file = str(run.path)
    inputnode.inputs.metadata = dict(run.metadata)
    outputnode = pe.Node(IdentityInterface(fields=["mask", "summary", "report"]), name="outputnode")

    source_sha256 = file_sha256(run.path)  # recorded in the sidecars: a rerun sees a replaced source
    # thick-slice scans may have a seed threshold of their own
    seed_threshold = seed_threshold_of_image(run.path, settings.seed_threshold, settings.seed_threshold_thick)
    preprocess = pe.Node(
        Preprocess(n4=options.n4, skullstrip=options.skullstrip, random_seed=options.random_seed,
                   omp_nthreads=threads, source_sha256=source_sha256, **_preprocess_extras(options)),
        name="preprocess", n_procs=threads, mem_gb=mem("preprocess"))
    segment = pe.Node(
        Segment(bundle_path=str(bundle_path), model_id=settings.model_id,
                normalization=settings.normalization, precision=options.precision, device=options.device,
                omp_nthreads=threads, random_seed=options.random_seed),
        name="segment", n_procs=threads, mem_gb=mem("segment"))
    lesion_stats = pe.Node(
        LesionStats(threshold=settings.threshold, seed_threshold=seed_threshold,
                    min_lesion_size_mm3=settings.min_lesion_size_mm3,
                    connectivity=settings.connectivity),
        name="lesion_stats", mem_gb=mem("lesion_stats"))
    extra_meta = {"NormalizationMethod": settings.normalization, "InferencePrecision": options.precision,
                  "ComponentVersions": provenance(settings.model_id, settings.weights_sha256),
                  "SourceSHA256": source_sha256}
    if options.random_seed is not None:  # the default seed too: same input and seed, same outputs
        extra_meta["RandomSeed"] = options.random_seed
    write = pe.Node(
        WriteDerivatives(out_dir=str(options.output_dir), source_relpath=run.relpath,
                         threshold=settings.threshold, seed_threshold=seed_threshold,
                         min_lesion_size_mm3=settings.min_lesion_size_mm3,
                         connectivity=settings.connectivity, model_id=settings.model_id,
                         extra_meta=extra_meta),
        name="write_derivatives", mem_gb=mem("write_derivatives"))
    about = {"Command line": options.command_line or "(not recorded)",
             **{("Model" if k == "model_id" else "Model weights (sha256)" if k == "model_weights_sha256" else k): v
                for k, v in provenance(settings.model_id, settings.weights_sha256).items()},
             "Random seed": options.random_seed if options.random_seed is not None else "none"}
    report = pe.Node(
        ParticipantReport(out_report=str(derivative_paths(options.output_dir, run.relpath)["report"]),
                          expert_mask=str(expert_mask or ""), about=about,
                          citation=str(options.logs_dir / "CITATION.md")),
        name=FINAL_NODE, mem_gb=mem("report"))

    workflow.connect([
        (inputnode, preprocess, [("in_file", "in_file"), ("metadata", "metadata")]),
        (preprocess, segment, [("corrected", "in_file"), ("brain_mask", "brain_mask")]),
        (inputnode, lesion_stats, [("in_file", "in_file")]),
        (preprocess, lesion_stats, [("brain_mask", "brain_mask")]),
        (segment, lesion_stats, [("probability", "probability")]),
        (inputnode, write, [("in_file", "in_file")]),
        (preprocess, write, [("decisions", "decisions")]),
        (segment, write, [("device", "device"), ("precision", "precision")]),
        (lesion_stats, write, [("probability", "probability"), ("labels", "labels"),
                               ("n_lesions", "n_lesions"), ("brain_mask", "brain_mask")]),
        (inputnode, report, [("in_file", "in_file")]),
        (preprocess, report, [("decisions", "decisions")]),
        (lesion_stats, report, [("brain_mask", "brain_mask"), ("labels", "mask"), ("probability", "probability")]),
        (write, report, [("summary", "summary"), ("table", "table")]),
        (write, outputnode, [("mask", "mask"), ("summary", "summary")]),
        (report, outputnode, [("out_report", "report")]),
    ])
    if not settings.location:  # --no-location: no registration; write_derivatives writes n/a columns
        workflow.connect(lesion_stats, "table", write, "table")
        return workflow
    location = pe.Node(LesionLocation(random_seed=options.random_seed or 0, omp_nthreads=threads),
                       name="lesion_location", n_procs=threads, mem_gb=mem("lesion_location"))
    workflow.connect([
        (inputnode, location, [("in_file", "in_file")]),
        (lesion_stats, location, [("probability", "probability"), ("labels", "labels"),
                                  ("n_lesions", "n_lesions"), ("brain_mask", "brain_mask"), ("table", "table")]),
        (location, write, [("table", "table"), ("location", "location"), ("location_map", "location_map"),
                           ("template_mask", "template_mask"), ("template_probseg", "template_probseg")]),
    ])
    return workflow


# ------------------------------------------------------------------------------------ execution


@dataclass
class RunStatus:
    """Progress and outcome of one run during execution."""

    run: FlairRun
    state: str = "pending"  # pending, running, ok, failed
    started: float | None = None
    finished: float | None = None
    failed_node: str | None = None
    crash_file: Path | None = None
    reason: str | None = None  # the exception's last line, from the crash file
    #: Seconds of each finished step, in order of completion.
    steps: dict[str, float] = field(default_factory=dict)
    #: Largest peak resident memory of the run's steps (GB), when the steps recorded it.
    peak_memory_gb: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


#: Steps that do work (the others are nipype's identity nodes).
STEPS = ("preprocess", "segment", "lesion_stats", "lesion_location", "write_derivatives", "report")


@dataclass
class RunTracker:
    """nipype status callback: follows each run's nodes and reports its start, its steps and its end.

    A run is ``ok`` when its final node (the report) has completed, ``failed`` as soon as any of
    its nodes raises (nipype then skips that run's remaining nodes and goes on with the others).
    ``on_start(status)`` is called when a run's first step starts, ``on_step(status, step, seconds)``
    when one of its :data:`STEPS` ends (``seconds`` None for a step reused from the work directory,
    which nipype ends without starting), and ``on_finish(status, done, total)`` when the run ends.
    """

    runs: Sequence[FlairRun]
    on_finish: Callable[[RunStatus, int, int], None] | None = None
    on_start: Callable[[RunStatus], None] | None = None
    on_step: Callable[[RunStatus, str, float | None], None] | None = None
    status: dict[str, RunStatus] = field(init=False)

    def __post_init__(self) -> None:
        self.status = {}
        for run in self.runs:
            self.status.setdefault(flair_wf_name(run), RunStatus(run))
        self._done = 0
        self._step_started: dict[str, float] = {}

    def _lookup(self, node: Any) -> tuple[RunStatus | None, str]:
        parts = str(getattr(node, "fullname", node)).split(".")
        for part in parts:
            if part in self.status:
                return self.status[part], parts[-1]
        return None, parts[-1]

    def __call__(self, node: Any, event: str) -> None:
        status, node_name = self._lookup(node)
        if status is None or status.state in ("ok", "failed"):
            return
        now = time.perf_counter()
        key = str(getattr(node, "fullname", node))
        if status.started is None and event in ("start", "end"):  # a step reused from the cache has no start
            status.started = now
            status.state = "running"
            if self.on_start is not None:
                self.on_start(status)
        if event == "start":
            self._step_started[key] = now
        elif event == "exception":
            status.state, status.failed_node, status.finished = "failed", node_name, now
            self._finish(status)
        elif event == "end":
            if node_name in STEPS:
                started = self._step_started.pop(key, None)
                seconds = None if started is None else now - started  # None: reused from the work directory
                status.steps[node_name] = seconds or 0.0
                peak = _peak_memory_of(node)
                if peak is not None:
                    status.peak_memory_gb = max(peak, status.peak_memory_gb or 0.0)
                if self.on_step is not None:
                    self.on_step(status, node_name, seconds)
            if node_name == FINAL_NODE:
                status.state, status.finished = "ok", now
                self._finish(status)

    def _finish(self, status: RunStatus) -> None:
        self._done += 1
        if self.on_finish is not None:
            self.on_finish(status, self._done, len(self.status))

    def attach_crash_files(self, crash_dir: Path, since: float) -> None:
        """Find the crash file of each failed run among those written to ``crash_dir`` after ``since``."""
        for path in crash_files(crash_dir):
            try:
                if path.stat().st_mtime < since:
                    continue
            except OSError:
                continue
            node = crash_node(path)
            if node is None:
                continue
            status, _ = self._lookup(node)
            if status is not None and status.crash_file is None:
                status.crash_file = path
                status.reason = crash_reason(path)
                if status.state != "ok":
                    status.state = "failed"


def _peak_memory_of(node: Any) -> float | None:
    """The peak memory a finished node recorded in its result (``measure_peak_memory``), if any."""
    try:
        return float(node.result.runtime.peak_memory_gb)
    except Exception:  # noqa: BLE001 - a string in tests, a result file not readable, no such attribute
        return None


#: nipype's messages (``-vv``) in bids_msseg's format, with the logger's name.
NIPYPE_FORMAT = logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s", "%H:%M:%S")


def format_nipype_logging() -> None:
    """Give nipype's handlers bids_msseg's line format (nipype's own is ``yymmdd-hh:mm:ss,ms``)."""
    for name in ("nipype", "nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(NIPYPE_FORMAT)


def nipype_log_level(verbose: int) -> int:
    """nipype's loggers: silent by default, warnings and errors (tracebacks) from ``-v``, INFO from
    ``-vv``, DEBUG from ``-vvv``. By default failures are reported by bids_msseg's own summary:
    each failed run with its exception and crash file, instead of nipype's full tracebacks.
    """
    return {0: logging.CRITICAL, 1: logging.WARNING, 2: logging.INFO}.get(verbose, logging.DEBUG)


class _Worker:
    """Set-up of each worker process: working directory, thread limits, quiet logging."""

    @staticmethod
    def init(cwd: str, omp_nthreads: int, log_level: int, nipype_level: int, itk_threads: int) -> None:
        os.chdir(cwd)
        # Ctrl-C reaches the whole process group: the main process stops the workers itself
        # (run_participant_wf); left to the default, each worker printed a KeyboardInterrupt traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.environ["NIPYPE_NO_ET"] = "1"
        for var in THREAD_VARIABLES:
            os.environ[var] = str(omp_nthreads)
        # Read by ITK once per process, at the first use of ANTs (1 with --random-seed: exact repeats).
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(itk_threads)
        logger = logging.getLogger("bids_msseg")
        logger.setLevel(log_level)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s",
                                                   "%H:%M:%S"))
            logger.addHandler(handler)
        for name in ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
            logging.getLogger(name).setLevel(nipype_level)
        format_nipype_logging()


#: What a full disk looks like in a worker's traceback (no space, quota exceeded, file too large).
_DISK_FULL = tuple(f"[Errno {code}]" for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


def _lost_result_line(trace: list[str]) -> str:
    """The last line of the crash file of a task whose worker returned no result (read by the summary).

    The worker's own traceback comes back as text (a ``_RemoteTraceback`` cause), so it is searched
    as text.
    """
    text = "".join(trace)
    full = next((code for code in _DISK_FULL if code in text), None)
    if full is not None:
        return (f"OSError: {full} the disk is full while writing the step's results: the work directory (-w) "
                "or the output directory has no space left; free space or choose another -w and run again "
                "(completed steps are resumed)\n")
    return ("RuntimeError: the step's worker returned no result (its result file could not be written or "
            "read: a full or failing work directory -w?)\n")


class _WorkerInitMultiProcPlugin(MultiProcPlugin):
    """nipype's MultiProc with ``forkserver`` workers prepared by :meth:`_Worker.init`, scheduling
    runs depth-first: among the ready jobs, those of the earliest run in ``run_order`` go first.

    nipype submits ready jobs in topological order, which for independent runs means every run's
    preprocessing, then every run's segmentation, ...: all runs would finish together at the end.
    Depth-first, each run completes (outputs written, progress line shown) as early as possible.
    """

    def __init__(self, plugin_args: dict[str, Any], worker_args: tuple[int, int, int, int],
                 run_order: Sequence[str] = ()) -> None:
        super().__init__(plugin_args=plugin_args)
        self._run_order = {name: i for i, name in enumerate(run_order)}
        # The pool created by nipype has started no process yet; replace it by one whose workers
        # get our initializer. forkserver children start from a fresh interpreter, so no torch or
        # OpenMP thread pool is inherited from this process (fork + libgomp can deadlock).
        self.pool.shutdown(wait=False)
        self.pool = ProcessPoolExecutor(
            max_workers=self.processors,
            initializer=_Worker.init,
            initargs=(self._cwd, *worker_args),
            mp_context=mp.get_context("forkserver"),
        )

    def _async_callback(self, args: Any) -> None:
        """Record a task's result, also when the worker could not return one.

        nipype's own callback calls ``future.result()`` unguarded: when the worker's ``node.run``
        failed and reading the node's result file failed too (a full work directory: the file was
        never written), the exception escapes the callback, the task never gets a result, and the
        scheduler waits for it forever. Here such a task is recorded as failed with the worker's
        traceback, so its run fails (crash file, FAILED line) and the others go on.
        """
        try:
            result = args.result()
        except BaseException as err:  # noqa: BLE001 - any failure must end the task, never hang it
            taskid = next((tid for tid, future in list(self._task_obj.items()) if future is args), None)
            if taskid is None:
                LOGGER.error("a workflow task failed and cannot be matched to its node: %s", err)
                return
            trace = traceback.format_exception(type(err), err, err.__traceback__)
            trace.append(_lost_result_line(trace))
            self._taskresult[taskid] = {"result": None, "traceback": trace, "taskid": taskid}
            return
        self._taskresult[result["taskid"]] = result

    def _run_rank(self, jobid: int) -> int:
        for part in str(self.procs[jobid].fullname).split("."):
            if part in self._run_order:
                return self._run_order[part]
        return len(self._run_order)

    def _sort_jobs(self, jobids, scheduler="tsort"):
        return sorted(jobids, key=lambda jobid: (self._run_rank(jobid), jobid))


def stop_workers(pool: ProcessPoolExecutor, grace_s: float = 5.0) -> None:
    """Terminate the worker processes of ``pool`` (SIGTERM, then SIGKILL after ``grace_s``) and wait for
    them, so that none outlives the main process."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if _running(process):
            process.terminate()
    for signal_sent, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if signal_sent == signal.SIGKILL:
            for process in processes:
                if _running(process):
                    process.kill()
        deadline = time.monotonic() + wait_s  # reaping a large forked worker can take a moment
        while any(_running(p) for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)


def _running(process: mp.process.BaseProcess) -> bool:
    """Whether ``process`` still runs. ``is_alive()`` alone says True for ever once another thread (the
    pool's own manager, which joins broken workers) reaped the process first, so the OS is asked too."""
    if not process.is_alive():
        return False
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _scheduler_error(err: OSError, plugin: str) -> str:
    """What an ``OSError`` of the scheduler itself means, and what to do.

    MultiProc's queues and locks are POSIX semaphores in ``/dev/shm``: when that is read-only or
    missing (some containers), creating them fails with an empty file name, which reads like a
    full output disk.
    """
    filename = str(getattr(err, "filename", "") or "")
    if plugin == "MultiProc" and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOSYS) \
            and (not filename or filename.startswith("/dev/shm")):
        return (f"{err.strerror or err}: the MultiProc plugin needs a writable /dev/shm (shared memory for its "
                "queues and locks); mount one (e.g. docker run --shm-size=1g, or a tmpfs on /dev/shm) or run "
                "with --nipype-plugin Linear (one step at a time)")
    return (f"{err.strerror or err} ({filename}); free space or choose another -w/output directory and run "
            "again")


def run_participant_wf(workflow: pe.Workflow, *, options: Options, tracker: RunTracker) -> bool:
    """Execute ``workflow``; return True when every node succeeded.

    The default is MultiProc with ``--nprocs`` workers (see :class:`_WorkerInitMultiProcPlugin`);
    ``options.nipype_plugin`` names another nipype plugin (Linear, SLURM, SGE, PBS...), which gets
    ``options.plugin_args`` as they are. For MultiProc, ``plugin_args`` are merged over the defaults.
    Failures of single runs do not raise: the tracker records them (and, after the call, their
    crash files). Only ``--stop-on-first-crash`` stops the other runs.
    """
    started = time.time() - 1.0
    options.logs_dir.mkdir(parents=True, exist_ok=True)
    user_args = dict(options.plugin_args)
    name = options.nipype_plugin
    plugin: Any = None
    try:
        if name == "MultiProc":
            plugin_args: dict[str, Any] = {"n_procs": options.nprocs, "raise_insufficient": False}
            if options.mem_gb:
                plugin_args["memory_gb"] = options.mem_gb
            plugin_args.update(user_args, status_callback=tracker)
            log_level = logging.DEBUG if options.verbose >= 1 else logging.WARNING
            itk_threads = 1 if options.random_seed is not None else max(1, options.omp_nthreads)
            worker_args = (max(1, options.omp_nthreads), log_level, nipype_log_level(options.verbose), itk_threads)
            plugin = _WorkerInitMultiProcPlugin(plugin_args, worker_args, run_order=list(tracker.status))
            workflow.run(plugin=plugin)
        else:
            LOGGER.info("running the workflow with nipype's %s plugin (%s)", name, user_args or "no arguments")
            workflow.run(plugin=name, plugin_args={**user_args, "status_callback": tracker})
        ok = True
    except RuntimeError as err:  # nipype re-raises the first node failure at the end
        LOGGER.debug("workflow finished with errors: %s", str(err).splitlines()[-1] if str(err) else err)
        ok = False
    except OSError as err:  # the scheduler itself could not write (a full disk): the runs not done fail
        LOGGER.error("the workflow stopped: %s", _scheduler_error(err, name))
        ok = False
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: end the workers now, not after their step
        if plugin is not None:
            stop_workers(plugin.pool)
        raise
    finally:
        if plugin is not None:
            plugin.pool.shutdown(wait=True, cancel_futures=True)
    tracker.attach_crash_files(options.logs_dir, started)
    return ok and all(s.state == "ok" for s in tracker.status.values())
