"""Fixtures of the cross-site tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bids_msseg.bids import FlairRun
from bids_msseg.train.split import TrainingScan


def _scan(subject: str, session: str | None = None, dataset: str = "d", **metadata) -> TrainingScan:
    name = f"sub-{subject}" + (f"_ses-{session}" if session else "") + "_FLAIR.nii.gz"
    entities = {"subject": subject, **({"session": session} if session else {})}
    run = FlairRun(Path(f"/data/{dataset}/sub-{subject}/anat/{name}"), f"sub-{subject}/anat/{name}", entities,
                   metadata)
    return TrainingScan(run, Path("/m.nii.gz"), dataset)


@pytest.fixture(scope="session")
def make_scan() -> Callable[..., TrainingScan]:
    """``make_scan(subject, session=None, dataset="d", **sidecar_metadata)``: a training scan with a FLAIR run."""
    return _scan
