"""2.5D input (``--context-slices``): neighbouring slices as channels, the same in training and at inference."""

import numpy as np
import torch

from bids_msseg.model.bundle import load_bundle
from bids_msseg.model.network import build_network, context_of, default_architecture, inflate_input
from bids_msseg.segment import segment_volume
from bids_msseg.slicing import context_window, stack_context
from bids_msseg.train.data import SliceSampler, iter_validation, list_shards, load_shard
from bids_msseg.train.export import export_bundle
from bids_msseg.train.loop import TrainConfig, train


def test_context_window_pads_with_zeros_beyond_the_stack():
    stack = np.arange(1, 4, dtype=np.float32)[:, None, None] * np.ones((3, 2, 2), np.float32)  # slices 1, 2, 3
    assert context_window(stack, 0, 1)[:, 0, 0].tolist() == [0, 1, 2]
    assert context_window(stack, 2, 2)[:, 0, 0].tolist() == [1, 2, 3, 0, 0]
    assert context_window(stack, 1, 0).shape == (1, 2, 2)
    tensor = stack_context(torch.from_numpy(stack)[:, None], 1)
    assert tensor.shape == (3, 3, 2, 2) and tensor[1, :, 0, 0].tolist() == [1, 2, 3]
    assert stack_context(torch.from_numpy(stack)[:, None], 0).shape == (3, 1, 2, 2)


def test_inflated_2d_network_computes_what_the_2d_one_did():
    """A 2D model widened to 3 channels (neighbours' kernels zero) gives the same output whatever the neighbours."""
    torch.manual_seed(0)
    flat = build_network(default_architecture("Unet")).eval()
    wide = build_network(default_architecture("Unet", context=1)).eval()
    wide.load_state_dict(inflate_input(flat.state_dict(), 3))
    x = torch.randn(2, 1, 64, 64)
    neighbours = torch.randn(2, 3, 64, 64)
    neighbours[:, 1] = x[:, 0]
    with torch.no_grad():
        assert torch.allclose(flat(x), wide(neighbours), atol=1e-5)
    assert context_of(default_architecture("Unet", context=2)) == 2 and context_of({"in_channels": 1}) == 0


def test_sampler_and_validation_give_the_centre_slice_in_the_middle(shards):
    path = list_shards(shards)[0]
    shard = load_shard(path)
    sampler = SliceSampler([path], "quantile", 0.0, seed=0, context=1)
    img, lab = sampler.batch(4)
    assert img.shape[1] == 3 and lab.shape[1] == 1 and img.shape[2:] == lab.shape[2:]
    _, img, _ = next(iter_validation([shard], batch=8, context=1))
    assert torch.equal(img[1, 1], torch.from_numpy(shard.images[1].astype(np.float32)))
    assert torch.equal(img[1, 0], torch.from_numpy(shard.images[0].astype(np.float32)))
    assert not img[0, 0].any()  # no slice below the first


def test_a_25d_model_trains_exports_and_segments(shards, tmp_path, training_scan):
    torch.set_num_threads(1)
    paths = list_shards(shards)
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, precision="fp32", architecture="Unet",
                      context=1, input_size=64)
    train(tmp_path / "run", paths[:4], paths[4:], cfg, val_thresholds=(0.5,))
    bundle_dir = export_bundle(tmp_path / "run", tmp_path / "bundle", np.linspace(0, 1, 1001), "ctx", {})
    bundle = load_bundle(bundle_dir)
    assert bundle.card.architecture["in_channels"] == 3
    image, brain, _ = training_scan(0)
    prob = segment_volume(image, brain, (1.0, 1.0, 1.0), bundle, torch.device("cpu"), "fp32")
    assert prob.shape == image.shape and np.isfinite(prob).all() and not prob[~brain].any()
