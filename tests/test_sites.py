"""The site rule's participants.tsv reader (bids_msseg/sites.py): never a traceback on a bad file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bids_msseg.sites import read_participants


def test_latin1_participants_tsv_is_read_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "participants.tsv").write_bytes("participant_id\tsite\nsub-01\tHôpital Nord\n".encode("latin-1"))
    rows, column = read_participants(tmp_path, None)
    assert column == "site" and rows["sub-01"]["site"] == "Hôpital Nord"
    assert "is not UTF-8" in caplog.text


def test_rows_with_extra_fields_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tsite\nsub-01\tA\textra\nsub-02\tB\t\nsub-03\nsub-04\tn/a\n")
    rows, column = read_participants(tmp_path, "site")
    assert "sub-01" not in rows
    assert rows["sub-02"]["site"] == "B"  # a trailing empty field is harmless
    assert rows["sub-03"]["site"] is None and rows["sub-04"]["site"] is None
    assert "line(s) 2 have more fields" in caplog.text and "line(s) 4 have fewer fields" in caplog.text


def test_duplicate_participant_rows_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26 item 11: ``sub-01 X`` and ``sub-01 Y``: the group level silently took the last."""
    caplog.set_level(logging.WARNING)
    (tmp_path / "participants.tsv").write_text("participant_id\tsite\nsub-01\tX\nsub-02\tZ\nsub-01\tY\n")
    rows, _ = read_participants(tmp_path, "site")
    assert rows["sub-01"]["site"] == "Y" and rows["sub-02"]["site"] == "Z"
    assert "lists participant(s) more than once: sub-01 (2 rows); the last row of each is used" in caplog.text
    caplog.clear()
    (tmp_path / "participants.tsv").write_text("participant_id\tsite\nsub-01\tX\nsub-02\tZ\n")
    read_participants(tmp_path, "site")
    assert "more than once" not in caplog.text
