"""Stochastic weight averaging: the running mean of a network's weights over training steps.

Izmailov et al. (2018), "Averaging Weights Leads to Wider Optima and Better Generalization": the
mean of the weights visited late in training, at a constant learning rate, lies in a flatter region
of the loss than any single iterate, and generalizes better. For this project it also removes the
choice of "the best epoch" by a noisy validation Dice on a handful of scans (``--average-from``).

Batch-norm running statistics are averaged like the weights (as ``AveragedModel(use_buffers=True)``
does), not recomputed on a pass over the training data: a fine-tune from a pretrained model stays
close to it, and the average of statistics that each iterate tracked is what those iterates saw.
Integer buffers (``num_batches_tracked``) keep the newest value. The mean is kept in float32 and
updated in place, so it depends on the sequence of iterates alone and resumes exactly from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


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
