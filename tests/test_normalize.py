"""Intensity normalization (bids_msseg/normalize.py)."""

import numpy as np
import pytest

from bids_msseg.normalize import (
    SCALE_PERCENTILE,
    STANDARD_INTENSITY,
    brain_quantiles,
    linear_normalize,
    quantile_normalize,
    reference_from_quantiles,
    standardize_scale,
)
from tests.helpers import blob_volume


def test_quantile_normalization_matches_reference():
    data, mask = blob_volume()
    ref = np.sort(np.random.default_rng(1).uniform(0, 1, 1001))
    out = quantile_normalize(data, mask, ref)
    assert np.all(out[~mask] == 0)
    q = brain_quantiles(out, mask)
    assert np.allclose(q[10:-10], ref[10:-10], atol=0.02)


def test_quantile_normalization_is_invariant_to_monotone_rescaling():
    data, mask = blob_volume()
    ref = np.linspace(0, 1, 1001)
    a = quantile_normalize(data, mask, ref)
    b = quantile_normalize(3.0 * data**1.3 + 7.0, mask, ref)
    assert np.abs(a - b)[mask].max() < 0.01


def test_reference_is_monotone_and_spans_unit_range():
    curves = np.stack([brain_quantiles(*blob_volume(seed=s)) * (s + 1) for s in range(3)])
    ref = reference_from_quantiles(curves)
    assert np.all(np.diff(ref) >= 0)
    assert ref[5] == pytest.approx(0.0, abs=0.05) and ref[995] == pytest.approx(1.0, abs=0.05)


def test_linear_normalization_range():
    data, mask = blob_volume()
    out = linear_normalize(data, mask)
    assert out.min() >= 0 and out.max() <= 1 and np.all(out[~mask] == 0)


def test_empty_mask_is_refused():
    data, mask = blob_volume()
    with pytest.raises(ValueError, match="empty"):
        quantile_normalize(data, np.zeros_like(mask), np.linspace(0, 1, 1001))


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 255.0 / 124.0, 1e3, 4e9 / 124.0])
def test_standard_scale_removes_the_storage_scale(scale: float) -> None:
    """Issue 26 item 2: every later step sees one scale, whatever the file's (uint8 ... uint32, x 1e-30)."""
    data, _ = blob_volume()
    reference, factor = standardize_scale(data)
    scaled, scaled_factor = standardize_scale((data.astype(np.float64) * scale).astype(np.float32))
    assert np.percentile(reference[reference > 0], SCALE_PERCENTILE) == pytest.approx(STANDARD_INTENSITY, rel=1e-4)
    assert np.allclose(scaled, reference, rtol=1e-5, atol=0)
    assert scaled_factor == pytest.approx(factor / scale, rel=1e-5)


def test_standard_scale_by_a_power_of_two_is_exact() -> None:
    data, _ = blob_volume()
    assert np.array_equal(standardize_scale(data)[0], standardize_scale(data * 2.0**-20)[0])
    zeros = np.zeros((4, 4, 4), np.float32)
    assert standardize_scale(zeros)[1] == 1.0 and not standardize_scale(zeros)[0].any()


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1e3])
def test_normalizations_have_no_absolute_floor(scale: float) -> None:
    """The tie nudge of quantile normalization and the span of linear scaling were floored at 1.0
    and 1e-6 (absolute): images with a small intensity scale were normalized differently."""
    data, mask = blob_volume()
    data = np.round(data / 4)  # ties, as in integer images
    ref = np.linspace(0, 1, 1001)
    small = (data * scale).astype(np.float32)
    assert np.abs(quantile_normalize(small, mask, ref) - quantile_normalize(data, mask, ref)).max() < 1e-4
    assert np.abs(linear_normalize(small, mask) - linear_normalize(data, mask)).max() < 1e-4
