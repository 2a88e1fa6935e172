"""Runtime set-up of a computing process (bids_msseg/runtime.py)."""

from __future__ import annotations

import subprocess
import sys


def test_seeding_a_step_without_torch_does_not_import_it() -> None:
    """Issue 27: the preprocessing seeded torch, importing it (and its compiler, 2-2.5 s) for nothing."""
    code = ("import sys, numpy as np\n"
            "from bids_msseg.runtime import seed_everything\n"
            "seed_everything(0, with_torch=False)\n"
            "assert 'torch' not in sys.modules\n"
            "first = np.random.rand()\n"
            "seed_everything(0)\n"
            "import torch\n"
            "assert torch.are_deterministic_algorithms_enabled() and np.random.rand() == first\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seeding_without_torch_still_seeds_a_loaded_torch() -> None:
    import torch

    from bids_msseg.runtime import seed_everything

    seed_everything(5, with_torch=False)
    first = torch.rand(3)
    seed_everything(5, with_torch=False)
    assert torch.equal(first, torch.rand(3))
