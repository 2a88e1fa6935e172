"""The training loss (bids_msseg/train/losses.py): weighted BCE and the lesion balance."""

import numpy as np
import pytest
import torch

from bids_msseg.train.data import NORMAL
from bids_msseg.train.losses import lesion_balance_factors, weighted_bce


def test_weighted_bce_weights_the_lesion_class():
    logits = torch.zeros(1, 1, 2, 2)
    lesion = torch.ones(1, 1, 2, 2)
    assert weighted_bce(logits, lesion, 0.8).item() == pytest.approx(0.8 * np.log(2), rel=1e-5)
    assert weighted_bce(logits, 1 - lesion, 0.8).item() == pytest.approx(0.2 * np.log(2), rel=1e-5)


def test_normal_hyperintensities_are_background_weighted_up():
    """NORMAL voxels are taught as background (target 0), ``normal_weight`` times an ordinary one."""
    logits = torch.full((1, 1, 1, 2), 2.0)
    plain = weighted_bce(logits, torch.tensor([[[[0.0, 0.0]]]]), 0.8).item()
    assert weighted_bce(logits, torch.tensor([[[[float(NORMAL), 0.0]]]]), 0.8).item() == pytest.approx(plain)
    assert weighted_bce(logits, torch.tensor([[[[float(NORMAL), 0.0]]]]), 0.8, normal_weight=3.0).item() == \
        pytest.approx(plain * (3 + 1) / 2, rel=1e-5)


def _two_lesions() -> torch.Tensor:
    """One slice with an in-plane lesion of 1 voxel and one of 4 (diagonal neighbours join: 8-connected)."""
    labels = torch.zeros(1, 1, 6, 6)
    labels[0, 0, 0, 0] = 1
    labels[0, 0, 3, 3] = labels[0, 0, 4, 4] = labels[0, 0, 4, 5] = labels[0, 0, 5, 5] = 1
    return labels


def test_lesion_balance_weighs_every_lesion_alike_at_exponent_one():
    labels = _two_lesions()
    factors = lesion_balance_factors(labels, 1.0)
    assert factors.shape == labels.shape
    assert factors[labels == 0].eq(1).all()
    small, large = factors[0, 0, 0, 0].item(), factors[0, 0, 3, 3].item()
    assert small * 1 == pytest.approx(large * 4)  # each lesion's total weight
    assert factors[labels == 1].sum().item() == pytest.approx(5.0)  # lesion voxels keep their total weight


def test_lesion_balance_between_voxels_and_lesions():
    labels = _two_lesions()
    factors = lesion_balance_factors(labels, 0.5)
    assert factors[0, 0, 0, 0].item() / factors[0, 0, 3, 3].item() == pytest.approx(2.0)  # (4 / 1) ** 0.5
    assert factors[labels == 1].sum().item() == pytest.approx(5.0)


def test_lesion_balance_off_or_without_lesion_changes_nothing():
    assert lesion_balance_factors(_two_lesions(), 0.0) is None
    assert lesion_balance_factors(torch.zeros(2, 1, 4, 4), 1.0) is None
    labels = torch.zeros(1, 1, 4, 4)
    labels[0, 0, 1:3, 1:3] = 1  # one lesion: nothing to balance against
    factors = lesion_balance_factors(labels, 1.0)
    assert torch.equal(factors, torch.ones_like(labels))


def test_weighted_bce_applies_the_lesion_factors():
    labels = _two_lesions()
    logits = torch.linspace(-3, 3, 36).reshape(1, 1, 6, 6)
    factors = lesion_balance_factors(labels, 1.0)
    per_voxel = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    weights = torch.where(labels == 1, 0.8, 0.2) * factors
    assert weighted_bce(logits, labels, 0.8, lesion_factors=factors).item() == \
        pytest.approx((weights * per_voxel).mean().item(), rel=1e-5)
    assert weighted_bce(logits, labels, 0.8, lesion_factors=factors).item() != \
        pytest.approx(weighted_bce(logits, labels, 0.8).item(), rel=1e-3)


def test_lesion_balance_never_joins_slices_of_a_batch():
    """The same lesion on two slices of a batch is two components of 4 voxels, not one of 8."""
    labels = torch.cat([_two_lesions(), _two_lesions()])
    factors = lesion_balance_factors(labels, 1.0)
    assert factors[0, 0, 0, 0].item() == pytest.approx(4 * factors[1, 0, 3, 3].item())
    assert torch.equal(factors[0], factors[1])
