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
