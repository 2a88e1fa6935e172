"""Runtime set-up that must happen before heavy imports.

* ``torchvision`` 0.28.0 is, on PyPI, a CUDA build. Next to a CPU build of torch its compiled
  ops library cannot load, and its import then fails on ``torchvision::nms does not exist``
  because two fake-kernel registrations are not guarded. bids_msseg never uses torchvision's
  detection ops, so when the ops library is missing we declare the two operator schemas
  (without kernels) before torchvision is imported. With a matching torchvision this is a no-op.
* No network: nipype's version check is switched off (``NIPYPE_NO_ET``) and Hugging Face hubs are
  set offline, and matplotlib gets a writable config dir when ``HOME`` is read-only.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

_TORCHVISION_PATCHED = False


def configure_environment(work_dir: Path | None = None) -> None:
    """Set the environment variables that keep every run offline and HOME-independent."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_ET", "1")
    if "MPLCONFIGDIR" not in os.environ:
        home_cfg = Path.home() / ".config"
        writable = os.access(home_cfg if home_cfg.exists() else Path.home(), os.W_OK)
        if not writable:
            base = Path(work_dir) if work_dir else Path(tempfile.gettempdir())
            mpl = base / "mplconfig"
            mpl.mkdir(parents=True, exist_ok=True)
            os.environ["MPLCONFIGDIR"] = str(mpl)


def _torchvision_ops_loadable() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # nothing to patch
    import torch

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
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the library object alive for the life of the process.
    globals()["_TORCHVISION_LIB"] = lib


def import_smp() -> ModuleType:
    """Import segmentation_models_pytorch after making torchvision importable."""
    configure_environment()
    patch_torchvision()
    import segmentation_models_pytorch as smp

    return smp
