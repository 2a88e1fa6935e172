"""Runtime set-up of a process that computes: thread limits, seeds, the device check.

Shared by the participant workers (the nipype interfaces), ``group --train`` and the cross-site
study, so the group level needs no nipype interface to set itself up. torch is imported inside
the functions only: importing this module stays cheap for the command line.
"""

from __future__ import annotations

import os
import random
import resource
import sys

import numpy as np

from bids_msseg.errors import UsageError

#: Environment variables that bound the threads of BLAS, OpenMP and ITK (ANTs).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def set_threads(n_threads: int, itk_threads: int = 1) -> None:
    """Bound the threads this process uses: torch's intra-op pool and, for later starts, ITK/BLAS.

    ITK (ANTs) reads its variable once, at its first use in the process, and only on one thread do
    N4 and registration repeat exactly: ``itk_threads`` is 1 unless a caller that does not need
    exact repeats asks for more. Every node of a worker calls this, so none may raise it for the
    ITK steps that come after it in the same worker. torch is limited now when already imported,
    otherwise by the variables when it is.
    """
    n_threads = max(1, int(n_threads))
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n_threads)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(itk_threads)))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)


def seed_everything(seed: int | None, *, with_torch: bool = True) -> None:
    """Seed Python, numpy, torch and ANTs (``ANTS_RANDOM_SEED``) and make torch deterministic.

    Only when a seed is given (``--random-seed``): with it, two runs on the same input and
    machine give bit-identical outputs (ITK on one thread is set by the caller, see set_threads).
    ``with_torch=False`` (a step that runs no torch, e.g. the preprocessing) seeds torch only when it
    is already imported: importing it costs 1-2 s of a step that does not use it.
    """
    if seed is None:
        return
    os.environ["ANTS_RANDOM_SEED"] = str(seed % (2**31 - 1) + 1)  # ANTs reads 0 as "seed from the clock"
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if not with_torch and "torch" not in sys.modules:
        return
    import torch  # lazy: torch stays out of the command line's start-up

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def check_device(device: str) -> None:
    """Refuse ``--device cuda`` without a CUDA device (usage error, 64) before any work starts."""
    if device == "cuda":
        import torch  # lazy: torch stays out of the command line's start-up (only --device cuda needs it)

        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but no CUDA device is available")


def reset_peak_memory() -> None:
    """Start measuring this process's peak resident memory afresh (Linux; elsewhere a no-op).

    A worker process runs many steps one after the other; resetting before each step makes
    :func:`peak_memory_gb` that step's peak rather than the process's.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_memory_gb() -> float | None:
    """Peak resident memory of this process since :func:`reset_peak_memory` (or its start), in GB."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    except (ImportError, OSError):
        return None
