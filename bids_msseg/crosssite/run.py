"""Running a cross-site study (``bids_msseg bids_dir out group --cross-site``), resumably.

1. pair every FLAIR of ``bids_dir`` and the ``--extra-bids-dir`` datasets with its expert mask and
   read each scan's site (:mod:`bids_msseg.crosssite.sites`); the ``--extra-train-dataset`` datasets'
   scans are train-only (:mod:`bids_msseg.crosssite.plan`);
2. plan the experiments (:mod:`bids_msseg.crosssite.plan`) and write ``crosssite/plan.json``;
3. preprocess every scan once into ``<work>/crosssite/preproc`` (the ``group --train`` cache);
4. per experiment: train and export a bundle to ``crosssite/models/<id>/`` with the machinery of
   ``group --train`` (:func:`~bids_msseg.train.bids_training.train_and_export`, work in
   ``<work>/crosssite/<id>/``), then predict every site's test scans into
   ``crosssite/predictions/<id>/<scan>_mask.nii.gz`` (on the scan's RAS+ grid, with the model's
   own threshold, seed threshold and lesion definition) and its probability map ``<scan>_probseg.nii.gz``
   (the operating-point table rescores it); a ``--compare-model`` bundle is not trained, only predicts;
5. evaluate every prediction against its expert mask, compare the models' predictions
   (consistency), run the statistics, summarize per site and pooled (:mod:`bids_msseg.crosssite.protocol`;
   under ``--holdout site`` also the operating-point grid) and write the tables and the HTML report
   (:mod:`bids_msseg.crosssite.report`).

Resuming: an experiment whose bundle has its ``crosssite.json`` (written last, atomically) with the
same data and recipe is not trained again, and predictions that exist are kept; an interrupted
training resumes from its last epoch. A finished experiment whose data or recipe changed is
refused (64); ``--overwrite`` redoes every experiment from scratch. Step 5 always runs on what
is stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.crosssite.evaluate import pairwise_dice, scan_metrics
from bids_msseg.crosssite.plan import Arm, Experiment, StudyPlan, arms, build_plan
from bids_msseg.crosssite.protocol import best_operating_point, model_group, operating_points, summary_table
from bids_msseg.crosssite.report import write_outputs
from bids_msseg.crosssite.sites import assign_sites, choose_rule
from bids_msseg.errors import EXIT_OK, UsageError
from bids_msseg.io import atomic_path, write_text_atomic
from bids_msseg.lesions import LesionDefinition, binarize, is_thick_slice, seed_threshold_for
from bids_msseg.masks import dataset_root, find_training_pairs
from bids_msseg.model.bundle import BundleError, load_bundle
from bids_msseg.model.predict import resolve_device
from bids_msseg.runtime import check_device, set_threads
from bids_msseg.segment import segment_volume
from bids_msseg.settings import Options, TrainSettings
from bids_msseg.train import bids_training
from bids_msseg.train.cache import load_preprocessed, preprocess_scans
from bids_msseg.train.split import TrainingScan, scans_from_pairs
from bids_msseg.workdirs import check_work_dir

LOGGER = logging.getLogger(__name__)

SPEC_NAME = "crosssite.json"


def study_dir(options: Options) -> Path:
    """``<output_dir>/crosssite``: everything the study writes but its work files."""
    return options.output_dir / "crosssite"


def ras_affine(path: Path) -> np.ndarray:
    """The affine of ``path``'s image reoriented to RAS+ (as ``nib.as_closest_canonical``), from its header."""
    img = nib.load(str(path))
    ornt = nib.orientations.io_orientation(img.affine)
    return img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape[:3])


def experiment_spec(experiment: Experiment, settings: TrainSettings, options: Options) -> dict[str, Any]:
    """What an experiment's model depends on; a stored model is reused only when this is unchanged."""
    recipe = {k: getattr(settings, k) for k in ("epochs", "steps_per_epoch", "batch_size", "lr", "weight_decay",
                                                "lesion_weight", "augment_quality", "seed", "lesion_sampling",
                                                "normal_fraction", "normal_weight")}
    if settings.context is not None:  # only when given: studies made before the option stay valid
        recipe["context"] = settings.context
    if settings.augment_intensity:  # likewise
        recipe["augment_intensity"] = settings.augment_intensity
    if settings.average_from:  # likewise
        recipe["average_from"] = settings.average_from
    if settings.lesion_balance:  # likewise
        recipe["lesion_balance"] = settings.lesion_balance
    if settings.synthetic_pool is not None:  # likewise
        recipe.update(synthetic_pool=str(Path(settings.synthetic_pool).resolve()),
                      synthetic_fraction=settings.synthetic_fraction)
    return json.loads(json.dumps({
        "id": experiment.id, "train": experiment.train, "val": experiment.val,
        "architecture": experiment.arm.architecture, "normalization": experiment.arm.normalization,
        **({"overrides": dict(experiment.arm.overrides)} if experiment.arm.overrides else {}),
        "recipe": recipe, "init_model": str(settings.init_model) if settings.init_model else None,
        "input_size": bids_training.TRAIN_INPUT_SIZE, "n4": options.n4, "skullstrip": options.skullstrip,
    }))


def training_dir(work: Path, experiment: Experiment, spec: Mapping[str, Any]) -> Path:
    """The experiment's training work folder: one per spec, so studies that differ in their data or recipe
    (another ``--synthetic-pool``, another arm's options) can share a work directory and its preprocessing
    cache without one resuming the other's training."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return work / experiment.id / digest


def _model_ready(experiment: Experiment, spec: Mapping[str, Any], out: Path, work: Path, overwrite: bool) -> bool:
    """True when the experiment's finished model matches ``spec``; clears what a (re)training replaces.

    ``overwrite`` discards the experiment's model, predictions and work files (of every spec), so it starts over.
    """
    bundle_dir, predictions = out / "models" / experiment.id, out / "predictions" / experiment.id
    spec_path = bundle_dir / SPEC_NAME
    if overwrite:
        for folder in (work / experiment.id, bundle_dir, predictions):
            shutil.rmtree(folder, ignore_errors=True)
        return False
    if spec_path.is_file():
        if json.loads(spec_path.read_text()) == spec:
            return True
        raise UsageError(f"{experiment.id}: the data or recipe changed since its model was trained "
                         f"({spec_path}); give --overwrite to redo the study, or use another output directory")
    shutil.rmtree(predictions, ignore_errors=True)  # made by an earlier model, if any
    return False


def _train(experiment: Experiment, plan_scans: Mapping[str, TrainingScan], names: Mapping[str, str],
           settings: TrainSettings, options: Options, out: Path, work: Path) -> None:
    """Train and export one experiment's model (resuming its work directory), then mark it done."""
    if experiment.model:
        return
    spec = experiment_spec(experiment, settings, options)
    if _model_ready(experiment, spec, out, work, options.overwrite):
        LOGGER.info("%s: model done, skipped", experiment.id)
        return
    train = [plan_scans[k] for k in experiment.train]
    val = [plan_scans[k] for k in experiment.val]
    used = {s.dataset for s in (*train, *val)}
    exp_settings = dataclasses.replace(settings, name=experiment.id, architecture=experiment.arm.architecture,
                                       normalization=experiment.arm.normalization, **dict(experiment.arm.overrides))
    LOGGER.info("%s: training on %s (%d training, %d validation scan(s))", experiment.id, experiment.train_set,
                len(train), len(val))
    bundle_dir = out / "models" / experiment.id
    bids_training.train_and_export(options, exp_settings, train, val, training_dir(work, experiment, spec), bundle_dir,
                                   {k: v for k, v in names.items() if k in used}, preproc_dir=work / "preproc")
    write_text_atomic(bundle_dir / SPEC_NAME, json.dumps(spec, indent=1) + "\n")


def prediction_path(out: Path, experiment: Experiment, key: str, kind: str = "mask") -> Path:
    """Where ``experiment``'s prediction of scan ``key`` is stored: ``kind`` ``mask`` or ``probseg``."""
    return out / "predictions" / experiment.id / f"{key}_{kind}.nii.gz"


def model_dir(out: Path, experiment: Experiment) -> Path:
    """The bundle of ``experiment``: the given one, or the one the study trained."""
    return Path(experiment.model) if experiment.model else out / "models" / experiment.id


def _predict(experiment: Experiment, plan: StudyPlan, plan_scans: Mapping[str, TrainingScan],
             cache: Mapping[str, Path], options: Options, out: Path) -> None:
    """Predict the scans it is tested on that have no stored prediction of this experiment's model.

    The mask is written last: a scan counts as predicted when its mask exists."""
    todo = [k for k in plan.tested(experiment) if not prediction_path(out, experiment, k).is_file()]
    if not todo:
        LOGGER.info("%s: predictions done, skipped", experiment.id)
        return
    bundle = load_bundle(model_dir(out, experiment))
    device = resolve_device(options.device)
    card = bundle.card
    definition = LesionDefinition(card.connectivity, card.min_lesion_size_mm3)
    for key in todo:
        vol = load_preprocessed(cache[key])
        zooms = tuple(float(z) for z in vol["zooms"])
        probability = segment_volume(vol["corrected"], vol["brain"].astype(bool), zooms, bundle, device,
                                     options.precision)
        seed = seed_threshold_for(zooms, card.seed_threshold, card.seed_threshold_thick)
        mask, _, n = binarize(probability, card.threshold, float(np.prod(zooms)), definition, seed)
        affine = ras_affine(plan_scans[key].run.path)
        for kind, data in (("probseg", probability.astype(np.float32)), ("mask", mask)):
            with atomic_path(prediction_path(out, experiment, key, kind)) as tmp:
                nib.save(nib.Nifti1Image(data, affine), str(tmp))
        LOGGER.info("%s: %s predicted (%d lesion(s))", experiment.id, key, n)


def evaluate(plan: StudyPlan, plan_scans: Mapping[str, TrainingScan], cache: Mapping[str, Path], out: Path,
             definition: LesionDefinition) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-scan metrics, consistency) from the stored predictions of every experiment."""
    site_of = plan.site_of
    rows: list[dict] = []
    agreement: list[dict] = []
    tested = {experiment: set(plan.tested(experiment)) for experiment in plan.experiments}
    for key in plan.test_scans:
        vol = load_preprocessed(cache[key])
        truth = vol["lesion"].astype(bool)
        voxel_volume = float(np.prod(vol["zooms"]))
        masks: dict[Experiment, np.ndarray] = {}
        for experiment in plan.experiments:
            if key not in tested[experiment]:
                continue
            path = prediction_path(out, experiment, key)
            if not path.is_file():
                LOGGER.warning("%s: no prediction of %s; not evaluated", experiment.id, key)
                continue
            masks[experiment] = np.asarray(nib.load(str(path)).dataobj) > 0
            scan = plan_scans[key]
            rows.append({"arm": experiment.arm.label, "ablation": experiment.arm.ablation or "",
                         "train_set": experiment.train_set, "n_train_sites": len(experiment.train_sites),
                         "test_site": site_of[key], "in_domain": site_of[key] in experiment.train_sites,
                         "scan": key, "subject": scan.run.subject, "session": scan.run.session or "",
                         **scan_metrics(masks[experiment], truth, voxel_volume, definition)})
        for arm in dict.fromkeys(e.arm for e in masks):
            same_arm = {e.train_set: m for e, m in masks.items() if e.arm == arm}
            agreement += [{"arm": arm.label, "test_site": site_of[key], "scan": key, "train_set_a": a,
                           "train_set_b": b, "dice": dice} for a, b, dice in pairwise_dice(same_arm)]
    per_scan = pd.DataFrame(rows)
    consistency = pd.DataFrame(agreement, columns=["arm", "test_site", "scan", "train_set_a", "train_set_b", "dice"])
    return per_scan, consistency


def given_models(folders: Sequence[Path]) -> list[tuple[Arm, str]]:
    """(arm, folder) of each ``--compare-model`` bundle, its arm read from its card (checked on load)."""
    out = []
    for folder in folders:
        try:
            card = load_bundle(folder).card
        except BundleError as err:
            raise UsageError(f"--compare-model: {err}") from err
        out.append((Arm(card.architecture.get("name", ""), card.normalization), str(Path(folder).resolve())))
    names = [Path(f).name for _, f in out]
    if len(set(names)) < len(names):
        raise UsageError(f"--compare-model: folder names must differ (they name the models): {names}")
    return out


def run_study(options: Options) -> int:
    """The whole study (module docstring) for ``options``; return the exit code."""
    settings = options.group.training
    cs = options.group.crosssite
    if settings.checkpoint_dir is not None:
        raise UsageError("--checkpoint-dir keeps one training's checkpoint (group --train); a cross-site study "
                         "resumes each of its trainings from -w")
    check_work_dir(options.bids_dir, options.work_dir)
    check_device(options.device)
    set_threads(options.omp_nthreads)
    out, work = study_dir(options), options.work_dir / "crosssite"

    study_dirs = list(dict.fromkeys([options.bids_dir, *cs.extra_bids_dirs]))
    train_only_dirs = [d for d in dict.fromkeys(settings.extra_datasets) if d not in study_dirs]
    pairs = find_training_pairs(
        [*study_dirs, *train_only_dirs], settings.masks_dir,
        participant_labels=options.participant_label, session_labels=options.session_label,
        bids_filters=options.flair_filters, skip_validation=options.skip_bids_validation,
        database_dir=options.work_dir / "bids_db", exclude=[options.output_dir])
    all_scans, names = scans_from_pairs(pairs)
    train_only_roots = {Path(d).resolve() for d in train_only_dirs}
    train_only = {s.key for s in all_scans if dataset_root(s.run).resolve() in train_only_roots}
    scans = [s for s in all_scans if s.key not in train_only]
    rule = choose_rule(scans, cs.site_column, cs.site_fields)
    sites = assign_sites(scans, rule)
    study_arms = arms(settings.architecture, settings.normalization, cs.ablations, settings)
    plan = build_plan(scans, sites, cs.combinations, study_arms, cs.test_fraction, settings.val_fraction,
                      settings.seed, cs.sites or None, cs.holdout, given_models(cs.compare_models), train_only)
    plan_json = {"site_rule": {"kind": rule.kind, "names": list(rule.names)}, "datasets": names,
                 "test_fraction": cs.test_fraction, "combinations": list(cs.combinations), **plan.to_json()}
    write_text_atomic(out / "plan.json", json.dumps(plan_json, indent=1) + "\n")

    plan_scans = {s.key: s for s in all_scans if s.key in plan.site_of or s.key in train_only}
    cache = preprocess_scans(list(plan_scans.values()), work / "preproc", options.n4, options.skullstrip,
                             options.force_contrast, settings.seed)
    for i, experiment in enumerate(plan.experiments, 1):
        LOGGER.info("[%d/%d] experiment %s", i, len(plan.experiments), experiment.id)
        _train(experiment, plan_scans, names, settings, options, out, work)
        _predict(experiment, plan, plan_scans, cache, options, out)

    definition = LesionDefinition(min_size_mm3=options.min_lesion_size if options.min_lesion_size is not None
                                  else LesionDefinition.min_size_mm3)
    per_scan, consistency = evaluate(plan, plan_scans, cache, out, definition)
    groups = {e.train_set: model_group(e, plan) for e in plan.experiments}
    summary = summary_table(per_scan, groups)
    operating = pd.DataFrame()
    if plan.holdout == "site":  # the protocol: rescore the stored probability maps on the grid

        def truth_of(key: str) -> tuple[np.ndarray, float]:
            vol = load_preprocessed(cache[key])
            return vol["lesion"].astype(bool), float(np.prod(vol["zooms"]))

        def thick_of(key: str) -> bool:
            with np.load(cache[key], allow_pickle=False) as z:  # only the voxel sizes are read
                return is_thick_slice(z["zooms"])

        operating = operating_points(plan, truth_of, lambda e, k: prediction_path(out, e, k, "probseg"), definition,
                                     thick_of=thick_of)
        for _, row in best_operating_point(operating).iterrows():
            LOGGER.info("%s %s, best by %s: pooled lesion F1 %.3f, Dice %.3f at threshold %g, seed threshold %g "
                        "(thick-slice scans %g)", row["arm"], row["model"], row["criterion"], row["lesion_f1"],
                        row["dice"], row["threshold"], row["seed_threshold"], row["seed_threshold_thick"])
    write_outputs(out, plan, per_scan, consistency, plan_json, summary, operating)
    return EXIT_OK

