"""Expert masks that cannot be matched are reported with the expected pattern (issue 14)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bids_msseg.evaluation import find_expert_masks


def test_misnamed_expert_masks_warn_with_the_pattern(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    masks = tmp_path / "masks"
    (masks / "sub-01").mkdir(parents=True)
    (masks / "sub-01" / "sub-01_lesions.nii.gz").write_bytes(b"")
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert find_expert_masks(tmp_path / "bids", masks) == {}
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "_label-lesion_mask.nii.gz" in warning[0] and "sub-01/sub-01_lesions.nii.gz" in warning[0]
