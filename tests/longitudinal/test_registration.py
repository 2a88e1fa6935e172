"""ITK transforms, resampling and the rigid registration of two visits (bids_msseg.longitudinal.registration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bids_msseg.longitudinal.registration import itk_matrix, read_itk_affine, register_pair, resample, vox2vox
from tests.longitudinal.helpers import grid_affine, phantom, rigid


def test_itk_matrix_convention_round_trip():
    """An ITK affine (centre c) maps fixed points to moving points: y = A (x - c) + t + c."""
    a = rigid(10, (3, -2, 1))[:3, :3]
    c, t = np.array([5.0, -4.0, 2.0]), np.array([1.0, 2.0, 3.0])
    matrix = itk_matrix(np.concatenate([a.ravel(), t]), c)
    x = np.array([10.0, 20.0, 30.0])
    assert np.allclose(matrix[:3, :3] @ x + matrix[:3, 3], a @ (x - c) + t + c)


def test_read_itk_affine(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
                    "Parameters: 1 0 0 0 1 0 0 0 1 1 2 3\nFixedParameters: 0 0 0\n")
    assert np.allclose(read_itk_affine(path)[:3, 3], [1, 2, 3])
    path.write_text("Transform: Euler3DTransform_double_3_3\nParameters: 0 0 0 1 2 3\nFixedParameters: 0 0 0\n")
    with pytest.raises(ValueError):
        read_itk_affine(path)


def test_resample_identity_and_vox2vox():
    data = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    assert np.allclose(resample(data, vox2vox(grid_affine(), grid_affine()), data.shape), data, atol=1e-5)


@pytest.mark.parametrize("registration_mm", [0.0, 4.0])
def test_registration_grid_does_not_change_the_fit(registration_mm: float):
    """Fitting on a coarse copy (or on the images' own grid) recovers the same move."""
    move = rigid(8.0, (6.0, -5.0, 4.0))
    b_flair, b_brain, _, _ = phantom(0, np.eye(4))
    f_flair, f_brain, _, _ = phantom(1, move)
    reg = register_pair(b_flair, grid_affine(), b_brain, f_flair, grid_affine(), f_brain, seed=1,
                        registration_mm=registration_mm)
    ras = np.diag([-1.0, -1, 1, 1]) @ reg.itk_lps @ np.diag([-1.0, -1, 1, 1])
    points = np.array([[30, 0, 0, 1], [-30, 40, 20, 1], [0, -50, -20, 1]], float).T
    assert np.abs(ras @ points - move @ points).max() < 1.5
    assert reg.resolution_mm == registration_mm and reg.brain_dice > 0.95
