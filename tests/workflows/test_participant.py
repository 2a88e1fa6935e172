"""The run tracker reports each run's start and each step with its duration (issue 14)."""

from __future__ import annotations

from pathlib import Path

from bids_msseg.bids import collect_flair_runs
from bids_msseg.workflows.participant import RunTracker


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
