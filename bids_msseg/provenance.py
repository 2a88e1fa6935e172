"""What made an output: the versions of every component and the model's exact weights.

Recorded in every output sidecar (``ComponentVersions``: an object, so not BIDS's reserved
``SoftwareVersions``, which must be a string) and summarized in the derivative
``dataset_description.json`` (``GeneratedBy[0].Description``), so that a result can be traced to
the Python, torch, segmentation-models-pytorch, nipype, pybids, ANTsPy, nibabel and numpy versions
and to the model (id and full sha256 of its weights) that produced it. Versions are read from the
installed distributions' metadata, without importing the (heavy) packages.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Mapping
from importlib import metadata

#: Distributions whose versions are recorded, under the names used in the records.
COMPONENTS: dict[str, str] = {
    "bids_msseg": "bids_msseg",
    "torch": "torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "timm": "timm",
    "nipype": "nipype",
    "pybids": "pybids",
    "antspyx": "antspyx",
    "nibabel": "nibabel",
    "numpy": "numpy",
    "scipy": "scipy",
    "scikit-image": "scikit-image",
}


def software_versions() -> dict[str, str]:
    """``{"python": "3.11.7", "torch": "2.13.0+cpu", ...}``; "not installed" for a missing component."""
    versions = {"python": platform.python_version()}
    for name, dist in COMPONENTS.items():
        versions[name] = installed_version(dist) or "not installed"
    return versions


@functools.cache
def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (None when absent), read from its metadata once per process
    (the methods text and the sidecars ask for it several times per invocation)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def provenance(model_id: str, weights_sha256: str) -> dict[str, str]:
    """The ``ComponentVersions`` record of a run: component versions plus the model's id and weights' sha256."""
    return {**software_versions(), "model_id": model_id, "model_weights_sha256": weights_sha256}


def describe(record: Mapping[str, str]) -> str:
    """One line for ``GeneratedBy[0].Description``: ``python 3.11.7, torch 2.13.0+cpu, ...``."""
    return "Run with " + ", ".join(f"{k} {v}" for k, v in record.items()) + "."
