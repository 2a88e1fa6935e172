"""Fixtures of the training tests: a tiny synthetic scan and shards cut from six of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bids_msseg.train.data import make_shard


def _scan(seed, shape=(40, 40, 12)):
    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, bool)
    brain[5:35, 5:35, 2:10] = True
    image = rng.normal(100, 5, shape).astype(np.float32) * brain
    lesion = np.zeros(shape, bool)
    c = rng.integers(10, 30, 2)
    lesion[c[0] : c[0] + 4, c[1] : c[1] + 4, 4:7] = True
    image[lesion] += 80
    return image, brain, lesion


@pytest.fixture(scope="session")
def training_scan() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``training_scan(seed, shape=(40, 40, 12)) -> (image, brain, lesion)``: a box brain with one bright lesion."""
    return _scan


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, training_scan) -> Path:
    """Six shards of 64-pixel slices (one per module that uses them)."""
    d = tmp_path_factory.mktemp("shards")
    ref = np.linspace(0, 1, 1001)
    for i in range(6):
        img, brain, lesion = training_scan(i)
        make_shard(d / f"vol_{i:05d}.npz", img, brain, lesion, (1.0, 1.0, 1.0), ref, size=64, meta={"i": i})
    return d
