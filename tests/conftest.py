"""Shared fixtures: the real data folder, a tiny random model bundle, synthetic BIDS datasets.

The synthetic FLAIRs are small (48x56x40 voxels of 4 mm, so the head has a realistic physical
size), seeded, head-like: grey and white matter, ventricles and a few bright white-matter
"lesions", a smooth bias field and noise, optionally inside skull and scalp. Runs get different
orientations (RAS, LPS, LAS) so that every test of shapes and affines also checks the
reorientation round trip.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: (relative path, options) of the default synthetic dataset: 2 subjects, sub-01 with 2 sessions.
#: Skull-stripped (zero background), so the preprocessing decides against N4 and brain extraction
#: and the end-to-end test stays fast; ``skull=True`` makes raw-looking heads.
DEFAULT_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", {"orientation": "RAS", "seed": 1, "skull": False}),
    ("sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz", {"orientation": "LPS", "seed": 2, "skull": False}),
    ("sub-02/anat/sub-02_FLAIR.nii.gz",
     {"orientation": "LAS", "seed": 3, "zooms": (3.5, 3.5, 4.5), "skull": False}),
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real MRI, never copied into the repository); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} does not exist")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle with random (seeded) weights: exercises the whole path, predicts nonsense."""
    import torch

    from bids_msseg.model.bundle import ModelCard, save_bundle
    from bids_msseg.model.network import build_network, default_architecture

    torch.manual_seed(0)
    arch = default_architecture()
    card = ModelCard(architecture=arch, reference_quantiles=list(np.linspace(0.0, 1.0, 1001)),
                     model_id="tiny-random")
    return save_bundle(tmp_path_factory.mktemp("tiny_bundle"), build_network(arch), card)


def head_like_flair(shape: tuple[int, int, int] = (48, 56, 40), seed: int = 0, skull: bool = True,
                    n_lesions: int = 3) -> np.ndarray:
    """A FLAIR-like head in RAS voxel order (int16): background 0, brain with bright lesions."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grid, (0.85, 0.88, 0.85), strict=True)))
    img = np.zeros(shape, np.float32)
    brain = radius < 0.78
    img[brain] = 300.0  # grey matter
    img[radius < 0.55] = 380.0  # white matter
    ventricles = np.sqrt((grid[0] / 0.18) ** 2 + (grid[1] / 0.35) ** 2 + (grid[2] / 0.2) ** 2) < 1.0
    img[ventricles] = 80.0
    if skull:
        img[(radius >= 0.84) & (radius < 0.92)] = 60.0  # bone: dark
        img[(radius >= 0.92) & (radius < 1.0)] = 450.0  # scalp fat: bright
    wm = np.argwhere((radius < 0.5) & ~ventricles)
    index = np.indices(shape)
    for centre in wm[rng.choice(len(wm), size=n_lesions, replace=False)]:
        dist = np.sqrt(((index - centre[:, None, None, None]) ** 2).sum(axis=0))
        img[dist < rng.uniform(1.2, 2.5)] = 650.0
    bias = 1.0 + 0.15 * grid[0] + 0.1 * grid[2]
    img = img * bias + rng.normal(0.0, 12.0, shape) * (img > 0)
    return np.clip(img, 0, None).astype(np.int16)


_ORIENTATION_FLIPS = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1), "LAS": (-1, 1, 1)}


def save_flair(path: Path, *, orientation: str = "RAS", seed: int = 0, shape=(48, 56, 40),
               zooms=(4.0, 4.0, 4.0), skull: bool = True) -> Path:
    """Write a head-like FLAIR whose voxel axes follow ``orientation`` (world stays RAS+)."""
    data = head_like_flair(shape, seed=seed, skull=skull)
    flips = _ORIENTATION_FLIPS[orientation]
    for axis, flip in enumerate(flips):
        if flip < 0:
            data = np.flip(data, axis)
    affine = np.diag([f * z for f, z in zip(flips, zooms, strict=True)] + [1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def make_bids_dataset(
    root: Path,
    runs: Iterable[tuple[str, Mapping[str, Any]]] = DEFAULT_RUNS,
    *,
    description: bool = True,
    extra_files: Iterable[str] = ("sub-02/anat/sub-02_T1w.nii.gz",),
    sidecars: bool = True,
) -> Path:
    """Build a BIDS dataset under ``root``; ``runs`` are (relative path, save_flair options)."""
    root.mkdir(parents=True, exist_ok=True)
    if description:
        (root / "dataset_description.json").write_text(json.dumps(
            {"Name": "synthetic", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    for relpath, opts in runs:
        path = save_flair(root / relpath, **dict(opts))
        if sidecars:
            stem = path.name.split(".")[0]
            (path.parent / f"{stem}.json").write_text(json.dumps(
                {"MRAcquisitionType": "3D", "MagneticFieldStrength": 3, "SeriesDescription": stem}))
    for relpath in extra_files:
        save_flair(root / relpath, seed=99)
    return root


@pytest.fixture
def bids_factory() -> Callable[..., Path]:
    """The synthetic dataset builder (:func:`make_bids_dataset`)."""
    return make_bids_dataset


@pytest.fixture
def synthetic_bids(tmp_path: Path) -> Path:
    """The default synthetic dataset: sub-01 (ses-1, ses-2) and sub-02 (no session)."""
    return make_bids_dataset(tmp_path / "bids")


def run_validator(dataset: Path) -> list[dict]:
    """Issues reported by the official BIDS validator (bids-validator-deno) on ``dataset``."""
    done = subprocess.run(["bids-validator-deno", str(dataset), "--format", "json"], capture_output=True,
                          text=True, timeout=300)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"bids-validator-deno gave no JSON (rc {done.returncode}): {done.stderr[-2000:]}")
    return report["issues"]["issues"]
