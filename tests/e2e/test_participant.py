"""End to end through ``main``: synthetic data with a tiny random model, then real FLAIRs.

Every output must lie on its input's grid: same shape and same affine (``space-orig``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from tests.e2e.helpers import check_run_outputs
from tests.helpers import DEFAULT_RUNS


def _argv(bids: Path, out: Path, work: Path, *extra: str) -> list[str]:
    return [str(bids), str(out), "participant", "-w", str(work), "--nprocs", "2", "--omp-nthreads", "1",
            *extra]


def test_synthetic_dataset_end_to_end(synthetic_bids: Path, tmp_path: Path, tiny_bundle: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert main(_argv(synthetic_bids, out, work, "--model", str(tiny_bundle))) == 0

    for relpath, _ in DEFAULT_RUNS:
        paths = check_run_outputs(out, synthetic_bids, relpath)
        meta = json.loads(paths["mask_json"].read_text())
        assert meta["ModelID"].startswith("tiny-random@") and meta["Threshold"] == 0.5
        assert meta["InferenceDevice"] == "cpu"
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert (out / "logs" / "CITATION.md").is_file()
    assert not list((out / "logs").glob("crash-*"))
    assert "3 ok, 0 failed" in caplog.text

    # Complete outputs are skipped...
    caplog.clear()
    assert main(_argv(synthetic_bids, out, work, "--model", str(tiny_bundle))) == 0
    assert "already have complete outputs" in caplog.text
    # ...unless a setting that defines them changes: then only the steps after it re-run.
    caplog.clear()
    assert main(_argv(synthetic_bids, out, work, "--model", str(tiny_bundle), "--threshold", "0.7",
                      "--participant-label", "02")) == 0
    paths = check_run_outputs(out, synthetic_bids, "sub-02/anat/sub-02_FLAIR.nii.gz")
    assert json.loads(paths["mask_json"].read_text())["Threshold"] == 0.7
    assert "1 ok, 0 failed" in caplog.text
    # the synthetic runs (4 mm; sub-02 3.5 x 3.5 x 4.5 mm) are thick-slice scans: their seed threshold is the
    # thick-slice one (thin against thick: tests/test_lesions.py)
    thick = ["--seed-threshold", "0.8", "--seed-threshold-thick", "0.6", "--participant-label", "02"]
    assert main(_argv(synthetic_bids, out, work, "--model", str(tiny_bundle), *thick)) == 0
    paths = check_run_outputs(out, synthetic_bids, "sub-02/anat/sub-02_FLAIR.nii.gz")
    assert json.loads(paths["mask_json"].read_text())["SeedThreshold"] == 0.6


def test_a_failing_flair_does_not_stop_the_others(tmp_path: Path, tiny_bundle: Path,
                                                  caplog: pytest.LogCaptureFixture, make_bids_dataset) -> None:
    runs = [DEFAULT_RUNS[0], DEFAULT_RUNS[2]]
    bids = make_bids_dataset(tmp_path / "bids", runs)
    broken = bids / "sub-03" / "anat" / "sub-03_FLAIR.nii.gz"
    broken.parent.mkdir(parents=True)
    # A valid header (so it passes the screening before the workflow) over all-zero voxels: it
    # fails inside the workflow, at its first step. Header-level failures: tests/test_bad_inputs.py.
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.int16), np.eye(4)), str(broken))
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="bids_msseg")

    assert main(_argv(bids, out, tmp_path / "work", "--model", str(tiny_bundle))) == 1
    for relpath, _ in runs:
        check_run_outputs(out, bids, relpath)
    crash_files = list((out / "logs").glob("crash-*.txt"))
    assert len(crash_files) == 1
    assert "single_flair_sub_03_FLAIR_wf" in crash_files[0].read_text()
    assert "2 ok, 1 failed" in caplog.text
    assert str(crash_files[0]) in caplog.text  # the summary names the crash file
    assert not derivative_paths(out, "sub-03/anat/sub-03_FLAIR.nii.gz")["summary"].exists()


# --------------------------------------------------------------------------------- real data

REAL_RUNS = {
    "sub-p26/anat/sub-p26_FLAIR.nii.gz": "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz",
    "sub-lj01/ses-1/anat/sub-lj01_ses-1_FLAIR.nii.gz":
        "raw-flair/ljubljana-longitudinal_patient01_study1_FLAIR.nii.gz",
    "sub-lj01/ses-2/anat/sub-lj01_ses-2_FLAIR.nii.gz":
        "raw-flair/ljubljana-longitudinal_patient01_study2_FLAIR.nii.gz",
    "sub-synthsr/anat/sub-synthsr_FLAIR.nii.gz": "raw-flair/py_synthsr_FLAIR.nii.gz",
}


@pytest.fixture
def real_bids(shared_data: Path, tmp_path: Path) -> Path:
    """A BIDS dataset in tmp whose FLAIRs are symlinks into ../shared/data (nothing is copied)."""
    root = tmp_path / "bids_real"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "bids_msseg real-data check", "BIDSVersion": "1.10.0"}))
    for relpath, source in REAL_RUNS.items():
        target = shared_data / source
        if not target.is_file():
            pytest.skip(f"real data not available: {target} is missing")
        link = root / relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return root


@pytest.mark.realdata
@pytest.mark.slow
def test_real_flairs_end_to_end(real_bids: Path, tmp_path: Path, run_validator) -> None:
    from bids_msseg.model.bundle import DEFAULT_BUNDLE

    if not (DEFAULT_BUNDLE / "model.json").is_file():
        pytest.skip(f"the packaged default model is not present ({DEFAULT_BUNDLE})")
    out = tmp_path / "out"
    argv = [str(real_bids), str(out), "participant", "-w", str(tmp_path / "work")]
    assert main(argv) == 0
    for relpath in REAL_RUNS:
        check_run_outputs(out, real_bids, relpath)
    if shutil.which("bids-validator-deno") is None:
        pytest.skip("outputs checked, but bids-validator-deno is not on PATH to validate them")
    errors = [(i["code"], i.get("location")) for i in run_validator(out) if i["severity"] == "error"]
    assert not errors, f"bids-validator-deno reports errors: {errors}"
