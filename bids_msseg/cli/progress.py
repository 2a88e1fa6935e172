"""What the participant level tells the user while it works, at the default log level.

A line when each run starts, one per step with its duration, one when the run ends (lesions,
volume, time, peak memory, how much is left), and on a terminal an overall progress bar with an
estimated time of arrival kept at the bottom of the screen (redrawn under each log line). When
stderr is not a terminal (a log file, a cluster job) only the plain lines are written.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LOGGER = logging.getLogger("bids_msseg.cli")

#: Share of a run's time each step takes (a raw 1 mm FLAIR on CPU), for the progress and the ETA.
STEP_WEIGHTS = {"preprocess": 0.4, "segment": 0.35, "lesion_stats": 0.04, "lesion_location": 0.1,
                "write_derivatives": 0.04, "report": 0.07}
#: How each step is named in the progress lines.
STEP_LABELS = {"preprocess": "preprocessing", "segment": "segmentation", "lesion_stats": "lesion statistics",
               "lesion_location": "lesion location",
               "write_derivatives": "derivatives written", "report": "report"}
BAR_WIDTH = 28


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressDisplay:
    """Progress of ``total`` runs, ``parallel`` at a time; plugs into ``RunTracker``'s callbacks.

    ``detail(status)`` gives the end-of-run detail (``12 lesions, 3.41 mL``).
    """

    def __init__(self, total: int, parallel: int, *, detail: Callable[[Any], str] | None = None,
                 stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.total = max(1, total)
        self.parallel = max(1, parallel)
        self.detail = detail
        self.stream = stream if stream is not None else sys.stderr
        self.bar = bool(getattr(self.stream, "isatty", lambda: False)()) if bar is None else bar
        self.started = time.perf_counter()
        self._progress: dict[str, float] = {}  # run name -> share done (0..1)
        self._index: dict[str, int] = {}
        self._done = 0

    # ------------------------------------------------------------------------- tracker callbacks

    def on_start(self, status: Any) -> None:
        self._index[status.run.name] = len(self._index) + 1
        self._progress[status.run.name] = 0.0
        LOGGER.info("[%d/%d] %s: started", self._index[status.run.name], self.total, status.run.name)
        self.redraw()

    def on_step(self, status: Any, step: str, seconds: float | None) -> None:
        """A step has ended; ``seconds`` is None when it was reused from the work directory."""
        self._progress[status.run.name] = min(1.0, sum(STEP_WEIGHTS.get(s, 0.0) for s in status.steps))
        took = "reused from the work directory" if seconds is None else f"in {format_seconds(seconds)}"
        LOGGER.info("    %s: %s %s", status.run.name, STEP_LABELS.get(step, step), took)
        self.redraw()

    def on_finish(self, status: Any, done: int, total: int) -> None:
        self._done = done
        self._progress[status.run.name] = 1.0
        took = f" in {format_seconds(status.seconds)}" if status.seconds is not None else ""
        memory = f", peak memory {status.peak_memory_gb:.1f} GB" if status.peak_memory_gb else ""
        eta = self.eta()
        left = f"; about {format_seconds(eta)} left" if eta is not None and done < total else ""
        if status.state == "ok":
            detail = self.detail(status) if self.detail else ""
            LOGGER.info("[%d/%d done] %s: done%s (%s%s)%s", done, total, status.run.name, took,
                        detail or "no summary", memory, left)
        else:
            LOGGER.error("[%d/%d done] %s: FAILED at step %r%s%s", done, total, status.run.name,
                         status.failed_node, took, left)
        self.redraw()

    # ----------------------------------------------------------------------------------- numbers

    def fraction(self) -> float:
        """Share of the whole job done (finished runs, and the finished steps of running ones)."""
        return min(1.0, sum(self._progress.values()) / self.total)

    def eta(self) -> float | None:
        """Seconds left, from the time per unit of work so far (None before any step has ended)."""
        fraction = self.fraction()
        if fraction <= 0.0:
            return None
        elapsed = time.perf_counter() - self.started
        return elapsed * (1.0 - fraction) / fraction

    def bar_line(self) -> str:
        fraction = self.fraction()
        filled = int(math.floor(fraction * BAR_WIDTH))
        eta = self.eta()
        elapsed = time.perf_counter() - self.started
        return (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}  {self._done}/{self.total} runs  "
                f"elapsed {format_seconds(elapsed)}" + (f"  ETA {format_seconds(eta)}" if eta is not None else ""))

    # ----------------------------------------------------------------------------------- drawing

    def redraw(self) -> None:
        """Show the bar on the bottom line (terminals only); log lines are written above it."""
        if not self.bar:
            return
        set_footer(self.bar_line(), self.stream)

    def close(self) -> None:
        if self.bar:
            set_footer("", self.stream)


# The footer is drawn by the command line's log handler (``BarAwareHandler``): it erases the bar,
# writes the log record and draws the bar again, so log lines and the bar never mix.
_FOOTER: dict[int, str] = {}


def set_footer(text: str, stream: TextIO) -> None:
    """Replace the footer line of ``stream`` by ``text`` (empty: remove it)."""
    _FOOTER[id(stream)] = text
    stream.write("\r\x1b[K" + text)
    stream.flush()


class BarAwareHandler(logging.StreamHandler):
    """A stream handler that keeps a progress footer (``set_footer``) below the log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        footer = _FOOTER.get(id(self.stream), "")
        if footer:
            self.stream.write("\r\x1b[K")
        super().emit(record)
        if footer:
            self.stream.write(footer)
            self.stream.flush()
