"""Hostile and unlucky inputs, round three (issue 26): stale outputs, scale, links, leftovers.

Each test is one row of docs/bad_inputs.md ("round three"). Numerical rules have their own tests in
the mirrored modules (``tests/test_normalize.py``, ``tests/test_validate.py``...); here the app runs
through ``main`` on the small synthetic heads of ``tests/conftest.py`` with the tiny random model,
or, behind ``slow``, on patient 26 downsampled to 2 mm.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from bids_msseg.io import file_sha256


def _main(bids: Path, out: Path, work: Path, *extra: str) -> int:
    return main([str(bids), str(out), "participant", "-w", str(work), "--nprocs", "1", "--omp-nthreads", "1",
                 "--no-location", "--no-longitudinal", *extra])


# ------------------------------------------------------------------------- 1. stale outputs


def test_a_replaced_flair_is_recomputed_not_skipped(tmp_path: Path, make_bids_dataset, save_flair,
                                                    tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = (("sub-01/anat/sub-01_FLAIR.nii.gz", {"seed": 1, "skull": False}),
            ("sub-02/anat/sub-02_FLAIR.nii.gz", {"seed": 2, "skull": False}))
    bids = make_bids_dataset(tmp_path / "bids", runs=runs, extra_files=())
    out, work = tmp_path / "out", tmp_path / "work"
    assert _main(bids, out, work, "--model", str(tiny_bundle)) == 0
    source = bids / runs[0][0]
    mask_json = derivative_paths(out, runs[0][0])["mask_json"]
    assert json.loads(mask_json.read_text())["SourceSHA256"] == file_sha256(source)

    # Another image under the same name, given the old modification time (as cp -p or rsync -t leave it).
    stat = source.stat()
    img = nib.load(source)
    data = np.asanyarray(img.dataobj).copy()
    data[:, :, data.shape[2] // 2:] = 0  # upper half empty
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(source))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.clear()
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert _main(bids, out, work, "--model", str(tiny_bundle)) == 0
    assert "sub-01_FLAIR: the source FLAIR changed since its outputs were made" in caplog.text
    assert "1 ok, 0 failed, 1 skipped" in caplog.text
    assert json.loads(mask_json.read_text())["SourceSHA256"] == file_sha256(source)
    mask = np.asanyarray(nib.load(derivative_paths(out, runs[0][0])["mask"]).dataobj)
    brain = np.asanyarray(nib.load(derivative_paths(out, runs[0][0])["brain"]).dataobj)
    assert not mask[:, :, data.shape[2] // 2:].any() and not brain[:, :, data.shape[2] // 2:].any()
