#!/usr/bin/env python
"""Longitudinal change detection against the Ljubljana expert change masks (issue 16).

For patients 01, 03 and 12 (Lesjak et al. 2016; ../shared/data/longitudinal and raw-flair), this
builds a two-session BIDS dataset of the raw FLAIRs (symlinks), runs ``bids_msseg participant`` on it
(segmentation of each visit, then the longitudinal step), and compares on each patient's common
grid, through the dataset's own ITK transforms (common -> raw FLAIR, LPS):

* **bids_msseg**: new + enlarging voxels of the change map (the baseline-grid map carried to the
  common grid through study 1's transform);
* **subtraction**: the naive baseline, each visit's lesion mask carried to the common grid through
  its own study's transform, follow-up minus baseline.

Per patient: change Dice, lesion-wise new-lesion sensitivity (an expert change lesion is found when
any predicted voxel overlaps it) and false new lesions (predicted change lesions overlapping no
expert change), lesions by the project's lesion definition on the common grid; both predictions
are restricted to the dataset's brain mask. Also reported: Dice against all change (new, enlarging,
shrinking, disappearing) and the share of expert-change voxels that are brighter at follow-up (which
says whether the experts marked appearing lesions only).

    nice -n 15 python scripts/evaluate_longitudinal.py --work /tmp/lj [--model BUNDLE] [--data ../shared/data]

The model is the packaged default unless ``--model`` names another bundle, so the figures can be
re-made for a new model; ``--work`` keeps the participant outputs, and a rerun reuses them when
model and settings are unchanged (pass ``--overwrite`` to recompute).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.derivatives import derivative_paths
from bids_msseg.lesions import LesionDefinition, label_lesions
from bids_msseg.longitudinal.change import NEGATIVE_LABELS, POSITIVE_LABELS
from bids_msseg.longitudinal.outputs import pair_paths, subject_paths
from bids_msseg.longitudinal.registration import read_itk_affine, resample, vox2vox
from bids_msseg.metrics import voxel_metrics

LOGGER = logging.getLogger("evaluate_longitudinal")
PATIENTS = ("01", "03", "12")


def build_bids(data: Path, bids: Path, patients: tuple[str, ...]) -> None:
    """A BIDS dataset of symlinks: sub-<NN>/ses-<study>/anat/sub-<NN>_ses-<study>_FLAIR.nii.gz."""
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "Ljubljana longitudinal MS (raw FLAIRs)", "BIDSVersion": "1.10.0", "License": "CC-BY"}))
    (bids / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{p}\n" for p in patients))
    for p in patients:
        for s in ("1", "2"):
            link = bids / f"sub-{p}/ses-{s}/anat/sub-{p}_ses-{s}_FLAIR.nii.gz"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(data / f"raw-flair/ljubljana-longitudinal_patient{p}_study{s}_FLAIR.nii.gz")


def to_common(path: Path, transform: Path, common: nib.Nifti1Image) -> np.ndarray:
    """A label image of a raw FLAIR's grid on the common grid (nearest neighbour)."""
    img = nib.load(path)
    matrix = vox2vox(common.affine, img.affine, read_itk_affine(transform))
    return resample(np.asarray(img.dataobj), matrix, common.shape, order=0)


def lesion_scores(pred: np.ndarray, truth: np.ndarray, voxel_mm3: float, definition: LesionDefinition) -> dict:
    lp, n_p = label_lesions(pred, voxel_mm3, definition)
    lg, n_g = label_lesions(truth, voxel_mm3, definition)
    found = np.unique(lg[(lp > 0) & (lg > 0)]).size
    true_pred = np.unique(lp[(lp > 0) & (lg > 0)]).size
    return {"expert_lesions": n_g, "found": found, "sensitivity": found / n_g if n_g else float("nan"),
            "predicted_lesions": n_p, "false_new_lesions": n_p - true_pred}


def evaluate(data: Path, out: Path, patients: tuple[str, ...], definition: LesionDefinition) -> pd.DataFrame:
    rows = []
    for p in patients:
        common = nib.load(data / f"longitudinal/patient{p}_gt.nii.gz")
        truth = np.asarray(common.dataobj) > 0
        brain = np.asarray(nib.load(data / f"longitudinal/patient{p}_brainmask.nii.gz").dataobj) > 0
        voxel_mm3 = float(abs(np.linalg.det(common.affine[:3, :3])))
        tx = {s: data / f"longitudinal/patient{p}_study{s}_FLAIR_to_common_space.txt" for s in ("1", "2")}
        rel = {s: f"sub-{p}/ses-{s}/anat/sub-{p}_ses-{s}_FLAIR.nii.gz" for s in ("1", "2")}
        raw = {s: nib.load(data / f"raw-flair/ljubljana-longitudinal_patient{p}_study{s}_FLAIR.nii.gz") for s in tx}
        flair = {s: resample(np.asarray(raw[s].dataobj, np.float32), vox2vox(common.affine, raw[s].affine,
                                                                              read_itk_affine(tx[s])), common.shape)
                 for s in tx}
        inside = truth & (flair["1"] > 0) & (flair["2"] > 0)
        ratio = flair["2"][brain].mean() / flair["1"][brain].mean()
        brighter = float(np.mean(flair["2"][inside] > flair["1"][inside] * ratio)) if inside.any() else float("nan")

        change = to_common(pair_paths(out, rel["1"], rel["2"])["change_baseline"], tx["1"], common)
        masks = {s: to_common(derivative_paths(out, rel[s])["mask"], tx[s], common) > 0 for s in tx}
        summary = pd.read_csv(subject_paths(out, p)["summary"], sep="\t").iloc[0]
        methods = {
            "bids_msseg": (np.isin(change, POSITIVE_LABELS), np.isin(change, POSITIVE_LABELS + NEGATIVE_LABELS)),
            "subtraction": (masks["2"] & ~masks["1"], masks["2"] ^ masks["1"]),
        }
        for method, (positive, any_change) in methods.items():
            positive, any_change = positive & brain, any_change & brain
            rows.append({
                "patient": p, "method": method,
                "dice": round(voxel_metrics(positive, truth)["dice"], 4),
                **lesion_scores(positive, truth, voxel_mm3, definition),
                "dice_all_change": round(voxel_metrics(any_change, truth)["dice"], 4),
                "predicted_ml": round(positive.sum() * voxel_mm3 / 1000, 3),
                "expert_ml": round(truth.sum() * voxel_mm3 / 1000, 3),
                "expert_brighter_at_followup": round(brighter, 3),
                "registration_brain_dice": summary.get("registration_brain_dice"),
                "seconds_per_pair": summary.get("seconds"),
            })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data")
    parser.add_argument("--work", type=Path, required=True, help="folder for the dataset, outputs and work files")
    parser.add_argument("--model", type=Path, help="model bundle (default: the packaged model)")
    parser.add_argument("--patients", nargs="+", default=list(PATIENTS))
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--omp-nthreads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bids_msseg.cli.run import main as bids_msseg  # the whole participant level, longitudinal step included

    data, work = args.data.resolve(), args.work.resolve()
    patients = tuple(args.patients)
    build_bids(data, work / "bids", patients)
    cli = [str(work / "bids"), str(work / "out"), "participant", "-w", str(work / "work"), "--random-seed", "0",
           "--nprocs", str(args.nprocs), "--omp-nthreads", str(args.omp_nthreads)]
    cli += ["--model", str(args.model)] if args.model else []
    cli += ["--overwrite"] if args.overwrite else []
    rc = bids_msseg(cli)
    if rc:
        LOGGER.error("bids_msseg participant returned %d", rc)
        return rc
    card = json.loads((work / "out" / "dataset_description.json").read_text())["GeneratedBy"][0]
    mask_meta = json.loads(derivative_paths(work / "out", f"sub-{patients[0]}/ses-1/anat/sub-{patients[0]}_ses-1_FLAIR"
                                            ".nii.gz")["mask_json"].read_text())
    definition = LesionDefinition(connectivity={6: 1, 18: 2, 26: 3}[mask_meta["Connectivity"]],
                                  min_size_mm3=mask_meta["MinimumLesionSize_mm3"])
    table = evaluate(data, work / "out", patients, definition)
    table.insert(2, "model", mask_meta["ModelID"])
    table.to_csv(work / "longitudinal_evaluation.tsv", sep="\t", index=False)
    print(f"bids_msseg {card.get('Version')}, model {mask_meta['ModelID']}, threshold {mask_meta['Threshold']}")
    print(table.drop(columns=["model"]).to_markdown(index=False))
    print("\nmedians:\n" + table.groupby("method")[["dice", "sensitivity", "false_new_lesions",
                                                   "dice_all_change"]].median().to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
