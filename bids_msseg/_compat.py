"""Runtime set-up that must happen before heavy imports.

* ``torchvision`` 0.28.0 is, on PyPI, a CUDA build. Next to a CPU build of torch its compiled
  ops library cannot load, and its import then fails on ``torchvision::nms does not exist``
  because two fake-kernel registrations are not guarded. bids_msseg never uses torchvision's
  detection ops, so when the ops library is missing we declare the two operator schemas
  (without kernels) before torchvision is imported. With a matching torchvision this is a no-op.
* No network: nipype's version check is switched off (``NIPYPE_NO_ET``) and Hugging Face hubs are
  set offline, and matplotlib, the XDG caches and nipype get folders under the work directory
  when ``HOME`` is read-only.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

_TORCHVISION_PATCHED = False


#: Per-user folders that libraries write to, moved under the work directory when HOME is read-only
#: (containers, some clusters): matplotlib's config and font cache, XDG caches (fontconfig, torch,
#: Hugging Face) and nipype's config folder.
_HOME_DIRS = {"MPLCONFIGDIR": "mplconfig", "XDG_CACHE_HOME": "cache", "NIPYPE_CONFIG_DIR": "nipype"}


def _writable(path: Path) -> bool:
    """``path`` can be written, or created in its nearest existing parent: tried by creating (and
    removing) a folder there. ``os.access`` is not enough: for root it says yes even on read-only or
    pseudo file systems (``HOME=/proc``), and the libraries then fell back to ``/tmp`` on their own."""
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        probe = tempfile.mkdtemp(prefix=".bids_msseg_probe_", dir=path)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def configure_environment(work_dir: Path | None = None) -> None:
    """Set the environment variables that keep every run offline and HOME-independent.

    Variables the user has set are kept. When HOME (or ``~/.config``) is not writable, the
    per-user folders of :data:`_HOME_DIRS` go to ``<work_dir>/home/`` (or the temporary folder).
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_ET", "1")
    home = Path(os.path.expanduser("~"))
    if _writable(home / ".config") and _writable(home / ".cache"):
        return
    base = (Path(work_dir) if work_dir else Path(tempfile.gettempdir())) / "home"
    for variable, name in _HOME_DIRS.items():
        if variable not in os.environ:
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(folder)


def _torchvision_ops_loadable() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # nothing to patch
    import torch  # lazy: torch stays out of the command line's start-up

    lib = Path(spec.origin).parent / "_C.so"
    if not lib.exists():
        return False
    try:
        torch.ops.load_library(str(lib))
    except (OSError, RuntimeError):
        return False
    return hasattr(torch.ops.torchvision, "nms")


def patch_torchvision() -> None:
    """Declare torchvision's nms/qnms schemas when its compiled ops cannot load (see module doc)."""
    global _TORCHVISION_PATCHED
    if _TORCHVISION_PATCHED:
        return
    _TORCHVISION_PATCHED = True
    if _torchvision_ops_loadable():
        return
    import torch  # lazy: torch stays out of the command line's start-up

    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the library object alive for the life of the process.
    globals()["_TORCHVISION_LIB"] = lib


def import_smp() -> ModuleType:
    """Import segmentation_models_pytorch after making torchvision importable."""
    configure_environment()
    patch_torchvision()
    import segmentation_models_pytorch as smp  # lazy: smp (and torch) only where a network is built

    return smp
