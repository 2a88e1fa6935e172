"""The product's labelled template: MNI152 2009 (nilearn's copy) with the regions lesion location needs.

The intensity template, grey- and white-matter probability maps are the ICBM 2009a nonlinear
symmetric MNI152 template that nilearn ships in its wheel (``MNI152NLin2009aSym``; Fonov et al.
2009/2011, copyright McConnell Brain Imaging Centre, permission to use, copy, modify and distribute
for any purpose; see docs/lesion_location.md). The label image (``TEMPLATE_LABELS``, shipped in
``bids_msseg/data/templates``) is derived from those maps alone by :func:`build_template_labels`
(regenerate with ``scripts/build_anatomy_labels.py``), so no atlas with a non-commercial licence
is needed:

=== ================== ==============================================================================
1   lateral_ventricles CSF (GM + WM probability < 0.5) inside the brain, in components that do not touch
                       the brain's outer surface, above the tentorium, larger than 1 mL
2   cortex             cerebral GM (probability >= 0.5) outside the deep-grey ellipsoid and over
                       ``VENTRICLE_RIM_MM`` from the lateral ventricles
3   white_matter       the rest of the cerebral tissue (WM, and the GM-looking rim of the ventricle wall)
4   deep_grey          cerebral GM inside an ellipsoid around basal ganglia and thalami
5   infratentorial     brainstem and cerebellum: a watershed of the tissue map from seeds 14 mm below and
                       above a plane approximating the tentorium (the boundary follows the CSF gap),
                       plus the midbrain (``MIDBRAIN_BOX``), which no CSF gap separates from above
6   csf                other CSF inside the brain mask (sulci, cisterns, 3rd and 4th ventricles)
=== ================== ==============================================================================

Checked in development against the Neuromorphometrics atlas (CC BY-NC, not shipped): Dice 0.985
for infratentorial, see docs/lesion_location.md for the others.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_msseg.anatomy.core import LabelledTemplate
from bids_msseg.settings import TEMPLATE_SPACE

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"
TEMPLATE_LABELS = TEMPLATE_DIR / f"tpl-{TEMPLATE_SPACE}_res-1_desc-location_dseg.nii.gz"

#: Label values of the template's label image.
REGIONS: dict[str, int] = {"lateral_ventricles": 1, "cortex": 2, "white_matter": 3, "deep_grey": 4,
                           "infratentorial": 5, "csf": 6}
GROUPS: dict[str, tuple[int, ...]] = {name: (value,) for name, value in REGIONS.items()}

#: The tentorium plane (mm, MNI): z = A + B * y + C * |x|; watershed seeds this far below/above.
TENTORIUM_PLANE = (-20.0, -0.2, -0.5)
TENTORIUM_MARGIN_MM = 14.0
#: The midbrain (mm, MNI: |x| <= 14, y from -36 to -10, z <= -8): brainstem (infratentorial for
#: McDonald) that the watershed leaves above the tentorium, where no CSF gap separates it from the
#: diencephalon (Neuromorphometrics: Brain_Stem and the posterior Ventral_DC).
MIDBRAIN_BOX = (14.0, (-36.0, -10.0), -8.0)
#: The deep-grey ellipsoid (centre x, y, z and semi-axes, mm, MNI).
DEEP_GREY_ELLIPSOID = ((0.0, -6.0, 4.0), (34.0, 38.0, 22.0))
#: Smallest internal CSF component kept as lateral ventricle, mm^3.
MIN_VENTRICLE_MM3 = 1000.0
#: Grey matter this close to the lateral ventricles is not cortex, mm: the partial-volume rim of the
#: ventricle wall (CSF next to white matter looks grey on T1) and the caudate body outside the
#: deep-grey ellipsoid (docs/lesion_location.md, "Confluent lesions on patient 26").
VENTRICLE_RIM_MM = 4.0


def nilearn_files() -> dict[str, Path]:
    """Paths of the MNI152 2009a T1 template and GM/WM probability maps inside nilearn's wheel."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nilearn is not installed; it ships the MNI152 template lesion location uses")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    files = {k: data / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"nilearn's MNI152 template files are missing: {missing}")
    return files


def world_coordinates(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """x, y, z (mm) of every voxel, shape (3, *shape)."""
    ijk = np.indices(shape[:3], dtype=np.float32).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3,) + tuple(shape[:3]))


def build_template_labels(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Derive the label image (see the module docstring) from the template and its tissue maps.

    ``gm`` and ``wm`` are probabilities in [0, 1]; the brain is ``t1 > 0`` (the template is skull-stripped).
    """
    from skimage.segmentation import watershed  # lazy: scikit-image, only to rebuild the shipped labels

    brain = np.asarray(t1) > 0
    tissue = np.asarray(gm, np.float32) + np.asarray(wm, np.float32)
    x, y, z = world_coordinates(brain.shape, affine)
    voxel = float(abs(np.linalg.det(affine[:3, :3])))

    a, b, c = TENTORIUM_PLANE
    plane = a + b * y + c * np.abs(x)
    markers = np.zeros(brain.shape, np.int32)
    markers[brain & (z < plane - TENTORIUM_MARGIN_MM)] = 1
    markers[brain & (z > plane + TENTORIUM_MARGIN_MM)] = 2
    infra = watershed(1.0 - tissue, markers, mask=brain) == 1
    half_width, (y_back, y_front), z_top = MIDBRAIN_BOX
    infra |= brain & (np.abs(x) <= half_width) & (y >= y_back) & (y <= y_front) & (z <= z_top)

    csf = brain & (tissue < 0.5)
    surface = brain & ~ndimage.binary_erosion(brain)
    comps, n = ndimage.label(csf & ~infra)
    outer = np.unique(comps[surface])
    sizes = np.bincount(comps.ravel(), minlength=n + 1) * voxel
    keep = np.ones(n + 1, bool)
    keep[0] = False
    keep[outer] = False
    keep &= sizes >= MIN_VENTRICLE_MM3
    ventricles = keep[comps]

    (cx, cy, cz), (ax, ay, az) = DEEP_GREY_ELLIPSOID
    ellipsoid = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 < 1.0
    cerebral = brain & ~infra & ~ventricles & (tissue >= 0.5)
    grey = cerebral & (gm >= 0.5)

    labels = np.zeros(brain.shape, np.uint8)
    labels[csf] = REGIONS["csf"]
    labels[cerebral] = REGIONS["white_matter"]
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    rim = ndimage.distance_transform_edt(~ventricles, sampling=zooms) <= VENTRICLE_RIM_MM
    labels[grey & ~ellipsoid & ~rim] = REGIONS["cortex"]
    labels[grey & ellipsoid] = REGIONS["deep_grey"]
    labels[infra & (tissue >= 0.5)] = REGIONS["infratentorial"]
    labels[ventricles] = REGIONS["lateral_ventricles"]
    return labels


def build_from_nilearn() -> nib.Nifti1Image:
    """The label image built from nilearn's files (what ``scripts/build_anatomy_labels.py`` saves)."""
    files = nilearn_files()
    t1 = nib.load(files["t1"])
    gm = np.asarray(nib.load(files["gm"]).dataobj, np.float32) / 255.0
    wm = np.asarray(nib.load(files["wm"]).dataobj, np.float32) / 255.0
    labels = build_template_labels(np.asarray(t1.dataobj), gm, wm, t1.affine)
    img = nib.Nifti1Image(labels, t1.affine)
    img.set_qform(t1.affine, 4)
    img.set_sform(t1.affine, 4)
    return img


@functools.lru_cache(maxsize=2)
def mni152_template() -> LabelledTemplate:
    """The MNI152 2009a template (brain, skull-stripped) with the shipped location labels, 1 mm."""
    files = nilearn_files()
    t1 = nib.load(files["t1"])
    image = np.asarray(t1.dataobj, np.float32)
    labels_img = nib.load(TEMPLATE_LABELS)
    if not np.allclose(labels_img.affine, t1.affine) or labels_img.shape != t1.shape:
        raise RuntimeError(f"{TEMPLATE_LABELS} does not match nilearn's template grid; rebuild it")
    labels = np.asarray(labels_img.dataobj).astype(np.int32)
    return LabelledTemplate(image, image > 0, labels, t1.affine, GROUPS)
