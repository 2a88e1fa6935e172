"""Turning a training run's best checkpoint into a model bundle: the one export path.

Both the packaged default model (``scripts/build_default_model.py export``) and models trained at
the group level (``bids_msseg ... group --train``) are exported here, so every bundle's card says
the same things the same way: the architecture and normalization the run used, the quantile
reference it was normalized with, the decision threshold chosen on validation, the recipe and
what the caller says about the training data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bids_msseg.model.bundle import ModelCard, save_bundle

LOGGER = logging.getLogger(__name__)

#: Recipe entries of the training configuration copied into the card.
RECIPE_KEYS = ("lr", "lr_schedule", "weight_decay", "betas", "lesion_weight", "seed", "crop")


def load_run_network(run_dir: Path, which: str = "best") -> tuple[Any, dict]:
    """(network in eval mode, checkpoint state) of a training run's ``best`` or ``last`` checkpoint."""
    from safetensors.torch import load_file  # lazy: safetensors.torch imports torch

    # lazy: torch and smp, only when a checkpoint is exported
    from bids_msseg.model.network import build_network, default_architecture

    run_dir = Path(run_dir)
    meta = run_dir / f"{which}.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{run_dir}: no {which} checkpoint ({meta.name}); has an epoch finished?")
    state = json.loads(meta.read_text())
    net = build_network(default_architecture(state["config"]["architecture"], state["config"].get("context", 0)))
    tensors = load_file(str(run_dir / f"{which}.safetensors"))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return net.eval(), state


def export_bundle(
    run_dir: Path,
    bundle_dir: Path,
    reference: np.ndarray | list[float] | None,
    name: str,
    training_info: Mapping[str, Any],
    *,
    metric_name: str = "val_dice",
    calibrated: tuple[float, float] | None = None,
    checkpoint: str = "best",
    seed_threshold: float = 0.0,
    threshold: float | None = None,
    seed_threshold_thick: float | None = None,
) -> Path:
    """Write the best checkpoint of ``run_dir`` as a bundle in ``bundle_dir``; return the directory.

    ``reference`` is the quantile reference the shards were normalized with (ignored, and may be
    None, for a linearly normalized run); ``name`` becomes the card's model id (``name@sha``);
    ``training_info`` is merged over the generic provenance (epochs, best epoch, steps, batch size,
    recipe, machine), so callers describe their data and may override any generic entry. The best
    validation Dice is stored under ``metrics[metric_name]`` and its threshold as the card's, unless
    ``calibrated`` gives (threshold, its validation Dice) chosen by the caller on a finer grid.
    ``checkpoint`` names another checkpoint of the run (``last``, or ``epoch_NNN`` of a run with
    ``keep_epochs``) when the epoch was chosen outside training; ``seed_threshold`` is the card's
    hysteresis threshold (see :func:`bids_msseg.lesions.binarize`; 0: off), ``seed_threshold_thick`` that of
    thick-slice scans (None: the same). ``threshold``, when
    given, is the card's threshold, chosen outside training (e.g. on a cross-site study's
    operating-point grid); the metric stays the validation's.
    """
    import torch  # lazy: torch stays out of the command line's start-up

    from bids_msseg.model.network import default_architecture  # lazy: torch and smp, only when a checkpoint is exported

    run_dir = Path(run_dir)
    net, state = load_run_network(run_dir, checkpoint)
    # The best checkpoint's state stops at the best epoch; the last one knows how long the run went.
    last = run_dir / "last.json"
    last_state = json.loads(last.read_text()) if last.is_file() else state
    cfg = state["config"]
    arch = default_architecture(cfg["architecture"], cfg.get("context", 0))
    quantile = cfg["normalization"] == "quantile"
    if quantile and reference is None:
        raise ValueError("a quantile-normalized model needs its reference quantiles")
    info: dict[str, Any] = {
        "n_scans_seen": last_state["history"][-1]["n_train_scans"] if last_state["history"] else 0,
        "epochs_run": last_state["epoch"],
        "best_epoch": state["best_epoch"] if checkpoint == "best" else state["epoch"],
        "steps_per_epoch": cfg["steps_per_epoch"],
        "batch_size": cfg["batch_size"],
        "recipe": {k: cfg[k] for k in RECIPE_KEYS if k in cfg},
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
    }
    info.update(training_info)
    card = ModelCard(
        architecture=arch,
        input_size=int(cfg.get("input_size", 224)),
        normalization=cfg["normalization"],
        reference_quantiles=[round(float(x), 6) for x in np.asarray(reference)] if quantile else [],
        threshold=float(threshold if threshold is not None
                        else calibrated[0] if calibrated else state.get("best_threshold", 0.5)),
        seed_threshold=float(seed_threshold),
        seed_threshold_thick=None if seed_threshold_thick is None else float(seed_threshold_thick),
        model_id=name,
        training=info,
        metrics={metric_name: round(float(calibrated[1] if calibrated else state["best_dice"]), 4)},
    )
    save_bundle(bundle_dir, net, card)
    LOGGER.info("bundle written to %s (%s, %s %.4f at threshold %.2f)", bundle_dir, card.model_id,
                metric_name, card.metrics[metric_name], card.threshold)
    return Path(bundle_dir)
