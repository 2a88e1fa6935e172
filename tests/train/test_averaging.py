"""Stochastic weight averaging (bids_msseg/train/averaging.py and ``average_from`` in the training loop)."""

import numpy as np
import pytest
import torch

from bids_msseg.model.bundle import load_bundle
from bids_msseg.train.averaging import WeightAverage, recompute_batch_norm
from bids_msseg.train.data import list_shards
from bids_msseg.train.export import export_bundle, load_run_network
from bids_msseg.train.loop import TrainConfig, restore_portable, train


def test_running_mean_is_the_mean_of_the_iterates_and_integers_keep_the_newest():
    net = torch.nn.BatchNorm1d(3)
    average, seen = WeightAverage(), []
    for i in range(4):
        with torch.no_grad():
            net.weight.copy_(torch.randn(3))
        net.num_batches_tracked.fill_(i)
        seen.append(net.weight.detach().clone())
        average.update(net)
    assert average.count == 4
    assert torch.allclose(average.mean["weight"], torch.stack(seen).mean(0), atol=1e-6)
    assert average.mean["num_batches_tracked"].item() == 3
    target = torch.nn.BatchNorm1d(3)
    assert torch.allclose(average.load_into(target).weight, torch.stack(seen).mean(0), atol=1e-6)


def test_batch_norm_statistics_are_measured_again_on_the_batches():
    """The averaged weights get the plain mean of their activations' statistics over the given batches
    (not an exponential one, not the iterates' stale ones); the layer's momentum is left as it was."""
    norm = torch.nn.BatchNorm2d(2)
    norm.running_mean.fill_(5.0)
    batches = [torch.randn(4, 2, 3, 3) + shift for shift in (0.0, 2.0, 4.0)]
    net = recompute_batch_norm(torch.nn.Sequential(norm), iter(batches), torch.device("cpu"))
    assert not net.training and norm.momentum == 0.1
    expected = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(norm.running_mean, expected, atol=1e-5)


def _cfg(epochs: int, average_from: int = 2) -> TrainConfig:
    return TrainConfig(epochs=epochs, steps_per_epoch=2, batch_size=2, precision="fp32", seed=7,
                       architecture="Unet", average_from=average_from)


def test_training_exports_the_average_and_resumes_it_exactly(shards, tmp_path):
    """From epoch 2 on every step's weights join the mean; the run keeps it as ``average`` (what the
    export takes), and a run resumed after epoch 2 continues the very same mean."""
    torch.set_num_threads(1)
    paths = list_shards(shards)
    tr, va = paths[:4], paths[4:]
    full = train(tmp_path / "full", tr, va, _cfg(3), val_thresholds=(0.5,))
    assert full["n_averaged"] == 4 and [h["epoch"] for h in full["average_history"]] == [2, 3]
    averaged, state = load_run_network(tmp_path / "full", "average")
    last, _ = load_run_network(tmp_path / "full", "last")
    assert state["n_averaged"] == 4 and state["best_dice"] == max(
        v for k, v in full["average_history"][-1].items() if k.startswith("val_dice"))
    assert not torch.equal(averaged.state_dict()["encoder.conv1.weight"], last.state_dict()["encoder.conv1.weight"])

    train(tmp_path / "split", tr, va, _cfg(2), val_thresholds=(0.5,))
    resumed = train(tmp_path / "split", tr, va, _cfg(3), val_thresholds=(0.5,))
    assert resumed["n_averaged"] == 4
    again, _ = load_run_network(tmp_path / "split", "average")
    for key, value in averaged.state_dict().items():
        assert torch.allclose(value.float(), again.state_dict()[key].float(), atol=1e-5), key

    card = load_bundle(export_bundle(tmp_path / "full", tmp_path / "b", np.linspace(0, 1, 1001), "t", {},
                                     checkpoint="average")).card
    assert card.training["best_epoch"] == 3 and card.metrics["val_dice"] == round(state["best_dice"], 4)


def test_without_average_from_nothing_is_averaged(shards, tmp_path):
    torch.set_num_threads(1)
    paths = list_shards(shards)
    state = train(tmp_path / "run", paths[:4], paths[4:], _cfg(1, average_from=0), val_thresholds=(0.5,))
    assert "n_averaged" not in state and not (tmp_path / "run" / "average.json").exists()


def test_portable_checkpoint_carries_the_average(shards, tmp_path):
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    paths = list_shards(shards)
    tr, va = paths[:4], paths[4:]
    portable = tmp_path / "portable"
    first = train(tmp_path / "machine1", tr, va, _cfg(2), val_thresholds=(0.5,), portable_dir=portable)
    assert any(k.startswith("average.") for k in load_file(str(portable / "last.safetensors")))
    assert (portable / "average.json").is_file()
    assert restore_portable(portable, tmp_path / "machine2")
    resumed = train(tmp_path / "machine2", tr, va, _cfg(3), val_thresholds=(0.5,), portable_dir=portable)
    assert resumed["n_averaged"] == 4  # the mean went on from the two steps of epoch 2
    assert resumed["average_history"][0] == pytest.approx(first["average_history"][0])
