"""Voxel-value checks of bids_msseg/validate.py (the matrix of bad files is tests/e2e/test_bad_inputs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_msseg.errors import InputError
from bids_msseg.preproc.decisions import measure_background
from bids_msseg.validate import MIN_NEIGHBOUR_CORRELATION, check_data, neighbour_correlation
from tests.helpers import head_like_flair


def test_pure_noise_is_refused_as_not_a_head() -> None:
    """Issue 26 item 3: Gaussian noise (mean 100, sd 30) came out "ok, 0 lesions, brain 1387 mL"."""
    noise = np.random.default_rng(0).normal(100.0, 30.0, (64, 64, 48)).astype(np.float32)
    assert abs(neighbour_correlation(noise)) < 0.05
    with pytest.raises(InputError, match="it looks like noise, not an image of a head.*correlation 0.0"):
        check_data(noise, "noise.nii.gz")


@pytest.mark.parametrize("skull", [True, False])
def test_images_of_a_head_pass_the_noise_check(skull: bool) -> None:
    head = head_like_flair(seed=3, skull=skull).astype(np.float32)
    assert neighbour_correlation(head) > MIN_NEIGHBOUR_CORRELATION
    check_data(head, "head.nii.gz")


def test_a_tiny_intensity_scale_is_not_taken_for_a_constant_image() -> None:
    """Issue 26 item 4: an image x 1e-30 was refused as "constant (every voxel is -1.59e-30)" (the check
    had an absolute floor of 1e-6); the background decision had one of 1.0."""
    head = head_like_flair(seed=1, skull=False).astype(np.float32)
    tiny = (head.astype(np.float64) * 1e-30).astype(np.float32)
    out = check_data(tiny, "tiny.nii.gz")
    assert out.max() > 0 and np.count_nonzero(out) == np.count_nonzero(head)
    assert measure_background(tiny, (4.0, 4.0, 4.0)) == measure_background(head, (4.0, 4.0, 4.0))
    with pytest.raises(InputError, match="constant"):
        check_data(np.full((20, 20, 20), 1e-30, np.float32), "flat.nii.gz")


def _save_with_forms(path, qform_degrees: float) -> None:
    import nibabel as nib

    angle = np.radians(qform_degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0, 0], [np.sin(angle), np.cos(angle), 0, 0],
                         [0, 0, 1, 0], [0, 0, 0, 1]])
    sform = np.diag([2.0, 2.0, 2.0, 1.0])
    sform[:3, 3] = -40.0
    img = nib.Nifti1Image(head_like_flair(shape=(40, 40, 32), seed=2), sform)
    img.set_sform(sform, 1)
    img.set_qform(rotation @ sform, 1)
    nib.save(img, str(path))


def test_qform_and_sform_that_disagree_are_named_in_a_warning(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26 item 5: qform and sform 40 degrees apart, the sform used silently."""
    import logging

    from bids_msseg.validate import screen_flair

    caplog.set_level(logging.WARNING, logger="bids_msseg")
    _save_with_forms(tmp_path / "apart.nii.gz", 40.0)
    screen_flair(tmp_path / "apart.nii.gz")
    assert "apart.nii.gz: the qform (code 1, axes" in caplog.text
    assert "disagree by 40 degrees" in caplog.text and "the sform is used" in caplog.text
    caplog.clear()
    _save_with_forms(tmp_path / "same.nii.gz", 0.0)
    screen_flair(tmp_path / "same.nii.gz")
    assert "disagree" not in caplog.text


def _damaged_header(tmp_path, name: str, offset: int, fmt: str, value) -> str:
    """A valid .nii (int16, 20^3) with one header field overwritten at byte ``offset``."""
    import struct

    import nibabel as nib

    nib.save(nib.Nifti1Image(head_like_flair(shape=(20, 20, 20), seed=4), np.eye(4)), str(tmp_path / "ok.nii"))
    raw = bytearray((tmp_path / "ok.nii").read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    (tmp_path / name).write_bytes(bytes(raw))
    return str(tmp_path / name)


@pytest.mark.parametrize(("field", "offset", "fmt", "value", "message"), [
    ("DT_BINARY", 70, "<h", 1, "unsupported voxel type (NIfTI datatype code 1: binary, 1 bit per voxel)"),
    ("datatype 9999", 70, "<h", 9999, "(NIfTI datatype code 9999: a code the NIfTI standard does not define)"),
    ("float128", 70, "<h", 1536, "(NIfTI datatype code 1536: float128)"),
    ("vox_offset 100", 108, "<f", 100.0, "vox offset 100 too low"),
    ("dim -109", 42, "<h", -109, "impossible dimensions (-109, 20, 20) (zero or negative sizes): a broken header"),
])
def test_broken_headers_get_one_message_of_the_app(tmp_path, capfd: pytest.CaptureFixture[str], field: str,
                                                   offset: int, fmt: str, value, message: str) -> None:
    """Issue 26 item 15: nibabel's raw "data code N not supported" line came before the app's error, and
    dim = -109 was called "too few voxels"."""
    from bids_msseg.validate import screen_flair

    path = _damaged_header(tmp_path, "bad.nii", offset, fmt, value)
    capfd.readouterr()
    with pytest.raises(InputError) as err:
        screen_flair(path)
    assert message in str(err.value)
    captured = capfd.readouterr()
    assert "not attempting fix" not in captured.err + captured.out and "setting to minimum" not in captured.err


def test_an_infinite_scl_slope_is_warned(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26 item 15: scl_slope = inf was read as no scaling without a word."""
    import logging

    from bids_msseg.validate import screen_flair

    caplog.set_level(logging.WARNING, logger="bids_msseg")
    screen_flair(_damaged_header(tmp_path, "inf.nii", 112, "<f", float("inf")))
    assert "inf.nii: scl_slope is inf, which nibabel (like most tools) reads as no scaling" in caplog.text
    caplog.clear()
    screen_flair(tmp_path / "ok.nii")
    assert "scl_slope" not in caplog.text
