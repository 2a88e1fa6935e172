"""The training loop (bids_msseg/train/loop.py): loss, validation, resume, schedule, export."""


import numpy as np
import pytest
import torch

from bids_msseg.model.bundle import load_bundle
from bids_msseg.train.data import NORMAL, UNKNOWN, SliceSampler, list_shards, load_shard, make_shard
from bids_msseg.train.export import export_bundle
from bids_msseg.train.loop import TrainConfig, restore_portable, train, validate
from bids_msseg.train.losses import weighted_bce


def _two_lesion_shard(tmp_path, training_scan, normal: bool = False):
    """A shard (slices = the brain's z 2-9) with a large lesion on slices 0-4 and a one-slice lesion on
    slice 6, optionally with a normal hyperintensity on slice 7."""
    img, brain, _ = training_scan(0)
    lesion = np.zeros(brain.shape, bool)
    lesion[10:20, 10:20, 2:7] = True
    lesion[28:30, 28:30, 8] = True
    extra = {}
    if normal:
        extra["normal"] = np.zeros(brain.shape, bool)
        extra["normal"][8:12, 8:12, 9] = True
    return make_shard(tmp_path / "two.npz", img, brain, lesion, (1.0, 1.0, 1.0), np.linspace(0, 1, 1001),
                      size=64, **extra)


def test_lesion_sampling_draws_each_lesion_alike(tmp_path, training_scan):
    """'slice' draws the small lesion's slice about 1 time in 6 (1 of 6 lesion slices), 'lesion' half the time."""
    path = _two_lesion_shard(tmp_path, training_scan)
    shard = load_shard(path)
    assert [s.tolist() for s in shard.lesions_by_slices()] == [list(range(5)), [6]]

    def small_share(mode: str) -> float:
        sampler = SliceSampler([path], "quantile", 1.0, seed=0, lesion_sampling=mode)
        _, lab = sampler.batch(400)
        return float(np.mean([(lab[i, 0] == 1).sum().item() <= 40 for i in range(400)]))

    assert small_share("slice") == pytest.approx(1 / 6, abs=0.05)
    assert small_share("lesion") == pytest.approx(0.5, abs=0.08)


def test_normal_fraction_draws_hard_negative_slices(tmp_path, training_scan):
    path = _two_lesion_shard(tmp_path, training_scan, normal=True)
    assert load_shard(path).normal_slices.tolist() == [7]
    sampler = SliceSampler([path], "quantile", 0.0, seed=0, normal_fraction=0.5)
    _, lab = sampler.batch(400)
    share = float(np.mean([(lab[i, 0] == NORMAL).any().item() for i in range(400)]))
    assert share == pytest.approx(0.5 + 0.5 / load_shard(path).images.shape[0], abs=0.08)


def test_intensity_augmentation_perturbs_slices_only_when_asked(tmp_path, training_scan, monkeypatch):
    """With ``augment_intensity`` 0 the sampler draws exactly as before (no extra random draw, so studies
    and checkpoints made without it repeat); with 1 every slice is perturbed, labels untouched."""
    from bids_msseg.train import data as data_module

    path = _two_lesion_shard(tmp_path, training_scan)
    plain = SliceSampler([path], "quantile", 0.5, seed=0).batch(8)
    off = SliceSampler([path], "quantile", 0.5, seed=0, augment_intensity=0.0)
    monkeypatch.setattr(data_module, "perturb_intensity", lambda *a: pytest.fail("perturbed while off"))
    assert all(torch.equal(a, b) for a, b in zip(off.batch(8), plain, strict=True))
    monkeypatch.undo()
    img, lab = SliceSampler([path], "quantile", 0.5, seed=0, augment_intensity=1.0).batch(8)
    assert torch.equal(lab[0], plain[1][0])  # the first draw is the same slice, its label untouched
    assert not torch.equal(img[0], plain[0][0]) and (img[0][plain[0][0] == 0] == 0).all()  # background stays 0


class _Constant(torch.nn.Module):
    """A stub network whose logit is ``logit`` at every voxel."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = logit

    def forward(self, x):
        return torch.full_like(x, self.logit)


def test_unknown_voxels_are_neither_taught_nor_scored(tmp_path, training_scan):
    """UNKNOWN labels get no loss and no validation score; the shard keeps lesions over unknown."""
    logits = torch.full((1, 1, 2, 2), 3.0)
    target = torch.tensor([[[[1.0, 0.0], [UNKNOWN, UNKNOWN]]]])
    expected = weighted_bce(logits[..., :1, :], target[..., :1, :], 0.8).item() / 2
    assert weighted_bce(logits, target, 0.8).item() == pytest.approx(expected, rel=1e-5)
    img, brain, lesion = training_scan(0)
    unknown = np.zeros_like(lesion)
    unknown[5:20, 5:20, 2:10] = True
    path = make_shard(tmp_path / "vol_00000.npz", img, brain, lesion, (1.0, 1.0, 1.0), np.linspace(0, 1, 1001),
                      size=64, unknown=unknown)
    labels = load_shard(path).labels
    plain = make_shard(tmp_path / "vol_00001.npz", img, brain, lesion, (1.0, 1.0, 1.0), np.linspace(0, 1, 1001),
                       size=64)
    assert set(np.unique(labels)) == {0, 1, UNKNOWN}
    assert ((labels == 1) == (load_shard(plain).labels == 1)).all()
    assert load_shard(path).lesion_slices.tolist() == load_shard(plain).lesion_slices.tolist()
    # A network predicting lesion everywhere: unknown voxels must not count as false positives.
    scores = validate(_Constant(10.0), [path], TrainConfig(precision="fp32"), torch.device("cpu"), (0.5,))
    n_lesion, n_known = (labels == 1).sum(), (labels != UNKNOWN).sum()
    assert scores["val_dice@0.5"] == pytest.approx(2 * n_lesion / (n_known + n_lesion))


def test_validation_dice_leaves_lesion_free_scans_out(tmp_path, training_scan):
    """A lesion-free scan scores 0 or 1 (all or nothing); it must not move the mean over scans
    with lesions, unless no scan has lesions."""
    img, brain, lesion = training_scan(0)
    ref = np.linspace(0, 1, 1001)
    with_lesions = make_shard(tmp_path / "vol_00000.npz", img, brain, lesion, (1.0, 1.0, 1.0), ref, size=64)
    free = make_shard(tmp_path / "vol_00001.npz", img, brain, np.zeros_like(lesion), (1.0, 1.0, 1.0), ref, size=64)

    cfg, cpu = TrainConfig(precision="fp32"), torch.device("cpu")
    for logit in (10.0, -10.0):  # lesion everywhere (0 on the free scan), nothing (1 there)
        alone = validate(_Constant(logit), [with_lesions], cfg, cpu, (0.5,))
        both = validate(_Constant(logit), [with_lesions, free], cfg, cpu, (0.5,))
        assert both == alone
    assert validate(_Constant(-10.0), [free], cfg, cpu, (0.5,)) == {"val_dice@0.5": 1.0}
    assert validate(_Constant(10.0), [free], cfg, cpu, (0.5,)) == {"val_dice@0.5": 0.0}


def _cfg(epochs):
    return TrainConfig(epochs=epochs, steps_per_epoch=2, batch_size=2, precision="fp32", seed=7,
                       architecture="Unet")


def test_train_resume_equals_uninterrupted(shards, tmp_path):
    torch.set_num_threads(1)
    paths = list_shards(shards)
    tr, va = paths[:4], paths[4:]
    full = train(tmp_path / "full", tr, va, _cfg(2), val_thresholds=(0.5,))
    train(tmp_path / "split", tr, va, _cfg(1), val_thresholds=(0.5,))
    resumed = train(tmp_path / "split", tr, va, _cfg(2), val_thresholds=(0.5,))
    assert resumed["epoch"] == 2 and full["epoch"] == 2
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in full["history"]], rel=1e-5)
    rows = (tmp_path / "split" / "metrics.tsv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch") and len(rows) == 3
    assert (tmp_path / "full" / "best.safetensors").exists()
    assert not list((tmp_path / "full").glob("*.pt"))
    # Export: training's threshold by default, a calibrated (threshold, Dice) when given.
    ref = np.linspace(0, 1, 1001)
    card = load_bundle(export_bundle(tmp_path / "full", tmp_path / "b1", ref, "t", {})).card
    assert card.threshold == full["best_threshold"] and card.metrics["val_dice"] == round(full["best_dice"], 4)
    card = load_bundle(export_bundle(tmp_path / "full", tmp_path / "b2", ref, "t", {}, calibrated=(0.25, 0.5))).card
    assert card.threshold == 0.25 and card.metrics["val_dice"] == 0.5 and card.training["epochs_run"] == 2


def test_portable_checkpoint_resumes_a_run_elsewhere(shards, tmp_path):
    """A run keeps 16-bit weights-only checkpoints in a fixed folder; a fresh work folder (another
    machine) resumes from them at the next epoch, with the history, and exports as usual."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    paths = list_shards(shards)
    tr, va = paths[:4], paths[4:]
    portable = tmp_path / "portable"
    first = train(tmp_path / "machine1", tr, va, _cfg(1), val_thresholds=(0.5,), portable_dir=portable)
    tensors = load_file(str(portable / "last.safetensors"))
    assert all(k.startswith("model.") for k in tensors)  # weights only: no Adam moments
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.bfloat16}
    assert (portable / "best.json").is_file() and len((portable / "metrics.tsv").read_text().splitlines()) == 2
    assert restore_portable(portable, tmp_path / "machine2")
    assert not restore_portable(portable, tmp_path / "machine2")  # the run has its own checkpoint now
    resumed = train(tmp_path / "machine2", tr, va, _cfg(2), val_thresholds=(0.5,), portable_dir=portable)
    assert resumed["epoch"] == 2 and resumed["history"][0] == first["history"][0]
    assert len((portable / "metrics.tsv").read_text().splitlines()) == 3
    assert load_bundle(export_bundle(tmp_path / "machine2", tmp_path / "b", np.linspace(0, 1, 1001), "t", {})).card


def test_keep_epochs_exports_any_epoch(shards, tmp_path):
    """With keep_epochs every epoch's checkpoint stays, so the epoch can be chosen on real scans afterwards."""
    torch.set_num_threads(1)
    paths = list_shards(shards)
    cfg = _cfg(2)
    cfg.keep_epochs = True
    train(tmp_path / "run", paths[:4], paths[4:], cfg, val_thresholds=(0.5,))
    assert (tmp_path / "run" / "epoch_001.safetensors").exists() and (tmp_path / "run" / "epoch_002.json").exists()
    card = load_bundle(export_bundle(tmp_path / "run", tmp_path / "b", np.linspace(0, 1, 1001), "t", {},
                                     calibrated=(0.4, 0.0), checkpoint="epoch_001")).card
    assert card.training["best_epoch"] == 1 and card.threshold == 0.4


def test_cosine_learning_rate_anneals_to_zero_and_constant_is_the_papers():
    from bids_msseg.train.loop import learning_rate

    cfg = TrainConfig(epochs=2, steps_per_epoch=10, lr_schedule="cosine")
    rates = [learning_rate(cfg, s) for s in range(21)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert learning_rate(TrainConfig(), 12345) == 1e-3
    with pytest.raises(ValueError):
        learning_rate(TrainConfig(lr_schedule="step"), 0)


def test_real_shards_fill_their_share_of_every_batch_and_resume(shards, tmp_path, monkeypatch):
    """``real_fraction`` of each batch comes from the real shards' own sampler (counted here), and a
    resumed run continues both samplers where they stopped (same losses as an uninterrupted run)."""
    torch.set_num_threads(1)
    paths = list_shards(shards)
    synthetic, real, val = paths[:2], paths[2:4], paths[4:]
    drawn: list[tuple[int, int]] = []
    original = SliceSampler.batch

    def counting(self, size, crop=None):
        drawn.append((id(self), size))
        return original(self, size, crop)

    monkeypatch.setattr(SliceSampler, "batch", counting)

    def cfg(epochs):
        c = _cfg(epochs)
        c.real_fraction = 0.5
        return c

    full = train(tmp_path / "full", synthetic, val, cfg(2), val_thresholds=(0.5,), real_shards=real)
    sizes = sorted({size for _, size in drawn})
    assert sizes == [_cfg(1).batch_size // 2] and len({sampler for sampler, _ in drawn}) == 2
    assert [h["n_train_scans"] for h in full["history"]] == [4, 4]  # both samplers' scans
    train(tmp_path / "split", synthetic, val, cfg(1), val_thresholds=(0.5,), real_shards=real)
    resumed = train(tmp_path / "split", synthetic, val, cfg(2), val_thresholds=(0.5,), real_shards=real)
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in full["history"]], rel=1e-5)
