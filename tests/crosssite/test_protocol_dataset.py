"""scripts/protocol_dataset.py on ../shared/data: the protocol's dataset and the lesion-free negatives."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_msseg.masks import find_training_pairs

ROOT = Path(__file__).resolve().parents[2]


def _script():
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module("protocol_dataset")


def test_protocol_dataset_and_negatives_are_found_as_training_data(shared_data: Path, tmp_path: Path) -> None:
    script = _script()
    bids = script.make_dataset(tmp_path / "realbids", shared_data)
    negatives = script.make_negatives(tmp_path / "negatives", shared_data)
    pairs = find_training_pairs([bids, negatives], database_dir=tmp_path / "db", skip_validation=True)
    by_subject = {run.subject: (mask, normal) for run, mask, normal in pairs}
    assert len(pairs) == 26 and len({run.subject for run, *_ in pairs}) == 22  # 25 scans of 21 patients + GG-853
    assert sum(normal is not None for _, normal in by_subject.values()) == 3  # MS3SEG's normal-WMH masks
    mask = nib.load(str(by_subject["gg853"][0]))
    flair = nib.load(str(shared_data / "flair-template" / "GG-853-FLAIR-2.0mm.nii.gz"))
    assert mask.shape == flair.shape[:3] and np.allclose(mask.affine, flair.affine)
    assert not np.asarray(mask.dataobj).any()  # lesion-free: every voxel is background
