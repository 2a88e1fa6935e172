"""HTML quality-control reports: one self-contained page per FLAIR run (participant level)."""

from bids_msseg.reports.participant import render_participant_report

__all__ = ["render_participant_report"]
