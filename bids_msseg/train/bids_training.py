"""Training a model on a BIDS dataset's expert lesion masks: ``bids_msseg ... group --train``.

Steps, each resumable with the same work directory (``-w``):

1. pair each FLAIR with its expert mask (:func:`bids_msseg.masks.find_training_pairs`): a mask
   ``<FLAIR entities>_label-lesion_mask.nii.gz`` under ``sub-*/[ses-*/]anat/`` of ``--masks-dir``
   or, by default, of any ``derivatives/*/`` folder of the dataset that bids_msseg did not write;
2. split by subject (:func:`bids_msseg.train.split.split_scans`, seeded, with the hash of
   :func:`~bids_msseg.train.data.split_by_scan`): no subject is on both sides, so two sessions of
   one patient never leak across;
3. preprocess each FLAIR exactly as the participant level does
   (:func:`~bids_msseg.preproc.preprocess_flair`, honouring ``--n4``/``--skullstrip``) and bring its
   mask to the same RAS+ grid; results are cached in ``<work>/train/preproc`` (:mod:`bids_msseg.train.cache`);
4. compute the quantile reference from the *training* scans only (validation scans never shape the
   normalization), or keep the ``--init-model``'s reference when fine-tuning a quantile model, so
   the pretrained weights see the inputs they were trained on;
5. write one shard per scan to ``<work>/train/shards`` (:mod:`bids_msseg.train.shards`; existing ones are kept), plus
   ``--augment-quality`` degraded copies of the training scans (:mod:`bids_msseg.train.augment`);
6. train with :func:`bids_msseg.train.loop.train` into ``<work>/train/run`` (resumes from ``last``;
   with ``--synthetic-pool``, that pool's shards fill ``--synthetic-fraction`` of every batch;
   with ``--checkpoint-dir`` also keeps 16-bit weights-only copies of ``last`` and ``best`` and the
   log there, and a fresh ``-w`` resumes from them, so a training longer than a session goes on on
   another machine from a committed folder);
7. export the best checkpoint, or with ``--average-from`` the weight average
   (:mod:`bids_msseg.train.averaging`), (:func:`bids_msseg.train.export.export_bundle`) to
   ``<output_dir>/models/<train-name>/`` with a card naming the data, the validation Dice, the
   recipe and the threshold chosen on validation, or the operating point given with
   ``--threshold``/``--seed-threshold`` (e.g. the one a leave-site-out study chose).

``<work>/train/manifest.json`` records the split, reference and shard settings; when they change
shards are rebuilt, and a started training run is refused rather than silently continued on
other data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_msseg import __version__
from bids_msseg.boilerplate import readable_training_data
from bids_msseg.errors import EXIT_OK, UsageError
from bids_msseg.io import atomic_path, write_text_atomic
from bids_msseg.masks import find_training_pairs
from bids_msseg.model.bundle import BundleError, load_bundle
from bids_msseg.model.network import context_of, default_architecture
from bids_msseg.normalize import reference_from_quantiles
from bids_msseg.runtime import check_device, seed_everything, set_threads
from bids_msseg.settings import DEFAULT_ARCHITECTURE, DEFAULT_NORMALIZATION, Options, TrainSettings
from bids_msseg.train.cache import load_preprocessed, preprocess_scans
from bids_msseg.train.export import export_bundle
from bids_msseg.train.loop import TrainConfig, restore_portable, train
from bids_msseg.train.shards import build_shards, check_manifest, n_slices, synthetic_pool
from bids_msseg.train.split import TrainingScan, scans_from_pairs, split_scans
from bids_msseg.workdirs import check_work_dir

LOGGER = logging.getLogger(__name__)

#: Slice size of the shards, i.e. the network's input. Always 224 for real models; tests lower it
#: (monkeypatch) to train on CPU in seconds. It is recorded in the run's config and the bundle's card.
TRAIN_INPUT_SIZE = 224
_VAL_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


# ----------------------------------------------------------------------------- entry point


def _load_init_model(settings: TrainSettings):
    """The ``--init-model`` bundle (checked), or None."""
    if settings.init_model is None:
        return None
    try:
        bundle = load_bundle(settings.init_model)
    except BundleError as err:
        raise UsageError(f"--init-model: {err}") from err
    LOGGER.info("fine-tuning from %s (%s)", bundle.card.model_id, settings.init_model)
    return bundle


def _init_data(init) -> str:
    """What the ``--init-model`` was trained on (its card's ``training.data`` as the methods text words it),
    so a fine-tuned bundle's methods text credits both data sets; empty without one."""
    return readable_training_data(str((init.card.training or {}).get("data", ""))) if init is not None else ""


def _resolve_network(settings: TrainSettings, init) -> tuple[str, str, int]:
    """Architecture, normalization and context slices: the flags, else the initial model's, else the paper's."""
    if init is None:
        return (settings.architecture or DEFAULT_ARCHITECTURE, settings.normalization or DEFAULT_NORMALIZATION,
                settings.context or 0)
    arch = init.card.architecture.get("name", "")
    if settings.architecture and settings.architecture != arch:
        raise UsageError(f"--architecture {settings.architecture} differs from the --init-model's {arch}")
    init_context = context_of(init.card.architecture)
    if default_architecture(arch, init_context) != dict(init.card.architecture):
        raise UsageError(f"--init-model: architecture {init.card.architecture} is not one this version trains")
    context = init_context if settings.context is None else settings.context
    if context != init_context and init_context != 0:
        raise UsageError(f"--context-slices {context}: the --init-model takes {init_context}; only a 2D model "
                         "(0) can be widened")
    normalization = settings.normalization or init.card.normalization
    if normalization != init.card.normalization:
        LOGGER.warning("--train-normalization %s differs from the --init-model's %s: the pretrained weights "
                       "will see differently normalized inputs", normalization, init.card.normalization)
    if init.card.input_size != TRAIN_INPUT_SIZE:
        LOGGER.warning("--init-model was trained on %d-pixel slices, this training uses %d",
                       init.card.input_size, TRAIN_INPUT_SIZE)
    return arch, normalization, context


def _resume_portable(portable_dir: Path, run_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Guard ``--checkpoint-dir`` with the training's manifest (refuse one made on other data or
    another split), then start ``run_dir`` from it when ``-w`` has no checkpoint of its own."""
    saved = Path(portable_dir) / "manifest.json"
    if saved.is_file() and json.loads(saved.read_text()) != manifest:
        old = json.loads(saved.read_text())
        changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
        raise UsageError(f"--checkpoint-dir {portable_dir} holds a training on other data or settings "
                         f"({', '.join(changed)}); give another folder or delete it to start over")
    write_text_atomic(saved, json.dumps(manifest, indent=1) + "\n")
    restore_portable(portable_dir, run_dir)


def train_from_bids(options: Options) -> int:
    """Run the whole group-level training (module docstring) for ``options``; return the exit code."""
    settings = options.group.training
    check_work_dir(options.bids_dir, options.work_dir)
    check_device(options.device)
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


def _given_point(options: Options) -> str:
    """How the card's operating point was chosen when the command line gave it (``--threshold`` ...)."""
    flags = [f"--threshold {options.threshold:g}", f"--seed-threshold {options.seed_threshold or 0:g}"]
    if options.seed_threshold_thick is not None:
        flags.append(f"--seed-threshold-thick {options.seed_threshold_thick:g}")
    return f"given ({', '.join(flags)})"


def train_and_export(options: Options, settings: TrainSettings, train_scans: Sequence[TrainingScan],
                     val_scans: Sequence[TrainingScan], train_dir: Path, bundle_dir: Path,
                     dataset_names: Mapping[str, str], preproc_dir: Path | None = None) -> dict[str, Any]:
    """Steps 3-7 of the module docstring for an already split set of scans; return the training state.

    Work goes to ``train_dir`` (``manifest.json``, ``shards/``, ``run/``; preprocessing to
    ``preproc_dir``, default ``train_dir/preproc``) and the bundle to ``bundle_dir``. Used by
    ``group --train`` and by each experiment of the cross-site study (:mod:`bids_msseg.crosssite`).
    """
    if settings.average_from > settings.epochs:
        raise UsageError(f"--average-from {settings.average_from}: the training has only {settings.epochs} epoch(s)")
    seed_everything(settings.seed)
    init = _load_init_model(settings)
    architecture, normalization, context = _resolve_network(settings, init)
    scans = [*train_scans, *val_scans]
    cache = preprocess_scans(scans, preproc_dir or train_dir / "preproc", options.n4, options.skullstrip,
                             options.force_contrast, settings.seed)

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
        "normal_masks": sorted(s.key for s in scans if s.normal is not None),
        **({"augment_intensity": settings.augment_intensity} if settings.augment_intensity else {}),
    }
    pool: list[Path] = []
    if settings.synthetic_pool is not None:
        pool = synthetic_pool(settings.synthetic_pool, reference, TRAIN_INPUT_SIZE)
        manifest.update(synthetic_pool={"shards": len(pool), "folder": Path(settings.synthetic_pool).name},
                        synthetic_fraction=settings.synthetic_fraction)
    check_manifest(train_dir, manifest)
    train_paths, val_paths = build_shards(train_scans, val_scans, cache, train_dir / "shards", reference,
                                          TRAIN_INPUT_SIZE, settings.augment_quality, settings.seed)

    steps = settings.steps_per_epoch or max(1, sum(n_slices(p) for p in train_paths) // settings.batch_size)
    cfg = TrainConfig(architecture=architecture, normalization=normalization, epochs=settings.epochs,
                      steps_per_epoch=steps, batch_size=settings.batch_size, lr=settings.lr,
                      weight_decay=settings.weight_decay, lesion_weight=settings.lesion_weight,
                      val_fraction=settings.val_fraction, seed=settings.seed, device=options.device,
                      precision=options.precision, max_val_scans=len(val_paths), input_size=TRAIN_INPUT_SIZE,
                      lesion_sampling=settings.lesion_sampling, normal_fraction=settings.normal_fraction,
                      normal_weight=settings.normal_weight, lesion_balance=settings.lesion_balance, context=context,
                      augment_intensity=settings.augment_intensity, average_from=settings.average_from,
                      real_fraction=1.0 - settings.synthetic_fraction if pool else 0.0,
                      extra={"init_model": init.card.model_id if init else None,
                             "augment_quality": settings.augment_quality})
    LOGGER.info("training %s (%s, %s normalization) on %d shard(s)%s, validating on %d: %d epoch(s) x %d step(s) "
                "of %d slices", settings.name, architecture, normalization, len(train_paths),
                f" and {len(pool)} synthetic ones ({settings.synthetic_fraction:.0%} of each batch)" if pool else "",
                len(val_paths), cfg.epochs, cfg.steps_per_epoch, cfg.batch_size)
    run_dir = train_dir / "run"
    if settings.checkpoint_dir is not None:
        _resume_portable(settings.checkpoint_dir, run_dir, manifest)
    # with a pool, its shards are the main sampler's and the real ones fill their share of every batch
    state = train(run_dir, pool or train_paths, val_paths, cfg, val_thresholds=_VAL_THRESHOLDS,
                  init_weights=init.network.state_dict() if init is not None else None,
                  real_shards=train_paths if pool else None, portable_dir=settings.checkpoint_dir)

    def subjects(side: Sequence[TrainingScan]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in side:
            out.setdefault(s.dataset, [])
            if s.run.subject not in out[s.dataset]:
                out[s.dataset].append(s.run.subject)
        return out

    names = dict(dataset_names)
    info = {
        "data": f"{len(scans)} FLAIR scan(s) with expert lesion masks from {', '.join(names.values())}" + (
            f" and {len(pool)} synthetic scan(s) ({settings.synthetic_fraction:.0%} of each batch)" if pool else "") + (
            f", fine-tuned from {init.card.model_id} (trained on {init_data})" if (init_data := _init_data(init))
            else ""),
        "datasets": names,
        "subjects": {"train": subjects(train_scans), "validation": subjects(val_scans)},
        "n_scans": {"train": len(train_scans), "validation": len(val_scans),
                    "augmented_copies": len(train_scans) * settings.augment_quality, "synthetic": len(pool),
                    "with_normal_hyperintensity_masks": len(manifest["normal_masks"])},
        "split": f"by subject, seed {settings.seed}, validation fraction {settings.val_fraction}",
        "preprocessing": {"n4": options.n4, "skullstrip": options.skullstrip},
        "quantile_reference": reference_source if normalization == "quantile" else None,
        "init_model": init.card.model_id if init is not None else None,
        "augment_quality": settings.augment_quality,
        "recipe": {k: cfg_value for k, cfg_value in state["config"].items()
                   if k in ("architecture", "normalization", "epochs", "steps_per_epoch", "batch_size", "lr",
                            "weight_decay", "betas", "lesion_weight", "lesion_fraction", "val_fraction", "seed",
                            "input_size", "lesion_sampling", "normal_fraction", "normal_weight", "context",
                            "augment_intensity", "real_fraction", "average_from", "lesion_balance")},
        "weights": (f"mean of the weights after every step of epochs {settings.average_from}-{state['epoch']} "
                    "(stochastic weight averaging)" if settings.average_from else
                    "the epoch with the best validation Dice"),
        "threshold_chosen_on": (_given_point(options) if options.threshold is not None else
                                f"validation scans (max mean Dice over thresholds {list(_VAL_THRESHOLDS)})"),
        "bids_msseg_version": __version__,
    }
    export_bundle(run_dir, bundle_dir, reference, settings.name, info, threshold=options.threshold,
                  checkpoint="average" if settings.average_from else "best",
                  seed_threshold=options.seed_threshold or 0.0, seed_threshold_thick=options.seed_threshold_thick)
    with atomic_path(bundle_dir / "training_metrics.tsv") as tmp:
        shutil.copyfile(run_dir / "metrics.tsv", tmp)
    chosen = json.loads((run_dir / "average.json").read_text()) if settings.average_from else state
    LOGGER.info("model %s: validation Dice %.4f at threshold %.2f (%s); the bundle's threshold is %s; "
                "segment with --model %s", settings.name, chosen["best_dice"], chosen.get("best_threshold", 0.5),
                f"weight average of epochs {settings.average_from}-{state['epoch']}" if settings.average_from
                else f"epoch {state['best_epoch']} of {state['epoch']}",
                "that one" if options.threshold is None else f"{options.threshold:g} (given)", bundle_dir)
    return state
