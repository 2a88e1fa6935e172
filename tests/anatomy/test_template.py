"""The shipped location labels of the MNI152 2009a template."""

import numpy as np
from scipy import ndimage

from bids_msseg.anatomy.template import REGIONS, VENTRICLE_RIM_MM, mni152_template


def test_no_cortex_lines_the_lateral_ventricles():
    """The partial-volume rim of the ventricle wall looks grey on T1; labelled cortex, it made every
    periventricular lesion of patient 26 'touch' the cortex (docs/lesion_location.md)."""
    template = mni152_template()
    zooms = np.sqrt((template.affine[:3, :3] ** 2).sum(axis=0))
    box = ndimage.find_objects((template.labels == REGIONS["lateral_ventricles"]).astype(np.uint8))[0]
    pad = int(np.ceil(VENTRICLE_RIM_MM / zooms.min())) + 1
    labels = template.labels[tuple(slice(max(0, s.start - pad), s.stop + pad) for s in box)]
    near = ndimage.distance_transform_edt(labels != REGIONS["lateral_ventricles"], sampling=zooms) <= VENTRICLE_RIM_MM
    assert not (near & (labels == REGIONS["cortex"])).any()
    assert (near & (labels == REGIONS["white_matter"])).sum() > 10_000  # the rim is still tissue
    assert 500_000 < (template.labels == REGIONS["cortex"]).sum() < 900_000


def test_the_midbrain_is_infratentorial_and_the_thalamus_is_not():
    """The brainstem includes the midbrain (McDonald); no CSF gap marks its top, so it is set by MNI coordinates."""
    template = mni152_template()
    inverse = np.linalg.inv(template.affine)

    def label_at(x: float, y: float, z: float) -> int:
        i, j, k = np.rint(inverse @ [x, y, z, 1.0])[:3].astype(int)
        return int(template.labels[i, j, k])

    for point in ((10, -16, -11), (-10, -16, -11), (0, -28, -14), (0, -28, -30)):  # peduncles, tegmentum, pons
        assert label_at(*point) == REGIONS["infratentorial"], point
    for point in ((12, -18, 6), (-12, -18, 6)):  # thalamus
        assert label_at(*point) == REGIONS["deep_grey"], point
