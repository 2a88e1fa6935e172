"""Image-quality augmentation of whole volumes (DeepLesionBrain, Kamraoui et al. 2022), and
intensity augmentation of training slices.

Clinical FLAIRs differ from research scans mostly in sharpness: thick 2D slices, scanner or
reconstruction blur, and vendor sharpening filters. DeepLesionBrain made its network robust to
these by training on copies of the scans degraded in exactly those ways, which the slice-level
flips and rotations of :class:`~bids_msseg.train.data.SliceSampler` cannot imitate (thick slices
mix neighbouring *axial* slices). :func:`degrade_quality` applies one of them to a RAS+ volume;
the group-level trainer writes the results as extra training shards (never validation ones).
Only the image changes: the lesion and brain masks stay those of the original scan.

:func:`perturb_intensity` changes a normalized slice the way a rescan or another scanner does after
the normalization: a smooth multiplicative bias field that N4 left behind, a gamma change of contrast
and noise (the kinds of change ``benchmarks/rescan_stability.py`` makes to whole volumes, here drawn per
slice during training, ``--augment-intensity``; nnU-Net and TorchIO train with the same kinds).
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
#: Intensity perturbation of a slice: largest log-amplitude of the bias field (exp(0.15): +-16 %)...
BIAS_AMPLITUDE_MAX = 0.15
#: ...its polynomial order in the slice's two coordinates (TorchIO's RandomBiasField uses 3)...
BIAS_ORDER = 3
#: ...the gamma range (drawn log-uniformly)...
GAMMA_RANGE = (0.8, 1.25)
#: ...and the noise's standard deviation in normalized units (the brain's median is about 0.67).
NOISE_SD_MAX = 0.03


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


def _bias_field(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``exp(amplitude * p)`` over a 2D slice, ``p`` a random polynomial
    of order :data:`BIAS_ORDER` in the coordinates scaled to [-1, 1], brought to a peak magnitude of 1."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    poly = sum(rng.uniform(-1, 1) * x**i * y**j for i in range(BIAS_ORDER + 1) for j in range(BIAS_ORDER + 1 - i))
    peak = float(np.abs(poly).max())
    return np.exp(amplitude * poly / peak) if peak > 0 else np.ones(shape)


def perturb_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 copy of normalized slice(s) ``image`` (channels, H, W; background exactly 0) with a bias
    field (log-amplitude up to :data:`BIAS_AMPLITUDE_MAX`), a gamma in :data:`GAMMA_RANGE` and Gaussian
    noise (sd up to :data:`NOISE_SD_MAX`) on the brain; the background stays 0. The brain is every non-zero
    voxel: quantile normalization maps the darkest brain voxels (CSF, typically 0.5 %) below 0, so the gamma keeps
    the sign. The channels of a 2.5D input (neighbouring slices) share the field and gamma, as neighbouring
    slices of one scan do."""
    img = np.asarray(image, dtype=np.float32)
    brain = img != 0
    field = _bias_field(img.shape[-2:], rng.uniform(0, BIAS_AMPLITUDE_MAX), rng)
    gamma = float(np.exp(rng.uniform(*np.log(GAMMA_RANGE))))
    noise = rng.normal(0.0, rng.uniform(0, NOISE_SD_MAX), img.shape)
    biased = img * field
    out = np.sign(biased) * np.abs(biased) ** gamma + noise
    return np.where(brain, out, 0).astype(np.float32)
