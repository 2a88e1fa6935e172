"""Intensity normalization (bids_msseg/normalize.py)."""

import numpy as np
import pytest

from bids_msseg.normalize import (
    brain_quantiles,
    linear_normalize,
    quantile_normalize,
    reference_from_quantiles,
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
