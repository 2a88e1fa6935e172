"""The training loop: the paper's recipe, resumable, reproducible from a seed.

Recipe (Badea & Popa 2024), every item overridable through :class:`TrainConfig`: UNet++ with a
resnet18 encoder, weighted binary cross-entropy with weight 0.8, Adam (lr 1e-3, weight decay 1e-6,
betas 0.9/0.999), 50 epochs, 80/20 split by scan, the checkpoint with the best validation Dice kept.

The loss is :mod:`.losses`' weighted BCE: lesion voxels weigh 0.8, background 0.2.

Checkpoints (``last`` after every epoch, ``best`` on a new best validation Dice) are safetensors
plus JSON, never pickles: model weights, Adam moments and the sampler's random state, so an
interrupted run resumes where it stopped and gives the same model as an uninterrupted one.

Several GPUs (or CPU processes): launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
:func:`train` joins the process group (nccl on CUDA, gloo on CPU), wraps the network in
``DistributedDataParallel`` (gradients averaged, so every rank holds the same weights), gives each
rank its own slice sampler seeded from ``seed`` and the rank (rank 0 keeps ``seed``, so one process
trains exactly as before), and lets rank 0 alone validate, write checkpoints and metrics and log.
``batch_size`` is per rank. Example: ``torchrun --nproc-per-node 4 --nnodes 1 my_training.py``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bids_msseg.io import atomic_path, write_text_atomic
from bids_msseg.model.network import build_network, default_architecture, inflate_input
from bids_msseg.model.predict import autocast_context
from bids_msseg.train.averaging import WeightAverage, recompute_batch_norm
from bids_msseg.train.data import UNKNOWN, SliceSampler, iter_validation, list_shards, load_shard, split_by_scan
from bids_msseg.train.losses import lesion_balance_factors, weighted_bce

LOGGER = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters; defaults are the paper's."""

    architecture: str = "UnetPlusPlus"
    normalization: str = "quantile"
    epochs: int = 50
    steps_per_epoch: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    #: "constant" (the paper's) or "cosine": annealed to 0 over ``epochs``, which a short,
    #: budget-limited schedule needs to settle instead of ending on a noisy step.
    lr_schedule: str = "constant"
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    lesion_weight: float = 0.8
    lesion_fraction: float = 0.7
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_val_scans: int = 12
    crop: int | None = None  # train on random crops of this size (None: whole slices, the paper's)
    #: Slice size of the shards (recorded, not enforced: the shards decide). 224 is the network's input
    #: for every real model; tests make smaller shards to stay fast on a CPU.
    input_size: int = 224
    #: Also keep every epoch's checkpoint (``epoch_NNN``), so that the epoch can be chosen afterwards
    #: on real validation scans (the default model's protocol) rather than on the synthetic ones.
    keep_epochs: bool = False
    #: Share of each batch drawn from real expert-labelled shards (``train(real_shards=...)``), so that
    #: their real negatives weigh the same whatever the size of the synthetic pool.
    real_fraction: float = 0.0
    #: How a lesion slice is drawn: "slice" (any slice holding lesion, the paper's) or "lesion" (each
    #: lesion of a scan alike, then one of its slices, so small lesions count; :class:`SliceSampler`).
    lesion_sampling: str = "slice"
    #: Share of each batch drawn from slices with expert-marked normal hyperintensities (hard negatives).
    normal_fraction: float = 0.0
    #: Loss weight of a normal-hyperintensity voxel relative to other background (:func:`.losses.weighted_bce`).
    normal_weight: float = 1.0
    #: Neighbouring slices on each side given as more input channels (2.5D); 0 is the paper's 2D.
    context: int = 0
    #: Probability that a training slice's intensities are perturbed (bias field, gamma, noise;
    #: :func:`~bids_msseg.train.augment.perturb_intensity`); 0 is the paper's recipe.
    augment_intensity: float = 0.0
    #: 0: export the checkpoint with the best validation Dice (the paper's). N: export the running mean of
    #: the weights after every step from epoch N on (stochastic weight averaging, :mod:`.averaging`),
    #: which needs no choice of epoch by validation.
    average_from: int = 0
    #: Exponent g weighing each in-plane lesion component by its size ** -g in the loss, so small lesions
    #: count (:func:`~bids_msseg.train.losses.lesion_balance_factors`); 0 is the paper's loss.
    lesion_balance: float = 0.0
    extra: dict = field(default_factory=dict)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate at global ``step`` (0-based); a pure function of the step, so resuming needs no state."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        total = max(1, cfg.epochs * cfg.steps_per_epoch)
        return 0.5 * cfg.lr * (1.0 + float(np.cos(np.pi * min(step, total) / total)))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r} (constant or cosine)")


def rank_seed(seed: int, rank: int) -> int:
    """The slice sampler's seed on ``rank``: ``seed`` on rank 0, distinct values on the others."""
    return seed if rank == 0 else seed + 100_003 * rank


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins torchrun's process group when ``WORLD_SIZE`` > 1.

    The group is set up from torchrun's environment (``MASTER_ADDR``, ``RANK``...): nccl on CUDA,
    where each rank takes the GPU ``LOCAL_RANK``, gloo on CPU. Without torchrun: (0, 1, device).
    """
    import torch.distributed as dist  # lazy: torch stays out of the command line's start-up

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def dice_from_counts(inter: float, pred: float, truth: float) -> float:
    """Dice from overlap and sizes; 1 when both are empty."""
    return 1.0 if pred + truth == 0 else 2.0 * inter / (pred + truth)


def _save_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer | None, state: dict,
                     average: WeightAverage | None = None, half: bool | None = None) -> None:
    """Model and Adam moments as safetensors, the rest as JSON (no pickles). Without ``opt``: a
    portable checkpoint, the model's weights alone in bfloat16 (half the size, small enough to commit);
    ``half`` overrides that choice. ``average`` (a running weight average) is stored beside the weights,
    in the same file, so a resumed run continues the very mean it had."""
    from safetensors.torch import save_file  # lazy: safetensors.torch imports torch

    half = opt is None if half is None else half

    def stored(v: torch.Tensor) -> torch.Tensor:
        return (v.to(torch.bfloat16) if half and v.is_floating_point() else v).detach().cpu().contiguous()

    tensors = {f"model.{k}": stored(v) for k, v in net.state_dict().items()}
    tensors.update({f"average.{k}": stored(v) for k, v in (average.mean if average is not None else {}).items()})
    names = {p: n for n, p in net.named_parameters()}
    for group in opt.param_groups if opt is not None else []:
        for p in group["params"]:
            s = opt.state.get(p)
            if s:
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    tensors[f"adam.{names[p]}.{key}"] = torch.as_tensor(s[key]).detach().cpu().contiguous()
    with atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp))
    write_text_atomic(path.with_suffix(".json"), json.dumps(state, indent=1))


def _load_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, WeightAverage]:
    """Restore ``net`` and ``opt`` from ``path``; return its state and its weight average (empty if none)."""
    from safetensors.torch import load_file  # lazy: safetensors.torch imports torch

    tensors = load_file(str(path.with_suffix(".safetensors")))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, p in net.named_parameters():
        if f"adam.{name}.exp_avg" in tensors:
            opt.state[p] = {key: tensors[f"adam.{name}.{key}"].to(p.device) for key in ("exp_avg", "exp_avg_sq")}
            opt.state[p]["step"] = tensors[f"adam.{name}.step"]
    state = json.loads(path.with_suffix(".json").read_text())
    average = {k[8:]: v for k, v in tensors.items() if k.startswith("average.")}
    return state, WeightAverage(average, state.get("n_averaged", 0) if average else 0)


@torch.inference_mode()
def validate(net: torch.nn.Module, val_paths: list[Path], cfg: TrainConfig, device: torch.device,
             thresholds: tuple[float, ...] = (0.5,)) -> dict[str, float]:
    """Mean per-scan Dice on the validation scans at each threshold (scan-level, not slice-level).

    Scans without lesion voxels are left out of the mean when any scan has lesions: their Dice is
    all or nothing (1 with an empty prediction, 0 with one false voxel), so a few of them would
    pick the best epoch and threshold by whether the network predicts nothing at all (see
    docs/model_card.md). About 8% of the synthetic scans have no lesions on purpose."""
    net.eval()
    shards = [load_shard(p, cfg.normalization) for p in val_paths[: cfg.max_val_scans]]
    counts = np.zeros((len(shards), len(thresholds), 3))
    with autocast_context(device, cfg.precision):
        for i, img, lab in iter_validation(shards, context=cfg.context):
            prob = torch.sigmoid(net(img.to(device).contiguous(memory_format=torch.channels_last)).float()).cpu()
            truth, known = lab == 1, lab != UNKNOWN
            for j, t in enumerate(thresholds):
                pred = (prob >= t) & known
                counts[i, j] += [(pred & truth).sum().item(), pred.sum().item(), truth.sum().item()]
    net.train()
    dice = np.array([[dice_from_counts(*c) for c in row] for row in counts])
    has_lesions = counts[:, 0, 2] > 0
    if has_lesions.any():
        dice = dice[has_lesions]
    return {f"val_dice@{t:g}": float(dice[:, j].mean()) for j, t in enumerate(thresholds)}


def train(
    run_dir: Path,
    train_shards: list[Path] | None,
    val_shards: list[Path],
    cfg: TrainConfig,
    shard_source: Path | None = None,
    val_thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    init_weights: Mapping[str, torch.Tensor] | None = None,
    real_shards: list[Path] | None = None,
    portable_dir: Path | None = None,
) -> dict:
    """Train into ``run_dir`` (resuming from ``run_dir/last`` if present); returns the final state.

    ``shard_source``, when given, is re-listed every epoch so that training on a synthetic pool
    can start while the pool is still being generated; validation shards are fixed up front.
    ``init_weights`` (a network state dict, e.g. a bundle's, to fine-tune from) are loaded when the
    run starts fresh; a resumed run takes its weights from the checkpoint instead. ``real_shards``
    (real expert-labelled scans) fill ``cfg.real_fraction`` of every batch, from their own sampler.
    ``portable_dir`` also gets the ``last`` and ``best`` weights after every epoch as portable
    checkpoints (:func:`save_portable`), which :func:`restore_portable` turns back into a run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    rank, world, device = init_distributed(device)
    net = build_network(default_architecture(cfg.architecture, cfg.context)).to(device)
    net = net.to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)

    def current_train() -> list[Path]:
        if shard_source is None:
            return list(train_shards or [])
        val_set = set(val_shards)
        return [p for p in split_by_scan(list_shards(shard_source), cfg.val_fraction, cfg.seed)[0]
                if p not in val_set]

    state = {"epoch": 0, "best_dice": -1.0, "best_epoch": -1, "config": asdict(cfg), "history": [],
             "sampler": None}
    average = WeightAverage()
    if (run_dir / "last.json").exists():
        state, average = _load_checkpoint(run_dir / "last", net, opt)
    elif init_weights is not None:
        weights = inflate_input(dict(init_weights), 1 + 2 * cfg.context)  # a 2D model starts a 2.5D one
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
        LOGGER.info("starting from the given initial weights (fine-tuning)")
    if state["epoch"] > 0:
        LOGGER.info("resuming from epoch %d (best val Dice %.4f at epoch %d)",
                    state["epoch"], state["best_dice"], state["best_epoch"])
    sampler = SliceSampler(current_train(), cfg.normalization, cfg.lesion_fraction, rank_seed(cfg.seed, rank),
                           cfg.lesion_sampling, cfg.normal_fraction, cfg.context, cfg.augment_intensity)
    saved = state.get("sampler_by_rank") or [state["sampler"]]
    if len(saved) != world:  # resumed on another number of ranks: rank 0 goes on, the others start afresh
        saved = [state["sampler"]] + [None] * (world - 1)
    if saved[rank] is not None:
        sampler.rng.bit_generator.state = saved[rank]
    n_real = round(cfg.batch_size * cfg.real_fraction) if real_shards else 0
    real_sampler = None
    if n_real:
        real_sampler = SliceSampler(real_shards, cfg.normalization, cfg.lesion_fraction,
                                    rank_seed(cfg.seed, rank) + 7919,  # a stream of its own, any offset
                                    cfg.lesion_sampling, cfg.normal_fraction, cfg.context, cfg.augment_intensity)
        if state.get("sampler_real") is not None and world == 1:  # under DDP the real draws restart
            real_sampler.rng.bit_generator.state = state["sampler_real"]

    def norm_batches() -> Iterator[torch.Tensor]:
        """:data:`BATCH_NORM_BATCHES` training batches composed as the training's, drawn afresh from a seed of
        their own each time: the averaged weights' statistics depend on them alone, and the training's own
        random streams are untouched (a resumed run gives the same average). The draws come from shallow
        copies of the training's samplers, which share their loaded shards (no shard is read again)."""
        main, real = copy.copy(sampler), copy.copy(real_sampler)
        main.rng = np.random.default_rng(cfg.seed + 104_729)
        if real is not None:
            real.rng = np.random.default_rng(cfg.seed + 104_729 + 7919)
        for _ in range(BATCH_NORM_BATCHES):
            img = main.batch(cfg.batch_size - n_real, cfg.crop)[0]
            yield torch.cat([img, real.batch(n_real, cfg.crop)[0]]) if real is not None else img

    model: torch.nn.Module = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel  # lazy: torch stays out of the command line's start-up

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        LOGGER.info("distributed training: rank %d of %d on %s", rank, world, device)
    metrics_path = run_dir / "metrics.tsv"
    columns = ["epoch", "train_loss", "n_train_scans", "seconds"] + [f"val_dice@{t:g}" for t in val_thresholds]
    if rank == 0 and (not metrics_path.exists() or state["epoch"] == 0):
        write_text_atomic(metrics_path, "\t".join(columns) + "\n")

    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        sampler.refresh(current_train())
        start, losses = time.time(), []
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=None if rank == 0 else True)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, (epoch - 1) * cfg.steps_per_epoch + step)
            img, lab = sampler.batch(cfg.batch_size - n_real, cfg.crop)
            if real_sampler is not None:
                real_img, real_lab = real_sampler.batch(n_real, cfg.crop)
                img, lab = torch.cat([img, real_img]), torch.cat([lab, real_lab])
            img = img.to(device).contiguous(memory_format=torch.channels_last)
            with autocast_context(device, cfg.precision):
                logits = model(img)
            loss = weighted_bce(logits.float(), lab.to(device), cfg.lesion_weight, cfg.normal_weight,
                                lesion_balance_factors(lab, cfg.lesion_balance))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.average_from and epoch >= cfg.average_from:
                average.update(net)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if rank == 0 and len(losses) % 25 == 0:
                LOGGER.info("epoch %d step %d/%d: loss %.4f (%.1f s/step)", epoch, len(losses),
                            cfg.steps_per_epoch, np.mean(losses[-25:]), (time.time() - start) / len(losses))
        epoch_loss = float(np.mean(losses))
        if world > 1:
            state = _sync_ranks(state, sampler, epoch_loss, world)
            epoch_loss = state.pop("_mean_loss")
            if rank != 0:  # rank 0 validates, checkpoints and logs; the others wait for the next epoch
                continue
        scores = validate(net, val_shards, cfg, device, val_thresholds)
        n_scans = len(sampler.items) + (len(real_sampler.items) if real_sampler is not None else 0)
        row = {"epoch": epoch, "train_loss": epoch_loss, "n_train_scans": n_scans,
               "seconds": round(time.time() - start, 1), **scores}
        state["history"].append(row)
        best_now = max(scores.values())
        LOGGER.info("epoch %d: loss %.4f, val Dice %s (%d train scans, %.0f s)", epoch, row["train_loss"],
                    {k: round(v, 3) for k, v in scores.items()}, n_scans, row["seconds"])
        with open(metrics_path, "a") as fh:
            fh.write("\t".join(str(round(row[c], 5)) if isinstance(row[c], float) else str(row[c])
                               for c in columns) + "\n")
        state["epoch"] = epoch
        state["sampler"] = sampler.rng.bit_generator.state
        state["sampler_real"] = real_sampler.rng.bit_generator.state if real_sampler is not None else None
        if best_now > state["best_dice"]:
            best_key = max(scores, key=scores.get)
            state.update(best_dice=best_now, best_epoch=epoch,
                         best_threshold=float(best_key.split("@")[1]))
            _save_checkpoint(run_dir / "best", net, opt, state)
        averaged = _save_average(run_dir, average, state, cfg, device, val_shards, val_thresholds, norm_batches)
        _save_checkpoint(run_dir / "last", net, opt, state, average if average.count else None)
        if portable_dir is not None:
            save_portable(portable_dir, run_dir, net, state, best=state["best_epoch"] == epoch,
                          average=average if average.count else None, averaged=averaged)
        if cfg.keep_epochs:
            _save_checkpoint(run_dir / f"epoch_{epoch:03d}", net, opt, state)
    if world > 1:
        import torch.distributed as dist  # lazy: torch stays out of the command line's start-up

        for buffer in net.buffers():  # batch-norm statistics are per rank: every rank ends with rank 0's
            dist.broadcast(buffer, src=0)
        holder = [state]
        dist.broadcast_object_list(holder, src=0)  # every rank returns rank 0's state; rank 0 has finished writing
        state = holder[0]
    return state


#: Training batches whose activations give the averaged weights their batch-norm statistics (512 slices).
BATCH_NORM_BATCHES = 32


def _save_average(run_dir: Path, average: WeightAverage, state: dict, cfg: TrainConfig, device: torch.device,
                  val_shards: list[Path], thresholds: tuple[float, ...],
                  batches: Callable[[], Iterator[torch.Tensor]]) -> torch.nn.Module | None:
    """At an epoch's end with a weight average running: give the averaged weights batch-norm statistics of
    their own on ``batches()`` (:func:`~.averaging.recompute_batch_norm`), validate them, log their Dice, keep
    them as the run's ``average`` checkpoint (what the export takes) and return them as a network."""
    if not average.count:
        return None
    state["n_averaged"] = average.count
    averaged = average.load_into(build_network(default_architecture(cfg.architecture, cfg.context)).to(device))
    averaged = recompute_batch_norm(averaged.to(memory_format=torch.channels_last), batches(), device, cfg.precision)
    scores = validate(averaged, val_shards, cfg, device, thresholds)
    best_key = max(scores, key=scores.get)
    state.setdefault("average_history", []).append({"epoch": state["epoch"], **scores})
    LOGGER.info("epoch %d: weight average of %d steps, val Dice %s", state["epoch"], average.count,
                {k: round(v, 3) for k, v in scores.items()})
    average_state = {**state, "best_dice": scores[best_key], "best_threshold": float(best_key.split("@")[1])}
    _save_checkpoint(run_dir / "average", averaged, None, average_state, half=False)
    return averaged


PORTABLE_FILES = ("best.safetensors", "best.json", "last.safetensors", "last.json", "average.safetensors",
                  "average.json", "metrics.tsv")


def save_portable(portable_dir: Path, run_dir: Path, net: torch.nn.Module, state: dict, best: bool,
                  average: WeightAverage | None = None, averaged: torch.nn.Module | None = None) -> None:
    """Mirror a run's newest (and, when ``best``, best) checkpoint into ``portable_dir`` as weights
    only, in bfloat16, with the run's ``metrics.tsv``: fixed file names, replaced each epoch, small
    enough to commit, so that a training longer than a session goes on elsewhere. With a weight
    average running, ``last`` carries it (in bfloat16 too: a portable resume continues a rounded mean) and
    ``averaged`` (its network) is kept as ``average``."""
    portable_dir = Path(portable_dir)
    portable_dir.mkdir(parents=True, exist_ok=True)
    if best or not (portable_dir / "best.json").is_file():
        _save_checkpoint(portable_dir / "best", net, None, state)
    _save_checkpoint(portable_dir / "last", net, None, state, average)
    if averaged is not None:
        _save_checkpoint(portable_dir / "average", averaged, None, json.loads((run_dir / "average.json").read_text()))
    write_text_atomic(portable_dir / "metrics.tsv", (run_dir / "metrics.tsv").read_text())


def restore_portable(portable_dir: Path, run_dir: Path) -> bool:
    """Start ``run_dir`` from the portable checkpoint in ``portable_dir`` when ``run_dir`` has none of
    its own; True when it did. The run resumes after the portable checkpoint's epoch with its
    weights, best epoch, history and sampler state; Adam's moments start afresh (they are not kept),
    so the result is not bit-identical to an uninterrupted run."""
    portable_dir, run_dir = Path(portable_dir), Path(run_dir)
    if (run_dir / "last.json").is_file() or not (portable_dir / "last.json").is_file():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in PORTABLE_FILES:
        if (portable_dir / name).is_file():
            with atomic_path(run_dir / name) as tmp:
                tmp.write_bytes((portable_dir / name).read_bytes())
    state = json.loads((run_dir / "last.json").read_text())
    LOGGER.info("resuming from the portable checkpoint in %s (epoch %d, best validation Dice %.4f at epoch %d); "
                "Adam's moments start afresh", portable_dir, state["epoch"], state["best_dice"], state["best_epoch"])
    return True


def _sync_ranks(state: dict, sampler: SliceSampler, loss: float, world: int) -> dict:
    """End of an epoch under DDP: the loss averaged over ranks and every rank's sampler state in ``state``.

    Rank 0's sampler state stays in ``state["sampler"]``; ``state["sampler_by_rank"]`` lets each
    rank resume its own stream (when resumed with the same number of ranks).
    """
    import torch.distributed as dist  # lazy: torch stays out of the command line's start-up

    samplers: list = [None] * world
    dist.all_gather_object(samplers, sampler.rng.bit_generator.state)
    losses: list = [None] * world
    dist.all_gather_object(losses, loss)
    return {**state, "sampler_by_rank": samplers, "_mean_loss": float(np.mean(losses))}
