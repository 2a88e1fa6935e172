"""Checks of an input FLAIR: what is wrong with it and what to do, before any work is spent on it.

Two levels, both raising :class:`~bids_msseg.errors.InputError` with a message that names the file,
says what is wrong and, where there is one, what to do:

* :func:`screen_flair` reads only the header (milliseconds, no voxel data): file type, NIfTI
  header, dimensions, voxel type, affine, voxel sizes, and whether the file holds as many bytes as
  the header promises (for ``.nii.gz`` the gzip trailer's size field, verified by decompressing
  only when it disagrees). :func:`screen_runs` calls it for every selected run in the main
  process before the workflow is built, so such runs fail at once, each with its crash report,
  while the others go on.
* :func:`check_header` and :func:`check_data` are used by
  :func:`bids_msseg.preproc.orient.load_flair`, the first step of every run, which also checks the
  voxel values (NaN/Inf, all-zero, constant, binary).

Header claims are checked before anything is allocated: a header announcing a huge array is
refused from its 348 bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError, HeaderTypeError, ImageDataError
from nibabel.wrapstruct import WrapStructError

from bids_msseg.derivatives import derivative_paths
from bids_msseg.errors import InputError, OutputError
from bids_msseg.io import write_text_atomic

if TYPE_CHECKING:
    from bids_msseg.bids import FlairRun

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

#: A voxel whose magnitude exceeds this multiple of the 99.9th percentile of the non-zero magnitudes is an
#: outlier (a broken voxel, 1e8 or 1e30) and is clipped before any decision; real FLAIRs reach at most
#: 2.2 times that percentile (../shared/data), so nothing is clipped in them.
OUTLIER_FACTOR = 10.0
#: Above this share of negative non-zero voxels the image is refused: a magnitude FLAIR is positive
#: (z-scored images have about half their brain below 0; a negative scl_slope gives all of it).
MAX_NEGATIVE_FRACTION = 0.9

#: Below this correlation of neighbouring voxels (the larger of the two in-plane axes) the image is
#: refused as noise: real FLAIRs of ../shared/data reach 0.88-0.99 (the 6-8 mm-slice MS3SEG scans
#: are the lowest), pure Gaussian noise 0.00, noise smoothed by a 1-voxel Gaussian 0.78.
MIN_NEIGHBOUR_CORRELATION = 0.5

#: Errors nibabel and the gzip/zlib modules raise on unreadable, corrupt or truncated files
#: (nibabel's own header and data errors derive from Exception only).
READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, TypeError, OverflowError,
               MemoryError, HeaderDataError, HeaderTypeError, ImageDataError, WrapStructError)


def fail(path: str | Path, problem: str) -> InputError:
    """The :class:`InputError` for ``path``: ``cannot use FLAIR <path>: <problem>``."""
    return InputError(f"cannot use FLAIR {path}: {problem}")


def open_nifti(path: str | Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """``nibabel.load`` (header only, no voxel data read) turned into an :class:`InputError` on failure."""
    path = Path(path)
    if not path.exists():
        hint = " (a broken symbolic link?)" if path.is_symlink() else ""
        raise fail(path, f"the file does not exist{hint}")
    if not path.is_file():
        raise fail(path, "not a regular file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as err:
        raise fail(path, f"the file cannot be read ({err.strerror or err}); check its permissions (the user "
                         "running bids_msseg must be able to read it) or the storage it is on") from err
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except ImageFileError as err:
        raise fail(path, f"not a readable NIfTI image ({err}); convert it to NIfTI (e.g. dcm2niix for "
                         "DICOM, mri_convert for .mgz)") from err
    except READ_ERRORS as err:
        code = _DATA_CODE.search(str(err))
        if code:
            kind = _DATA_CODES.get(int(code.group(1)), "a code the NIfTI standard does not define")
            raise fail(path, f"unsupported voxel type (NIfTI datatype code {code.group(1)}: {kind}); save it as "
                             "int16, uint16 or float32 (e.g. with nibabel or fslmaths -odt float)") from err
        raise fail(path, f"unreadable or corrupt file or header ({type(err).__name__}: {err}); copy or "
                         "convert it again") from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise fail(path, f"not a NIfTI image (nibabel read it as {type(img).__name__}); "
                         "convert it to .nii.gz")
    return img


#: nibabel's message for a datatype code it cannot read, and what the codes it refuses are.
_DATA_CODE = re.compile(r"data code (-?\d+) not (?:supported|recognized)")
_DATA_CODES = {1: "binary, 1 bit per voxel", 1536: "float128", 1792: "complex128", 2048: "complex256"}


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's own log lines while it reads a header ("data code 9999 not recognized; not
    attempting fix"): the error they announce is reported once, in the app's message."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_shape(path: str | Path, shape: tuple[int, ...]) -> None:
    """Refuse images that are not 3D or that have absurd or too small dimensions (header only)."""
    if len(shape) < 3:
        raise fail(path, f"{len(shape)}D image (shape {shape}); a 3D FLAIR volume is needed")
    if any(n <= 0 for n in shape):
        raise fail(path, f"impossible dimensions {shape} (zero or negative sizes): a broken header; copy or "
                         "convert it again")
    spatial = shape[:3]
    if any(n > MAX_AXIS_VOXELS for n in spatial) or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise fail(path, f"absurd dimensions {shape} (at most {MAX_AXIS_VOXELS} voxels per axis and "
                         f"{MAX_VOXELS:.0e} voxels in all): a broken header, or not a FLAIR")
    if min(spatial) < MIN_AXIS_VOXELS:
        raise fail(path, f"too few voxels on an axis (shape {shape}); at least {MIN_AXIS_VOXELS} slices "
                         "are needed (a single slice or a 2D image cannot be segmented)")
    if len(shape) > 3 and int(np.prod(shape[3:])) != 1:
        raise fail(path, f"4D image with {int(np.prod(shape[3:]))} volumes (shape {shape}); "
                         "give one 3D FLAIR per file (split it, e.g. with fslsplit or nibabel)")


def check_header(img: nib.Nifti1Image | nib.Nifti2Image, path: str | Path) -> np.ndarray:
    """Check dimensions, voxel type, affine and voxel sizes from the header; return the voxel sizes (mm)."""
    check_shape(path, tuple(int(n) for n in img.shape))
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise fail(path, f"complex-valued data ({dtype}) is not a magnitude FLAIR; give the magnitude image")
    if dtype.names is not None or dtype.kind not in "biuf":
        raise fail(path, f"unsupported voxel type {dtype} (RGB or structured data is not a FLAIR); "
                         "give a single-channel grey-scale image")
    affine = _checked_affine(img, path)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(zooms < ZOOM_RANGE_MM[0]) or np.any(zooms > ZOOM_RANGE_MM[1]):
        raise fail(path, f"voxel sizes {np.round(zooms, 3).tolist()} mm are outside {ZOOM_RANGE_MM} mm "
                         "(broken header or spatial units not in mm)")
    return zooms


def _usable(matrix: np.ndarray | None) -> bool:
    return (matrix is not None and bool(np.all(np.isfinite(matrix)))
            and abs(float(np.linalg.det(matrix[:3, :3]))) >= 1e-12)


def _checked_affine(img: nib.Nifti1Image | nib.Nifti2Image, path: str | Path) -> np.ndarray:
    """The image's affine, refusing one that is missing, non-finite or singular, and a coded qform or
    sform that cannot be decoded (e.g. impossible quaternion fields): outputs copy both."""
    hint = "fix the header (e.g. re-convert from DICOM)"
    try:
        affine = img.affine
        forms = {"qform": img.get_qform(coded=True), "sform": img.get_sform(coded=True)}
    except (ValueError, HeaderDataError, np.linalg.LinAlgError) as err:
        raise fail(path, f"the orientation (qform/sform) cannot be decoded ({err}); {hint}") from err
    if not _usable(affine):
        raise fail(path, f"the affine (qform/sform) is missing, non-finite or singular; {hint}")
    for name, (matrix, code) in forms.items():
        if int(code) > 0 and not _usable(matrix):
            raise fail(path, f"the {name} (code {int(code)}) is non-finite or singular; {hint}")
    return affine


def expected_file_bytes(img: nib.Nifti1Image | nib.Nifti2Image) -> int:
    """Bytes of the uncompressed single-file NIfTI: data offset plus voxel data, as the header says."""
    # The array proxy keeps the file's data offset (``img.header`` is a copy whose offset nibabel resets).
    offset = getattr(img.dataobj, "offset", None)
    if offset is None:
        offset = img.header.get_data_offset()
    n_voxels = int(np.prod(img.shape, dtype=np.int64))
    return int(offset) + n_voxels * int(img.get_data_dtype().itemsize)


def _gzip_uncompressed_size(path: Path, limit: int) -> int:
    """Decompress ``path`` (all gzip members), counting bytes; stop past ``limit``. Raises on corruption."""
    total = 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            total += len(chunk)
            if total > limit:
                break
    return total


def check_file_size(img: nib.Nifti1Image | nib.Nifti2Image, path: str | Path) -> None:
    """Refuse a file that holds fewer bytes than its header promises (truncated copy or download).

    ``.nii``: the file size. ``.nii.gz``: the gzip trailer's ISIZE (uncompressed size modulo 2**32)
    is compared first (4 bytes read); only when it disagrees is the stream decompressed to count
    (multi-member gzip files have a trailer per member), which also reveals corrupt streams.
    """
    path = Path(path)
    expected = expected_file_bytes(img)
    name = path.name.lower()
    try:
        if name.endswith(".nii"):
            actual = path.stat().st_size
        elif name.endswith(".nii.gz"):
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                isize = int.from_bytes(fh.read(4), "little")
            if isize == expected % 2**32:
                return
            actual = _gzip_uncompressed_size(path, expected)
        else:
            return
    except READ_ERRORS as err:
        raise fail(path, f"the voxel data cannot be read: truncated or corrupt file ({type(err).__name__}: "
                         f"{err}); copy or convert it again") from err
    if actual < expected:
        raise fail(path, f"truncated file: the header announces {expected} bytes, the file holds {actual}; "
                         "copy or convert it again")


#: A ``.nii.gz`` whose voxel data is more than this many times smaller compressed is streamed at
#: screening to see whether it holds anything (real FLAIRs compress 2-11 fold; an empty 1024x1024x190
#: volume 2000 fold, and loading it took two minutes before it was refused).
SUSPICIOUS_COMPRESSION = 100.0


def check_compressed_content(img: nib.Nifti1Image | nib.Nifti2Image, path: str | Path) -> None:
    """For a ``.nii.gz`` that compresses suspiciously well, stream its voxel data (bounded memory) and
    refuse it when every voxel is 0, constant, or one of two values, as :func:`check_data` would after
    loading all of it."""
    path = Path(path)
    if not path.name.lower().endswith(".nii.gz"):
        return
    expected = expected_file_bytes(img)
    if expected < SUSPICIOUS_COMPRESSION * max(1, path.stat().st_size):
        return
    dtype = img.get_data_dtype()
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    values: set = set()
    try:
        with gzip.open(path, "rb") as fh:
            fh.seek(offset)
            rest = b""
            while chunk := fh.read(1 << 24):
                chunk = rest + chunk
                usable = len(chunk) - len(chunk) % dtype.itemsize
                rest = chunk[usable:]
                array = np.frombuffer(chunk[:usable], dtype=dtype)
                if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                    return  # NaN/Inf: judged after loading (a minority is set to 0 there)
                if array.size:
                    values.update(np.unique(array[:: max(1, array.size // 4096)]).tolist())
                    values.update((array.min().item(), array.max().item()))
                if len(values) > 2:
                    return
    except READ_ERRORS as err:
        raise fail(path, f"the voxel data cannot be read: truncated or corrupt file ({type(err).__name__}: "
                         f"{err}); copy or convert it again") from err
    if values <= {0} or values <= {0.0}:
        raise fail(path, "every voxel is 0 (an empty image: a failed conversion?)")
    if len(values) == 1:
        raise fail(path, f"the image is constant (every voxel is {next(iter(values))})")
    raise fail(path, "the image holds only two distinct values: it looks like a binary mask, "
                     "not a FLAIR; check which file is named *_FLAIR")


#: qform and sform further apart than this (degrees of rotation, or mm at the field of view's corners)
#: disagree: nibabel (and bids_msseg) use the sform, other tools may use the qform.
FORMS_MAX_DEGREES = 1.0
FORMS_MAX_MM = 1.0


def forms_disagreement(img: nib.Nifti1Image | nib.Nifti2Image) -> str | None:
    """How far a coded qform and a coded sform disagree, as text (None when one is uncoded or they agree).

    Both are compared as rotations (angle between their direction matrices) and by the largest
    distance between the positions they give to the corners of the voxel grid.
    """
    try:
        qform, qcode = img.get_qform(coded=True)
        sform, scode = img.get_sform(coded=True)
    except (ValueError, HeaderDataError, np.linalg.LinAlgError):
        return None  # refused by check_header
    if qform is None or sform is None or not int(qcode) or not int(scode):
        return None
    directions = [m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0) for m in (qform, sform)]
    cosine = (np.trace(directions[0].T @ directions[1]) - 1.0) / 2.0
    degrees = float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
    shape = np.array(img.shape[:3], dtype=float) - 1.0
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])]).T
    distance = float(np.max(np.linalg.norm((qform @ corners - sform @ corners)[:3], axis=0)))
    if degrees <= FORMS_MAX_DEGREES and distance <= FORMS_MAX_MM:
        return None
    axes = "".join(nib.aff2axcodes(qform)), "".join(nib.aff2axcodes(sform))
    return (f"the qform (code {int(qcode)}, axes {axes[0]}) and the sform (code {int(scode)}, axes {axes[1]}) "
            f"disagree by {degrees:.0f} degrees and up to {distance:.0f} mm; the sform is used, as nibabel does, "
            "and the outputs copy both: a viewer or tool that reads the qform will place the image (and the "
            "lesion masks) elsewhere; fix the header if the qform is the right one")


def _stored_slope(img: nib.Nifti1Image | nib.Nifti2Image, path: str | Path) -> float:
    """``scl_slope`` as stored in the file (nibabel's ``img.header`` has it reset to NaN after loading)."""
    try:
        with nib.openers.ImageOpener(str(path)) as fh, _quiet_nibabel():
            header = type(img.header).from_fileobj(fh, check=False)
        return float(np.asarray(header["scl_slope"]).item())
    except READ_ERRORS:
        return float("nan")


def screen_flair(path: str | Path) -> None:
    """Every check that needs no voxel data (see the module docstring); raises :class:`InputError`.

    A qform disagreeing with the sform (:func:`forms_disagreement`) and an infinite ``scl_slope`` are not
    errors (the sform is used; the values unscaled) but are logged as warnings.
    """
    img = open_nifti(path)
    check_header(img, path)
    disagreement = forms_disagreement(img)
    if disagreement:
        LOGGER.warning("%s: %s", Path(path).name, disagreement)
    slope = _stored_slope(img, path)
    if np.isinf(slope):
        LOGGER.warning("%s: scl_slope is %s, which nibabel (like most tools) reads as no scaling: the stored "
                       "values are used as they are; check the image's intensities (re-convert it if the "
                       "scaling was meant)", Path(path).name, slope)
    check_file_size(img, path)
    check_compressed_content(img, path)


def check_data(data: np.ndarray, path: str | Path) -> np.ndarray:
    """Check voxel values; return float32 data with a minority of NaN/Inf voxels set to 0 (warned).

    Refuses mostly non-finite, all-zero, constant, two-valued (mask-like), mostly negative and noise-like
    (:func:`neighbour_correlation`) images.
    """
    name = Path(path).name
    check_integer_wrap(np.asanyarray(data), path)
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    n_bad = int(data.size - np.count_nonzero(finite))
    if n_bad:
        fraction = n_bad / data.size
        if fraction > MAX_NONFINITE_FRACTION:
            raise fail(path, f"{100 * fraction:.0f}% of the voxels are NaN or Inf: a broken image; "
                             "re-export it from the scanner data")
        LOGGER.warning("%s: %d NaN/Inf voxels (%.2f%%) set to 0", name, n_bad, 100 * fraction)
        data = np.where(finite, data, np.float32(0.0))
    if not np.any(data):
        raise fail(path, "every voxel is 0 (an empty image: a failed conversion?)")
    data = clip_outliers(data, path)
    lo, hi = float(data.min()), float(data.max())
    if hi - lo <= 1e-6 * max(abs(hi), abs(lo)):  # relative: an image x 1e-30 is still an image
        raise fail(path, f"the image is constant (every voxel is {lo:g})")
    # np.unique on a strided sample: a mask or label image given as FLAIR has very few values.
    sample = data.ravel()[:: max(1, data.size // 200_000)]
    if np.unique(np.append(sample, [lo, hi])).size <= 2:
        raise fail(path, "the image holds only two distinct values: it looks like a binary mask, "
                         "not a FLAIR; check which file is named *_FLAIR")
    nonzero = sample[sample != 0]
    if nonzero.size and np.count_nonzero(nonzero < 0) > MAX_NEGATIVE_FRACTION * nonzero.size:
        raise fail(path, f"{100 * np.count_nonzero(nonzero < 0) / nonzero.size:.0f}% of the non-zero voxels are "
                         "negative: a magnitude FLAIR is positive (a negative scl_slope, or an inverted image?); "
                         "re-convert it from the scanner data")
    correlation = neighbour_correlation(data)
    if correlation < MIN_NEIGHBOUR_CORRELATION:
        shown = f"{correlation:.2f}".replace("-0.00", "0.00")
        raise fail(path, f"it looks like noise, not an image of a head: neighbouring voxels are uncorrelated "
                         f"(correlation {shown}, below {MIN_NEIGHBOUR_CORRELATION:.1f}; real FLAIRs have about 0.9); "
                         "check that the file holds the reconstructed image (a failed reconstruction or export?)")
    return data


def neighbour_correlation(data: np.ndarray, max_voxels: int = 2_000_000) -> float:
    """Pearson correlation of each voxel with its neighbour, the larger of the two in-plane axes (0, 1).

    Any image of anatomy is spatially smooth at the voxel scale (correlation ~0.9 in real FLAIRs),
    white noise is not (~0). Computed on at most ``max_voxels`` (every k-th slice of axis 2); the
    through-plane axis is left out because thick slices lower it (0.6 on 8 mm slices). Scale-free.
    """
    data = np.asarray(data)
    step = max(1, int(np.ceil(data.size / max_voxels)))
    sub = np.asarray(data[:, :, ::step], dtype=np.float64)
    best = -1.0
    for axis in (0, 1):
        a = np.moveaxis(sub, axis, 0)
        x, y = a[:-1].ravel(), a[1:].ravel()
        sx, sy = float(x.std()), float(y.std())
        if sx > 0 and sy > 0:
            best = max(best, float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy)))
    return best


def check_integer_wrap(data: np.ndarray, path: str | Path) -> None:
    """Refuse integer data that wrapped around (bright voxels stored past the type's maximum became
    large negative values): both extremes of a signed type are used and the negative voxels are few."""
    if data.dtype.kind != "i" or data.dtype.itemsize > 4:
        return
    info = np.iinfo(data.dtype)
    lo, hi = int(data.min()), int(data.max())
    if lo < info.min // 4 and hi > info.max // 4:
        negative = np.count_nonzero(data < 0) / max(1, np.count_nonzero(data))
        if negative < 0.5:
            raise fail(path, f"{data.dtype} values span {lo} to {hi} with {100 * negative:.2f}% negative voxels: "
                             "the brightest voxels wrapped around the integer range (overflow when the image was "
                             "converted); re-convert it with a larger type or rescaling (e.g. dcm2niix)")


def clip_outliers(data: np.ndarray, path: str | Path) -> np.ndarray:
    """Clip voxels beyond :data:`OUTLIER_FACTOR` times the 99.9th percentile of the non-zero magnitudes
    (broken voxels at 1e8 or 1e30 would otherwise set every intensity-relative tolerance), with a warning.
    Returns ``data`` itself when nothing is clipped (so real images stay bit-identical)."""
    magnitude = np.abs(data)
    sample = magnitude.ravel()[:: max(1, data.size // 1_000_000)]
    sample = sample[sample > 0]
    if not sample.size:
        return data
    limit = OUTLIER_FACTOR * float(np.percentile(sample, 99.9))
    outliers = magnitude > limit
    n_out = int(np.count_nonzero(outliers))
    if not n_out:
        return data
    bound = float(magnitude[~outliers].max()) if n_out < data.size else limit
    LOGGER.warning("%s: %d voxel(s) with extreme values (up to %.3g, while 99.9%% of the image is below %.3g) "
                   "clipped to +-%.3g before any decision", Path(path).name, n_out, float(magnitude.max()),
                   limit / OUTLIER_FACTOR, bound)
    return np.clip(data, -bound, bound).astype(np.float32)


# ------------------------------------------------------------------------------ runs of a dataset


@dataclass(frozen=True)
class Rejected:
    """A run refused before the workflow: its message and crash report."""

    run: FlairRun
    message: str
    crash_file: Path | None


def write_crash_report(logs_dir: Path, run: FlairRun, message: str, step: str = "validate") -> Path | None:
    """``<logs_dir>/crash-<time>-<run>-<step>.txt`` for a run refused before the workflow.

    Written atomically next to nipype's own crash files (same folder, same ``crash-*.txt`` form);
    returns None (with a warning) when the logs folder cannot be written.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = Path(logs_dir) / f"crash-{stamp}-{run.name}-{step}.txt"
    for n in range(2, 100):  # two runs of one name (sub-01_FLAIR.nii and .nii.gz) keep a report each
        if not target.exists():
            break
        target = Path(logs_dir) / f"crash-{stamp}-{run.name}-{step}-{n}.txt"
    text = (f"Run: {run.relpath}\nFile: {run.path}\nStep: {step} (checks before the workflow; nothing "
            f"was computed for this run)\n\nbids_msseg.errors.InputError: {message}\n")
    try:
        return write_text_atomic(target, text)
    except OSError as err:
        LOGGER.warning("cannot write the crash report %s: %s", target, err)
        return None


def screen_run(run: FlairRun, output_dir: Path) -> None:
    """All pre-workflow checks of one run; raises :class:`InputError`.

    The image header (:func:`screen_flair`), its sidecar (a problem found while reading it is
    carried by ``run.problem``), and its name: output names are built from its entities, so a
    name that would not give safe BIDS derivative names is refused here rather than stopping
    every run later.
    """
    problem = getattr(run, "problem", None)
    if problem:
        raise InputError(problem)
    try:
        derivative_paths(output_dir, run.relpath)
    except OutputError as err:
        raise fail(run.path, f"its name cannot name derivatives ({err}); rename it following BIDS") from err
    screen_flair(run.path)


def screen_runs(runs: Sequence[FlairRun], output_dir: Path,
                logs_dir: Path | None = None) -> tuple[list[FlairRun], list[Rejected]]:
    """Split ``runs`` into those that pass :func:`screen_run` and those refused (with crash reports).

    Costs a header read per run (no voxel data), so it runs in the main process before the
    workflow is built; a refused run never reaches the workflow and never stops the others.
    """
    logs_dir = Path(logs_dir) if logs_dir is not None else Path(output_dir) / "logs"
    good: list[FlairRun] = []
    rejected: list[Rejected] = []

    def refuse(run: FlairRun, message: str) -> None:
        LOGGER.error("%s: %s", run.name, message)
        rejected.append(Rejected(run, message, write_crash_report(logs_dir, run, message)))

    for run in runs:
        try:
            screen_run(run, output_dir)
        except InputError as err:
            refuse(run, str(err))
        else:
            good.append(run)
    clashes = output_collisions(good, output_dir)
    for run in [r for r in good if r.relpath in clashes]:
        others = ", ".join(clashes[run.relpath])
        refuse(run, str(fail(run.path, f"its outputs would have the same names as those of {others}: one would "
                                       "overwrite the other; keep one of these files (remove or rename the others)")))
    return [r for r in good if r.relpath not in clashes], rejected


def output_collisions(runs: Sequence[FlairRun], output_dir: Path) -> dict[str, list[str]]:
    """Runs whose derivatives would have the same names (``sub-01_FLAIR.nii`` beside ``.nii.gz``, or an
    entity that derivative names do not keep): ``{relpath: [relpaths of the others]}``."""
    by_target: dict[Path, list[str]] = {}
    for run in runs:
        try:
            paths = derivative_paths(output_dir, run.relpath)
        except OutputError:
            continue
        by_target.setdefault(paths["summary"], []).append(run.relpath)
    return {rel: [o for o in group if o != rel] for group in by_target.values() if len(group) > 1 for rel in group}
