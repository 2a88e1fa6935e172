"""bids_msseg.preproc.brain: background masks and hole filling."""

from __future__ import annotations

import numpy as np

from bids_msseg.preproc.brain import ants_seed_value, fill_holes, mask_from_background
from tests.preproc.helpers import synthetic_head

# --- masks -------------------------------------------------------------------------------------

def test_mask_from_background_fills_holes_and_drops_specks() -> None:
    data = synthetic_head(skull=False)
    brain = data > 0
    data[18:22, 22:26, 16:20] = 0.0  # a hole inside (e.g. CSF clipped to 0)
    data[1, 1, 1] = 500.0  # a stray voxel outside
    mask = mask_from_background(data)
    assert mask.dtype == bool
    assert not mask[1, 1, 1]
    assert mask[20, 24, 18]
    assert np.array_equal(mask, fill_holes(brain))


def test_fill_holes_closes_ventricles_open_at_the_slab_end() -> None:
    mask = np.zeros((20, 20, 6), bool)
    mask[4:16, 4:16, :] = True
    mask[8:12, 8:12, 3:] = False  # a channel open at the top: not a 3D hole
    filled = fill_holes(mask)
    assert filled[10, 10, 5]


# ---- ANTs' registration seed is never 0, which ANTs reads as "seed from the clock" (issue 14).

def test_ants_seed_is_never_zero_and_fits_int32() -> None:
    assert ants_seed_value(0) != 0
    assert len({ants_seed_value(s) for s in (0, 1, 42, 2**31 - 2)}) == 4
    assert all(0 < ants_seed_value(s) < 2**31 for s in (0, 2**31 - 2, 2**40, 10**12))
