"""Plain constants and functions shared by test modules (fixtures live in conftest.py).

What is here is either a constant (paths, the default synthetic runs) or a pure function that
module-level builders of parametrized cases call outside any test, where no fixture can reach:
the FLAIR-like head array and a gamma-noise blob; and what two test modules read the same way
(the README's quick-start command, the CUDA packages of a pip report). Anything a test body calls with arguments is a
(factory) fixture in ``conftest.py`` instead; tests never import from ``conftest``.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: (relative path, options) of the default synthetic dataset: 2 subjects, sub-01 with 2 sessions.
#: Skull-stripped (zero background), so the preprocessing decides against N4 and brain extraction
#: and the end-to-end test stays fast; ``skull=True`` makes raw-looking heads.
DEFAULT_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", {"orientation": "RAS", "seed": 1, "skull": False}),
    ("sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz", {"orientation": "LPS", "seed": 2, "skull": False}),
    ("sub-02/anat/sub-02_FLAIR.nii.gz",
     {"orientation": "LAS", "seed": 3, "zooms": (3.5, 3.5, 4.5), "skull": False}),
)


def head_like_flair(shape: tuple[int, int, int] = (48, 56, 40), seed: int = 0, skull: bool = True,
                    n_lesions: int = 3) -> np.ndarray:
    """A FLAIR-like head in RAS voxel order (int16): background 0, brain with bright lesions."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grid, (0.85, 0.88, 0.85), strict=True)))
    img = np.zeros(shape, np.float32)
    brain = radius < 0.78
    img[brain] = 380.0  # grey matter: brighter than white matter in FLAIR
    img[radius < 0.55] = 300.0  # white matter
    ventricles = np.sqrt((grid[0] / 0.18) ** 2 + (grid[1] / 0.35) ** 2 + (grid[2] / 0.2) ** 2) < 1.0
    img[ventricles] = 80.0
    if skull:
        img[(radius >= 0.84) & (radius < 0.92)] = 60.0  # bone: dark
        img[(radius >= 0.92) & (radius < 1.0)] = 450.0  # scalp fat: bright
    wm = np.argwhere((radius < 0.5) & ~ventricles)
    index = np.indices(shape)
    for centre in wm[rng.choice(len(wm), size=n_lesions, replace=False)]:
        dist = np.sqrt(((index - centre[:, None, None, None]) ** 2).sum(axis=0))
        img[dist < rng.uniform(1.2, 2.5)] = 650.0
    bias = 1.0 + 0.15 * grid[0] + 0.1 * grid[2]
    img = img * bias + rng.normal(0.0, 12.0, shape) * (img > 0)
    return np.clip(img, 0, None).astype(np.int16)


def blob_volume(shape: tuple[int, int, int] = (40, 48, 30), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A gamma-noise ellipsoid (float32) and its mask: input for the normalization and slicing tests."""
    rng = np.random.default_rng(seed)
    zz = np.indices(shape).astype(float)
    centre = np.array(shape)[:, None, None, None] / 2
    mask = (((zz - centre) / (np.array(shape)[:, None, None, None] / 3)) ** 2).sum(0) < 1
    data = rng.gamma(4.0, 25.0, shape).astype(np.float32) * mask
    return data, mask


def readme_quick_start() -> str:
    """The first command of the README's quick start (set up and run the demo), verbatim."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    return re.search(r"```bash\n(.+?)\n```", section, flags=re.S).group(1).strip()


#: Distributions that only a CUDA build of torch brings (the CUDA runtime wheels and triton).
CUDA_DISTRIBUTIONS = re.compile(r"^(nvidia-.+|triton|pytorch-triton.*|cuda-.+)$")


def cuda_packages(report: dict[str, Any]) -> list[str]:
    """``name==version`` of every CUDA package in a ``pip install --report`` JSON (a torch ``+cuXXX`` too)."""
    found = []
    for item in report.get("install", []):
        name = str(item["metadata"]["name"]).lower().replace("_", "-")
        version = str(item["metadata"]["version"])
        if CUDA_DISTRIBUTIONS.match(name) or re.search(r"\+cu\d", version):
            found.append(f"{name}=={version}")
    return sorted(found)

#: The package indexes the README's quick start reads.
PYPI_INDEX = "https://pypi.org/simple/"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu/"


def index_reachable(url: str, timeout: float = 10.0) -> bool:
    """Whether ``url`` (a package index page) answers an HTTP GET within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False
