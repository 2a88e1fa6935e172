"""Image-quality augmentation of whole volumes (DeepLesionBrain, Kamraoui et al. 2022).

Clinical FLAIRs differ from research scans mostly in sharpness: thick 2D slices, scanner or
reconstruction blur, and vendor sharpening filters. DeepLesionBrain made its network robust to
these by training on copies of the scans degraded in exactly those ways, which the slice-level
flips and rotations of :class:`~bids_msseg.train.data.SliceSampler` cannot imitate (thick slices
mix neighbouring *axial* slices). :func:`degrade_quality` applies one of them to a RAS+ volume;
the group-level trainer writes the results as extra training shards (never validation ones).
Only the image changes: the lesion and brain masks stay those of the original scan.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

#: The degradations, one of which is drawn per call.
QUALITY_KINDS = ("blur", "sharpen", "thick_slices")
#: Gaussian sigma range in voxels (DeepLesionBrain's 0.5-1.75 at ~1 mm voxels).
SIGMA_RANGE = (0.5, 1.75)
#: Unsharp-masking strength: ``image + amount * (image - blurred)``.
SHARPEN_AMOUNT_RANGE = (0.5, 1.5)
#: Thick-slice simulation: this many consecutive axial slices averaged (inclusive range).
THICK_SLICES_RANGE = (2, 4)


def _thick_slices(image: np.ndarray, k: int, offset: int) -> np.ndarray:
    """Average blocks of ``k`` slices along axis 2 (blocks start at ``offset``) and repeat each mean."""
    out = np.empty_like(image)
    starts = sorted({0, *range(offset, image.shape[2], k)})
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else image.shape[2]
        out[:, :, start:stop] = image[:, :, start:stop].mean(axis=2, keepdims=True)
    return out


def degrade_quality(
    image: np.ndarray, rng: np.random.Generator, kind: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """A degraded float32 copy of a RAS+ ``image`` and the parameters drawn (for the shard's meta).

    ``kind`` (one of :data:`QUALITY_KINDS`; default: drawn uniformly) chooses among a Gaussian blur
    (sigma in :data:`SIGMA_RANGE` voxels), unsharp masking (same sigma, amount in
    :data:`SHARPEN_AMOUNT_RANGE`, clipped below at the image's minimum since sharpening overshoots
    into impossible negative intensities) and thick-slice averaging along axis 2 (2-4 slices, with a
    random block phase), which mimics a thick-slice 2D acquisition resampled to a thin grid.
    """
    if kind is None:
        kind = str(rng.choice(QUALITY_KINDS))
    if kind not in QUALITY_KINDS:
        raise ValueError(f"unknown image-quality augmentation {kind!r}; choose from {QUALITY_KINDS}")
    img = np.asarray(image, dtype=np.float32)
    params: dict[str, Any] = {"kind": kind}
    if kind == "blur":
        sigma = float(rng.uniform(*SIGMA_RANGE))
        out = gaussian_filter(img, sigma)
        params["sigma"] = round(sigma, 4)
    elif kind == "sharpen":
        sigma = float(rng.uniform(*SIGMA_RANGE))
        amount = float(rng.uniform(*SHARPEN_AMOUNT_RANGE))
        out = np.maximum(img + amount * (img - gaussian_filter(img, sigma)), float(img.min()))
        params.update(sigma=round(sigma, 4), amount=round(amount, 4))
    else:
        k = int(rng.integers(THICK_SLICES_RANGE[0], THICK_SLICES_RANGE[1] + 1))
        offset = int(rng.integers(0, k))
        out = _thick_slices(img, k, offset)
        params.update(slices=k, offset=offset)
    return out.astype(np.float32, copy=False), params


def degraded_copy(image: np.ndarray, seed: int, key: str, copy: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Copy number ``copy`` (from 1) of scan ``key``, degraded by :func:`degrade_quality`.

    Its generator is seeded by the seed, the scan and ``copy`` only, so a resumed or partial build
    writes the same copies whatever it already had.
    """
    return degrade_quality(image, np.random.default_rng([seed, zlib.crc32(key.encode()), copy]))
