"""The training loss: the paper's weighted binary cross-entropy, optionally balanced across lesions.

Weighted BCE (Badea & Popa 2024): each lesion voxel's loss term counts ``w`` (0.8) and each
background voxel's ``1 - w``, ``-(w y log p + (1 - w)(1 - y) log(1 - p))`` averaged over voxels,
which offsets the rarity of lesion voxels.

Lesion balance (:func:`lesion_balance_factors`): in the plain loss a lesion weighs as many voxels
as it has, so a 5-voxel lesion is worth 1/200 of a 1000-voxel one while lesion-wise detection (F1)
counts both alike. With exponent ``g`` each in-plane lesion component of ``n`` voxels gets its voxels'
weights scaled by ``n ** -g`` (0: the paper's loss; 1: every component weighs the same in total, as
in blob loss, Kofler et al. 2023), rescaled so that a batch's lesion voxels keep their total weight
and the lesion/background balance of ``w`` holds.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from bids_msseg.train.data import NORMAL, UNKNOWN

#: In-plane components are 8-connected, the 2D analogue of the 26-connectivity that defines a lesion
#: (:func:`bids_msseg.lesions.label_lesions`); as a 3D structure whose neighbouring planes are empty, so
#: one labelling of a batch of slices never joins two slices.
IN_PLANE_CONNECTIVITY = np.stack([np.zeros((3, 3), bool), ndimage.generate_binary_structure(2, 2),
                                  np.zeros((3, 3), bool)])


def lesion_balance_factors(labels: torch.Tensor, exponent: float) -> torch.Tensor | None:
    """Per-voxel loss factors that weigh in-plane lesion components by ``size ** -exponent`` (module doc).

    ``labels``: shard labels ``(batch, 1, H, W)`` or ``(batch, H, W)``, lesion voxels equal to 1.
    Returns a float tensor of the same shape (1 outside lesions), or None when ``exponent`` is 0 or the
    batch has no lesion voxel.
    """
    if not exponent:
        return None
    lesion = (labels == 1).cpu().numpy()
    if not lesion.any():
        return None
    planes = lesion.reshape(-1, *lesion.shape[-2:])
    components, _ = ndimage.label(planes, IN_PLANE_CONNECTIVITY)  # one call; planes are never joined
    sizes = np.where(planes, np.bincount(components.ravel())[components], 0).astype(np.float32)
    factors = np.ones(planes.shape, np.float32)
    inside = sizes > 0
    raw = sizes[inside] ** -exponent
    factors[inside] = raw * (inside.sum() / raw.sum())  # the batch's lesion voxels keep their total weight
    return torch.from_numpy(factors.reshape(lesion.shape))


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, lesion_weight: float,
                 normal_weight: float = 1.0, lesion_factors: torch.Tensor | None = None) -> torch.Tensor:
    """``-(w y log p + (1 - w)(1 - y) log(1 - p))`` averaged over voxels (see module doc).

    ``labels`` are shard labels: voxels labelled :data:`~bids_msseg.train.data.UNKNOWN` get weight 0
    (they count in the average's denominator only, so a batch's loss scale does not depend on how
    much of it is unknown); background labelled :data:`~bids_msseg.train.data.NORMAL` (an expert's
    normal hyperintensity) weighs ``normal_weight`` times an ordinary background voxel.
    ``lesion_factors`` (:func:`lesion_balance_factors`) multiply the voxels' weights.
    """
    target = (labels == 1).to(logits.dtype)
    weights = target * lesion_weight + (1 - target) * (1 - lesion_weight)
    weights = weights * (labels != UNKNOWN) * torch.where(labels == NORMAL, normal_weight, 1.0)
    if lesion_factors is not None:
        weights = weights * lesion_factors.to(weights.device)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weights)
