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
