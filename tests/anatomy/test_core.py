"""Lesion-free anatomy from template labels (the default model's specificity measure and training negatives)."""

import numpy as np

from bids_msseg.anatomy import lesion_free_regions, resample_labels

GROUPS = {"hippocampus": (1,), "ventricles": (2,), "white_matter": (3,), "cortex": (4,)}


def test_lesion_free_regions_spare_the_ventricle_wall_and_juxtacortical_cortex():
    labels = np.zeros((40, 10, 10), np.int32)
    labels[0:4] = 1  # hippocampus
    labels[4:14] = 2  # a ventricle, 10 mm wide
    labels[14:24] = 3  # white matter
    labels[24:40] = 4  # cortex
    free = lesion_free_regions(labels, GROUPS, (1.0, 1.0, 1.0), cortex_margin_mm=3.0, ventricle_margin_mm=1.5)
    x = free[:, 5, 5]
    assert x[0:4].all()  # hippocampus
    assert not x[13] and x[9]  # the ventricle's wall is spared, its inside is not
    assert not x[14:24].any()  # white matter
    assert not x[24:26].any() and x[27:40].all()  # cortex within 3 mm of white matter is spared


def test_resample_labels_follows_world_coordinates():
    labels = np.zeros((10, 10, 10), np.int16)
    labels[2, 3, 4] = 7
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = 9.0  # the same world grid, stored left-right reversed
    out = resample_labels(labels, np.eye(4), (10, 10, 10), flipped)
    assert out[7, 3, 4] == 7 and (out > 0).sum() == 1
