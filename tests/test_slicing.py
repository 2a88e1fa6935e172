"""Slicing (bids_msseg/slicing.py): the geometry shared by training and inference."""

import numpy as np
import pytest

from bids_msseg.slicing import cut_label_slices, cut_slices, paste_slices, plan_geometry
from tests.helpers import blob_volume


@pytest.mark.parametrize("zooms", [(1.0, 1.0, 1.0), (0.7, 0.7, 3.0), (1.0, 0.5, 2.0)])
def test_slices_round_trip(zooms):
    data, mask = blob_volume((60, 50, 20))
    geom = plan_geometry(mask, zooms, size=64)
    slices = cut_slices(data, geom)
    assert slices.shape == (len(geom.slices), 1, 64, 64)
    back = paste_slices(slices, geom)
    assert back.shape == data.shape
    inner = mask & (np.abs(np.gradient(data.astype(float), axis=0)) < 1e9)
    # Down- then up-sampling blurs, but the volume comes back where it was.
    corr = np.corrcoef(back[inner], data[inner])[0, 1]
    assert corr > 0.5
    # The aspect ratio is kept in millimetres: the longer physical side fills the frame.
    wx = (geom.box[1] - geom.box[0]) * zooms[0]
    wy = (geom.box[3] - geom.box[2]) * zooms[1]
    assert max(geom.resized) == 64
    assert geom.resized[0] / geom.resized[1] == pytest.approx(wx / wy, rel=0.05)


def test_label_slices_keep_small_lesions():
    data, mask = blob_volume((60, 50, 20))
    lesion = np.zeros_like(mask)
    lesion[30, 25, 10] = True
    geom = plan_geometry(mask, (1.0, 1.0, 1.0), size=224)
    assert cut_label_slices(lesion, geom).sum() > 0
