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
#: :func:`standardize_scale` brings this percentile of an image's non-zero magnitudes...
SCALE_PERCENTILE = 99.0
#: ...to this value, before any decision or processing step.
STANDARD_INTENSITY = 1000.0


def standardize_scale(data: np.ndarray) -> tuple[np.ndarray, float]:
    """``data`` (float32) multiplied by the factor that brings the :data:`SCALE_PERCENTILE` of its
    non-zero magnitudes to :data:`STANDARD_INTENSITY`, and that factor (1.0 for an all-zero image).

    MRI intensities have no unit: the same anatomy stored as uint8, uint16 0-65535, float 0-125 or
    multiplied by 1e-30 is the same image. Every later step (background and brain decisions, N4,
    brain extraction by ANTs, whose optimizers are not invariant to the intensity scale, the
    normalization) then sees one scale, so the lesions do not depend on how the file was stored.
    """
    data = np.asarray(data, dtype=np.float32)
    magnitude = np.abs(data.ravel()[:: max(1, data.size // 2_000_000)])
    magnitude = magnitude[magnitude > 0]
    if not magnitude.size:
        return data, 1.0
    factor = STANDARD_INTENSITY / float(np.percentile(magnitude.astype(np.float64), SCALE_PERCENTILE))
    return (data.astype(np.float64) * factor).astype(np.float32), factor


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
    # The nudge is relative to the image's own scale (an absolute floor would depend on it).
    source = source + np.arange(source.size) * 1e-9 * (float(np.abs(source).max()) or 1.0)
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
    span = hi - lo if hi > lo else 1.0  # a flat brain maps to 0 whatever its scale
    out[m] = np.clip((values - lo) / span, 0.0, 1.0)
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
