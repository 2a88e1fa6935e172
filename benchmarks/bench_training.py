#!/usr/bin/env python
"""Training throughput: slices/s of the training step (forward, weighted BCE, backward, Adam), quiet and contended.

    python benchmarks/bench_training.py [--steps 12] [--batch-size 16] [--contend 2] [--precision auto]

Runs the loop's own step (:func:`bids_msseg.train.loop.weighted_bce`, the network of
:func:`~bids_msseg.model.network.build_network`, channels_last, the autocast of
:func:`~bids_msseg.model.predict.autocast_context`) on random 224x224 slices, first alone ("quiet"),
then with ``--contend`` busy processes beside it ("contended": what a test suite or a helper's job
does to a training run on the same cores). Prints the CPU model, torch threads, precision, the load
average before each measurement and slices/s; the recipe's 50 epochs x 100 steps x 16 slices is
converted to hours at each rate. Figures depend on the machine and its load: read them as such.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import time

import torch

from bids_msseg.model.network import build_network, default_architecture
from bids_msseg.model.predict import autocast_context, resolve_device
from bids_msseg.train.loop import weighted_bce

LOGGER = logging.getLogger("bench_training")
RECIPE_SLICES = 50 * 100 * 16


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _busy(stop: float) -> None:
    while time.time() < stop:
        pass


def measure(steps: int, batch: int, device: torch.device, precision: str) -> float:
    """Slices/s over ``steps`` training steps after two warm-up steps."""
    torch.manual_seed(0)
    net = build_network(default_architecture()).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, 224, 224, device=device) > 0.98).float()
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        with autocast_context(device, precision):
            logits = net(x)
        loss = weighted_bce(logits.float(), y, 0.8)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--contend", type=int, default=2, help="busy processes of the contended run (0: skip it)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    LOGGER.info("%s, %d CPUs, torch %s with %d threads, device %s, precision %s (auto: bf16 where the CPU has it)",
                cpu_model(), os.cpu_count(), torch.__version__, torch.get_num_threads(), device, args.precision)
    runs = [("quiet", 0)] + ([("contended", args.contend)] if args.contend else [])
    for label, n_busy in runs:
        context = mp.get_context("spawn")
        busy = [context.Process(target=_busy, args=(time.time() + 3600,), daemon=True) for _ in range(n_busy)]
        for proc in busy:
            proc.start()
        time.sleep(1.0 if busy else 0.0)
        load = os.getloadavg()[0]
        try:
            rate = measure(args.steps, args.batch_size, device, args.precision)
        finally:
            for proc in busy:
                proc.terminate()
        LOGGER.info("%s (%d busy processes, load average %.1f before): %.2f slices/s = %.2f s per step of %d; "
                    "the recipe's 50 x 100 x 16 slices in %.1f h", label, n_busy, load, rate,
                    args.batch_size / rate, args.batch_size, RECIPE_SLICES / rate / 3600)


if __name__ == "__main__":
    main()
