"""Putting two visits of a subject on one grid: ITK affine transforms, resampling, rigid registration.

One convention throughout, ITK's: an affine transform maps points of the *fixed* (output) space to
the *moving* (input) space, in LPS+ millimetres (``MatrixOffsetTransformBase``: ``y = A (x - c) +
t + c`` with ``c`` the centre in ``FixedParameters``). Resampling a moving image onto a fixed grid
therefore needs exactly that map: for each fixed voxel, where to read in the moving image. ANTs
writes its registrations in this form, and so did the Ljubljana longitudinal dataset for its
"raw FLAIR to common space" transforms (checked on the data: both studies line up on the common
grid only when the file is read as common -> raw, see tests/longitudinal/test_registration_data.py).

Every resampling here is done by :func:`resample` (``scipy.ndimage``), with the transform turned
into a voxel-to-voxel matrix by :func:`vox2vox`; ANTs only estimates the transform
(:func:`register_pair`), so the same code carries images both ways and for any source of transform.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from bids_msseg.preproc.brain import ants_seed
from bids_msseg.preproc.n4 import to_ants_image

LOGGER = logging.getLogger(__name__)

#: RAS+ <-> LPS+ (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Transforms ``register_pair`` can fit (ANTs names). Rigid is the default: the same head at two
#: visits only moves; an affine can absorb scanner scaling between visits.
TRANSFORMS = ("Rigid", "Affine")
#: Grid (isotropic mm) on which the two brains are registered: a 2 mm copy holds all the detail a
#: rigid fit of a whole brain needs and is several times faster to fit than a 0.7 x 0.7 x 3 mm
#: clinical FLAIR (docs/longitudinal.md measures both). 0: the baseline's own grid.
REGISTRATION_MM = 2.0


class RegistrationError(RuntimeError):
    """Two visits could not be put on one grid (ANTs failed, or the result does not overlap)."""


def itk_matrix(parameters: np.ndarray, fixed_parameters: np.ndarray) -> np.ndarray:
    """4x4 matrix (LPS, fixed -> moving points) of an ITK affine's 12 parameters and its centre."""
    p = np.asarray(parameters, dtype=np.float64).ravel()
    c = np.asarray(fixed_parameters, dtype=np.float64).ravel()[:3]
    if p.size != 12 or c.size != 3:
        raise ValueError(f"an ITK 3D affine has 12 parameters and a 3D centre, got {p.size} and {c.size}")
    matrix = np.eye(4)
    matrix[:3, :3] = p[:9].reshape(3, 3)
    matrix[:3, 3] = p[9:] + c - matrix[:3, :3] @ c
    return matrix


def read_itk_affine(path: str | Path) -> np.ndarray:
    """The 4x4 LPS matrix (fixed -> moving points) of an ITK text transform file (``#Insight Transform
    File V1.0``; ``MatrixOffsetTransformBase`` or ``AffineTransform``, the 12-parameter forms)."""
    text = Path(path).read_text()
    kind = re.search(r"^Transform:\s*(\S+)", text, re.M)
    params = re.search(r"^Parameters:\s*(.+)$", text, re.M)
    fixed = re.search(r"^FixedParameters:\s*(.+)$", text, re.M)
    if not (kind and params and fixed):
        raise ValueError(f"{path}: not an ITK transform file")
    if not kind.group(1).startswith(("MatrixOffsetTransformBase", "AffineTransform")):
        raise ValueError(f"{path}: {kind.group(1)} is not a 12-parameter affine")
    return itk_matrix(np.array(params.group(1).split(), float), np.array(fixed.group(1).split(), float))


def vox2vox(fixed_affine: np.ndarray, moving_affine: np.ndarray, itk_lps: np.ndarray | None = None) -> np.ndarray:
    """Voxel of the fixed grid -> voxel of the moving grid, through the world and an optional ITK map.

    ``fixed_affine``/``moving_affine`` are NIfTI (RAS+) affines; ``itk_lps`` maps fixed points to
    moving points in LPS (identity when the two images already share their world coordinates).
    """
    world = np.eye(4) if itk_lps is None else RAS_TO_LPS @ np.asarray(itk_lps) @ RAS_TO_LPS
    return np.linalg.inv(moving_affine) @ world @ np.asarray(fixed_affine, dtype=np.float64)


def resample(moving: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...], order: int = 1,
             cval: float = 0.0) -> np.ndarray:
    """``moving`` read at ``matrix`` (fixed voxel -> moving voxel) on a grid of ``shape``.

    ``order`` 0 for labels and masks, 1 for intensities and probabilities.
    """
    data = np.asarray(moving)
    if order == 0:
        out = ndimage.affine_transform(data, matrix[:3, :3], matrix[:3, 3], output_shape=tuple(shape[:3]),
                                       order=0, mode="constant", cval=cval)
        return out.astype(data.dtype, copy=False)
    return ndimage.affine_transform(data.astype(np.float32, copy=False), matrix[:3, :3], matrix[:3, 3],
                                    output_shape=tuple(shape[:3]), order=order, mode="constant", cval=cval)


@dataclass(frozen=True)
class PairRegistration:
    """A follow-up registered to its baseline: the LPS map of baseline points to follow-up points."""

    itk_lps: np.ndarray  # 4x4, baseline (fixed) -> follow-up (moving) points, LPS mm
    transform: str
    brain_dice: float  # overlap of the two brain masks once on the baseline grid
    correlation: float  # intensity correlation inside the common brain
    resolution_mm: float = 0.0  # the grid the fit ran on (0: the images' own)

    def followup_to_baseline(self, baseline_affine: np.ndarray, followup_affine: np.ndarray) -> np.ndarray:
        """Voxel matrix to resample follow-up images onto the baseline grid."""
        return vox2vox(baseline_affine, followup_affine, self.itk_lps)

    def baseline_to_followup(self, baseline_affine: np.ndarray, followup_affine: np.ndarray) -> np.ndarray:
        """Voxel matrix to resample baseline-grid images onto the follow-up grid."""
        return vox2vox(followup_affine, baseline_affine, np.linalg.inv(self.itk_lps))


def register_pair(baseline: np.ndarray, baseline_affine: np.ndarray, baseline_brain: np.ndarray,
                  followup: np.ndarray, followup_affine: np.ndarray, followup_brain: np.ndarray, *,
                  transform: str = "Rigid", seed: int = 0, min_brain_dice: float = 0.8,
                  registration_mm: float = REGISTRATION_MM) -> PairRegistration:
    """Register the follow-up FLAIR (moving) to the baseline (fixed) with ANTs, both brain-masked.

    Brain masking keeps skull, neck and the defaced parts (which differ between visits) out of the
    fit; ANTs starts from the alignment of the two brains' centres of mass. The fit runs on copies
    of both brains resampled to ``registration_mm`` (linear; 0 keeps the images' own grids): the
    transform is one of physical space, so it applies unchanged to the full-resolution images, and
    the overlap check below is made at full resolution. The seed makes the metric's sampling
    repeatable. Raises :class:`RegistrationError` when ANTs fails or when the
    registered brains overlap with a Dice below ``min_brain_dice`` (a pair that does not line up
    must not be compared voxel by voxel).
    """
    import ants  # lazy: ANTs starts ITK's thread pool; only the longitudinal step needs it here

    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}")
    b_brain, f_brain = np.asarray(baseline_brain, bool), np.asarray(followup_brain, bool)
    if not b_brain.any() or not f_brain.any():
        raise RegistrationError("a brain mask is empty")
    fixed = to_ants_image(np.asarray(baseline, np.float32) * b_brain, baseline_affine)
    moving = to_ants_image(np.asarray(followup, np.float32) * f_brain, followup_affine)
    try:
        if registration_mm > 0:
            spacing = (float(registration_mm),) * 3
            fixed = ants.resample_image(fixed, spacing, use_voxels=False, interp_type=0)
            moving = ants.resample_image(moving, spacing, use_voxels=False, interp_type=0)
        with ants_seed(seed):
            reg = ants.registration(fixed, moving, type_of_transform=transform)
        tx = ants.read_transform(reg["fwdtransforms"][0])
        matrix = itk_matrix(np.asarray(tx.parameters), np.asarray(tx.fixed_parameters))
    except Exception as err:  # ANTs raises bare RuntimeErrors (and worse) on images it cannot fit
        raise RegistrationError(f"ANTs {transform} registration failed: {err}") from err
    if not np.all(np.isfinite(matrix)):
        raise RegistrationError("ANTs returned a non-finite transform")
    to_base = vox2vox(baseline_affine, followup_affine, matrix)
    warped_brain = resample(f_brain.astype(np.uint8), to_base, b_brain.shape, order=0) > 0
    both = b_brain.sum() + warped_brain.sum()
    dice = float(2 * np.count_nonzero(b_brain & warped_brain) / both) if both else 0.0
    warped = resample(followup, to_base, b_brain.shape, order=1)
    inside = b_brain & warped_brain
    corr = float(np.corrcoef(np.asarray(baseline, np.float32)[inside], warped[inside])[0, 1]) \
        if inside.sum() > 10 else float("nan")
    if not dice >= min_brain_dice:
        raise RegistrationError(f"the registered brains overlap with Dice {dice:.2f} < {min_brain_dice:.2f} "
                                f"(intensity correlation {corr:.2f})")
    return PairRegistration(matrix, transform, dice, corr, float(registration_mm))
