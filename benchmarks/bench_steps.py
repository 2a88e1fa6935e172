#!/usr/bin/env python
"""Seconds per step of one participant run, in process (no nipype), on 3D-MR-MS patient 26.

    python benchmarks/bench_steps.py [FLAIR]

Compare the sum with ``bench_participant.py`` (the whole command line) to see what the workflow
engine, BIDS indexing and output writing add.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

from bids_msseg.model.bundle import load_bundle
from bids_msseg.preproc import preprocess_flair
from bids_msseg.segment import segment_volume

LOGGER = logging.getLogger("bench_steps")
P26 = Path(__file__).resolve().parents[1].parent / "shared/data/3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flair = Path(sys.argv[1]) if len(sys.argv) > 1 else P26
    if not flair.exists():
        LOGGER.error("%s is absent", flair)
        return 2
    t = time.perf_counter()
    bundle = load_bundle()
    times = {"load bundle (sha256 + build)": time.perf_counter() - t}
    t = time.perf_counter()
    pre = preprocess_flair(flair)
    times["preprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    segment_volume(pre.corrected, pre.brain_mask, pre.zooms, bundle, torch.device("cpu"))
    times["normalize + segment"] = time.perf_counter() - t
    for name, sec in times.items():
        LOGGER.info("%-30s %6.2f s", name, sec)
    LOGGER.info("%-30s %6.2f s   (preprocessing detail: %s)", "total", sum(times.values()), pre.timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
