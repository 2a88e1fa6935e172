"""HTML quality-control reports: one self-contained page per FLAIR run (participant level).

:func:`render_participant_report` is imported on first use (PEP 562): the participant report draws
with matplotlib, which modules that only need :mod:`bids_msseg.reports.common` (the command line,
through the longitudinal step's report) should not pay for at start-up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_participant_report"]


def __getattr__(name: str) -> Any:
    if name == "render_participant_report":
        from bids_msseg.reports.participant import (  # lazy: matplotlib, only where a report is drawn
            render_participant_report,
        )

        return render_participant_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
