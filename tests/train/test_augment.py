"""Image-quality augmentation (DeepLesionBrain): blur, unsharp masking, thick slices; and the
intensity perturbation of training slices (bias field, gamma, noise)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import laplace

from bids_msseg.train.augment import (
    BIAS_AMPLITUDE_MAX,
    QUALITY_KINDS,
    SIGMA_RANGE,
    _bias_field,
    degrade_quality,
    perturb_intensity,
)


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    vol = np.zeros((24, 24, 16), np.float32)
    vol[4:20, 4:20, 2:14] = 300.0
    vol[10:13, 10:13, 6:9] = 700.0  # a lesion
    return vol + rng.normal(0, 5, vol.shape).astype(np.float32) * (vol > 0)


def _sharpness(vol: np.ndarray) -> float:
    return float(np.abs(laplace(vol.astype(np.float64))).mean())


def test_each_kind_degrades_as_intended() -> None:
    vol = _volume()
    blurred, p = degrade_quality(vol, np.random.default_rng(1), "blur")
    assert p["kind"] == "blur" and SIGMA_RANGE[0] <= p["sigma"] <= SIGMA_RANGE[1]
    assert _sharpness(blurred) < _sharpness(vol) and blurred.sum() == pytest.approx(vol.sum(), rel=1e-3)

    sharp, p = degrade_quality(vol, np.random.default_rng(1), "sharpen")
    assert 0.5 <= p["amount"] <= 1.5 and _sharpness(sharp) > _sharpness(vol) and sharp.min() >= vol.min()

    thick, p = degrade_quality(vol, np.random.default_rng(1), "thick_slices")
    k, offset = p["slices"], p["offset"]
    assert 2 <= k <= 4 and 0 <= offset < k
    first = offset if offset else k  # the first full block starts here
    np.testing.assert_allclose(thick[:, :, first], thick[:, :, first + k - 1], rtol=1e-6)
    np.testing.assert_allclose(thick[:, :, first], vol[:, :, first : first + k].mean(axis=2), rtol=1e-5)
    assert thick.sum() == pytest.approx(vol.sum(), rel=1e-5)  # block means keep the total

    for out in (blurred, sharp, thick):
        assert out.shape == vol.shape and out.dtype == np.float32
    assert np.array_equal(vol, _volume())  # the input is left alone


def test_seeded_and_drawn_among_all_kinds() -> None:
    vol = _volume()
    a, pa = degrade_quality(vol, np.random.default_rng(5))
    b, pb = degrade_quality(vol, np.random.default_rng(5))
    assert pa == pb and np.array_equal(a, b)
    kinds = {degrade_quality(vol, np.random.default_rng(s))[1]["kind"] for s in range(30)}
    assert kinds == set(QUALITY_KINDS)
    with pytest.raises(ValueError, match="unknown"):
        degrade_quality(vol, np.random.default_rng(0), "motion")


def test_bias_field_is_smooth_and_bounded() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        field = _bias_field((64, 48), BIAS_AMPLITUDE_MAX, rng)
        assert field.shape == (64, 48)
        assert np.exp(-BIAS_AMPLITUDE_MAX) - 1e-6 <= field.min() and field.max() <= np.exp(BIAS_AMPLITUDE_MAX) + 1e-6
        assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.05  # smooth: < 5 % from one pixel to the next
    assert np.array_equal(_bias_field((8, 8), 0.0, rng), np.ones((8, 8)))


def test_perturb_intensity_changes_the_brain_only_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((3, 32, 32), np.float32)
    image[:, 6:26, 4:28] = rng.uniform(0.2, 1.0, (3, 20, 24))
    brain = image > 0
    out = perturb_intensity(image, np.random.default_rng(5))
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.array_equal(out, perturb_intensity(image, np.random.default_rng(5)))
    assert (out[~brain] == 0).all() and (out[brain] >= 0).all() and not np.array_equal(out, image)
    ratios = [np.median(perturb_intensity(image, np.random.default_rng(s))[brain] / image[brain]) for s in range(30)]
    assert 0.75 < min(ratios) and max(ratios) < 1.35  # a perturbation, not a different image
    # quantile-normalized CSF lies below 0: still brain, perturbed and kept negative, not made background
    image[0, 10, 10] = -0.05
    dark = perturb_intensity(image, np.random.default_rng(5))[0, 10, 10]
    assert dark < 0 and dark != -0.05
