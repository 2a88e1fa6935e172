"""The participant workflow (bids_msseg/workflows/participant.py): structure, hashing, run tracking."""

from __future__ import annotations

from pathlib import Path

from bids_msseg.bids import collect_flair_runs
from bids_msseg.workflows.participant import RunTracker

# ------------------------------------------------------------------- workflow structure (fast)


def _options(tmp_path: Path, *extra: str):
    from bids_msseg.cli.parser import parse_args

    return parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant",
                       "-w", str(tmp_path / "work"), *extra])


def test_one_independent_sub_workflow_per_run(synthetic_bids: Path, tmp_path: Path,
                                              tiny_bundle: Path) -> None:
    from bids_msseg.bids import collect_flair_runs
    from bids_msseg.workflows.participant import FINAL_NODE, init_participant_wf

    runs = collect_flair_runs(synthetic_bids)
    wf = init_participant_wf(runs, options=_options(tmp_path, "--omp-nthreads", "2", "--nprocs", "2"),
                             bundle_path=tiny_bundle, work_dir=tmp_path / "work")
    subs = wf._graph.nodes()
    assert sorted(s.name for s in subs) == ["single_flair_sub_01_ses_1_FLAIR_wf",
                                            "single_flair_sub_01_ses_2_FLAIR_wf",
                                            "single_flair_sub_02_FLAIR_wf"]
    assert wf._graph.number_of_edges() == 0  # runs share nothing: a failure stays in its run
    sub = wf.get_node("single_flair_sub_02_FLAIR_wf")
    steps = {"preprocess", "segment", "lesion_stats", "write_derivatives", FINAL_NODE}
    assert steps <= set(sub.list_node_names())
    segment = sub.get_node("segment")
    assert segment.n_procs == 2 and segment.inputs.model_id.startswith("tiny-random@")
    assert wf.config["execution"]["crashfile_format"] == "txt"
    assert wf.config["execution"]["crashdump_dir"] == str(tmp_path / "out" / "logs")


def test_device_and_threads_are_not_hashed(synthetic_bids: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    from bids_msseg.bids import collect_flair_runs
    from bids_msseg.workflows.participant import init_participant_wf

    runs = collect_flair_runs(synthetic_bids, participant_labels=["02"])

    def segment_hash(*extra: str) -> str:
        wf = init_participant_wf(runs, options=_options(tmp_path, *extra), bundle_path=tiny_bundle,
                                 work_dir=tmp_path / "work")
        node = wf.get_node("single_flair_sub_02_FLAIR_wf").get_node("segment")
        node.inputs.in_file = str(runs[0].path)  # stand-ins for the upstream outputs
        node.inputs.brain_mask = str(runs[0].path)
        return node.inputs.get_hashval()[1]

    base = segment_hash("--device", "cpu", "--omp-nthreads", "1")
    assert segment_hash("--device", "cuda", "--omp-nthreads", "2") == base
    assert segment_hash("--device", "cpu", "--precision", "fp32") != base


def test_tracker_and_crash_reason(synthetic_bids: Path, tmp_path: Path) -> None:
    from bids_msseg.bids import collect_flair_runs
    from bids_msseg.workflows.participant import RunTracker

    runs = collect_flair_runs(synthetic_bids)
    finished = []
    tracker = RunTracker(runs, on_finish=lambda status, done, total: finished.append(
        (status.run.name, status.state, done, total)))
    top = "bids_msseg_participant_wf"
    tracker(f"{top}.single_flair_sub_02_FLAIR_wf.preprocess", "start")
    tracker(f"{top}.single_flair_sub_02_FLAIR_wf.preprocess", "end")
    tracker(f"{top}.single_flair_sub_02_FLAIR_wf.report", "end")
    tracker(f"{top}.single_flair_sub_01_ses_1_FLAIR_wf.segment", "start")
    tracker(f"{top}.single_flair_sub_01_ses_1_FLAIR_wf.segment", "exception")
    assert finished == [("sub-02_FLAIR", "ok", 1, 3), ("sub-01_ses-1_FLAIR", "failed", 2, 3)]

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "crash-x-root-segment-1.txt").write_text(
        f"Node: {top}.single_flair_sub_01_ses_1_FLAIR_wf.segment\nWorking directory: /w\n\n"
        "Traceback (most recent call last):\nnipype.pipeline.engine.nodes.NodeExecutionError: wrapped\n"
        "\tTraceback:\n\t  File x\n\tbids_msseg.errors.InputError: the image is 4D with 3 volumes\n")
    tracker.attach_crash_files(logs, since=0.0)
    status = tracker.status["single_flair_sub_01_ses_1_FLAIR_wf"]
    assert status.crash_file == logs / "crash-x-root-segment-1.txt"
    assert status.reason == "bids_msseg.errors.InputError: the image is 4D with 3 volumes"
    assert tracker.status["single_flair_sub_01_ses_2_FLAIR_wf"].state == "pending"


# ---- The run tracker reports each run's start and each step with its duration (issue 14).

def test_tracker_reports_start_and_steps(synthetic_bids: Path) -> None:
    runs = collect_flair_runs(synthetic_bids)
    events = []
    tracker = RunTracker(runs, on_start=lambda s: events.append(("start", s.run.name)),
                         on_step=lambda s, step, seconds: events.append((step, s.run.name, seconds >= 0)),
                         on_finish=lambda s, done, total: events.append(("end", s.state, done, total)))
    node = "bids_msseg_participant_wf.single_flair_sub_02_FLAIR_wf"
    for step in ("inputnode", "preprocess", "segment", "lesion_stats", "write_derivatives", "report"):
        tracker(f"{node}.{step}", "start")
        tracker(f"{node}.{step}", "end")
    assert events[0] == ("start", "sub-02_FLAIR")
    assert [e[0] for e in events[1:-1]] == ["preprocess", "segment", "lesion_stats", "write_derivatives", "report"]
    assert events[-1] == ("end", "ok", 1, len(runs))
    status = tracker.status["single_flair_sub_02_FLAIR_wf"]
    assert list(status.steps) == ["preprocess", "segment", "lesion_stats", "write_derivatives", "report"]


def test_tracker_reports_cached_steps(synthetic_bids: Path) -> None:
    """nipype ends a step reused from the work directory without starting it: the run still starts
    first and the step comes with no duration."""
    runs = collect_flair_runs(synthetic_bids)
    events = []
    tracker = RunTracker(runs, on_start=lambda s: events.append("start"),
                         on_step=lambda s, step, seconds: events.append((step, seconds)))
    tracker("bids_msseg_participant_wf.single_flair_sub_02_FLAIR_wf.preprocess", "end")
    assert events == ["start", ("preprocess", None)]


def test_a_task_without_result_fails_its_run_instead_of_hanging() -> None:
    """Issue 18: a full work directory made nipype's callback raise; the task never ended (hang)."""
    from concurrent.futures import Future

    from bids_msseg.workflows.participant import _WorkerInitMultiProcPlugin

    plugin = _WorkerInitMultiProcPlugin({"n_procs": 1}, (1, 30, 50, 1))
    try:
        future: Future = Future()
        plugin._task_obj[7] = future
        future.set_exception(FileNotFoundError("result_segment.pklz\n[Errno 28] No space left on device"))
        plugin._async_callback(future)
        result = plugin._get_result(7)
        assert result is not None and result["result"] is None and result["taskid"] == 7
        assert "the disk is full" in result["traceback"][-1]
        other: Future = Future()
        plugin._task_obj[8] = other
        other.set_exception(EOFError("truncated"))
        plugin._async_callback(other)
        assert "returned no result" in plugin._get_result(8)["traceback"][-1]
    finally:
        plugin.pool.shutdown(wait=False)


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def _pid_runs(pid: int) -> bool:
    """Whether ``pid`` is a running process (not gone, not a zombie), asked of /proc rather than of
    ``Process.is_alive()``, which answers True once another thread has reaped the process."""
    from pathlib import Path

    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_stop_workers_ends_every_worker_at_once() -> None:
    """Issue 26 item 14: after Ctrl-C a worker finished its step and outlived the main process."""
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    from bids_msseg.workflows.participant import stop_workers

    pool = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("fork"))
    futures = [pool.submit(_sleep, 60.0) for _ in range(2)]
    while len(getattr(pool, "_processes", {}) or {}) < 2:
        time.sleep(0.05)
    processes = list(pool._processes.values())
    start = time.monotonic()
    stop_workers(pool)
    assert not any(_pid_runs(p.pid) for p in processes)
    assert time.monotonic() - start < 11.0  # SIGTERM's grace (5 s) and SIGKILL's reaping (5 s) at most
    pool.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)


def test_scheduler_errors_name_dev_shm_only_when_it_is_the_cause() -> None:
    import errno

    from bids_msseg.workflows.participant import _scheduler_error

    shm = _scheduler_error(OSError(errno.EROFS, "Read-only file system"), "MultiProc")
    assert "needs a writable /dev/shm" in shm and "--nipype-plugin Linear" in shm
    full = _scheduler_error(OSError(errno.ENOSPC, "No space left on device", "/out/x"), "MultiProc")
    assert "free space" in full and "/dev/shm" not in full
    assert "/dev/shm" not in _scheduler_error(OSError(errno.EROFS, "Read-only file system"), "Linear")
