"""bids_msseg.preproc.orient: RAS round trips, resampling, and the loading checks of ``load_flair``."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.errors import InputError
from bids_msseg.preproc.orient import downsample, from_ras, load_flair, to_ras, upsample
from tests.preproc.helpers import SHAPE, ZOOMS, nifti, save, synthetic_head

# --- orientation -----------------------------------------------------------------------------

def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


AFFINES = {
    "RAS": np.diag([0.9, 0.9, 3.0]),
    "LPS": np.diag([-0.7, -0.7, 4.0]),
    "LAS": np.diag([-1.0, 1.0, 1.0]),
    # Sagittal acquisition: voxel axes are A->P, S->I, L->R.
    "sagittal": np.array([[0, 0, 1.2], [-1.0, 0, 0], [0, -1.0, 0]]),
    # Oblique: LPS tilted 20 degrees about x and 10 about z.
    "oblique": _rotation(np.radians(20), np.radians(10)) @ np.diag([-0.8, -0.8, 3.5]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_ras_round_trip_is_exact(name: str) -> None:
    affine = np.eye(4)
    affine[:3, :3] = AFFINES[name]
    affine[:3, 3] = [10.0, -20.0, 5.0]
    data = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    img = nifti(data, affine)
    ras = to_ras(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    ras_data = np.asarray(ras.dataobj)
    # Same voxels at the same world positions: a voxel's value and its world coordinate travel together.
    ijk = np.array([3, 7, 11])
    world = img.affine @ np.append(ijk, 1)
    ijk_ras = np.rint(np.linalg.solve(ras.affine, world)[:3]).astype(int)
    assert ras_data[tuple(ijk_ras)] == data[tuple(ijk)]
    # Superior voxels have larger axis-2 indices in RAS order.
    assert ras.affine[2, 2] > 0
    back = from_ras(ras_data, img)
    assert back.shape == data.shape
    assert np.array_equal(back, data)
    # Trailing channels are carried along.
    stacked = from_ras(np.stack([ras_data, 2 * ras_data], axis=-1), img)
    assert np.array_equal(stacked[..., 1], 2 * data)


def test_from_ras_rejects_wrong_grid() -> None:
    img = nifti(np.zeros(SHAPE, np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="not on the RAS grid"):
        from_ras(np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] + 1)), img)


def test_downsample_upsample_keep_smooth_fields() -> None:
    affine = np.diag([-0.7, -0.7, 4.0, 1.0])
    i, j, k = np.indices((60, 70, 20)).astype(np.float32)
    field = 1.0 + 0.003 * i + 0.002 * j - 0.01 * k  # linear: interpolation must reproduce it
    coarse, coarse_affine = downsample(field, affine, 4.0)
    assert coarse.shape == (11, 13, 20)
    back = upsample(coarse, coarse_affine, affine, field.shape)
    inner = (slice(15, -15), slice(15, -15), slice(0, None))  # away from the smoothing's edge effects
    assert np.allclose(back[inner], field[inner], atol=1e-4)


# --- load_flair --------------------------------------------------------------------------------

def test_load_flair_converts_to_float32_and_keeps_affine(tmp_path: Path) -> None:
    data = (synthetic_head() * 10).astype(np.uint16)
    affine = np.diag([-0.7, -0.7, 4.0, 1.0])
    affine[:3, 3] = [80, 90, -60]
    path = save(nifti(data, affine), tmp_path / "sub-01_FLAIR.nii.gz")
    img = load_flair(path)
    assert img.get_data_dtype() == np.float32
    assert np.asarray(img.dataobj).dtype == np.float32
    assert np.array_equal(np.asarray(img.dataobj), data.astype(np.float32))
    assert np.allclose(img.affine, affine)
    assert img.shape == SHAPE


def test_load_flair_squeezes_single_volume_4d(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = synthetic_head()[..., None]
    path = save(nifti(data), tmp_path / "single.nii.gz")
    with caplog.at_level(logging.INFO):
        img = load_flair(path)
    assert img.shape == SHAPE
    assert "squeezed" in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: np.stack([synthetic_head()] * 3, axis=-1), "4D image with 3 volumes"),
        (lambda: synthetic_head()[:, :, 18], "2D image"),
        (lambda: synthetic_head()[:, :, 16:20], "too few voxels"),
        (lambda: np.zeros(SHAPE, np.float32), "every voxel is 0"),
        (lambda: np.full(SHAPE, 7.0, np.float32), "constant"),
        (lambda: (synthetic_head() > 100).astype(np.uint8), "binary mask"),
        (lambda: np.where(np.indices(SHAPE)[0] < 30, np.nan, synthetic_head()), "NaN or Inf"),
        (lambda: np.zeros((1100, 10, 10), np.uint8) + np.arange(10, dtype=np.uint8), "absurd dimensions"),
        (lambda: synthetic_head().astype(np.complex64), "complex"),
    ],
    ids=["4d", "2d", "few-slices", "zeros", "constant", "binary", "mostly-nan", "huge-axis", "complex"],
)
def test_load_flair_refuses_bad_images(tmp_path: Path, make, message: str) -> None:
    path = save(nifti(make()), tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match=message) as info:
        load_flair(path)
    assert str(path) in str(info.value)


def test_load_flair_replaces_a_few_nans(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = synthetic_head()
    data[0, 0, :5] = np.nan
    data[1, 1, 1] = np.inf
    path = save(nifti(data), tmp_path / "nan.nii.gz")
    with caplog.at_level(logging.WARNING):
        img = load_flair(path)
    out = np.asarray(img.dataobj)
    assert np.all(np.isfinite(out))
    assert out[0, 0, 0] == 0 and out[1, 1, 1] == 0
    assert "6 NaN/Inf voxels" in caplog.text


def test_load_flair_refuses_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_flair(tmp_path / "missing.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(InputError, match="cannot use FLAIR"):
        load_flair(garbage)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_flair(text)
    # A valid gzip of something that is not a NIfTI header.
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(gzip.compress(b"\0" * 2000))
    with pytest.raises(InputError, match="cannot use FLAIR"):
        load_flair(fake)


def test_load_flair_refuses_truncated_gzip(tmp_path: Path) -> None:
    path = save(nifti(synthetic_head(), dtype=np.float32), tmp_path / "full.nii.gz")
    blob = path.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="truncated or corrupt|unreadable or corrupt"):
        load_flair(truncated)


def test_load_flair_refuses_non_nifti_format(tmp_path: Path) -> None:
    path = tmp_path / "head.mgz"
    nib.save(nib.MGHImage(synthetic_head(), np.diag([*ZOOMS, 1.0])), str(path))
    with pytest.raises(InputError, match="not a NIfTI image"):
        load_flair(path)


def test_load_flair_refuses_too_many_voxels_before_reading(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 300))
    header.set_data_dtype(np.uint8)
    header.set_zooms((1.0, 1.0, 1.0))
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4)  # header and extension flag, no data at all
    with pytest.raises(InputError, match="absurd dimensions"):
        load_flair(path)


def test_load_flair_refuses_broken_affine(tmp_path: Path) -> None:
    header = nifti(synthetic_head()).header.copy()
    header["qform_code"] = 0
    header["sform_code"] = 1
    header["srow_z"] = [0.0, 0.0, 0.0, 0.0]  # a singular sform
    path = save(nib.Nifti1Image(synthetic_head(), None, header), tmp_path / "flat.nii.gz")
    with pytest.raises(InputError, match="affine|voxel sizes"):
        load_flair(path)
