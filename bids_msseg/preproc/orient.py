"""Loading, checking and reorienting an input FLAIR.

Every image is processed in RAS+ voxel order (``nibabel.as_closest_canonical``: only flips and
permutations of the voxel axes, no resampling), so that axis 2 runs inferior -> superior and
``data[:, :, k]`` is an axial slice. Outputs are mapped back with :func:`from_ras`, the exact
inverse of those flips and permutations, so they have the input's own shape and affine.

:func:`load_flair` turns every way an input can be unusable into an :class:`InputError` with a
message that names the file and says what is wrong, before any heavy work starts.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage as ndi

from bids_msseg.errors import InputError

LOGGER = logging.getLogger(__name__)

#: Largest accepted size of one spatial axis, in voxels (clinical and research FLAIRs are <= 512).
MAX_AXIS_VOXELS = 1024
#: Largest accepted number of voxels (2e8 float32 voxels are 800 MB).
MAX_VOXELS = 200_000_000
#: Fewest voxels accepted along each spatial axis: fewer slices cannot hold a brain.
MIN_AXIS_VOXELS = 10
#: Accepted voxel sizes in mm; anything outside means a broken header (or units not in mm).
ZOOM_RANGE_MM = (0.05, 20.0)
#: Above this share of NaN/Inf voxels the image is refused; below, they are set to 0 with a warning.
#: A few non-finite voxels come from resampling at the edge of the field of view and are harmless;
#: an image that is mostly non-finite is broken.
MAX_NONFINITE_FRACTION = 0.5


def _fail(path: Path, problem: str) -> InputError:
    return InputError(f"cannot use FLAIR {path}: {problem}")


def load_flair(path: str | Path) -> nib.Nifti1Image:
    """Load a FLAIR, check that it can be processed, and return it as a 3D float32 NIfTI-1 image.

    Raises :class:`InputError` for a missing, unreadable, corrupt or truncated file, a file that is
    not NIfTI, an image that is not 3D (a 4D image with a single volume is squeezed, with a log
    line), fewer than :data:`MIN_AXIS_VOXELS` voxels on an axis, absurd dimensions or voxel sizes,
    a broken affine, mostly non-finite voxels, complex or structured (RGB) data, and an all-zero,
    constant or binary (mask-like) image. A minority of NaN/Inf voxels is set to 0 with a warning.
    Integer, boolean, float16 and float64 data are converted to float32 (scaling applied).
    The returned image keeps the input's affine and qform/sform codes.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "the file does not exist")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    try:
        img = nib.load(str(path))
    except ImageFileError as err:
        raise _fail(path, f"not a readable NIfTI image ({err})") from err
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise _fail(path, f"unreadable or corrupt file ({type(err).__name__}: {err})") from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise _fail(path, f"not a NIfTI image (nibabel read it as {type(img).__name__}); "
                          "convert it to .nii.gz")

    shape = tuple(int(n) for n in img.shape)
    _check_shape(path, shape)
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise _fail(path, f"complex-valued data ({dtype}) is not a magnitude FLAIR")
    if dtype.names is not None or dtype.kind not in "biuf":
        raise _fail(path, f"unsupported voxel type {dtype} (RGB or structured data is not a FLAIR)")
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise _fail(path, "the affine (qform/sform) is missing, non-finite or singular")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(zooms < ZOOM_RANGE_MM[0]) or np.any(zooms > ZOOM_RANGE_MM[1]):
        raise _fail(path, f"voxel sizes {np.round(zooms, 3).tolist()} mm are outside {ZOOM_RANGE_MM} mm "
                          "(broken header or spatial units not in mm)")

    if len(shape) > 3 and int(np.prod(shape[3:])) != 1:
        raise _fail(path, f"4D image with {int(np.prod(shape[3:]))} volumes (shape {shape}); "
                          "give one 3D FLAIR per file")
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise _fail(path, f"the voxel data cannot be read: truncated or corrupt file "
                          f"({type(err).__name__}: {err})") from err
    if data.ndim > 3:
        LOGGER.info("%s: 4D image with a single volume (shape %s) squeezed to 3D", path.name, shape)
        data = data.reshape(data.shape[:3])
    if data.dtype != np.float32:
        LOGGER.debug("%s: %s data converted to float32", path.name, data.dtype)
    data = np.asarray(data, dtype=np.float32)

    finite = np.isfinite(data)
    n_bad = int(data.size - np.count_nonzero(finite))
    if n_bad:
        fraction = n_bad / data.size
        if fraction > MAX_NONFINITE_FRACTION:
            raise _fail(path, f"{100 * fraction:.0f}% of the voxels are NaN or Inf")
        LOGGER.warning("%s: %d NaN/Inf voxels (%.2f%%) set to 0", path.name, n_bad, 100 * fraction)
        data = np.where(finite, data, np.float32(0.0))
    if not np.any(data):
        raise _fail(path, "every voxel is 0")
    lo, hi = float(data.min()), float(data.max())
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):
        raise _fail(path, f"the image is constant (every voxel is {lo:g})")
    # np.unique on a strided sample: a mask or label image given as FLAIR has very few values.
    sample = data.ravel()[:: max(1, data.size // 200_000)]
    if np.unique(np.append(sample, [lo, hi])).size <= 2:
        raise _fail(path, "the image holds only two distinct values: it looks like a binary mask, "
                          "not a FLAIR")

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


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse images that are not 3D or that have absurd or too small dimensions (before reading)."""
    if len(shape) < 3:
        raise _fail(path, f"{len(shape)}D image (shape {shape}); a 3D FLAIR volume is needed")
    spatial = shape[:3]
    if any(n > MAX_AXIS_VOXELS for n in spatial) or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise _fail(path, f"absurd dimensions {shape} (at most {MAX_AXIS_VOXELS} voxels per axis and "
                          f"{MAX_VOXELS:.0e} voxels in all)")
    if min(spatial) < MIN_AXIS_VOXELS:
        raise _fail(path, f"too few voxels on an axis (shape {shape}); at least {MIN_AXIS_VOXELS} slices "
                          "are needed (a single slice or a 2D image cannot be segmented)")


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
