"""Synthetic heads and NIfTI helpers shared by the preprocessing tests.

Synthetic images are small (40x48x36 voxels of 4.5 mm, so heads and brains have their real
physical size) and seeded. Real-data tests read ../shared/data and skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import SHARED_DATA

SHAPE = (40, 48, 36)
ZOOMS = (4.5, 4.5, 4.5)
VOXEL_ML = float(np.prod(ZOOMS)) / 1000.0


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data is absent: {path} not found (real-data test)")
    return path


def synthetic_head(seed: int = 0, skull: bool = True, noisy_background: bool = False,
                   shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """RAS-ordered FLAIR-like head: brain (~1.1 L) with ventricles, optional skull and scalp (~2.9 L)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * z for n, z in zip(shape, ZOOMS, strict=True)],
                       indexing="ij")
    # Ellipsoid radius 1 at semi-axes of 68 x 85 x 58 mm: a ~1.4 L brain-with-CSF.
    r = np.sqrt((grid[0] / 68) ** 2 + (grid[1] / 85) ** 2 + (grid[2] / 58) ** 2)
    img = np.zeros(shape, np.float32)
    img[r < 1.0] = 380.0  # grey matter: brighter than white matter in FLAIR
    img[r < 0.7] = 300.0
    img[np.sqrt((grid[0] / 12) ** 2 + (grid[1] / 30) ** 2 + (grid[2] / 15) ** 2) < 1.0] = 80.0
    if skull:  # CSF, bone and scalp fat: one connected head, as in real scans
        img[(r >= 1.0) & (r < 1.08)] = 40.0
        img[(r >= 1.08) & (r < 1.18)] = 60.0
        img[(r >= 1.18) & (r < 1.3)] = 450.0
    img = img * (1.0 + 0.002 * grid[0]) + rng.normal(0.0, 10.0, shape) * (img > 0)
    if noisy_background:
        img += np.abs(rng.normal(0.0, 15.0, shape))
    return np.clip(img, 0, None).astype(np.float32)


def nifti(data: np.ndarray, affine: np.ndarray | None = None, dtype=None) -> nib.Nifti1Image:
    if affine is None:
        affine = np.diag([*ZOOMS, 1.0])
        if data.ndim >= 3:
            affine[:3, 3] = -affine[:3, :3] @ ((np.array(data.shape[:3]) - 1) / 2.0)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype) if dtype else data, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    return img


def save(img: nib.Nifti1Image, path: Path) -> Path:
    nib.save(img, str(path))
    return path
