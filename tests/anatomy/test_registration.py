"""The run-to-template registration (bids_msseg/anatomy/registration.py): points carried to template mm."""

from __future__ import annotations

import numpy as np
import pytest

from bids_msseg.anatomy.registration import RunAnatomy, points_to_template, register_run, within_distance
from bids_msseg.anatomy.template import mni152_template


def test_points_go_to_the_template_place_of_a_shifted_run() -> None:
    """A run that is the template moved by +12/-8/+5 mm (in its header): a run point p lies at p - shift
    in the template. The wrong direction (the inverse transforms) would give p + shift."""
    template = mni152_template()
    shift = np.array([12.0, -8.0, 5.0])
    affine = template.affine.copy()
    affine[:3, 3] += shift
    anatomy = register_run(template.image * template.brain, template.brain, affine, template, seed=0)
    assert anatomy.ok, anatomy.status
    points = np.array([[0.0, 0.0, 0.0], [30.0, -40.0, 20.0], [-25.0, 10.0, -15.0]]) + shift
    mapped = points_to_template(anatomy, points)
    assert mapped.shape == (3, 3)
    np.testing.assert_allclose(mapped, points - shift, atol=2.0)


def test_no_points_and_no_registration() -> None:
    with pytest.raises(ValueError, match="no registration"):
        points_to_template(RunAnatomy(status="failed: x"), np.zeros((1, 3)))


@pytest.mark.parametrize("zooms", [(1.0, 1.0, 1.0), (0.72, 0.72, 4.0)])
def test_within_distance_is_the_whole_volume_distance_transform(zooms: tuple[float, float, float]) -> None:
    """Issue 27: the ventricle search computed on the ventricles' box gives the whole-volume answer."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    mask = np.zeros((60, 70, 30), bool)
    mask[20:40, 15:50, 8:20] = rng.random((20, 35, 12)) > 0.7
    mask[0, 3, 0] = True  # at the volume's edge
    expected = ndimage.distance_transform_edt(~mask, sampling=zooms) <= 4.0
    assert np.array_equal(within_distance(mask, 4.0, zooms), expected)
    assert not within_distance(np.zeros((5, 5, 5), bool), 4.0, zooms).any()


def test_the_template_moving_image_is_made_once() -> None:
    from bids_msseg.anatomy.registration import template_moving_image

    template = mni152_template()
    first = template_moving_image(template, 2.0)
    assert template_moving_image(template, 2.0) is first
    assert tuple(first.spacing) == (2.0, 2.0, 2.0)
