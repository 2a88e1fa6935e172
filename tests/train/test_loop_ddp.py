"""Distributed training (``torchrun``-style DDP) on 2 CPU processes with the gloo backend.

The processes get torchrun's environment (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``) and call :func:`bids_msseg.train.loop.train` as a script launched by torchrun would.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from bids_msseg.train.data import list_shards
from bids_msseg.train.loop import TrainConfig, rank_seed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, shard_dir: str, run_dir: str, out_dir: str) -> None:
    """One rank: train 2 short epochs, then save this rank's final weights and returned state."""
    from safetensors.torch import save_file

    from bids_msseg.train import loop

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    built = []
    original = loop.build_network

    def spy(arch):  # keep a handle on the network train() builds, to compare the ranks' weights
        built.append(original(arch))
        return built[-1]

    loop.build_network = spy
    paths = list_shards(Path(shard_dir))
    cfg = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, precision="fp32", seed=7, architecture="Unet",
                      device="cpu")
    state = loop.train(Path(run_dir), paths[:4], paths[4:], cfg, val_thresholds=(0.5,))
    save_file({k: v.contiguous() for k, v in built[0].state_dict().items()}, f"{out_dir}/rank{rank}.safetensors")
    Path(f"{out_dir}/rank{rank}.json").write_text(json.dumps(state))
    torch.distributed.destroy_process_group()


def test_rank_seeds_differ_and_rank0_keeps_the_seed() -> None:
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(8)}) == 8


def test_two_gloo_ranks_train_to_identical_weights(shards: Path, tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(shards), str(run_dir), str(out)), nprocs=WORLD, join=True)

    from safetensors.torch import load_file

    weights = [load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)]
    assert weights[0].keys() == weights[1].keys()
    different = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not different, f"ranks ended with different tensors: {different[:5]}"
    # Training changed the weights (the comparison above is not between two untouched copies)...
    from bids_msseg.model.network import build_network, default_architecture

    torch.manual_seed(7)
    initial = build_network(default_architecture("Unet")).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in weights[0].items() if v.is_floating_point())
    # ...and rank 0's checkpoint holds exactly these weights.
    checkpoint = load_file(str(run_dir / "last.safetensors"))
    assert all(torch.equal(checkpoint[f"model.{k}"], v) for k, v in weights[0].items())

    states = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert states[0] == states[1] and states[0]["epoch"] == 2
    samplers = states[0]["sampler_by_rank"]
    assert len(samplers) == WORLD and samplers[0] != samplers[1]  # each rank drew its own slices
    assert samplers[0] == states[0]["sampler"]
    # Only rank 0 wrote checkpoints and metrics: a header and one row per epoch.
    assert len((run_dir / "metrics.tsv").read_text().strip().splitlines()) == 3
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.json", "best.safetensors", "last.json",
                                                          "last.safetensors", "metrics.tsv"]
