"""Stochastic weight averaging: the running mean of a network's weights over training steps.

Izmailov et al. (2018), "Averaging Weights Leads to Wider Optima and Better Generalization": the
mean of the weights visited late in training, at a constant learning rate, lies in a flatter region
of the loss than any single iterate, and generalizes better. For this project it also removes the
choice of "the best epoch" by a noisy validation Dice on a handful of scans (``--average-from``). On the
leave-site-out protocol it did not beat version 3's best-epoch recipe (``docs/protocol_v8/``).

The mean is kept in float32 and updated in place, so it depends on the sequence of iterates alone
and resumes exactly from a checkpoint. Batch-norm running statistics are carried along (integer
buffers keep the newest value) but do not fit the averaged weights, whose activations have other
means and variances: as the paper does, :func:`recompute_batch_norm` measures them again on training
batches. Without that, on the first leave-site-out fold the average of one epoch scored a validation
Dice of 0.53 against 0.60 for the epoch's last weights, its probabilities shifted down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from bids_msseg.model.predict import autocast_context


class WeightAverage:
    """Running mean of a network's state dict; ``count`` is how many iterates it holds."""

    def __init__(self, state: Mapping[str, torch.Tensor] | None = None, count: int = 0) -> None:
        self.mean = {k: v.detach().float().clone() if v.is_floating_point() else v.detach().clone()
                     for k, v in (state or {}).items()}
        self.count = count

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """Add ``net``'s current weights: mean <- mean + (w - mean) / (count + 1)."""
        self.count += 1
        for key, value in net.state_dict().items():
            value = value.detach()
            if key not in self.mean or not value.is_floating_point():
                self.mean[key] = value.float().clone() if value.is_floating_point() else value.clone()
            else:
                self.mean[key].add_(value.float() - self.mean[key], alpha=1.0 / self.count)

    def load_into(self, net: torch.nn.Module) -> torch.nn.Module:
        """Copy the mean into ``net`` (cast to its dtypes) and return it."""
        target = net.state_dict()
        net.load_state_dict({k: v.to(target[k].dtype) for k, v in self.mean.items()})
        return net


@torch.no_grad()
def recompute_batch_norm(net: torch.nn.Module, batches: Iterable[torch.Tensor], device: torch.device,
                         precision: str = "fp32") -> torch.nn.Module:
    """Replace every batch-norm layer's running statistics by their plain mean over ``batches``
    (forward passes in training mode, no gradients), as ``torch.optim.swa_utils.update_bn`` does but
    under the training's autocast; returns ``net`` in eval mode."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative mean over the batches, not an exponential one
    net.train()
    with autocast_context(device, precision):
        for img in batches:
            net(img.to(device).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return net.eval()
