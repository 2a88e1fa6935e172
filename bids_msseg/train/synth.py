"""Synthetic FLAIR volumes with real lesion shapes: the default model's training data.

No public MS training set can be downloaded where the default model is built, so training volumes
are synthesized from two kinds of real material:

* anatomy available offline, as T1-weighted templates with a brain mask: nilearn's MNI152 2009
  template (an average of 152 brains, smooth) and, when Debian's ``mricron-data`` is installed,
  Colin27 (one brain scanned 27 times: sharp gyri and sulci);
* real expert lesion masks (the 27 3D-MR-MS consensus masks in MNI space, Lesjak et al. 2017):
  real lesion shapes, sizes and, above all, real locations (periventricular, juxtacortical,
  infratentorial) relative to the anatomy.

A FLAIR-like contrast is made from the T1 by a random non-monotone piecewise-linear map through
the three tissue classes (CSF dark, white matter mid-grey, grey matter brighter), which keeps the
template's partial volume and texture. Lesions are painted hyperintense with random contrast, a
fainter rim, texture and partial-volume edges. Then every factor that differs between scanners is
randomized: an affine and elastic deformation, the acquisition grid (in-plane 0.5-1.3 mm, slice thickness
1-5 mm simulated by averaging along z, with random slice orientation tilt), bias field, Rician
noise, and DeepLesionBrain's image-quality augmentations (Gaussian blur, unsharp masking). The
model must therefore learn what a lesion looks like relative to its surroundings, not one scanner.
Real FLAIRs can serve as anatomy too (:func:`load_flair_anatomies`): bias-corrected, brain-masked
and affinely registered to the lesion-mask grid, they bring real FLAIR contrast, real scanners and
real brains (atrophy, wide ventricles) that the templates lack. Their own lesions carry no expert
label, so every hyperintensity that no pasted mask covers is marked *unknown* (see
:func:`unlabelled_hyperintensities`): neither taught as background nor scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.cluster.vq import kmeans2

from bids_msseg.anatomy import LabelledTemplate, lesion_free_regions, register_template
from bids_msseg.preproc import preprocess_flair
from bids_msseg.preproc.brain import ants_seed
from bids_msseg.preproc.n4 import to_ants_image

LOGGER = logging.getLogger(__name__)

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN27_BRAIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")


@dataclass
class Anatomy:
    """A T1 template or a real FLAIR on the lesion-mask grid, with its brain mask.

    A template carries its tissue centres (T1 intensities of CSF, GM, WM) for the FLAIR-like
    contrast map; a real FLAIR is used as it is and carries its white-matter level and the
    voxels whose truth is unknown (its own, unlabelled hyperintensities).
    """

    name: str
    image: np.ndarray  # float32, brain 99th percentile = 1: a T1 template or a real FLAIR
    brain: np.ndarray  # bool
    centres: tuple[float, float, float] | None  # T1 intensity of CSF, GM, WM; None for a real FLAIR
    affine: np.ndarray  # voxel -> world (mm) of the grid all arrays live on
    wm_level: float = 0.0  # median white-matter intensity of a real FLAIR
    unknown: np.ndarray | None = None  # bool: unlabelled hyperintensities of a real FLAIR
    #: An average of many FLAIRs (GG-853): real contrast, no lesions, all of it known background;
    #: smooth, so it gets the synthetic texture the T1 templates get.
    average: bool = False

    @property
    def kind(self) -> str:
        """``template`` (a T1 given a FLAIR-like contrast), ``average`` (a FLAIR template) or ``real``."""
        return "template" if self.centres is not None else ("average" if self.average else "real")


@dataclass
class SmallLesions:
    """Small real lesion shapes (the small components of the expert masks) and white-matter sites for them.

    Small lesions are the ones the model misses most; the masks hold few of them per scan, so
    extra copies are scattered in white matter (:func:`scatter_small_lesions`).
    """

    shapes: list[np.ndarray]  # bool crops
    sites: np.ndarray  # (n, 3) white-matter voxel indices on the lesion-mask grid


@dataclass
class SynthVolume:
    """One simulated acquisition in RAS+ orientation."""

    image: np.ndarray  # float32, brain-masked raw intensities
    brain: np.ndarray  # bool
    lesion: np.ndarray  # bool
    zooms: tuple[float, float, float]
    params: dict
    unknown: np.ndarray | None = None  # bool: truth unknown (a real FLAIR's unlabelled hyperintensities)


def _resample_to(img: nib.Nifti1Image, ref: nib.Nifti1Image, order: int) -> np.ndarray:
    """Resample ``img`` onto the grid of ``ref`` (world coordinates), zero outside."""
    vox2vox = np.linalg.inv(img.affine) @ ref.affine
    return ndimage.affine_transform(
        np.asarray(img.dataobj, dtype=np.float32), vox2vox[:3, :3], vox2vox[:3, 3],
        output_shape=ref.shape[:3], order=order, mode="constant", cval=0.0,
    )


def _tissue_centres(t1: np.ndarray, brain: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """CSF, GM and WM T1 intensities by 3-class k-means on brain voxels."""
    values = t1[brain].astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = rng.choice(values, size=min(200_000, values.size), replace=False)
    init = np.percentile(sample, [10, 50, 90])[:, None]
    centres, _ = kmeans2(sample[:, None], init, minit="matrix", seed=seed)
    c = np.sort(centres[:, 0])
    return float(c[0]), float(c[1]), float(c[2])


def load_anatomies(reference: nib.Nifti1Image) -> list[Anatomy]:
    """The offline T1 templates available here, on the grid of ``reference`` (a lesion mask)."""
    from nilearn import datasets  # lazy: nilearn (scikit-learn) only to fetch the templates

    sources = [("mni152_2009", datasets.load_mni152_template(resolution=1),
                datasets.load_mni152_brain_mask(resolution=1))]
    if COLIN27.exists() and COLIN27_BRAIN.exists():
        sources.append(("colin27", nib.load(COLIN27), nib.load(COLIN27_BRAIN)))
    else:
        LOGGER.warning("Colin27 (Debian mricron-data) not found: training anatomy is MNI152 only")
    anatomies = []
    for name, t1_img, brain_img in sources:
        t1 = _resample_to(t1_img, reference, order=1)
        brain = ndimage.binary_fill_holes(_resample_to(brain_img, reference, order=1) > 0.5)
        t1 = t1 / np.percentile(t1[brain], 99)
        anatomies.append(Anatomy(name, t1.astype(np.float32), brain, _tissue_centres(t1, brain),
                                  reference.affine))
        LOGGER.info("anatomy %s: brain %.0f mL, tissue centres %s", name, brain.sum() / 1000,
                    np.round(anatomies[-1].centres, 3))
    return anatomies


#: Unlabelled hyperintensities of a real FLAIR: brighter than this many times the white-matter level
#: inside (template) white matter, where MS lesions are, or than the second factor anywhere in the
#: brain (grey matter is 1.1-1.4 times white matter on FLAIR, lesions more).
UNKNOWN_FACTORS = (1.2, 1.5)


def unlabelled_hyperintensities(flair: np.ndarray, brain: np.ndarray, wm: np.ndarray) -> tuple[np.ndarray, float]:
    """(unknown mask, white-matter level) of a brain-masked real FLAIR with a white-matter prior ``wm``.

    Generous on purpose, and grown by one voxel: teaching a real lesion as background would do more
    harm than leaving some normal tissue untaught.
    """
    level = float(np.median(flair[wm & brain]))
    in_wm, anywhere = UNKNOWN_FACTORS
    bright = brain & (((flair > in_wm * level) & ndimage.binary_dilation(wm, iterations=2))
                      | (flair > anywhere * level))
    return ndimage.binary_dilation(bright, iterations=1) & brain, level


def load_flair_anatomies(paths: list[Path], reference: nib.Nifti1Image, seed: int = 0,
                         template: LabelledTemplate | None = None) -> list[Anatomy]:
    """Real FLAIRs as anatomy on the grid of ``reference``: N4, brain mask, affine registration.

    Each FLAIR goes through the participant pipeline's own preprocessing
    (:func:`bids_msseg.preproc.preprocess_flair`), then its brain is registered (ANTs, affine, mutual
    information, seeded) to nilearn's MNI152 brain on the lesion-mask grid. With a labelled
    ``template``, registered to each FLAIR, its hyperintensities in anatomy where MS lesions are not
    expected (:func:`bids_msseg.anatomy.lesion_free_regions`) are taught as background instead of
    being left unknown: the real negatives the network otherwise never sees.
    """
    import ants  # lazy: ANTs starts ITK's thread pool; only the workers need it
    from nilearn import datasets  # lazy: nilearn (scikit-learn) only to fetch the templates

    mni = _resample_to(datasets.load_mni152_template(resolution=1), reference, order=1)
    mni_brain = _resample_to(datasets.load_mni152_brain_mask(resolution=1), reference, order=1) > 0.5
    wm = mni_white_matter(reference)
    fixed = to_ants_image(mni * mni_brain, reference.affine)
    anatomies = []
    for path in paths:
        pre = preprocess_flair(path, random_seed=seed)
        moving = to_ants_image(pre.corrected * pre.brain_mask, pre.ras.affine)
        with ants_seed(seed):
            reg = ants.registration(fixed, moving, type_of_transform="Affine")
        warp = reg["fwdtransforms"]
        flair = ants.apply_transforms(fixed, moving, warp, interpolator="linear").numpy()
        brain_img = to_ants_image(pre.brain_mask.astype(np.float32), pre.ras.affine)
        brain = ants.apply_transforms(fixed, brain_img, warp, interpolator="linear").numpy() > 0.5
        brain = ndimage.binary_fill_holes(brain)
        flair = np.clip(flair, 0, None) * brain
        flair = (flair / np.percentile(flair[brain], 99)).astype(np.float32)
        unknown, level = unlabelled_hyperintensities(flair, brain, wm)
        if template is not None:
            labels = register_template(flair, brain, reference.affine, template, seed)
            unknown &= ~lesion_free_regions(labels, template.groups, reference.header.get_zooms())
        name = Path(path).name.split(".nii")[0]
        anatomies.append(Anatomy(name, flair, brain, None, reference.affine, level, unknown))
        LOGGER.info("FLAIR anatomy %s: brain %.0f mL, white matter %.3f, unknown %.1f%% of the brain",
                    name, brain.sum() / 1000, level, 100 * unknown.sum() / max(brain.sum(), 1))
    return anatomies


def load_flair_average(image_path: Path, brain_path: Path, reference: nib.Nifti1Image) -> Anatomy:
    """A FLAIR template (an average of many subjects' FLAIRs in MNI space) as lesion-free anatomy.

    Its normal FLAIR-bright structures (hippocampus, periventricular caps, choroid plexus, septum)
    are taught as background: everything in it is known.
    """
    image = _resample_to(nib.load(image_path), reference, order=1)
    brain = ndimage.binary_fill_holes(_resample_to(nib.load(brain_path), reference, order=1) > 0.5)
    image = np.clip(image, 0, None) * brain
    image = (image / np.percentile(image[brain], 99)).astype(np.float32)
    level = float(np.median(image[mni_white_matter(reference) & brain]))
    name = Path(image_path).name.split(".nii")[0]
    LOGGER.info("FLAIR average %s: brain %.0f mL, white matter %.3f", name, brain.sum() / 1000, level)
    return Anatomy(name, image, brain, None, reference.affine, level, None, average=True)


def small_lesion_shapes(masks: list[np.ndarray], min_voxels: int = 3, max_voxels: int = 40) -> list[np.ndarray]:
    """The connected components of ``masks`` with ``min_voxels``..``max_voxels`` voxels, as bool crops."""
    structure = ndimage.generate_binary_structure(3, 3)
    shapes = []
    for mask in masks:
        labels, _ = ndimage.label(mask, structure)
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            crop = labels[box] == i
            if min_voxels <= crop.sum() <= max_voxels:
                shapes.append(crop)
    return shapes


def mni_white_matter(reference: nib.Nifti1Image) -> np.ndarray:
    """nilearn's MNI152 white-matter mask on the grid of ``reference`` (a white-matter prior)."""
    from nilearn import datasets  # lazy: nilearn is heavy, needed only to build training data

    return _resample_to(datasets.load_mni152_wm_mask(resolution=1), reference, order=0) > 0.5


def white_matter_sites(reference: nib.Nifti1Image, erode: int = 2) -> np.ndarray:
    """Voxel indices of (eroded) MNI152 white matter on the lesion-mask grid: where small lesions go."""
    return np.argwhere(ndimage.binary_erosion(mni_white_matter(reference), iterations=erode))


def scatter_small_lesions(shape: tuple[int, ...], small: SmallLesions, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` small real lesion shapes at random white-matter sites (mirrored at random)."""
    out = np.zeros(shape, bool)
    for _ in range(n):
        crop = small.shapes[int(rng.integers(len(small.shapes)))]
        crop = crop[::-1] if rng.random() < 0.5 else crop
        start = small.sites[int(rng.integers(len(small.sites)))] - np.array(crop.shape) // 2
        start = np.clip(start, 0, np.array(shape) - np.array(crop.shape))
        out[tuple(slice(a, a + b) for a, b in zip(start, crop.shape, strict=True))] |= crop
    return out


def load_lesion_masks(paths: list[Path]) -> tuple[list[np.ndarray], nib.Nifti1Image]:
    """Real expert lesion masks (bool arrays) and the first mask's image as the common grid."""
    if not paths:
        raise ValueError("no lesion masks given")
    ref = nib.load(paths[0])
    masks = []
    for p in paths:
        img = nib.load(p)
        if img.shape != ref.shape or not np.allclose(img.affine, ref.affine):
            masks.append(_resample_to(img, ref, order=0) > 0.5)
        else:
            masks.append(np.asarray(img.dataobj) > 0)
    return masks, ref


def _texture(shape: tuple[int, ...], rng: np.random.Generator, sigma: float, amplitude: float) -> np.ndarray:
    """Smooth Gaussian noise with standard deviation ``amplitude`` (tissue heterogeneity)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return noise * (amplitude / max(float(noise.std()), 1e-6))


def flair_contrast(anat: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """FLAIR-like image from the T1 by a random piecewise-linear tissue map; returns (image, WM level)."""
    c_csf, c_gm, c_wm = anat.centres
    f_csf = rng.uniform(0.05, 0.3)
    f_wm = rng.uniform(0.45, 0.6)
    f_gm = f_wm * rng.uniform(1.08, 1.45)
    xp = [0.0, c_csf, c_gm, c_wm, max(1.5, c_wm + 0.3)]
    fp = [f_csf * rng.uniform(0.3, 1.0), f_csf, f_gm, f_wm, f_wm * rng.uniform(0.9, 1.1)]
    image = np.interp(anat.image, xp, fp).astype(np.float32)
    # Tissue heterogeneity: smooth multiplicative texture the template (an average) lacks.
    image *= 1.0 + _texture(anat.image.shape, rng, rng.uniform(0.7, 2.0), rng.uniform(0.03, 0.10))
    return image * anat.brain, f_wm


def paint_lesions(
    image: np.ndarray, lesion: np.ndarray, wm_level: float, rng: np.random.Generator
) -> np.ndarray:
    """Paint hyperintense lesions with random contrast per lesion, texture and soft edges."""
    if not lesion.any():
        return image
    labels, n = ndimage.label(lesion)
    contrast = rng.uniform(1.15, 2.3)  # lesion core intensity relative to white matter
    per_lesion = np.concatenate([[0.0], rng.uniform(0.7, 1.3, n)]).astype(np.float32)
    # Work in the lesions' bounding box (plus the soft edge) only: it is much smaller than the head.
    box = tuple(slice(max(0, sl.start - 4), sl.stop + 4) for sl in ndimage.find_objects(lesion.astype(np.uint8))[0])
    # Real lesions fade towards their border: a bright core and a fainter rim that experts still
    # include. The excess over white matter drops by up to ``rim`` at the border, recovering with
    # depth (in voxels) on a random length scale.
    depth = ndimage.distance_transform_edt(lesion[box])
    rim, scale = rng.uniform(0.0, 0.6), rng.uniform(0.7, 2.5)
    profile = np.ones(image.shape, np.float32)
    profile[box] = 1.0 - rim * np.exp(-np.maximum(depth - 1.0, 0.0) / scale)
    level = wm_level * (1.0 + (contrast - 1.0) * per_lesion[labels] * profile)
    level *= 1.0 + _texture(image.shape, rng, 1.0, rng.uniform(0.02, 0.1))
    alpha = ndimage.gaussian_filter(lesion[box].astype(np.float32), rng.uniform(0.3, 0.9))
    alpha = np.clip(alpha * rng.uniform(1.0, 1.6), 0.0, 1.0)
    # Where the soft edge spills outside the lesion, use the nearest lesion's level.
    idx = ndimage.distance_transform_edt(labels[box] == 0, return_distances=False, return_indices=True)
    level = level[box][tuple(idx)]
    out = image.copy()
    out[box] = image[box] * (1 - alpha) + level * alpha
    return out


def _random_rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1]: coarse noise upsampled with cubic splines."""
    coarse = rng.uniform(-1, 1, size=(cells,) * len(shape))
    zoom = [s / cells for s in shape]
    return ndimage.zoom(coarse, zoom, order=1, mode="nearest")[tuple(slice(0, s) for s in shape)]


def simulate_acquisition(
    image: np.ndarray, brain: np.ndarray, lesion: np.ndarray, rng: np.random.Generator, affine: np.ndarray,
    unknown: np.ndarray | None = None,
) -> SynthVolume:
    """Resample the 1 mm MNI-grid volume onto a random scanner grid, through a random deformation.

    The output grid is RAS+ (as the pipeline's processing orientation), voxel size ``(s, s, t)``
    with in-plane ``s`` and slice thickness ``t``; each output slice averages ``t`` mm of the
    source along its normal (thick-slice partial volume). ``affine`` is the source grid's
    voxel-to-mm matrix: output offsets in RAS mm are mapped to source voxels through its inverse.
    ``unknown`` (voxels whose truth is unknown) follows the lesion mask through the same resampling.
    """
    s = float(rng.uniform(0.5, 1.3)) if rng.random() < 0.7 else 1.0
    thick = rng.random() < 0.5
    t = float(rng.uniform(2.5, 5.0)) if thick else float(rng.uniform(0.8, 1.5))
    # Anti-alias the source for the in-plane resolution.
    if s > 1.0:
        image = ndimage.gaussian_filter(image, sigma=(0.5 * np.sqrt(s**2 - 1),) * 2 + (0,))
    rot = _random_rotation(rng, (10.0, 6.0, 8.0))  # tilt about L-R (pitch) is the largest
    scale = np.diag(rng.uniform(0.9, 1.1, 3))
    lin = rot @ scale  # output mm -> source mm (about the brain centre)
    centre_src = np.array(ndimage.center_of_mass(brain))
    mm_to_voxel = np.linalg.inv(np.asarray(affine, float)[:3, :3])
    # Output grid extent: the brain's bounding box after transform, plus a margin.
    extent = (np.array(brain.shape) * 1.0).max() * 0.55
    n_xy = int(np.ceil(2 * extent * 0.85 / s))
    n_z = int(np.ceil(2 * extent * 0.75 / t))
    shift = rng.uniform(-5, 5, 3)
    gx = (np.arange(n_xy) - n_xy / 2) * s
    gz = (np.arange(n_z) - n_z / 2) * t
    sub = max(1, int(round(t)))  # sub-samples across the slice thickness
    offsets = (np.arange(sub) + 0.5) / sub * t - t / 2
    elastic = [_smooth_field((n_xy, n_xy, n_z), rng, cells=5) * rng.uniform(0, 3.0) for _ in range(3)]

    channels = [image, brain, lesion] + ([unknown] if unknown is not None else [])
    source = torch.from_numpy(np.stack(channels).astype(np.float32))[None]
    size = torch.tensor(brain.shape, dtype=torch.float64)
    acc = torch.zeros((len(channels), n_xy, n_xy, n_z), dtype=torch.float32)
    X, Y = np.meshgrid(gx, gx, indexing="ij")
    for off in offsets:
        pts = np.stack([np.broadcast_to(X[..., None], (n_xy, n_xy, n_z)),
                        np.broadcast_to(Y[..., None], (n_xy, n_xy, n_z)),
                        np.broadcast_to(gz[None, None, :] + off, (n_xy, n_xy, n_z))], axis=0)
        pts = pts + np.stack(elastic) + shift[:, None, None, None]
        src = np.tensordot(mm_to_voxel @ lin, pts, axes=1)  # RAS mm offsets -> source voxel offsets
        coords = torch.from_numpy(src + centre_src[:, None, None, None])
        # grid_sample wants (x=last axis, y, z=first axis) in [-1, 1] (align_corners=True).
        grid = (2 * coords / (size[:, None, None, None] - 1) - 1).flip(0).permute(1, 2, 3, 0)
        acc += F.grid_sample(source, grid[None].float(), mode="bilinear", padding_mode="zeros",
                             align_corners=True)[0]
    acc = (acc / len(offsets)).numpy()
    brain_out = acc[1] > 0.5
    lesion_out = (acc[2] >= 0.5) & brain_out
    unknown_out = (acc[3] >= 0.25) & ~lesion_out if unknown is not None else None
    out = acc[0]

    # Bias field, noise, image-quality augmentation (DeepLesionBrain).
    bias = np.exp(_smooth_field(out.shape, rng, cells=3) * rng.uniform(0.0, 0.35)).astype(np.float32)
    out = out * bias
    wm_ref = float(np.percentile(out[brain_out], 50)) if brain_out.any() else 1.0
    sigma = rng.uniform(0.005, 0.06) * wm_ref
    out = np.sqrt((out + rng.normal(0, sigma, out.shape)) ** 2 + rng.normal(0, sigma, out.shape) ** 2)
    quality = rng.random()
    if quality < 0.25:
        out = ndimage.gaussian_filter(out, sigma=(rng.uniform(0.5, 1.75),) * 2 + (0,))
    elif quality < 0.45:
        blurred = ndimage.gaussian_filter(out, sigma=(rng.uniform(0.5, 1.5),) * 2 + (0,))
        out = out + rng.uniform(0.3, 1.0) * (out - blurred)
    # Imperfect brain extraction: the mask grows or shrinks by up to 2 voxels.
    grow = int(rng.integers(-2, 3))
    if grow > 0:
        brain_out = ndimage.binary_dilation(brain_out, iterations=grow)
    elif grow < 0:
        brain_out = ndimage.binary_erosion(brain_out, iterations=-grow)
    out = (np.clip(out, 0, None) * brain_out * rng.uniform(50, 2000)).astype(np.float32)
    params = {"inplane_mm": round(s, 3), "slice_mm": round(t, 3), "quality": round(float(quality), 3),
              "grow": grow}
    return SynthVolume(out, brain_out, lesion_out & brain_out, (s, s, t), params, unknown_out)


#: How often each kind of anatomy is drawn (renormalized over the kinds present).
ANATOMY_WEIGHTS = {"template": 0.3, "average": 0.3, "real": 0.4}


def synth_volume(
    anatomies: list[Anatomy], masks: list[np.ndarray], rng: np.random.Generator,
    small: SmallLesions | None = None,
) -> SynthVolume:
    """Draw one training volume: anatomy, contrast, real lesions, acquisition.

    Without a FLAIR average, templates and real FLAIRs are drawn equally often whatever their
    numbers (the stage-3 pool); with one, by :data:`ANATOMY_WEIGHTS`. With ``small``, half the
    volumes get 2-8 extra small real lesion shapes in white matter.
    """
    kinds = [k for k in ANATOMY_WEIGHTS if any(a.kind == k for a in anatomies)]
    if "average" not in kinds:
        kind = kinds[int(rng.integers(2))] if len(kinds) == 2 else kinds[0]
    else:
        p = np.array([ANATOMY_WEIGHTS[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    group = [a for a in anatomies if a.kind == kind]
    anat = group[int(rng.integers(len(group)))]
    lesion = np.zeros(anat.image.shape, bool)
    if rng.random() > 0.08:  # a few volumes without lesions
        for _ in range(1 + int(rng.random() < 0.3)):
            m = masks[int(rng.integers(len(masks)))]
            lesion |= m[::-1] if rng.random() < 0.5 else m  # left-right mirror
        if small is not None and rng.random() < 0.5:
            lesion |= scatter_small_lesions(lesion.shape, small, int(rng.integers(2, 9)), rng)
    lesion &= anat.brain
    if anat.kind == "template":
        image, wm_level = flair_contrast(anat, rng)
    else:  # a real FLAIR or a FLAIR average: its own contrast
        image, wm_level = anat.image * anat.brain, anat.wm_level
        if anat.average:
            image = image * (1.0 + _texture(image.shape, rng, rng.uniform(0.7, 2.0), rng.uniform(0.03, 0.10)))
    image = paint_lesions(image, lesion, wm_level, rng)
    vol = simulate_acquisition(image, anat.brain, lesion, rng, anat.affine, anat.unknown)
    vol.params["anatomy"] = anat.name
    return vol
