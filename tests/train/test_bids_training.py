"""Group-level training (``group --train``): pairing FLAIRs with expert masks, splitting, the CLI end to end.

The end-to-end tests train a UNet for 2 epochs of 2 steps on 64-pixel slices
(``bids_training.TRAIN_INPUT_SIZE`` lowered from 224, the only size real models use) so that
they take seconds on one CPU core.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.bids import collect_flair_runs
from bids_msseg.cli.parser import parse_args
from bids_msseg.cli.run import main
from bids_msseg.errors import EXIT_NO_INPUT, EXIT_USAGE, InputError
from bids_msseg.masks import find_training_pairs, name_entities
from bids_msseg.train import bids_training
from bids_msseg.train.cache import load_mask_on_grid
from bids_msseg.train.data import make_shard
from bids_msseg.train.split import TrainingScan, split_scans
from tests.helpers import head_like_flair

SHAPE = (48, 56, 32)
ZOOMS = (4.0, 4.0, 4.0)
FLIPS = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1)}


def _save(path: Path, data: np.ndarray, orientation: str) -> None:
    """Save RAS-ordered ``data`` with voxel axes in ``orientation`` (world space stays the same)."""
    flips = FLIPS[orientation]
    for axis, flip in enumerate(flips):
        if flip < 0:
            data = np.flip(data, axis)
    affine = np.diag([f * z for f, z in zip(flips, ZOOMS, strict=True)] + [1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))


def _subject(root: Path, stem: str, seed: int, orientation: str = "RAS", masks: str | None = "manual") -> None:
    """A skull-stripped FLAIR with 3 bright blobs, and the blobs as its expert mask under derivatives/<masks>."""
    rng = np.random.default_rng(seed)
    image = head_like_flair(SHAPE, seed=seed, skull=False, n_lesions=0).astype(np.float32)
    index = np.indices(SHAPE)
    lesion = np.zeros(SHAPE, bool)
    for _ in range(3):
        centre = np.array(SHAPE) // 2 + rng.integers(-6, 7, 3)
        lesion |= np.sqrt(((index - centre[:, None, None, None]) ** 2).sum(axis=0)) < rng.uniform(1.5, 2.5)
    image[lesion] = 700.0 + rng.normal(0.0, 10.0, int(lesion.sum()))
    sub = stem.split("_")[0]
    rel = Path(sub, *(p for p in stem.split("_")[1:2] if p.startswith("ses-")), "anat")
    _save(root / rel / f"{stem}_FLAIR.nii.gz", image.astype(np.int16), orientation)
    if masks is not None:
        _save(root / "derivatives" / masks / rel / f"{stem}_label-lesion_mask.nii.gz", lesion.astype(np.uint8),
              orientation)


def _dataset(root: Path) -> Path:
    """sub-01..03 with masks (sub-02 stored LPS), sub-04 without one, and bids_msseg outputs to ignore."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "tiny MS", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    _subject(root, "sub-01", 1)
    _subject(root, "sub-02", 2, orientation="LPS")
    _subject(root, "sub-03", 3)
    _subject(root, "sub-04", 4, masks=None)
    ours = root / "derivatives" / "bids_msseg"
    _save(ours / "sub-04" / "anat" / "sub-04_space-orig_label-lesion_mask.nii.gz", np.zeros(SHAPE, np.uint8), "RAS")
    (ours / "dataset_description.json").write_text(json.dumps(
        {"Name": "pred", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "bids_msseg"}]}))
    (root / "derivatives" / "manual" / "dataset_description.json").write_text(json.dumps(
        {"Name": "expert masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}))
    return root


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train on 64-pixel slices (real models: 224) to keep CPU tests fast."""
    monkeypatch.setattr(bids_training, "TRAIN_INPUT_SIZE", 64)


def _args(bids: Path, out: Path, work: Path, *more: str, architecture: str | None = "Unet") -> list[str]:
    """A tiny CPU training: 2 epochs of 2 steps of 2 slices, full precision, one thread."""
    arch = ["--architecture", architecture] if architecture else []
    return [str(bids), str(out), "group", "--train", "--epochs", "2", "--steps-per-epoch", "2",
            "--batch-size", "2", *arch, "--precision", "fp32", "--device", "cpu",
            "--nprocs", "1", "--omp-nthreads", "1", "--random-seed", "3", "-w", str(work), *more]


# ------------------------------------------------------------------------------------ units


def test_parser_group_training_flags(tmp_path: Path) -> None:
    opts = parse_args([str(tmp_path), str(tmp_path / "o"), "group", "--train", "--extra-train-dataset", str(tmp_path),
                       "--extra-train-dataset", str(tmp_path), "--augment-quality", "--lr", "3e-4"])
    train = opts.group.training
    assert opts.group.train and train.name == "msseg-custom" and train.epochs == 50
    assert train.batch_size == 16 and train.weight_decay == 1e-6 and train.lesion_weight == 0.8
    assert train.val_fraction == 0.2 and train.steps_per_epoch is None and train.lr == 3e-4
    assert train.augment_quality == 1 and train.extra_datasets == (tmp_path, tmp_path)
    assert train.architecture is None and train.init_model is None and train.masks_dir is None
    assert parse_args([str(tmp_path), str(tmp_path / "o"), "group"]).group.train is False
    with pytest.raises(SystemExit) as exc:
        parse_args([str(tmp_path), str(tmp_path / "o"), "group", "--train-name", "a/b"])
    assert exc.value.code == 64


def test_name_entities() -> None:
    assert name_entities("sub-01_ses-1_acq-3D_label-lesion_mask.nii.gz") == (
        {"sub": "01", "ses": "1", "acq": "3D", "label": "lesion"}, "mask")


def test_find_pairs_matches_entities_and_skips_our_outputs(tmp_path: Path) -> None:
    bids = _dataset(tmp_path / "bids")
    pairs = find_training_pairs([bids])
    assert [(run.subject, mask.parent.parts[-3]) for run, mask, _ in pairs] == [
        ("01", "manual"), ("02", "manual"), ("03", "manual")]  # sub-04: only bids_msseg's prediction
    assert all(normal is None for *_, normal in pairs)
    # an explicit --masks-dir replaces the search; a mask with other entities (acq) matches nothing
    masks = tmp_path / "masks"
    _save(masks / "sub-04" / "anat" / "sub-04_label-lesion_mask.nii.gz", np.zeros(SHAPE, np.uint8), "RAS")
    _save(masks / "sub-01" / "anat" / "sub-01_acq-2D_label-lesion_mask.nii.gz", np.zeros(SHAPE, np.uint8), "RAS")
    assert [run.subject for run, *_ in find_training_pairs([bids], masks)] == ["04"]


def test_normal_hyperintensity_masks_are_found_beside_the_lesion_masks(tmp_path: Path) -> None:
    """A ``label-normalwmh`` mask in any searched derivatives folder goes with its FLAIR (hard negatives)."""
    bids = _dataset(tmp_path / "bids")
    normal = bids / "derivatives" / "normal" / "sub-02" / "anat" / "sub-02_label-normalwmh_mask.nii.gz"
    _save(normal, np.zeros(SHAPE, np.uint8), "RAS")
    found = {run.subject: n for run, _, n in find_training_pairs([bids])}
    assert found == {"01": None, "02": normal, "03": None}


def test_parser_training_sampling_flags(tmp_path: Path) -> None:
    args = [str(tmp_path), str(tmp_path / "o"), "group", "--train"]
    train = parse_args(args).group.training
    assert (train.lesion_sampling, train.normal_fraction, train.normal_weight) == ("slice", 0.0, 1.0)
    train = parse_args([*args, "--lesion-sampling", "lesion", "--normal-fraction", "0.1",
                        "--normal-weight", "3"]).group.training
    assert (train.lesion_sampling, train.normal_fraction, train.normal_weight) == ("lesion", 0.1, 3.0)
    assert train.augment_intensity == 0.0 and train.synthetic_pool is None and train.synthetic_fraction == 0.5
    assert parse_args([*args, "--synthetic-pool", str(tmp_path), "--synthetic-fraction", "0.3"]).group.training \
        .synthetic_fraction == 0.3
    assert parse_args([*args, "--augment-intensity"]).group.training.augment_intensity == 0.5
    assert parse_args([*args, "--augment-intensity", "0.25"]).group.training.augment_intensity == 0.25
    assert train.average_from == 0 and parse_args([*args, "--average-from", "2"]).group.training.average_from == 2
    assert train.lesion_balance == 0 and parse_args([*args, "--lesion-balance", "0.5"]).group.training \
        .lesion_balance == 0.5


def test_portable_checkpoint_of_other_data_is_refused(tmp_path: Path) -> None:
    from bids_msseg.errors import UsageError
    from bids_msseg.train.bids_training import _resume_portable

    portable = tmp_path / "ckpt"
    _resume_portable(portable, tmp_path / "run", {"train": ["a"], "seed": 0})  # a new folder: nothing to resume
    assert json.loads((portable / "manifest.json").read_text())["train"] == ["a"]
    _resume_portable(portable, tmp_path / "run", {"train": ["a"], "seed": 0})
    with pytest.raises(UsageError, match="train"):
        _resume_portable(portable, tmp_path / "run", {"train": ["a", "b"], "seed": 0})


def test_split_is_by_subject(tmp_path: Path, make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids", extra_files=())  # sub-01 has two sessions
    scans = [TrainingScan(run, tmp_path / "m.nii.gz", "bids") for run in collect_flair_runs(bids)]
    for seed in range(6):
        train, val = split_scans(scans, 0.5, seed)
        assert train and val and len(train) + len(val) == 3
        assert not {s.run.subject for s in train} & {s.run.subject for s in val}
        assert (train, val) == split_scans(scans, 0.5, seed)


def test_mask_on_another_grid_is_refused(tmp_path: Path) -> None:
    bids = _dataset(tmp_path / "bids")
    flair = nib.as_closest_canonical(nib.load(bids / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz"))
    mask = bids / "derivatives" / "manual" / "sub-02" / "anat" / "sub-02_label-lesion_mask.nii.gz"
    lesion = load_mask_on_grid(mask, flair)  # stored LPS like its FLAIR: reoriented with it
    assert lesion.dtype == bool and lesion.shape == SHAPE and lesion.any()
    assert np.asarray(flair.dataobj)[lesion].min() > 600  # the blobs land on the bright voxels
    moved = flair.affine.copy()
    moved[0, 3] += 8.0  # two voxels off
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), moved), str(tmp_path / "moved.nii.gz"))
    with pytest.raises(InputError, match="voxel grid"):
        load_mask_on_grid(tmp_path / "moved.nii.gz", flair)


# ---------------------------------------------------------------------------------- end to end


def test_group_train_end_to_end_and_resume(tmp_path: Path, small_slices: None) -> None:
    from bids_msseg.model.bundle import load_bundle

    bids, out, work = _dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = _args(bids, out, work, "--augment-quality")
    assert main(args) == 0

    bundle = load_bundle(out / "models" / "msseg-custom")  # checks the sha256
    card = bundle.card
    assert card.model_id.startswith("msseg-custom@") and card.input_size == 64
    assert card.architecture["name"] == "Unet" and card.normalization == "quantile"
    assert len(card.reference_quantiles) == 1001 and card.threshold in (0.3, 0.4, 0.5, 0.6, 0.7)
    assert 0.0 <= card.metrics["val_dice"] <= 1.0
    info = card.training
    assert info["datasets"] == {"bids": "tiny MS"} and info["epochs_run"] == 2
    seen = info["subjects"]["train"]["bids"] + info["subjects"]["validation"]["bids"]
    assert sorted(seen) == ["01", "02", "03"]  # sub-04 has no expert mask
    assert info["n_scans"]["train"] + info["n_scans"]["validation"] == 3 and info["n_scans"]["validation"] >= 1
    assert info["recipe"]["lr"] == 1e-3 and info["recipe"]["input_size"] == 64

    metrics = work / "train" / "run" / "metrics.tsv"
    assert len(metrics.read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert (out / "models" / "msseg-custom" / "training_metrics.tsv").read_text() == metrics.read_text()
    shards = sorted(p.name for p in (work / "train" / "shards").glob("*.npz"))
    augmented = [n for n in shards if "_augq1" in n]
    assert len(augmented) == info["n_scans"]["train"] and len(shards) == 3 + len(augmented)
    stamps = {p: p.stat().st_mtime_ns for p in (work / "train" / "shards").glob("*.npz")}

    # a second call resumes: finished, so no new epoch, shards kept, the same weights exported
    assert main(args) == 0
    assert len(metrics.read_text().strip().splitlines()) == 3
    assert {p: p.stat().st_mtime_ns for p in (work / "train" / "shards").glob("*.npz")} == stamps
    assert load_bundle(out / "models" / "msseg-custom").card.model_id == card.model_id

    # more epochs continue the same run
    more = [a if a != "2" or args[i - 1] != "--epochs" else "3" for i, a in enumerate(args)]
    assert main(more) == 0
    assert len(metrics.read_text().strip().splitlines()) == 4

    # fine-tuning keeps the initial model's architecture and quantile reference
    init = out / "models" / "msseg-custom"
    assert main(_args(bids, out, tmp_path / "work2", "--init-model", str(init), "--train-name", "ft",
                      "--epochs", "1", "--threshold", "0.45", "--seed-threshold", "0.8",
                      "--seed-threshold-thick", "0.7", "--average-from", "1", "--lesion-balance", "0.5",
                      architecture=None)) == 0
    tuned = load_bundle(out / "models" / "ft").card
    assert tuned.training["weights"] == "mean of the weights after every step of epochs 1-1 (stochastic weight " \
        "averaging)" and tuned.training["recipe"]["average_from"] == 1
    assert tuned.training["recipe"]["lesion_balance"] == 0.5
    assert main(_args(bids, out, tmp_path / "work4", "--train-name", "late", "--epochs", "1", "--average-from",
                      "2")) == EXIT_USAGE  # no epoch to average
    assert tuned.training["init_model"] == load_bundle(init).card.model_id
    first = load_bundle(init).card.training["data"]
    assert tuned.training["data"].endswith(f", fine-tuned from {load_bundle(init).card.model_id} (trained on {first})")
    # the operating point given on the command line (e.g. chosen by a cross-site study) is the bundle's
    assert (tuned.threshold, tuned.seed_threshold, tuned.seed_threshold_thick) == (0.45, 0.8, 0.7)
    assert tuned.training["threshold_chosen_on"] == (
        "given (--threshold 0.45, --seed-threshold 0.8, --seed-threshold-thick 0.7)")
    assert tuned.architecture["name"] == "Unet" and tuned.training["epochs_run"] == 1
    assert tuned.reference_quantiles == load_bundle(init).card.reference_quantiles

    # a synthetic pool normalized to the initial model's reference fills its share of every batch
    pool = _pool(tmp_path / "pool", np.asarray(tuned.reference_quantiles))
    mix = _args(bids, out, tmp_path / "work3", "--init-model", str(init), "--train-name", "mix", "--epochs", "1",
                "--synthetic-pool", str(pool), architecture=None)
    assert main(mix) == 0
    mixed = load_bundle(out / "models" / "mix").card.training
    assert mixed["n_scans"]["synthetic"] == 2 and mixed["recipe"]["real_fraction"] == 0.5
    assert " and 2 synthetic scan(s) (50% of each batch), fine-tuned from " in mixed["data"]
    other = _pool(tmp_path / "pool2", np.asarray(tuned.reference_quantiles) + 0.1)
    assert main([*mix[:-1], str(other), "--train-name", "other"]) == EXIT_USAGE  # another reference: refused
    assert not (out / "models" / "other").exists()


def _pool(folder: Path, reference: np.ndarray, size: int = 64) -> Path:
    """A synthetic pool as ``scripts/build_default_model.py pool`` writes it: two shards and reference.json."""
    rng = np.random.default_rng(0)
    brain = np.zeros(SHAPE, bool)
    brain[4:-4, 4:-4, 2:-2] = True
    lesion = np.zeros(SHAPE, bool)
    lesion[10:14, 10:14, 5:8] = True
    for i in range(2):
        image = (rng.uniform(300, 400, SHAPE) + 300 * lesion) * brain
        make_shard(folder / f"synth_{i:04d}.npz", image.astype(np.float32), brain, lesion, (1.0, 1.0, 1.0),
                   reference, size=size)
    (folder / "reference.json").write_text(json.dumps({"reference": reference.tolist()}))
    return folder


def test_synthetic_pool_is_checked(tmp_path: Path) -> None:
    from bids_msseg.errors import UsageError
    from bids_msseg.train.shards import synthetic_pool

    reference = np.linspace(0, 1, 1001)
    pool = _pool(tmp_path / "pool", reference)
    assert [p.name for p in synthetic_pool(pool, reference, 64)] == ["synth_0000.npz", "synth_0001.npz"]
    with pytest.raises(UsageError, match="another quantile reference"):
        synthetic_pool(pool, reference * 0.9, 64)
    with pytest.raises(UsageError, match="32"):
        synthetic_pool(pool, reference, 32)
    (pool / "reference.json").unlink()
    with pytest.raises(UsageError, match="not a pool"):
        synthetic_pool(pool, reference, 64)


def test_dataset_without_masks_exits_66(tmp_path: Path, small_slices: None, make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids")
    assert main(_args(bids, tmp_path / "out", tmp_path / "work")) == EXIT_NO_INPUT
    assert not (tmp_path / "out" / "models").exists()


def test_group_without_train_reads_participant_outputs(tmp_path: Path, make_bids_dataset) -> None:
    """Without --train the group level summarizes participant outputs (tests/test_cohort.py): none -> 66."""
    bids = make_bids_dataset(tmp_path / "bids")
    assert main([str(bids), str(tmp_path / "out"), "group", "-w", str(tmp_path / "work")]) == 66
