"""Normalize a preprocessed FLAIR and segment it: the numerical core of the participant level.

Input is the bias-corrected FLAIR and its brain mask in the processing orientation (RAS+); output
is the lesion probability on the same grid. No nipype here, so it is testable on its own.
"""

from __future__ import annotations

import numpy as np
import torch

from bids_msseg.model.bundle import ModelBundle
from bids_msseg.model.network import context_of
from bids_msseg.model.predict import predict_volume
from bids_msseg.normalize import normalize
from bids_msseg.slicing import plan_geometry


def segment_volume(
    data: np.ndarray,
    brain_mask: np.ndarray,
    zooms: tuple[float, float, float],
    bundle: ModelBundle,
    device: torch.device,
    precision: str = "auto",
    normalization: str | None = None,
    batch_size: int = 4,
) -> np.ndarray:
    """Lesion probability (float32, same grid) of a RAS+ FLAIR inside ``brain_mask``.

    ``normalization`` overrides the bundle's method (``quantile`` or ``linear``); a model is only
    meaningful with the normalization it was trained with, so overriding is for ablations.
    """
    method = normalization or bundle.card.normalization
    normalized = normalize(data, brain_mask, method, bundle.reference)
    geom = plan_geometry(brain_mask, zooms, bundle.card.input_size)
    prob = predict_volume(bundle.network, normalized, geom, device, precision, batch_size,
                          context_of(bundle.card.architecture))
    prob[~np.asarray(brain_mask, bool)] = 0.0
    return prob
