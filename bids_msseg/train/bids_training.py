"""Training a model on a BIDS dataset's expert lesion masks: ``bids_msseg ... group --train``.

Steps, each resumable with the same work directory (``-w``):

1. pair each FLAIR with its expert mask (:func:`find_training_pairs`): a mask
   ``<FLAIR entities>_label-lesion_mask.nii.gz`` under ``sub-*/[ses-*/]anat/`` of ``--masks-dir``
   or, by default, of any ``derivatives/*/`` folder of the dataset that bids_msseg did not write;
2. split by subject (:func:`split_scans`, seeded, with the hash of
   :func:`~bids_msseg.train.data.split_by_scan`): no subject is on both sides, so two sessions of
   one patient never leak across;
3. preprocess each FLAIR exactly as the participant level does
   (:func:`~bids_msseg.preproc.preprocess_flair`, honouring ``--n4``/``--skullstrip``) and bring its
   mask to the same RAS+ grid; results are cached in ``<work>/train/preproc``;
4. compute the quantile reference from the *training* scans only (validation scans never shape the
   normalization), or keep the ``--init-model``'s reference when fine-tuning a quantile model, so
   the pretrained weights see the inputs they were trained on;
5. write one shard per scan to ``<work>/train/shards`` (existing ones are kept), plus
   ``--augment-quality`` degraded copies of the training scans (:mod:`bids_msseg.train.augment`);
6. train with :func:`bids_msseg.train.loop.train` into ``<work>/train/run`` (resumes from ``last``);
7. export the best checkpoint (:func:`bids_msseg.train.export.export_bundle`) to
   ``<output_dir>/models/<train-name>/`` with a card naming the data, the validation Dice, the
   recipe and the threshold chosen on validation.

``<work>/train/manifest.json`` records the split, reference and shard settings; when they change
shards are rebuilt, and a started training run is refused rather than silently continued on
other data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np

from bids_msseg.bids import FlairRun, collect_flair_runs
from bids_msseg.cli.parser import Options
from bids_msseg.errors import EXIT_OK, InputError, NoInputError, UsageError
from bids_msseg.io import atomic_path, write_text_atomic

LOGGER = logging.getLogger(__name__)

#: Slice size of the shards, i.e. the network's input. Always 224 for real models; tests lower it
#: (monkeypatch) to train on CPU in seconds. It is recorded in the run's config and the bundle's card.
TRAIN_INPUT_SIZE = 224
#: File name ending of an expert lesion mask (BIDS derivatives: ``label-lesion`` + ``mask`` suffix).
MASK_ENDINGS = ("_label-lesion_mask.nii.gz", "_label-lesion_mask.nii")
#: Entities a mask may carry beyond its FLAIR's (derivative entities), ignored when matching.
DERIVATIVE_ENTITIES = frozenset({"space", "label", "desc", "res", "den"})
#: Name of this pipeline in ``GeneratedBy`` (its own predicted masks are never training data).
PIPELINE_NAME = "bids_msseg"
_VAL_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
_FORCE = {"auto": None, "on": True, "off": False}


@dataclass(frozen=True)
class TrainSettings:
    """The group-level training flags (``Options.extra``), typed, with the shared options they use."""

    name: str = "msseg-custom"
    masks_dir: Path | None = None
    extra_datasets: tuple[Path, ...] = ()
    epochs: int = 50
    steps_per_epoch: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-6
    lesion_weight: float = 0.8
    val_fraction: float = 0.2
    architecture: str | None = None
    normalization: str | None = None
    augment_quality: int = 0
    init_model: Path | None = None
    seed: int = 0

    @classmethod
    def from_options(cls, options: Options) -> TrainSettings:
        """Read the flags of :func:`bids_msseg.cli.parser.add_group_level_arguments` from ``options``."""
        extra = dict(options.extra)
        defaults = cls()

        def get(key: str, default: Any) -> Any:
            value = extra.get(key)
            return default if value is None else value

        return cls(
            name=get("train_name", defaults.name),
            masks_dir=extra.get("masks_dir"),
            extra_datasets=tuple(extra.get("extra_train_dataset") or ()),
            epochs=get("epochs", defaults.epochs),
            steps_per_epoch=extra.get("steps_per_epoch"),
            batch_size=get("batch_size", defaults.batch_size),
            lr=get("lr", defaults.lr),
            weight_decay=get("weight_decay", defaults.weight_decay),
            lesion_weight=get("lesion_weight", defaults.lesion_weight),
            val_fraction=get("val_fraction", defaults.val_fraction),
            architecture=extra.get("architecture"),
            normalization=extra.get("train_normalization"),
            augment_quality=get("augment_quality", 0),
            init_model=extra.get("init_model"),
            seed=options.random_seed if options.random_seed is not None else 0,
        )


@dataclass(frozen=True)
class TrainingScan:
    """One FLAIR with its expert mask, named for the shards (``<dataset>__<run name>``)."""

    run: FlairRun
    mask: Path
    dataset: str  # short tag of the dataset (folder name, made unique)

    @property
    def key(self) -> str:
        """Shard and cache file stem; unique across the merged datasets."""
        return f"{self.dataset}__{self.run.name}"

    @property
    def group(self) -> str:
        """Split unit: the subject within its dataset."""
        return f"{self.dataset}__sub-{self.run.subject}"


# ------------------------------------------------------------------------------- finding pairs


def name_entities(filename: str) -> tuple[dict[str, str], str]:
    """``(entities, suffix)`` of a BIDS file name, e.g. ``({"sub": "01", "ses": "1"}, "FLAIR")``."""
    stem = filename.split(".")[0]
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1]


def dataset_root(run: FlairRun) -> Path:
    """The root of the BIDS dataset a run comes from (its path minus its relative path)."""
    return run.path.parents[len(PurePosixPath(run.relpath).parts) - 1]


def _generated_by_us(folder: Path) -> bool:
    """True when a derivatives folder's ``dataset_description.json`` names bids_msseg as its generator."""
    try:
        desc = json.loads((folder / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    generated = desc.get("GeneratedBy") or []
    return any(isinstance(g, dict) and g.get("Name") == PIPELINE_NAME for g in generated)


def mask_roots(bids_dir: Path, masks_dir: Path | None, exclude: Sequence[Path] = ()) -> list[Path]:
    """Folders searched for a dataset's masks: ``masks_dir``, else ``derivatives/*/`` minus ours.

    ``exclude`` (e.g. the output directory) and folders generated by bids_msseg are left out,
    so the app never trains on its own predictions.
    """
    if masks_dir is not None:
        return [Path(masks_dir)]
    derivatives = Path(bids_dir) / "derivatives"
    excluded = {Path(p).resolve() for p in exclude}
    roots = []
    for folder in sorted(derivatives.glob("*/")) if derivatives.is_dir() else []:
        if folder.resolve() in excluded or _generated_by_us(folder):
            LOGGER.debug("%s: bids_msseg outputs, not searched for expert masks", folder)
            continue
        roots.append(folder)
    return roots


def index_masks(roots: Sequence[Path]) -> dict[frozenset, list[Path]]:
    """Masks under ``roots`` by their raw entities (derivative entities dropped)."""
    index: dict[frozenset, list[Path]] = {}
    for root in roots:
        for pattern in ("sub-*/anat/*", "sub-*/ses-*/anat/*"):
            for path in sorted(Path(root).glob(pattern)):
                if not path.name.endswith(MASK_ENDINGS) or path.name.startswith("."):
                    continue
                entities, _ = name_entities(path.name)
                key = frozenset((k, v) for k, v in entities.items() if k not in DERIVATIVE_ENTITIES)
                index.setdefault(key, []).append(path)
    return index


def _pick_mask(run: FlairRun, candidates: list[Path]) -> Path:
    """One mask among several for a FLAIR: one without ``desc`` first, else the first by name."""
    if len(candidates) == 1:
        return candidates[0]
    plain = [p for p in candidates if "desc" not in name_entities(p.name)[0]]
    chosen = sorted(plain or candidates)[0]
    LOGGER.warning("%s: %d candidate masks (%s); using %s", run.name, len(candidates),
                   ", ".join(p.name for p in candidates), chosen)
    return chosen


def find_training_pairs(
    bids_dirs: Sequence[Path],
    masks_dir: Path | None = None,
    *,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
    bids_filters: Mapping[str, Any] | None = None,
    skip_validation: bool = False,
    database_dir: Path | None = None,
    exclude: Sequence[Path] = (),
) -> list[tuple[FlairRun, Path]]:
    """Every FLAIR of ``bids_dirs`` that has an expert mask, with that mask, sorted by dataset and path.

    ``masks_dir``, the labels and the filters apply to the first dataset (the app's ``bids_dir``);
    further datasets contribute all their FLAIRs, masks from their own ``derivatives/*/``. A mask
    belongs to a FLAIR when their file names carry the same raw entities (``sub``, ``ses``,
    ``acq``, ``run``...). FLAIRs without a mask are skipped with a log line; when no FLAIR has one
    :class:`NoInputError` (66) is raised.
    """
    pairs: list[tuple[FlairRun, Path]] = []
    n_flairs = 0
    for i, bids_dir in enumerate(bids_dirs):
        main = i == 0
        db = None
        if database_dir is not None:
            db = Path(database_dir) if main else (
                Path(database_dir).parent / "bids_db_extra"
                / hashlib.sha256(str(Path(bids_dir).absolute()).encode()).hexdigest()[:12])
        try:
            runs = collect_flair_runs(
                bids_dir,
                participant_labels=participant_labels if main else None,
                session_labels=session_labels if main else None,
                bids_filters=bids_filters,
                skip_validation=skip_validation,
                database_dir=db,
            )
        except NoInputError as err:
            LOGGER.warning("%s", err)
            continue
        n_flairs += len(runs)
        roots = mask_roots(bids_dir, masks_dir if main else None, exclude)
        index = index_masks(roots)
        found = 0
        for run in runs:
            entities, _ = name_entities(Path(run.relpath).name)
            candidates = index.get(frozenset(entities.items()), [])
            if not candidates:
                LOGGER.info("%s: no expert mask (%s) in %s; not used for training", run.relpath,
                            f"{run.name.rsplit('_', 1)[0]}_label-lesion_mask.nii.gz",
                            ", ".join(str(r) for r in roots) or f"{bids_dir}/derivatives (none)")
                continue
            pairs.append((run, _pick_mask(run, candidates)))
            found += 1
        LOGGER.info("%s: %d of %d FLAIR(s) have an expert mask", bids_dir, found, len(runs))
    if not pairs:
        where = f"--masks-dir {masks_dir}" if masks_dir is not None else "derivatives/*/"
        raise NoInputError(
            f"no training data: none of the {n_flairs} FLAIR(s) has an expert lesion mask "
            f"(looked in {where} for sub-*/[ses-*/]anat/<FLAIR entities>_label-lesion_mask.nii.gz)")
    return pairs


# ------------------------------------------------------------------------------------ the split


def _dataset_tags(roots: Sequence[Path]) -> dict[Path, str]:
    """A short unique tag per dataset root: its folder name (alphanumerics), numbered on collisions."""
    tags: dict[Path, str] = {}
    for root in roots:
        base = re.sub(r"[^A-Za-z0-9]+", "", root.name) or "dataset"
        tag, n = base, 2
        while tag in tags.values():
            tag, n = f"{base}{n}", n + 1
        tags[root] = tag
    return tags


def split_scans(scans: Sequence[TrainingScan], val_fraction: float, seed: int
                ) -> tuple[list[TrainingScan], list[TrainingScan]]:
    """Training and validation scans, split by subject (seeded, deterministic).

    Subjects are ordered by :func:`~bids_msseg.train.data.split_rank`, the seeded hash
    :func:`~bids_msseg.train.data.split_by_scan` thresholds, and the first ``round(val_fraction *
    n)`` (at least one, never all) go to validation: unlike a threshold, this keeps the asked
    proportion on the small cohorts that site-specific training has. With a single subject the
    split falls back to scans.
    """
    from bids_msseg.train.data import split_rank

    if len(scans) < 2:
        raise NoInputError(f"training needs at least 2 FLAIRs with expert masks (one for validation); "
                           f"found {len(scans)}")
    by_subject = len({s.group for s in scans}) >= 2
    unit = (lambda s: s.group) if by_subject else (lambda s: s.key)
    if not by_subject:
        LOGGER.warning("all training scans come from one subject: validation scans share it with training")
    units = sorted({unit(s) for s in scans}, key=lambda u: (split_rank(u, seed), u))
    n_val = min(len(units) - 1, max(1, round(val_fraction * len(units))))
    val_units = set(units[:n_val])
    train = [s for s in scans if unit(s) not in val_units]
    val = [s for s in scans if unit(s) in val_units]
    LOGGER.info("split by %s (seed %d): %d training scan(s) of %d unit(s), %d validation scan(s) of %d",
                "subject" if by_subject else "scan", seed, len(train), len(units) - n_val, len(val), n_val)
    return train, val


# --------------------------------------------------------------------------- preprocessing


def load_mask_on_grid(mask_path: Path, ras: nib.Nifti1Image) -> np.ndarray:
    """The expert mask as a boolean array on the RAS+ grid of the preprocessed FLAIR ``ras``.

    The mask must be on the FLAIR's own voxel grid (same shape and affine, any orientation):
    it is reoriented, never resampled. Voxels >= 0.5 are lesion (0/1, 0/255 and probabilistic
    masks alike). Raises :class:`InputError` otherwise.
    """
    try:
        img = nib.load(str(mask_path))
    except Exception as err:  # nibabel raises many types for unreadable files
        raise InputError(f"{mask_path}: cannot be read as NIfTI ({err})") from err
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise InputError(f"{mask_path}: a lesion mask must be 3D, got shape {img.shape}")
    canonical = nib.as_closest_canonical(img)
    if canonical.shape != ras.shape[:3] or not np.allclose(canonical.affine, ras.affine, atol=1e-3, rtol=0):
        raise InputError(f"{mask_path}: not on its FLAIR's voxel grid (mask shape {img.shape}, FLAIR shape "
                         f"{ras.shape[:3]}, or different affines); masks must be drawn on the FLAIR itself")
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    return np.nan_to_num(data) >= 0.5


def _file_stamp(path: Path) -> list:
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def preprocess_scan(scan: TrainingScan, cache_dir: Path, n4: str, skullstrip: str) -> Path:
    """Preprocess one FLAIR and its mask into ``cache_dir/<key>.npz`` (reused when still valid).

    The cache holds the corrected image, brain mask and lesion mask on the RAS+ grid, the voxel
    sizes and the brain quantiles (for the reference); it is valid while the FLAIR, the mask and
    the ``--n4``/``--skullstrip`` settings are unchanged.
    """
    from bids_msseg.normalize import brain_quantiles
    from bids_msseg.preproc import preprocess_flair

    target = Path(cache_dir) / f"{scan.key}.npz"
    stamp = {"flair": _file_stamp(scan.run.path), "mask": _file_stamp(scan.mask), "n4": n4,
             "skullstrip": skullstrip}
    if target.is_file():
        with np.load(target, allow_pickle=False) as z:
            if json.loads(str(z["meta"])).get("stamp") == json.loads(json.dumps(stamp)):
                return target
    result = preprocess_flair(scan.run.path, sidecar=dict(scan.run.metadata) or None,
                              force_n4=_FORCE[n4], force_skullstrip=_FORCE[skullstrip])
    lesion = load_mask_on_grid(scan.mask, result.ras)
    brain = np.asarray(result.brain_mask, bool)
    n_lesion = int(lesion.sum())
    outside = int((lesion & ~brain).sum())
    if n_lesion and outside > 0.05 * n_lesion:
        LOGGER.warning("%s: %d of %d lesion voxels lie outside the brain mask (they are not trained on)",
                       scan.run.name, outside, n_lesion)
    meta = {"stamp": stamp, "decisions": json.loads(result.decisions.to_json())}
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, corrected=result.corrected.astype(np.float32), brain=brain.astype(np.uint8),
                     lesion=lesion.astype(np.uint8), zooms=np.asarray(result.zooms, np.float64),
                     quantiles=brain_quantiles(result.corrected, brain), meta=np.array(json.dumps(meta)))
    LOGGER.info("%s: preprocessed (%d lesion voxels)", scan.run.name, n_lesion)
    return target


def load_preprocessed(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in ("corrected", "brain", "lesion", "zooms", "quantiles")}


# ------------------------------------------------------------------------------------ shards


def _shard_meta(scan: TrainingScan, split: str, augmentation: dict | None = None) -> dict[str, Any]:
    return {"dataset": scan.dataset, "subject": scan.run.subject, "session": scan.run.session,
            "source": scan.run.relpath, "mask": scan.mask.name, "split": split,
            "augmentation": augmentation}


def build_shards(train: Sequence[TrainingScan], val: Sequence[TrainingScan], cache: Mapping[str, Path],
                 shards_dir: Path, reference: np.ndarray, size: int, augment_quality: int, seed: int
                 ) -> tuple[list[Path], list[Path]]:
    """Write the missing shards; return (training shards incl. augmented copies, validation shards).

    Augmented copies (``<key>_augq<j>``) are drawn from a generator seeded by the seed, the scan
    and ``j``, so a resumed build writes the same copies whatever it already had.
    """
    from bids_msseg.train.augment import degrade_quality
    from bids_msseg.train.data import make_shard

    train_paths: list[Path] = []
    val_paths: list[Path] = []
    for split, scans, out in (("train", train, train_paths), ("validation", val, val_paths)):
        for scan in scans:
            targets = [(shards_dir / f"{scan.key}.npz", None)]
            if split == "train":
                targets += [(shards_dir / f"{scan.key}_augq{j}.npz", j) for j in range(1, augment_quality + 1)]
            out.extend(t for t, _ in targets)
            todo = [(t, j) for t, j in targets if not t.is_file()]
            if not todo:
                continue
            vol = load_preprocessed(cache[scan.key])
            zooms = tuple(float(z) for z in vol["zooms"])
            brain, lesion = vol["brain"].astype(bool), vol["lesion"].astype(bool)
            for target, j in todo:
                image, params = vol["corrected"], None
                if j is not None:
                    rng = np.random.default_rng([seed, zlib.crc32(scan.key.encode()), j])
                    image, params = degrade_quality(image, rng)
                make_shard(target, image, brain, lesion, zooms, reference, size=size,
                           meta=_shard_meta(scan, split, params))
                LOGGER.info("shard %s written%s", target.name, f" ({params})" if params else "")
    return train_paths, val_paths


def _n_slices(path: Path) -> int:
    with np.load(path, allow_pickle=False) as z:
        return int(json.loads(str(z["meta"]))["n_slices"])


def _check_manifest(train_dir: Path, manifest: dict[str, Any]) -> None:
    """Compare with the manifest of an earlier call: rebuild stale shards, refuse a started run."""
    path = train_dir / "manifest.json"
    shards_dir, run_dir = train_dir / "shards", train_dir / "run"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != manifest:
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            if (run_dir / "last.json").is_file():
                raise UsageError(
                    f"the training data or split changed ({', '.join(changed)}) since the training in {run_dir} "
                    f"started; use another work directory (-w) or delete {train_dir} to start over")
            LOGGER.warning("training data changed (%s): rebuilding the shards", ", ".join(changed))
            shutil.rmtree(shards_dir, ignore_errors=True)
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")


# ----------------------------------------------------------------------------- entry point


def _load_init_model(settings: TrainSettings):
    """The ``--init-model`` bundle (checked), or None."""
    if settings.init_model is None:
        return None
    from bids_msseg.model.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(settings.init_model)
    except BundleError as err:
        raise UsageError(f"--init-model: {err}") from err
    LOGGER.info("fine-tuning from %s (%s)", bundle.card.model_id, settings.init_model)
    return bundle


def _resolve_network(settings: TrainSettings, init) -> tuple[str, str]:
    """Architecture and normalization: the flags, else the initial model's, else the paper's."""
    from bids_msseg.model.network import default_architecture

    if init is None:
        return settings.architecture or "UnetPlusPlus", settings.normalization or "quantile"
    arch = init.card.architecture.get("name", "")
    if settings.architecture and settings.architecture != arch:
        raise UsageError(f"--architecture {settings.architecture} differs from the --init-model's {arch}")
    if default_architecture(arch) != dict(init.card.architecture):
        raise UsageError(f"--init-model: architecture {init.card.architecture} is not one this version trains")
    normalization = settings.normalization or init.card.normalization
    if normalization != init.card.normalization:
        LOGGER.warning("--train-normalization %s differs from the --init-model's %s: the pretrained weights "
                       "will see differently normalized inputs", normalization, init.card.normalization)
    if init.card.input_size != TRAIN_INPUT_SIZE:
        LOGGER.warning("--init-model was trained on %d-pixel slices, this training uses %d",
                       init.card.input_size, TRAIN_INPUT_SIZE)
    return arch, normalization


def _dataset_name(root: Path) -> str:
    try:
        return str(json.loads((root / "dataset_description.json").read_text()).get("Name") or root.name)
    except (OSError, ValueError):
        return root.name


def scans_from_pairs(pairs: Sequence[tuple[FlairRun, Path]]) -> tuple[list[TrainingScan], dict[str, str]]:
    """The pairs as :class:`TrainingScan` (tagged by dataset), and each tag's dataset name."""
    roots = list(dict.fromkeys(dataset_root(run) for run, _ in pairs))
    tags = _dataset_tags(roots)
    scans = [TrainingScan(run, mask, tags[dataset_root(run)]) for run, mask in pairs]
    return scans, {tags[root]: _dataset_name(root) for root in roots}


def preprocess_scans(scans: Sequence[TrainingScan], cache_dir: Path, n4: str, skullstrip: str) -> dict[str, Path]:
    """:func:`preprocess_scan` for every scan; the cache file by scan key. Failures are reported together."""
    cache: dict[str, Path] = {}
    failures: list[str] = []
    for scan in scans:
        try:
            cache[scan.key] = preprocess_scan(scan, cache_dir, n4, skullstrip)
        except InputError as err:
            failures.append(f"{scan.run.relpath}: {err}")
            LOGGER.error("%s", err)
    if failures:
        raise InputError(f"{len(failures)} training scan(s) could not be used (exclude them with "
                         f"--participant-label or --bids-filter-file, or fix them):\n  " + "\n  ".join(failures))
    return cache


def train_from_bids(options: Options) -> int:
    """Run the whole group-level training (module docstring) for ``options``; return the exit code."""
    import torch

    from bids_msseg.cli.run import check_work_dir
    from bids_msseg.interfaces.common import set_threads

    settings = TrainSettings.from_options(options)
    check_work_dir(options.bids_dir, options.work_dir)
    if options.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    set_threads(options.omp_nthreads)
    _load_init_model(settings)  # a bad --init-model fails before the dataset is indexed

    bids_dirs = list(dict.fromkeys([options.bids_dir, *settings.extra_datasets]))
    pairs = find_training_pairs(
        bids_dirs, settings.masks_dir, participant_labels=options.participant_label,
        session_labels=options.session_label, bids_filters=options.flair_filters,
        skip_validation=options.skip_bids_validation, database_dir=options.work_dir / "bids_db",
        exclude=[options.output_dir])
    scans, names = scans_from_pairs(pairs)
    train_scans, val_scans = split_scans(scans, settings.val_fraction, settings.seed)
    train_dir = options.work_dir / "train"
    train_and_export(options, settings, train_scans, val_scans, train_dir,
                     options.output_dir / "models" / settings.name, names)
    return EXIT_OK


def train_and_export(options: Options, settings: TrainSettings, train_scans: Sequence[TrainingScan],
                     val_scans: Sequence[TrainingScan], train_dir: Path, bundle_dir: Path,
                     dataset_names: Mapping[str, str], preproc_dir: Path | None = None) -> dict[str, Any]:
    """Steps 3-7 of the module docstring for an already split set of scans; return the training state.

    Work goes to ``train_dir`` (``manifest.json``, ``shards/``, ``run/``; preprocessing to
    ``preproc_dir``, default ``train_dir/preproc``) and the bundle to ``bundle_dir``. Used by
    ``group --train`` and by each experiment of the cross-site study (:mod:`bids_msseg.crosssite`).
    """
    from bids_msseg import __version__
    from bids_msseg.interfaces.common import seed_everything
    from bids_msseg.normalize import reference_from_quantiles
    from bids_msseg.train.export import export_bundle
    from bids_msseg.train.loop import TrainConfig, train

    seed_everything(settings.seed)
    init = _load_init_model(settings)
    architecture, normalization = _resolve_network(settings, init)
    scans = [*train_scans, *val_scans]
    cache = preprocess_scans(scans, preproc_dir or train_dir / "preproc", options.n4, options.skullstrip)

    data_reference = reference_from_quantiles(np.stack([load_preprocessed(cache[s.key])["quantiles"]
                                                        for s in train_scans]))
    use_init_reference = init is not None and normalization == "quantile" and init.reference is not None
    reference = init.reference if use_init_reference else data_reference
    reference_source = f"--init-model {init.card.model_id}" if use_init_reference else "training scans"
    manifest = {
        "train": [s.key for s in train_scans], "val": [s.key for s in val_scans],
        "input_size": TRAIN_INPUT_SIZE, "augment_quality": settings.augment_quality, "seed": settings.seed,
        "reference_sha256": hashlib.sha256(np.asarray(reference, np.float64).tobytes()).hexdigest(),
        "n4": options.n4, "skullstrip": options.skullstrip,
    }
    _check_manifest(train_dir, manifest)
    train_paths, val_paths = build_shards(train_scans, val_scans, cache, train_dir / "shards", reference,
                                          TRAIN_INPUT_SIZE, settings.augment_quality, settings.seed)

    steps = settings.steps_per_epoch or max(1, sum(_n_slices(p) for p in train_paths) // settings.batch_size)
    cfg = TrainConfig(architecture=architecture, normalization=normalization, epochs=settings.epochs,
                      steps_per_epoch=steps, batch_size=settings.batch_size, lr=settings.lr,
                      weight_decay=settings.weight_decay, lesion_weight=settings.lesion_weight,
                      val_fraction=settings.val_fraction, seed=settings.seed, device=options.device,
                      precision=options.precision, max_val_scans=len(val_paths), input_size=TRAIN_INPUT_SIZE,
                      extra={"init_model": init.card.model_id if init else None,
                             "augment_quality": settings.augment_quality})
    LOGGER.info("training %s (%s, %s normalization) on %d shard(s), validating on %d: %d epoch(s) x %d step(s) "
                "of %d slices", settings.name, architecture, normalization, len(train_paths), len(val_paths),
                cfg.epochs, cfg.steps_per_epoch, cfg.batch_size)
    run_dir = train_dir / "run"
    state = train(run_dir, train_paths, val_paths, cfg, val_thresholds=_VAL_THRESHOLDS,
                  init_weights=init.network.state_dict() if init is not None else None)

    def subjects(side: Sequence[TrainingScan]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in side:
            out.setdefault(s.dataset, [])
            if s.run.subject not in out[s.dataset]:
                out[s.dataset].append(s.run.subject)
        return out

    names = dict(dataset_names)
    info = {
        "data": f"{len(scans)} FLAIR scan(s) with expert lesion masks from {', '.join(names.values())}",
        "datasets": names,
        "subjects": {"train": subjects(train_scans), "validation": subjects(val_scans)},
        "n_scans": {"train": len(train_scans), "validation": len(val_scans),
                    "augmented_copies": len(train_scans) * settings.augment_quality},
        "split": f"by subject, seed {settings.seed}, validation fraction {settings.val_fraction}",
        "preprocessing": {"n4": options.n4, "skullstrip": options.skullstrip},
        "quantile_reference": reference_source if normalization == "quantile" else None,
        "init_model": init.card.model_id if init is not None else None,
        "augment_quality": settings.augment_quality,
        "recipe": {k: cfg_value for k, cfg_value in state["config"].items()
                   if k in ("architecture", "normalization", "epochs", "steps_per_epoch", "batch_size", "lr",
                            "weight_decay", "betas", "lesion_weight", "lesion_fraction", "val_fraction", "seed",
                            "input_size")},
        "threshold_chosen_on": f"validation scans (max mean Dice over thresholds {list(_VAL_THRESHOLDS)})",
        "bids_msseg_version": __version__,
    }
    export_bundle(run_dir, bundle_dir, reference, settings.name, info)
    with atomic_path(bundle_dir / "training_metrics.tsv") as tmp:
        shutil.copyfile(run_dir / "metrics.tsv", tmp)
    LOGGER.info("model %s: validation Dice %.4f at threshold %.2f (epoch %d of %d); segment with --model %s",
                settings.name, state["best_dice"], state.get("best_threshold", 0.5), state["best_epoch"],
                state["epoch"], bundle_dir)
    return state
