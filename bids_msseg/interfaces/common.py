"""Helpers shared by the interfaces: intermediate files and the original image.

Threads and seeds are set up by :mod:`bids_msseg.runtime` (shared with the group level).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_msseg.preproc.orient import load_flair
from bids_msseg.runtime import peak_memory_gb, reset_peak_memory

LOGGER = logging.getLogger(__name__)

def load_original(path: str | Path) -> nib.Nifti1Image:
    """The source FLAIR as the derivatives must match it: its own grid, shape and affine.

    Loaded exactly as the preprocessing loaded it (:func:`bids_msseg.preproc.orient.load_flair`:
    checked, 3D, NIfTI-1, the input's affine and qform/sform codes), so arrays mapped back with
    ``from_ras`` and this image always agree.
    """
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


def measure_peak_memory(run_interface: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Decorate an interface's ``_run_interface``: its peak resident memory goes to
    ``runtime.peak_memory_gb`` (saved with the node's result; the progress lines read it)."""

    @functools.wraps(run_interface)
    def wrapper(self: Any, runtime: Any) -> Any:
        reset_peak_memory()
        runtime = run_interface(self, runtime)
        runtime.peak_memory_gb = peak_memory_gb()
        return runtime

    return wrapper
