"""Helpers shared by the interfaces: intermediate files, the original image, threads, seeds."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

LOGGER = logging.getLogger(__name__)

#: Environment variables that bound the threads of BLAS, OpenMP and ITK (ANTs).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def set_threads(n_threads: int, itk_threads: int | None = None) -> None:
    """Bound the threads this process uses: torch's intra-op pool and, for later starts, ITK/BLAS.

    ``itk_threads`` (default ``n_threads``) applies to ITK (ANTs), which reads its variable once,
    when ``ants`` is first used in the process: one thread makes N4 and registration repeat exactly.
    """
    n_threads = max(1, int(n_threads))
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n_threads)
    if itk_threads is not None:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(itk_threads)))
    import torch

    if torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)


def seed_everything(seed: int | None) -> None:
    """Seed Python, numpy, torch and ANTs (``ANTS_RANDOM_SEED``) and make torch deterministic.

    Only when a seed is given (``--random-seed``): with it, two runs on the same input and
    machine give bit-identical outputs (ITK on one thread is set by the caller, see set_threads).
    """
    if seed is None:
        return
    os.environ["ANTS_RANDOM_SEED"] = str(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def load_original(path: str | Path) -> nib.Nifti1Image:
    """The source FLAIR as the derivatives must match it: its own grid, shape and affine.

    Loaded exactly as the preprocessing loaded it (:func:`bids_msseg.preproc.orient.load_flair`:
    checked, 3D, NIfTI-1, the input's affine and qform/sform codes), so arrays mapped back with
    ``from_ras`` and this image always agree.
    """
    from bids_msseg.preproc.orient import load_flair

    return load_flair(path)


def save_nifti(data: np.ndarray, affine: np.ndarray, target: Path, dtype: type = np.float32) -> Path:
    """Save an intermediate array as uncompressed NIfTI (fast to write and read back)."""
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, copy=False), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    nib.save(img, str(target))
    return Path(target)


def load_array(path: str | Path, dtype: type | None = None) -> np.ndarray:
    """Read a NIfTI's data (as ``dtype`` when given)."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    return data if dtype is None else data.astype(dtype, copy=False)


def write_json(target: Path, content: Mapping[str, Any]) -> Path:
    """Write a JSON intermediate (numpy values converted)."""

    def default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, set | frozenset | tuple):
            return list(value)
        return str(value)

    Path(target).write_text(json.dumps(dict(content), indent=1, default=default) + "\n")
    return Path(target)


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON intermediate."""
    return json.loads(Path(path).read_text())
