"""The demo (``python -m bids_msseg.demo``) and the README's quick start, run as a newcomer would (issue 14)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg import demo
from tests.helpers import TORCH_CPU_INDEX, index_reachable, readme_quick_start

ROOT = Path(__file__).resolve().parents[1]


def test_quick_start_is_the_documented_command() -> None:
    assert readme_quick_start() == ("python3 -m pip install --extra-index-url https://download.pytorch.org/whl/cpu "
                                    "-c constraints.txt . && python3 -m bids_msseg.demo /tmp/bids_msseg_demo")


def test_an_interrupted_build_is_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    built, levels = [], []

    def fake_build(bids_dir: Path, n_subjects: int = 2, seed: int = 0) -> Path:
        built.append(bids_dir)
        bids_dir.mkdir(parents=True, exist_ok=True)
        (bids_dir / demo.COMPLETE_MARKER).write_text("")
        return bids_dir

    monkeypatch.setattr(demo, "make_demo_dataset", fake_build)
    monkeypatch.setattr(demo, "cli_main", lambda argv: levels.append(argv[2]) or 0)
    (tmp_path / "bids" / "sub-demo01").mkdir(parents=True)  # what an interrupted build left
    assert demo.main([str(tmp_path)]) == 0
    assert built == [tmp_path / "bids"] and levels == ["participant", "group"]
    assert "incomplete" in caplog.text and "what this means" in caplog.text
    assert demo.main([str(tmp_path)]) == 0
    assert len(built) == 1, "a complete dataset is reused"


def test_figures_line(tmp_path: Path) -> None:
    (tmp_path / "group_evaluation.tsv").write_text(
        "participant_id\tevaluation_status\tn_pred_lesions\tn_true_lesions\tpred_volume_ml\ttrue_volume_ml\tdice"
        "\tltpr\tlfpr\nsub-demo01\tok\t12\t10\t1.5\t1.4\t0.61234\t0.8\t0.25\n")
    line, = demo._figures(tmp_path)
    assert line == ("sub-demo01: 12 lesions found (1.5 mL), 10 in the expert mask (1.4 mL on the scan's grid); Dice "
                    "0.61, share of expert lesions found 0.80, share of found lesions that are false 0.25")


def test_expert_volumes_name_both_grids() -> None:
    """The build log gives the mask's 1 mm volume and the one the evaluation uses (issue 25: 1.4 and 0.9 mL)."""
    native = np.zeros((20, 20, 20), bool)
    native[5:15, 5:15, 5:15] = True  # 1.0 mL at 1 mm
    scan = np.zeros((10, 10, 4), bool)
    scan[2:8, 2:8, 1:3] = True  # 72 voxels of 2 x 2 x 5 mm = 1.44 mL
    assert demo.expert_volumes(native, scan, (2.0, 2.0, 5.0)) == (
        "1.0 mL on the 1 mm template; the expert mask resampled onto this scan's grid, which the evaluation uses: "
        "1.4 mL")


def test_packaged_lesion_masks_are_real_and_small() -> None:
    for _, name in demo.SUBJECTS:
        img = demo._packaged_mask(name)
        assert img.shape == (182, 218, 182) and np.asarray(img.dataobj).sum() > 500
    folder = ROOT / "bids_msseg" / "data" / "demo_lesions"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 200_000
    assert "CC-BY" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_demo_dataset_is_complete_and_on_grid(tmp_path: Path) -> None:
    bids = demo.make_demo_dataset(tmp_path / "bids", n_subjects=1)
    flair = nib.load(bids / "sub-demo01" / "anat" / "sub-demo01_FLAIR.nii.gz")
    mask = nib.load(bids / "derivatives" / "manual" / "sub-demo01" / "anat" / "sub-demo01_label-lesion_mask.nii.gz")
    assert flair.shape == mask.shape and np.allclose(flair.affine, mask.affine)
    assert np.asarray(mask.dataobj).sum() > 0 and (bids / demo.COMPLETE_MARKER).is_file()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.slow
def test_readme_quick_start_from_a_fresh_clone(tmp_path: Path) -> None:
    """The README's first command, verbatim, from the root of a fresh clone in a fresh virtual
    environment (no site packages, a non-editable install): exit 0 and the demo's figures."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone, venv = tmp_path / "clone", tmp_path / "venv"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "NIPYPE_NO_ET": "1"}
    env.pop("PYTHONPATH", None)
    if not index_reachable(TORCH_CPU_INDEX):  # pip would retry that index 5 times for every package
        env["PIP_RETRIES"] = "0"
    command = readme_quick_start().replace("/tmp/bids_msseg_demo", str(tmp_path / "demo"))
    done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "result:" in done.stderr and "what this means" in done.stderr
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import bids_msseg; print(bids_msseg.__file__)"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(venv) in installed, "a non-editable install into the fresh environment"
