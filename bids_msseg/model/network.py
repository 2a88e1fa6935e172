"""Build the segmentation network from its description in a bundle.

Always ``encoder_weights=None``: smp's default fetches ImageNet weights from a hub at run time,
which fails offline and is not reproducible. Pretrained encoder weights, if wanted for training,
come from a local safetensors file (``encoder_weights_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bids_msseg._compat import import_smp
from bids_msseg.settings import ARCHITECTURES, DEFAULT_ARCHITECTURE

__all__ = ["ARCHITECTURES", "build_network", "context_of", "default_architecture", "inflate_input"]


def default_architecture(name: str = DEFAULT_ARCHITECTURE, context: int = 0) -> dict[str, Any]:
    """The paper's network: resnet18 encoder, one FLAIR channel in, one lesion logit out; with
    ``context`` > 0 (2.5D) the ``context`` neighbouring slices on each side come in as more channels."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {ARCHITECTURES}")
    return {"name": name, "encoder_name": "resnet18", "in_channels": 1 + 2 * context, "classes": 1}


def context_of(arch: dict[str, Any]) -> int:
    """Neighbouring slices on each side that a network described by ``arch`` takes (0: the paper's 2D)."""
    return (int(arch.get("in_channels", 1)) - 1) // 2


def inflate_input(state: dict[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """A one-channel network's weights for ``in_channels`` input channels: the first convolution's
    kernel goes to the centre channel, zeros to the neighbours, so the inflated network computes
    exactly what the original did and learns from there to use the neighbouring slices."""
    out = dict(state)
    for key, weight in state.items():
        if key.endswith("conv1.weight") and weight.ndim == 4 and weight.shape[1] == 1 and in_channels > 1:
            inflated = torch.zeros((weight.shape[0], in_channels, *weight.shape[2:]), dtype=weight.dtype)
            inflated[:, in_channels // 2] = weight[:, 0]
            out[key] = inflated
    return out


def build_network(arch: dict[str, Any], encoder_weights_file: Path | None = None) -> torch.nn.Module:
    """Instantiate the network described by ``arch`` (random init, or a local encoder file)."""
    smp = import_smp()
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    if arch["name"] not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch['name']!r}; choose one of {ARCHITECTURES}")
    net = getattr(smp, arch["name"])(encoder_weights=None, **kwargs)
    if encoder_weights_file is not None:
        from safetensors.torch import load_file  # lazy: safetensors.torch imports torch

        state = load_file(str(encoder_weights_file))
        missing, unexpected = net.encoder.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{encoder_weights_file}: keys not in the encoder: {unexpected[:5]}")
    return net
