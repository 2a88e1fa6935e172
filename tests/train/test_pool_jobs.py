"""scripts/build_default_model.py pool --jobs: parallel processes build the same pool as one."""

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))  # spawned workers import it by name, with this path
    return importlib.import_module("build_default_model")


@pytest.mark.slow
def test_pool_is_the_same_with_any_number_of_jobs(shared_data, tmp_path):
    script = _script()
    masks = shared_data / "3d-mr-ms" / "lesion-masks-mni"
    pools = {}
    for jobs in (1, 2):
        args = argparse.Namespace(jobs=jobs, flair_average=None, flair_average_brain=None, negatives=False,
                                  small_lesions=False, exclude=[],
                                  reference_from=ROOT / "bids_msseg" / "data" / "default_model")
        pools[jobs] = tmp_path / f"jobs{jobs}"
        script.build_pool(pools[jobs], 3, 5, masks, None, args)
    for i in range(3):
        with np.load(pools[1] / f"vol_{i:05d}.npz") as a, np.load(pools[2] / f"vol_{i:05d}.npz") as b:
            for key in ("quantile", "linear", "label", "meta"):
                assert np.array_equal(a[key], b[key]), (i, key)
