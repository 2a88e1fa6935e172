"""Fixtures of the longitudinal tests."""

from __future__ import annotations

import numpy as np
import pytest

from bids_msseg.longitudinal.pipeline import run_longitudinal
from tests.longitudinal.helpers import DEFINITION, rigid, write_session


@pytest.fixture(scope="package")
def shifted_pair(tmp_path_factory):
    """Baseline, and a follow-up whose head moved by 8 degrees and (6, -5, 4) mm; the step run on them,
    beside a single-session subject (sub-02)."""
    root = tmp_path_factory.mktemp("longitudinal")
    bids, out = root / "bids", root / "out"
    move = rigid(8.0, (6.0, -5.0, 4.0))
    runs = [write_session(bids, out, "1", np.eye(4), 0), write_session(bids, out, "2", move, 1),
            write_session(bids, out, None, np.eye(4), 0, subject="02")]
    (bids / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-1\t2020-01-10T09:00:00\nses-2\t2021-01-09T09:00:00\n")
    single = sorted(p for p in (out / "sub-02").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in single}
    results = run_longitudinal(out, runs, bids_dir=bids, threshold=0.5, definition=DEFINITION, seed=1)
    return out, move, results, before
