"""Loading, checking and reorienting an input FLAIR.

Every image is processed in RAS+ voxel order (``nibabel.as_closest_canonical``: only flips and
permutations of the voxel axes, no resampling), so that axis 2 runs inferior -> superior and
``data[:, :, k]`` is an axial slice. Outputs are mapped back with :func:`from_ras`, the exact
inverse of those flips and permutations, so they have the input's own shape and affine.

:func:`load_flair` turns every way an input can be unusable into an :class:`InputError` with a
message that names the file and says what is wrong, before any heavy work starts (the checks
live in :mod:`bids_msseg.validate`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage as ndi

from bids_msseg.errors import InputError  # noqa: F401  (re-exported: callers catch it from here)
from bids_msseg.validate import (  # noqa: F401  (limits re-exported for existing callers)
    MAX_AXIS_VOXELS,
    MAX_NONFINITE_FRACTION,
    MAX_VOXELS,
    MIN_AXIS_VOXELS,
    READ_ERRORS,
    ZOOM_RANGE_MM,
    check_data,
    check_header,
    fail,
    open_nifti,
)

LOGGER = logging.getLogger(__name__)


def load_flair(path: str | Path) -> nib.Nifti1Image:
    """Load a FLAIR, check that it can be processed, and return it as a 3D float32 NIfTI-1 image.

    Raises :class:`InputError` (checks in :mod:`bids_msseg.validate`) for a missing, unreadable,
    corrupt or truncated file, a file that is not NIfTI, an image that is not 3D (a 4D image with a
    single volume is squeezed, with a log line), fewer than ``MIN_AXIS_VOXELS`` voxels on an axis,
    absurd dimensions or voxel sizes, a broken affine, mostly non-finite voxels, complex or
    structured (RGB) data, and an all-zero, constant or binary (mask-like) image. A minority of
    NaN/Inf voxels is set to 0 with a warning. Integer, boolean, float16 and float64 data are
    converted to float32 (scaling applied). The returned image keeps the input's affine and
    qform/sform codes.
    """
    path = Path(path)
    img = open_nifti(path)
    shape = tuple(int(n) for n in img.shape)
    zooms = check_header(img, path)
    affine = img.affine
    try:
        data = np.asanyarray(img.dataobj)
    except READ_ERRORS as err:
        raise fail(path, f"the voxel data cannot be read: truncated or corrupt file "
                         f"({type(err).__name__}: {err}); copy or convert it again") from err
    if data.ndim > 3:
        LOGGER.info("%s: 4D image with a single volume (shape %s) squeezed to 3D", path.name, shape)
        data = data.reshape(data.shape[:3])
    if data.dtype != np.float32:
        LOGGER.debug("%s: %s data converted to float32", path.name, data.dtype)
    data = check_data(data, path)

    header = img.header.copy() if isinstance(img, nib.Nifti1Image) else None
    out = nib.Nifti1Image(data, affine, header=header)
    out.set_data_dtype(np.float32)
    out.header["scl_slope"] = np.nan
    out.header["scl_inter"] = np.nan
    if isinstance(img, nib.Nifti1Image):
        # Keep the input's qform/sform and their codes, so out.affine is exactly img.affine.
        qform, qcode = img.get_qform(coded=True)
        sform, scode = img.get_sform(coded=True)
        if qform is not None:
            out.set_qform(qform, int(qcode))
        if sform is not None:
            out.set_sform(sform, int(scode))
    LOGGER.debug("%s: loaded shape %s, voxel sizes %s mm, axes %s", path.name, data.shape,
                 np.round(zooms, 3).tolist(), "".join(nib.aff2axcodes(affine)))
    return out


def to_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The image with voxel axes flipped/permuted to the closest RAS+ order (no resampling).

    Axis 2 then runs inferior -> superior, so ``data[:, :, k]`` is an axial slice.
    """
    return nib.as_closest_canonical(img)


def _ras_to_original_ornt(original_affine: np.ndarray) -> np.ndarray:
    """Orientation transform from RAS+ voxel order back to the original image's voxel order.

    Uses ``io_orientation`` with nibabel's default tolerance, exactly as ``as_closest_canonical``
    does, so the two are inverse of each other for any affine, oblique ones included.
    """
    return ornt_transform(axcodes2ornt("RAS"), io_orientation(original_affine))


def from_ras(data_ras: np.ndarray, original: nib.Nifti1Image) -> np.ndarray:
    """Map an array on the RAS+ grid of :func:`to_ras` back onto ``original``'s voxel grid exactly.

    Trailing dimensions beyond the first three (e.g. channels) are carried along. The result has
    ``original.shape[:3]`` and pairs with ``original.affine``.
    """
    data_ras = np.asarray(data_ras)
    out = apply_orientation(data_ras, _ras_to_original_ornt(original.affine))
    if tuple(out.shape[:3]) != tuple(original.shape[:3]):
        raise ValueError(f"array of shape {data_ras.shape} is not on the RAS grid of an image of shape "
                         f"{tuple(original.shape[:3])}")
    return np.ascontiguousarray(out)


def downsample(data: np.ndarray, affine: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``data`` onto a coarser grid of about ``spacing_mm`` voxels covering the same extent.

    Axes finer than ``spacing_mm`` are smoothed (Gaussian, FWHM of the reduction factor) and
    linearly resampled; axes already coarser are kept. The coarse grid keeps the voxel axes'
    directions, and its affine places voxel centres exactly, so a field computed on it can be
    brought back with :func:`upsample`. Used to make N4 and registration fast.

    Returns ``(coarse_data, coarse_affine)``.
    """
    factors = _factors(affine, spacing_mm)
    shape = np.ceil(np.array(data.shape[:3]) / factors).astype(int)
    sigma = np.sqrt(np.maximum(factors**2 - 1.0, 0.0)) / 2.355
    smooth = ndi.gaussian_filter(np.asarray(data, np.float32), sigma) if np.any(sigma > 0) else data
    coarse = ndi.affine_transform(smooth, np.diag(factors), offset=(factors - 1.0) / 2.0,
                                  output_shape=tuple(shape), order=1, mode="nearest")
    coarse_affine = np.array(affine, dtype=np.float64, copy=True)
    coarse_affine[:3, :3] = affine[:3, :3] * factors
    coarse_affine[:3, 3] = affine[:3, :3] @ ((factors - 1.0) / 2.0) + affine[:3, 3]
    return coarse.astype(np.float32), coarse_affine


def upsample(coarse: np.ndarray, coarse_affine: np.ndarray, affine: np.ndarray,
             shape: tuple[int, ...]) -> np.ndarray:
    """Linearly interpolate a field from a :func:`downsample` grid back onto the fine grid.

    Values beyond the coarse grid's outermost voxel centres are taken from the nearest one.
    """
    to_coarse = np.linalg.solve(coarse_affine, affine)
    return ndi.affine_transform(np.asarray(coarse, np.float32), to_coarse[:3, :3], offset=to_coarse[:3, 3],
                                output_shape=tuple(shape[:3]), order=1, mode="nearest")


def _factors(affine: np.ndarray, spacing_mm: float) -> np.ndarray:
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return np.maximum(spacing_mm / zooms, 1.0)
