"""Repeatability: two participant runs of the same input give byte-identical outputs on CPU, and
every output records the software versions and the model that made it.

``--random-seed`` seeds numpy, torch and ANTs' registration, makes torch deterministic and runs
ITK (N4, registration) on one thread, which it needs for exact repeats.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from bids_msseg.provenance import COMPONENTS, software_versions
from tests.helpers import DEFAULT_RUNS

IMAGE_KEYS = ("mask", "probseg", "dseg", "brain")


def _data_digest(path: Path) -> tuple[np.ndarray, str]:
    data = np.asanyarray(nib.load(str(path)).dataobj)
    return data, hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def _run_twice(bids: Path, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """Two complete runs, each with its own work and output folders (nothing shared or cached)."""
    outs = []
    for i in (1, 2):
        out = tmp_path / f"out{i}"
        argv = [str(bids), str(out), "participant", "-w", str(tmp_path / f"work{i}"), *extra]
        assert main(argv) == 0
        outs.append(out)
    return outs[0], outs[1]


def _assert_identical(out1: Path, relpath1: str, out2: Path, relpath2: str) -> dict[str, str]:
    """The images' data are equal (arrays and sha256) and the lesion tables are the same."""
    paths1, paths2 = derivative_paths(out1, relpath1), derivative_paths(out2, relpath2)
    digests = {}
    for key in IMAGE_KEYS:
        a, digest_a = _data_digest(paths1[key])
        b, digest_b = _data_digest(paths2[key])
        np.testing.assert_array_equal(a, b, err_msg=f"{key} differs between the two runs")
        assert digest_a == digest_b
        digests[key] = digest_a
    assert paths1["dseg_tsv"].read_text() == paths2["dseg_tsv"].read_text()
    return digests


def test_software_versions_cover_the_components() -> None:
    versions = software_versions()
    assert set(versions) == {"python", *COMPONENTS}
    import nibabel
    import torch

    assert versions["torch"] == torch.__version__ and versions["nibabel"] == nibabel.__version__


def test_two_seeded_runs_are_byte_identical(tmp_path: Path, tiny_bundle: Path, make_bids_dataset) -> None:
    """The same synthetic FLAIR as two subjects, segmented by two worker processes of one invocation.

    Each MultiProc worker starts from a fresh interpreter (forkserver), so the two runs share no
    state; the real-data variant below runs two separate invocations.
    """
    run = DEFAULT_RUNS[1]  # LPS: the reorientation round trip is part of what repeats
    runs = [(run[0], run[1]), (run[0].replace("sub-01", "sub-02"), run[1])]
    bids = make_bids_dataset(tmp_path / "bids", runs=runs, extra_files=())
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--model", str(tiny_bundle),
                 "--random-seed", "42", "--nprocs", "2", "--omp-nthreads", "1", "--device", "cpu"]) == 0
    _assert_identical(out, runs[0][0], out, runs[1][0])
    probability = np.asanyarray(nib.load(str(derivative_paths(out, runs[0][0])["probseg"])).dataobj)
    assert np.unique(probability).size > 100  # a real probability map, not a constant

    relpath = runs[0][0]
    sidecar = json.loads(derivative_paths(out, relpath)["mask_json"].read_text())
    assert sidecar["RandomSeed"] == 42
    recorded = sidecar["ComponentVersions"]
    assert {k: v for k, v in recorded.items() if not k.startswith("model_")} == software_versions()
    assert recorded["model_id"] == sidecar["ModelID"]
    from bids_msseg.model.bundle import WEIGHTS_NAME, sha256_file

    assert recorded["model_weights_sha256"] == sha256_file(tiny_bundle / WEIGHTS_NAME)
    generated = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]
    assert f"torch {recorded['torch']}" in generated["Description"]
    assert recorded["model_weights_sha256"] in generated["Description"]


RAW_FLAIR = "raw-flair/ljubljana-longitudinal_patient01_study1_FLAIR.nii.gz"
#: Skull-stripped and bias-corrected (Lesjak et al. 2017, CC-BY): no ANTs step runs before the lesion
#: location's registration, so that registration is ITK's first use in its worker.
PREPROCESSED_FLAIR = "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz"


def _raw_flair_dataset(shared_data: Path, tmp_path: Path, flair: str = RAW_FLAIR) -> tuple[Path, str]:
    """A one-run BIDS dataset linking a real FLAIR (skips when the real data is absent)."""
    source = shared_data / flair
    if not source.is_file():
        pytest.skip(f"real data not available: {source} is missing")
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "repeatability", "BIDSVersion": "1.10.0"}))
    relpath = "sub-01/anat/sub-01_FLAIR.nii.gz"
    (bids / relpath).symlink_to(source)
    return bids, relpath


@pytest.mark.realdata
@pytest.mark.slow
def test_real_raw_flair_repeats_exactly(shared_data: Path, tmp_path: Path) -> None:
    """A raw clinical FLAIR (Lesjak et al. 2016, CC-BY) through N4, brain extraction and the default model."""
    from bids_msseg.model.bundle import DEFAULT_BUNDLE

    if not (DEFAULT_BUNDLE / "model.json").is_file():
        pytest.skip(f"the packaged default model is not present ({DEFAULT_BUNDLE})")
    bids, relpath = _raw_flair_dataset(shared_data, tmp_path)
    out1, out2 = _run_twice(bids, tmp_path, "--random-seed", "42", "--nprocs", "1", "--omp-nthreads", "2",
                            "--device", "cpu")
    sidecar = json.loads(derivative_paths(out1, relpath)["mask_json"].read_text())
    assert sidecar["PreprocessingDecisions"]["n4"] is True and sidecar["PreprocessingDecisions"]["skullstrip"] is True
    digests = _assert_identical(out1, relpath, out2, relpath)
    print(f"identical sha256 of the data: {digests}")


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("flair", [RAW_FLAIR, PREPROCESSED_FLAIR], ids=["raw", "preprocessed"])
def test_real_flair_repeats_exactly_by_default(shared_data: Path, tmp_path: Path, flair: str) -> None:
    """Issue 14: without --random-seed (seed 0, which ANTs alone would read as "from the clock"); every
    image, the template-space ones included (their registration must run ITK on one thread)."""
    bids, relpath = _raw_flair_dataset(shared_data, tmp_path, flair)
    out1, out2 = _run_twice(bids, tmp_path)
    assert json.loads(derivative_paths(out1, relpath)["mask_json"].read_text())["RandomSeed"] == 0
    _assert_identical(out1, relpath, out2, relpath)
    images1 = sorted(p.relative_to(out1) for p in out1.rglob("sub-*/**/*.nii.gz"))
    # every image, the template-space mask and probability and the location map among them
    assert any("space-MNI152" in str(p) for p in images1) and len(images1) >= len(IMAGE_KEYS)
    assert images1 == sorted(p.relative_to(out2) for p in out2.rglob("sub-*/**/*.nii.gz"))
    for rel in images1:
        assert (out1 / rel).read_bytes() == (out2 / rel).read_bytes(), f"{rel}: files differ"
