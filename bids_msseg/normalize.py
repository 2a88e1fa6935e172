"""Intensity normalization of brain voxels.

Quantile normalization (Badea & Popa 2024, after Nyul & Udupa) maps the quantiles of an image's
brain intensities onto a reference quantile curve stored in the model bundle; it beat linear
[0, 1] scaling in the paper. Linear scaling is kept as the ablation/option.
Voxels outside the brain mask are set to 0 in both methods.
"""

from __future__ import annotations

import numpy as np

#: Number of quantile levels (0, 0.001, ..., 1) used for references and mappings.
N_QUANTILES = 1001
#: Percentiles that bound linear scaling; robust to a few outlier voxels.
LINEAR_PERCENTILES = (0.5, 99.5)


def quantile_levels(n: int = N_QUANTILES) -> np.ndarray:
    """Quantile levels in [0, 1] at which references are stored."""
    return np.linspace(0.0, 1.0, n)


def brain_quantiles(data: np.ndarray, mask: np.ndarray, n: int = N_QUANTILES) -> np.ndarray:
    """Intensity quantiles of the voxels inside ``mask``."""
    values = np.asarray(data, dtype=np.float32)[np.asarray(mask, bool)]
    if values.size == 0:
        raise ValueError("the brain mask is empty: nothing to normalize")
    return np.quantile(values, quantile_levels(n)).astype(np.float64)


def reference_from_quantiles(per_image_quantiles: np.ndarray) -> np.ndarray:
    """Average quantile curve of several images, each first scaled to [0, 1] robustly.

    Scaling by the 0.5th and 99.5th percentile levels before averaging keeps one bright image from
    dominating; the resulting reference spans roughly [0, 1].
    """
    q = np.atleast_2d(np.asarray(per_image_quantiles, dtype=np.float64))
    levels = quantile_levels(q.shape[1])
    lo = np.array([np.interp(LINEAR_PERCENTILES[0] / 100, levels, row) for row in q])
    hi = np.array([np.interp(LINEAR_PERCENTILES[1] / 100, levels, row) for row in q])
    scaled = (q - lo[:, None]) / np.maximum(hi - lo, 1e-6)[:, None]
    return np.maximum.accumulate(scaled.mean(axis=0))


def quantile_normalize(
    data: np.ndarray, mask: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """Map brain intensities so that their quantiles equal ``reference``; 0 outside the mask."""
    reference = np.asarray(reference, dtype=np.float64)
    source = brain_quantiles(data, mask, reference.size)
    # Ties in the source quantiles (e.g. uint8 images) would make np.interp ambiguous; nudging
    # them to strictly increasing keeps the mapping monotone.
    source = source + np.arange(source.size) * 1e-9 * max(1.0, float(np.abs(source).max()))
    m = np.asarray(mask, bool)
    out = np.zeros(data.shape, dtype=np.float32)
    out[m] = np.interp(np.asarray(data, np.float64)[m], source, reference).astype(np.float32)
    return out


def linear_normalize(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale brain intensities linearly to [0, 1] between robust percentiles; 0 outside the mask."""
    m = np.asarray(mask, bool)
    values = np.asarray(data, dtype=np.float32)[m]
    if values.size == 0:
        raise ValueError("the brain mask is empty: nothing to normalize")
    lo, hi = np.percentile(values, LINEAR_PERCENTILES)
    out = np.zeros(data.shape, dtype=np.float32)
    out[m] = np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return out


def normalize(
    data: np.ndarray, mask: np.ndarray, method: str, reference: np.ndarray | None = None
) -> np.ndarray:
    """Dispatch to ``quantile`` or ``linear`` normalization."""
    if method == "quantile":
        if reference is None:
            raise ValueError("quantile normalization needs a reference curve")
        return quantile_normalize(data, mask, reference)
    if method == "linear":
        return linear_normalize(data, mask)
    raise ValueError(f"unknown normalization method {method!r} (quantile or linear)")
