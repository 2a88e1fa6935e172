"""One registration per run: the template's labels on the run's grid, and the run's maps in template space.

:func:`register_run` registers the product's template (:func:`bids_msseg.anatomy.template.mni152_template`)
to a brain-masked FLAIR with ANTs (affine, optionally followed by a coarse SyN) on the FLAIR resampled to
``registration_mm`` (affine at 4 mm by default: a few seconds on two cores; see
docs/lesion_location.md for the accuracy this costs against a 2 mm SyN), seeded so the same input
gives the same labels. It never raises for a registration that fails or looks wrong: the result
then carries ``status`` and no labels, and the
callers write ``n/a`` for everything that needed anatomy.

The lateral ventricles are then refined on the FLAIR itself (:func:`refine_ventricles`): CSF is dark
on FLAIR, so the dark voxels near the warped template ventricles are the run's own ventricles,
which makes "touches the ventricle" independent of a millimetre or two of registration error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from bids_msseg.anatomy.core import LabelledTemplate
from bids_msseg.anatomy.template import REGIONS
from bids_msseg.preproc.brain import ants_seed
from bids_msseg.preproc.n4 import to_ants_image

LOGGER = logging.getLogger(__name__)

#: Registration defaults of the participant level (docs/lesion_location.md measures them).
REGISTRATION_MM = 4.0
SYN_ITERATIONS = (40, 20, 0)
#: Template ventricles are searched for dark FLAIR voxels this far around them, mm.
VENTRICLE_SEARCH_MM = 4.0
#: A voxel is ventricle-dark below this fraction of the brain's median FLAIR intensity.
VENTRICLE_DARK_FRACTION = 0.7


@dataclass
class RunAnatomy:
    """Template labels on a run's grid and what is needed to bring the run's maps to the template."""

    status: str  # "ok" or "failed: <reason>"
    labels: np.ndarray | None = None  # REGIONS values on the run's grid (int32)
    seconds: float = 0.0
    template: LabelledTemplate | None = None
    transforms: dict[str, Any] = field(default_factory=dict)  # ANTs "fwdtransforms"/"invtransforms"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.labels is not None


def refine_ventricles(flair: np.ndarray, brain: np.ndarray, template_ventricles: np.ndarray,
                      zooms: tuple[float, ...], lesions: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The run's lateral ventricles: dark FLAIR voxels within ``VENTRICLE_SEARCH_MM`` of the template's.

    Only dark components that overlap the template ventricles are kept. When the FLAIR gives too
    little (under a quarter of the template's volume: a FLAIR without dark CSF, a bad fit), the
    template's ventricles are returned unchanged. Returns the mask and which one was used.
    """
    brain = np.asarray(brain, bool)
    template_ventricles = np.asarray(template_ventricles, bool)
    if not template_ventricles.any() or not brain.any():
        return template_ventricles, "template"
    zooms = tuple(float(z) for z in zooms[:3])
    near = within_distance(template_ventricles, VENTRICLE_SEARCH_MM, zooms)
    values = np.asarray(flair, np.float32)
    dark = brain & near & (values < VENTRICLE_DARK_FRACTION * float(np.median(values[brain])))
    if lesions is not None:
        dark &= ~np.asarray(lesions, bool)
    comps, n = ndimage.label(dark)
    if n:
        hit = np.unique(comps[template_ventricles & dark])
        dark = np.isin(comps, hit[hit > 0])
    if dark.sum() < 0.25 * template_ventricles.sum():
        return template_ventricles, "template"
    return dark, "flair"


def within_distance(mask: np.ndarray, radius_mm: float, zooms: tuple[float, ...]) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask`` (``distance_transform_edt(~mask) <= radius_mm``), computed
    on the mask's bounding box grown by the radius only.

    Every voxel of the mask lies in the box, so a voxel of the box has the same nearest mask voxel, and
    the same distance, as in the whole volume, and a voxel outside the box is farther than the radius:
    the result is the whole-volume one, at the cost of the box (a tenth of a 1 mm head for the lateral
    ventricles).
    """
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    found = np.argwhere(mask)
    if not len(found):
        return out
    pad = [int(np.ceil(radius_mm / z)) + 1 for z in zooms[:mask.ndim]]
    box = tuple(slice(max(0, int(lo) - p), min(dim, int(hi) + p + 1))
                for lo, hi, p, dim in zip(found.min(axis=0), found.max(axis=0), pad, mask.shape, strict=True))
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=zooms[:mask.ndim]) <= radius_mm
    return out


#: The brain-masked template resampled for registration, by (id(template), mm): the template and the image.
_MOVING_CACHE: dict[tuple[int, float], tuple[LabelledTemplate, Any]] = {}


def template_moving_image(template: LabelledTemplate, resolution_mm: float) -> Any:
    """The brain-masked ``template`` resampled to ``resolution_mm`` (ANTs image), the moving image of
    :func:`register_run`; made once per template and resolution in a process (~0.3 s on a 1 mm template,
    the same for every run), for the last two asked for."""
    import ants  # lazy: antspyx is heavy and only needed when anatomy is asked for

    key = (id(template), float(resolution_mm))
    cached = _MOVING_CACHE.get(key)
    if cached is not None and cached[0] is template:  # the template itself is kept, so its id is not reused
        return cached[1]
    moving = ants.resample_image(to_ants_image(template.image * template.brain, template.affine),
                                 (float(resolution_mm),) * 3, use_voxels=False, interp_type=0)
    while len(_MOVING_CACHE) >= 2:
        _MOVING_CACHE.pop(next(iter(_MOVING_CACHE)))
    _MOVING_CACHE[key] = (template, moving)
    return moving


def register_run(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, template: LabelledTemplate,
                 *, seed: int = 0, registration_mm: float = REGISTRATION_MM,
                 transform: str = "Affine", syn_iterations: tuple[int, ...] = SYN_ITERATIONS) -> RunAnatomy:
    """Register ``template`` to a run (``image`` with its brain mask and NIfTI affine); never raises.

    ``transform`` is ``"Affine"`` (the default: measured in docs/lesion_location.md) or ``"SyN"``
    (affine then a coarse SyN of ``syn_iterations``). The result's ``labels`` are the
    template's on ``image``'s grid; ``status`` says why there are none.
    """
    started = time.perf_counter()
    brain = np.asarray(brain, bool)
    if brain.sum() < 1000:
        return RunAnatomy(status="failed: the brain mask is (nearly) empty")
    try:
        import ants  # lazy: antspyx is heavy and only needed when anatomy is asked for

        fixed = to_ants_image(np.asarray(image, np.float32) * brain, affine)
        coarse = ants.resample_image(fixed, (registration_mm,) * 3, use_voxels=False, interp_type=0)
        # the template at 2 mm: four times faster to register than at 1 mm, no less accurate at 4 mm
        moving = template_moving_image(template, min(2.0, registration_mm))
        kwargs: dict[str, Any] = {}
        if transform == "SyN":
            kwargs = {"reg_iterations": tuple(syn_iterations)}
        with ants_seed(seed):
            reg = ants.registration(coarse, moving, type_of_transform=transform, **kwargs)
        label_img = to_ants_image(template.labels.astype(np.float32), template.affine)
        warped = ants.apply_transforms(fixed, label_img, reg["fwdtransforms"], interpolator="nearestNeighbor")
        labels = np.rint(warped.numpy()).astype(np.int32)
    except Exception as err:  # noqa: BLE001 - any failure of ANTs becomes a per-run warning
        LOGGER.warning("template registration failed: %s", err)
        return RunAnatomy(status=f"failed: {type(err).__name__}: {err}"[:300],
                          seconds=time.perf_counter() - started)
    anatomy = RunAnatomy(status="ok", labels=labels, template=template,
                         transforms={"fwd": list(reg["fwdtransforms"]), "inv": list(reg["invtransforms"])},
                         details={"Transform": transform, "RegistrationResolution_mm": registration_mm,
                                  "SyNIterations": list(syn_iterations) if transform == "SyN" else None})
    problem = _implausible(labels, brain, affine)
    if problem:
        LOGGER.warning("template registration rejected: %s", problem)
        anatomy.status, anatomy.labels = f"failed: {problem}", None
    anatomy.seconds = time.perf_counter() - started
    return anatomy


def _implausible(labels: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> str | None:
    """Why warped labels cannot be right (or None): they must cover most of the brain mask and
    hold ventricles and cerebral tissue of a plausible size."""
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    tissue = labels > 0
    covered = float((tissue & brain).sum()) / max(1, int(brain.sum()))
    if covered < 0.6:
        return f"the template covers only {covered:.0%} of the brain mask"
    ventricles_ml = float((labels == REGIONS["lateral_ventricles"]).sum()) * voxel_ml
    if not 1.0 <= ventricles_ml <= 300.0:
        return f"implausible lateral-ventricle volume {ventricles_ml:.1f} mL"
    return None


def points_to_template(anatomy: RunAnatomy, points_mm: np.ndarray) -> np.ndarray:
    """Points of the run (N x 3, scanner RAS+ mm, as the lesion table's centroids) in template mm.

    The registration's forward transforms resample the template onto the run, so they map a run
    point to the template point that lands on it: the point's place in the template (MNI152 2009a
    mm for the product's template). ANTs works in LPS, hence the sign flips of x and y.
    """
    import ants  # lazy: antspyx is heavy and only needed when anatomy is asked for

    if not anatomy.ok:
        raise ValueError("no registration to map through")
    points = np.asarray(points_mm, np.float64).reshape(-1, 3)
    if not len(points):
        return np.zeros((0, 3))
    flip = np.array([-1.0, -1.0, 1.0])
    forward = anatomy.transforms["fwd"]
    moved = ants.apply_transforms_to_points(3, pd.DataFrame(points * flip, columns=["x", "y", "z"]), forward,
                                            whichtoinvert=[False] * len(forward))
    return moved[["x", "y", "z"]].to_numpy(np.float64) * flip


def to_template(anatomy: RunAnatomy, data: np.ndarray, affine: np.ndarray, *, interpolator: str) -> np.ndarray:
    """A map on the run's grid (``data``, ``affine``) resampled onto the template's grid."""
    import ants  # lazy: antspyx is heavy and only needed when anatomy is asked for

    if not anatomy.ok or anatomy.template is None:
        raise ValueError("no registration to map through")
    template = anatomy.template
    reference = to_ants_image(np.zeros(template.image.shape, np.float32), template.affine)
    moving = to_ants_image(np.asarray(data, np.float32), affine)
    inverse = anatomy.transforms["inv"]
    invert = [name.endswith(".mat") for name in inverse]
    out = ants.apply_transforms(reference, moving, inverse, interpolator=interpolator, whichtoinvert=invert)
    return out.numpy()
