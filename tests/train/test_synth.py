"""The synthetic-acquisition simulator keeps anatomy on the right side whatever the source grid."""

import numpy as np
import pytest
from scipy import ndimage

from bids_msseg.train.synth import (
    Anatomy,
    SmallLesions,
    paint_lesions,
    scatter_small_lesions,
    simulate_acquisition,
    small_lesion_shapes,
    synth_volume,
    unlabelled_hyperintensities,
)


def _world_scene(flip_x: bool):
    """A 1 mm sphere 'brain' with a lesion 15 mm to the subject's right, on a RAS or LAS grid."""
    n = 64
    world_x = np.arange(n) - n / 2 + 0.5  # RAS x (mm) of voxel i on a RAS grid
    if flip_x:
        world_x = world_x[::-1]  # LAS: index i runs from right to left
    x = world_x[:, None, None]
    y = (np.arange(n) - n / 2 + 0.5)[None, :, None]
    z = (np.arange(n) - n / 2 + 0.5)[None, None, :]
    brain = x**2 + y**2 + z**2 < 26**2
    lesion = (x - 15) ** 2 + y**2 + z**2 < 4**2
    affine = np.diag([-1.0 if flip_x else 1.0, 1.0, 1.0, 1.0])
    image = brain * 0.5
    return image.astype(np.float32), brain, lesion, affine


@pytest.mark.parametrize("flip_x", [False, True])
def test_lesion_stays_on_the_right_in_ras_output(flip_x):
    image, brain, lesion, affine = _world_scene(flip_x)
    image = paint_lesions(image, lesion, 0.5, np.random.default_rng(0))
    vol = simulate_acquisition(image, brain, lesion, np.random.default_rng(1), affine)
    assert vol.lesion.any() and vol.brain.any()
    assert not (vol.lesion & ~vol.brain).any()
    lesion_x = ndimage.center_of_mass(vol.lesion)[0]
    brain_x = ndimage.center_of_mass(vol.brain)[0]
    # Output is RAS+: the right of the subject is at higher axis-0 indices.
    assert (lesion_x - brain_x) * vol.zooms[0] > 8
    # Lesions are hyperintense in the simulated image.
    assert vol.image[vol.lesion].mean() > 1.2 * np.median(vol.image[vol.brain])


def test_painted_lesion_is_brighter_than_white_matter_and_fades_to_its_rim():
    """Painted lesions are brighter than white matter (but for texture noise); cores at least as bright as rims."""
    n = 40
    grid = np.indices((n, n, n)) - n / 2
    lesion = (grid**2).sum(0) < 6**2
    image = np.full((n, n, n), 0.5, np.float32)
    for seed in range(5):
        out = paint_lesions(image, lesion, 0.5, np.random.default_rng(seed))
        depth = ndimage.distance_transform_edt(lesion)
        assert (out[lesion] > 0.5).mean() > 0.95
        core, rim = out[depth >= 4].mean(), out[lesion & (depth <= 1)].mean()
        assert core >= rim * 0.97


def test_unknown_voxels_follow_the_acquisition_and_never_cover_lesions():
    """A real FLAIR's unlabelled hyperintensity stays unknown after resampling; pasted lesions stay known."""
    image, brain, lesion, affine = _world_scene(False)
    x = np.arange(64)[:, None, None] - 32
    unknown = brain & ((x + 15) ** 2 + (np.arange(64)[None, :, None] - 32) ** 2
                       + (np.arange(64)[None, None, :] - 32) ** 2 < 5**2)  # left side
    unknown |= lesion  # overlapping a pasted lesion: the lesion label wins
    vol = simulate_acquisition(image, brain, lesion, np.random.default_rng(1), affine, unknown)
    assert vol.unknown is not None and vol.unknown.any()
    assert not (vol.unknown & vol.lesion).any()
    assert ndimage.center_of_mass(vol.unknown)[0] < ndimage.center_of_mass(vol.brain)[0]


def test_unlabelled_hyperintensities_flag_bright_white_matter_only():
    shape = (30, 30, 30)
    brain = np.ones(shape, bool)
    wm = np.zeros(shape, bool)
    wm[5:25, 5:25, 5:25] = True
    flair = np.where(wm, 1.0, 1.3).astype(np.float32)  # grey matter 1.3x white matter
    flair[14:17, 14:17, 14:17] = 1.6  # a lesion in white matter
    unknown, level = unlabelled_hyperintensities(flair, brain, wm)
    assert level == pytest.approx(1.0)
    assert unknown[15, 15, 15] and unknown[13, 15, 15]  # the lesion, grown by one voxel
    assert not unknown[0, 0, 0]  # grey matter below 1.5x is left known


def test_small_lesion_shapes_are_scattered_at_white_matter_sites():
    masks = [np.zeros((30, 30, 30), bool)]
    masks[0][2:4, 2:4, 2:4] = True  # 8 voxels: small
    masks[0][10:20, 10:20, 10:20] = True  # 1000 voxels: not small
    shapes = small_lesion_shapes(masks, min_voxels=3, max_voxels=40)
    assert len(shapes) == 1 and shapes[0].sum() == 8
    sites = np.array([[15, 15, 15]])
    out = scatter_small_lesions((30, 30, 30), SmallLesions(shapes, sites), 3, np.random.default_rng(0))
    assert out.sum() == 8 and out[15, 15, 15]


def test_a_flair_average_is_drawn_and_wholly_known():
    """A FLAIR average (GG-853) is anatomy without unknown voxels: its bright structures are background."""
    n = 48
    grid = np.indices((n, n, n)) - n / 2
    brain = (grid**2).sum(0) < 18**2
    image = np.where(brain, 0.8, 0.0).astype(np.float32)
    average = Anatomy("avg", image, brain, None, np.eye(4), wm_level=0.8, average=True)
    lesion = np.zeros_like(brain)
    lesion[20:26, 20:26, 20:26] = True
    vol = synth_volume([average], [lesion], np.random.default_rng(3))
    assert average.kind == "average" and vol.params["anatomy"] == "avg"
    assert vol.unknown is None and vol.brain.any()
