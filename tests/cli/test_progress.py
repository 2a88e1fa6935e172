"""Progress at the default log level: run and step lines, ETA, a bar on terminals only (issue 14)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from bids_msseg.cli.progress import BarAwareHandler, ProgressDisplay, format_seconds, set_footer


@dataclass
class _Status:
    name: str
    state: str = "running"
    seconds: float | None = None
    peak_memory_gb: float | None = None
    failed_node: str | None = None
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def run(self) -> SimpleNamespace:
        return SimpleNamespace(name=self.name)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_seconds() -> None:
    assert format_seconds(4.25) == "4.2 s" and format_seconds(42) == "42 s"
    assert format_seconds(185) == "3 min 05 s" and format_seconds(3720) == "1 h 02 min"


def test_lines_for_start_steps_and_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bids_msseg")
    display = ProgressDisplay(2, 1, detail=lambda status: "3 lesions, 1.20 mL", stream=io.StringIO())
    first = _Status("sub-01_FLAIR")
    display.on_start(first)
    assert display.eta() is None
    first.steps["preprocess"] = 10.0
    display.on_step(first, "preprocess", 10.0)
    first.steps.update(segment=8.0, lesion_stats=1.0, write_derivatives=1.0, report=1.0)
    first.state, first.seconds, first.peak_memory_gb = "ok", 21.0, 1.25
    display.on_finish(first, 1, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "[1/2] sub-01_FLAIR: started"
    assert messages[1] == "    sub-01_FLAIR: preprocessing in 10 s"
    assert messages[2].startswith("[1/2 done] sub-01_FLAIR: done in 21 s (3 lesions, 1.20 mL, peak memory 1.2 GB)")
    assert "left" in messages[2]
    assert display.fraction() == pytest.approx(0.5)
    assert display.eta() is not None


def test_bar_only_on_terminals() -> None:
    plain = io.StringIO()
    display = ProgressDisplay(1, 1, stream=plain)
    display.on_start(_Status("sub-01_FLAIR"))
    assert plain.getvalue() == ""
    terminal = _Terminal()
    display = ProgressDisplay(3, 1, stream=terminal)
    display.on_start(_Status("sub-01_FLAIR"))
    assert "0/3 runs" in terminal.getvalue() and "[" in terminal.getvalue()
    display.close()
    assert terminal.getvalue().endswith("\r\x1b[K")


def test_handler_keeps_the_bar_below_log_lines() -> None:
    stream = _Terminal()
    logger = logging.getLogger("bids_msseg.test_progress_handler")
    handler = BarAwareHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        set_footer("[###...] 50%", stream)
        logger.warning("a message")
        assert stream.getvalue().endswith("a message\n[###...] 50%")
        set_footer("", stream)
        logger.warning("another")
        assert stream.getvalue().endswith("\r\x1b[Kanother\n")
    finally:
        logger.removeHandler(handler)


def test_reused_step(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bids_msseg")
    display = ProgressDisplay(1, 1, stream=io.StringIO())
    status = _Status("sub-01_FLAIR")
    display.on_start(status)
    status.steps["preprocess"] = 0.0
    display.on_step(status, "preprocess", None)
    assert caplog.records[-1].getMessage() == "    sub-01_FLAIR: preprocessing reused from the work directory"
