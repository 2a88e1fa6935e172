#!/usr/bin/env python
"""Throughput of the segmentation step: slices/s and achieved TFLOP/s against the CPU's bf16 peak.

    python benchmarks/bench_segmentation.py [--slices 64] [--model BUNDLE]

UNet++/resnet18 costs 24.3 GFLOP per 224x224 slice (forward); the bf16 peak of the 2 reference
cores is about 0.9 TFLOP/s (../shared/docs/platform.md). Prints one line per precision.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from bids_msseg.model.bundle import load_bundle
from bids_msseg.model.network import build_network, default_architecture
from bids_msseg.model.predict import predict_slices, resolve_device

GFLOP_PER_SLICE = 24.3
PEAK_TFLOPS = 0.9

LOGGER = logging.getLogger("bench_segmentation")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--model", default=None, help="bundle directory (default: the packaged model)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    try:
        net = load_bundle(args.model).network
    except (OSError, ValueError):
        net = build_network(default_architecture()).eval()
    x = torch.rand(args.slices, 1, 224, 224)
    predict_slices(net, x[:4], device, "fp32")  # warm-up
    for precision in ("fp32", "bf16"):
        for batch in (4, 8):
            t0 = time.perf_counter()
            predict_slices(net, x, device, precision, batch_size=batch)
            dt = time.perf_counter() - t0
            rate = args.slices / dt
            tflops = rate * GFLOP_PER_SLICE / 1000
            LOGGER.info("%s batch %d: %.1f slices/s, %.3f TFLOP/s = %.0f%% of the %.1f TFLOP/s bf16 peak "
                        "(%d threads)", precision, batch, rate, tflops, 100 * tflops / PEAK_TFLOPS,
                        PEAK_TFLOPS, torch.get_num_threads())


if __name__ == "__main__":
    main()
