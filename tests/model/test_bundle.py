"""Model bundles (bids_msseg/model/bundle.py): round trip, checksum, no pickles."""

import json

import numpy as np
import pytest
import torch

from bids_msseg.model.bundle import BundleError, ModelCard, load_bundle, save_bundle
from bids_msseg.model.network import build_network, default_architecture


def test_bundle_round_trip_and_checksum(tmp_path):
    arch = default_architecture("Unet")
    net = build_network(arch)
    card = ModelCard(architecture=arch, reference_quantiles=list(np.linspace(0, 1, 11)))
    save_bundle(tmp_path / "b", net, card)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.card.model_id.startswith("msseg-unet@")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), bundle.network(x), atol=0.05)
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    meta["weights_sha256"] = "0" * 64
    (tmp_path / "b" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(tmp_path / "b")


def test_pickled_weights_are_refused(tmp_path):
    arch = default_architecture("Unet")
    save_bundle(tmp_path / "b", build_network(arch), ModelCard(architecture=arch))
    (tmp_path / "b" / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, tmp_path / "b" / "model.pt")
    with pytest.raises(BundleError, match="pickled weights are refused"):
        load_bundle(tmp_path / "b")
