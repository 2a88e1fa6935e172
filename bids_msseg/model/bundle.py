"""The model bundle: safetensors weights plus a JSON card that rebuilds the predictor.

A bundle is a directory holding ``model.safetensors`` and ``model.json``. The JSON states the
architecture and its arguments, the input size, the normalization method and reference quantiles,
the decision threshold and lesion definition, provenance of the training and its metrics, and the
sha256 of the weights file, which is checked on every load. Weights are never read from pickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bids_msseg.io import atomic_path

if TYPE_CHECKING:  # torch is imported where weights are handled: reading cards stays light
    import torch

LOGGER = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model.json"
FORMAT_VERSION = 1
#: Where the default bundle lives inside the installed package.
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "data" / "default_model"


class BundleError(ValueError):
    """A model bundle is missing, malformed, pickled or does not match its checksum."""


@dataclass
class ModelCard:
    """Everything but the weights. Serialized as ``model.json``."""

    architecture: dict[str, Any]
    input_size: int = 224
    normalization: str = "quantile"
    reference_quantiles: list[float] = field(default_factory=list)
    threshold: float = 0.5
    #: Hysteresis: a lesion must reach this probability somewhere (0: off; see lesions.binarize).
    seed_threshold: float = 0.0
    #: The seed threshold of thick-slice scans (lesions.is_thick_slice); None: ``seed_threshold`` for all.
    seed_threshold_thick: float | None = None
    min_lesion_size_mm3: float = 5.0
    connectivity: int = 3
    model_id: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    weights_dtype: str = "float16"
    format_version: int = FORMAT_VERSION


@dataclass
class ModelBundle:
    """A loaded bundle: the card and an eval-mode network in float32."""

    card: ModelCard
    network: torch.nn.Module
    path: Path | None = None

    @property
    def reference(self) -> np.ndarray | None:
        ref = self.card.reference_quantiles
        return np.asarray(ref, dtype=np.float64) if ref else None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_bundle(
    directory: Path, network: torch.nn.Module, card: ModelCard, dtype: torch.dtype | None = None
) -> Path:
    """Write weights (cast to ``dtype``, default float16) and card; the card gets the weights'
    sha256 and an id."""
    import torch  # lazy: torch stays out of the command line's start-up
    from safetensors.torch import save_file  # lazy: safetensors.torch imports torch

    dtype = torch.float16 if dtype is None else dtype
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in network.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    card.weights_sha256 = sha256_file(directory / WEIGHTS_NAME)
    card.weights_dtype = str(dtype).replace("torch.", "")
    if not card.model_id or "@" not in card.model_id:
        base = card.model_id or f"msseg-{card.architecture['name'].lower()}"
        card.model_id = f"{base}@{card.weights_sha256[:12]}"
    else:
        card.model_id = f"{card.model_id.split('@')[0]}@{card.weights_sha256[:12]}"
    with atomic_path(directory / CARD_NAME) as tmp:
        tmp.write_text(json.dumps(asdict(card), indent=1) + "\n")
    return directory


def read_card(directory: Path) -> ModelCard:
    """Read and check ``model.json`` of a bundle directory."""
    directory = Path(directory)
    card_path = directory / CARD_NAME
    if not card_path.is_file():
        raise BundleError(f"{directory}: not a model bundle (no {CARD_NAME})")
    try:
        raw = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise BundleError(f"{card_path}: invalid JSON ({str(err)[:200]})") from err
    if not isinstance(raw, dict):
        raise BundleError(f"{card_path}: holds a JSON {type(raw).__name__}, not an object")
    known = set(ModelCard.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        LOGGER.warning("%s: ignoring unknown card fields %s", card_path, sorted(unknown))
    try:
        return ModelCard(**{k: v for k, v in raw.items() if k in known})
    except TypeError as err:
        raise BundleError(f"{card_path}: {err}") from err


#: File suffixes of pickle-based weights (torch.save, pickle, joblib): never loaded.
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib"})


def verify_bundle(directory: Path, verify: bool = True) -> ModelCard:
    """Read the card and check the weights file exists and matches the card's sha256 (no loading).

    Raises :class:`BundleError` naming what is wrong; pickled weights found instead of
    safetensors are named as refused.
    """
    directory = Path(directory)
    card = read_card(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.glob("*") if p.suffix in PICKLE_SUFFIXES)
        hint = (f" (found {pickles}: pickled weights are refused, as unpickling can run any code; "
                "convert them with safetensors.torch.save_file)") if pickles else ""
        raise BundleError(f"{directory}: no {WEIGHTS_NAME}{hint}")
    if verify:
        actual = sha256_file(weights)
        if actual != card.weights_sha256:
            raise BundleError(
                f"{weights}: sha256 {actual[:12]}... does not match the card's "
                f"{card.weights_sha256[:12] or '(none)'}...; the weights are corrupt or were replaced"
            )
    return card


def load_bundle(directory: Path | None = None, verify: bool = True) -> ModelBundle:
    """Load a bundle (the packaged default when ``directory`` is None), checking its sha256."""
    from safetensors import SafetensorError  # lazy: safetensors.torch imports torch
    from safetensors.torch import load_file  # lazy: safetensors.torch imports torch

    from bids_msseg.model.network import build_network  # lazy: torch and smp, only when the weights are loaded

    directory = Path(directory) if directory is not None else DEFAULT_BUNDLE
    card = verify_bundle(directory, verify=verify)
    weights = directory / WEIGHTS_NAME
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise BundleError(f"{weights}: not a readable safetensors file ({err})") from err
    network = build_network(card.architecture)
    network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    network.eval()
    return ModelBundle(card=card, network=network, path=directory)
