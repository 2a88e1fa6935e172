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

The expert masks mark every lesion change, appearing and disappearing alike (patient 12's are mostly
darker at follow-up), so per patient:

* ``change_dice``: Dice of all predicted change (new, enlarging, shrinking, disappearing voxels; for
  the subtraction, the masks' symmetric difference) against the expert mask;
* ``new_dice``: Dice of the new + enlarging voxels (subtraction: follow-up minus baseline) alone;
* ``new_sensitivity``: expert change lesions that *appear* (mean FLAIR brighter at follow-up, measured
  on the common grid through the dataset's transforms, each study divided by its brain median)
  overlapped by a predicted new/enlarging voxel, over all such lesions;
* ``false_new_lesions``: predicted new/enlarging lesions overlapping no expert change;
* ``change_sensitivity`` / ``false_change_lesions``: the same for all change;
* ``registration_vs_dataset_mm``: median distance, over the brain, between where bids_msseg's own
  registration and the dataset's transforms put a common-grid point in study 2;
* ``gone_lesions`` / ``false_gone_lesions``: lesions called gone at follow-up (change map label 5,
  disappearing) and those of them overlapping no expert change.

The row ``bids_msseg (not seen as gone)`` scores the same outputs with the lesions *not seen at
follow-up* (label 6) counted as disappearing, which is what the rule called them before it asked
for strong evidence (docs/longitudinal.md): the two rows measure that change on one run.

Lesions follow the project's lesion definition, on the common grid; predictions are restricted to
the dataset's brain mask.

    nice -n 10 python scripts/evaluate_longitudinal.py --work /tmp/lj [--model BUNDLE] [--data ../shared/data]

The model is the packaged default unless ``--model`` names another bundle, so the figures can be
re-made for a new model; ``--work`` keeps the participant outputs, and a rerun reuses them when
model and settings are unchanged (pass ``--overwrite`` to recompute). ``--also-registration-mm 0``
reruns the longitudinal step (in process, same settings, on a copy of the outputs) with the
registration fitted on another grid (0: the baseline's own) and adds its rows (``method`` names
the grid), to check that the default 2 mm fit costs no accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from bids_msseg.derivatives import derivative_paths
from bids_msseg.lesions import LesionDefinition, connectivity_of, label_lesions
from bids_msseg.longitudinal.change import NEGATIVE_LABELS, POSITIVE_LABELS, UNCERTAIN_LABELS
from bids_msseg.longitudinal.outputs import pair_paths, subject_paths
from bids_msseg.longitudinal.registration import REGISTRATION_MM, read_itk_affine, resample, vox2vox
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


def detection(pred: np.ndarray, truth_labels: np.ndarray, wanted: np.ndarray, voxel_mm3: float,
              definition: LesionDefinition) -> dict:
    """Expert lesions in ``wanted`` (their numbers in ``truth_labels``) overlapped by ``pred``, and
    predicted lesions overlapping no expert change at all."""
    lp, n_p = label_lesions(pred, voxel_mm3, definition)
    hit = set(np.unique(truth_labels[(lp > 0) & (truth_labels > 0)]).tolist())
    found = sum(1 for k in wanted if k in hit)
    true_pred = np.unique(lp[(lp > 0) & (truth_labels > 0)]).size
    return {"found": found, "of": len(wanted), "sensitivity": round(found / len(wanted), 3) if len(wanted) else None,
            "predicted_lesions": n_p, "false_lesions": n_p - true_pred}


def evaluate(data: Path, out: Path, patients: tuple[str, ...], definition: LesionDefinition,
             methods_wanted: tuple[str, ...] = ("bids_msseg", "bids_msseg (not seen as gone)", "subtraction"),
             label: str = "") -> pd.DataFrame:
    """One row per patient and method (``label`` is appended to the method's name)."""
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
        # the expert change lesions, and which of them appear (brighter at follow-up, measured on the common
        # grid through the dataset's own transforms: independent of bids_msseg's registration)
        truth_labels, n_truth = label_lesions(truth, voxel_mm3, definition)
        both = brain & (flair["1"] > 0) & (flair["2"] > 0)
        ref_diff = flair["2"] / np.median(flair["2"][both]) - flair["1"] / np.median(flair["1"][both])
        mean_diff = ndimage.mean(ref_diff, truth_labels, np.arange(1, n_truth + 1)) if n_truth else np.array([])
        appearing = [k + 1 for k in range(n_truth) if mean_diff[k] > 0]

        pair = pair_paths(out, rel["1"], rel["2"])
        change = to_common(pair["change_baseline"], tx["1"], common)
        registration = json.loads(pair["change_followup_json"].read_text())["Registration"]
        ours = np.asarray(registration["BaselineToFollowup_LPS"])
        masks = {s: to_common(derivative_paths(out, rel[s])["mask"], tx[s], common) > 0 for s in tx}
        summary = pd.read_csv(subject_paths(out, p)["summary"], sep="\t").iloc[0]
        # our registration (study 1 -> study 2 points) against the dataset's: common -> 1 -> 2 vs common -> 2
        points = np.argwhere(brain)[::50]
        ijk = np.c_[points, np.ones(len(points))].T
        lps = np.diag([-1.0, -1, 1, 1]) @ common.affine @ ijk
        t1, t2 = read_itk_affine(tx["1"]), read_itk_affine(tx["2"])
        disagreement = np.linalg.norm((ours @ t1 @ lps - t2 @ lps)[:3], axis=0)
        methods = {
            "bids_msseg": (np.isin(change, POSITIVE_LABELS), np.isin(change, POSITIVE_LABELS + NEGATIVE_LABELS),
                           change == 5),
            "bids_msseg (not seen as gone)": (
                np.isin(change, POSITIVE_LABELS), np.isin(change, POSITIVE_LABELS + NEGATIVE_LABELS + UNCERTAIN_LABELS),
                np.isin(change, (5, *UNCERTAIN_LABELS))),
            "subtraction": (masks["2"] & ~masks["1"], masks["2"] ^ masks["1"], None),
        }
        for method in methods_wanted:
            positive, any_change = (m & brain for m in methods[method][:2])
            gone = (detection(methods[method][2] & brain, truth_labels, list(range(1, n_truth + 1)), voxel_mm3,
                              definition) if methods[method][2] is not None else None)
            new = detection(positive, truth_labels, appearing, voxel_mm3, definition)
            every = detection(any_change, truth_labels, list(range(1, n_truth + 1)), voxel_mm3, definition)
            rows.append({
                "patient": p, "method": method + label,
                "change_dice": round(voxel_metrics(any_change, truth)["dice"], 4),
                "new_dice": round(voxel_metrics(positive, truth)["dice"], 4),
                "expert_lesions": n_truth, "expert_appearing": len(appearing),
                "new_found": new["found"], "new_sensitivity": new["sensitivity"],
                "false_new_lesions": new["false_lesions"], "predicted_new_lesions": new["predicted_lesions"],
                "change_found": every["found"], "change_sensitivity": every["sensitivity"],
                "false_change_lesions": every["false_lesions"],
                "predicted_change_ml": round(any_change.sum() * voxel_mm3 / 1000, 3),
                "expert_ml": round(truth.sum() * voxel_mm3 / 1000, 3),
                "gone_lesions": gone["predicted_lesions"] if gone else None,
                "false_gone_lesions": gone["false_lesions"] if gone else None,
                "registration_brain_dice": summary.get("registration_brain_dice"),
                "registration_vs_dataset_mm": round(float(np.median(disagreement)), 2),
                "seconds_per_pair": summary.get("seconds"),
            })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data")
    parser.add_argument("--work", type=Path, required=True, help="folder for the dataset, outputs and work files")
    parser.add_argument("--model", type=Path, help="model bundle (default: the packaged model)")
    parser.add_argument("--patients", nargs="+", default=list(PATIENTS))
    parser.add_argument("--overwrite", action="store_true", help="recompute the segmentations too")
    parser.add_argument("--recompute-change", action="store_true",
                        help="recompute the longitudinal step only (e.g. after changing the change rule)")
    parser.add_argument("--also-registration-mm", type=float, nargs="*", default=[],
                        help="also score the longitudinal step with the registration fitted on these grids (0: full)")
    parser.add_argument("--nprocs", type=int, help="passed to bids_msseg (default: its own, all CPUs)")
    parser.add_argument("--omp-nthreads", type=int, help="passed to bids_msseg (default: its own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bids_msseg.cli.run import main as bids_msseg  # the whole participant level, longitudinal step included

    data, work = args.data.resolve(), args.work.resolve()
    patients = tuple(args.patients)
    build_bids(data, work / "bids", patients)
    cli = [str(work / "bids"), str(work / "out"), "participant", "-w", str(work / "work"), "--random-seed", "0"]
    cli += ["--nprocs", str(args.nprocs)] if args.nprocs else []
    cli += ["--omp-nthreads", str(args.omp_nthreads)] if args.omp_nthreads else []
    cli += ["--model", str(args.model)] if args.model else []
    cli += ["--overwrite"] if args.overwrite else []
    if args.recompute_change:
        for p in patients:
            subject_paths(work / "out", p)["summary"].unlink(missing_ok=True)
    rc = bids_msseg(cli)
    if rc:
        LOGGER.error("bids_msseg participant returned %d", rc)
        return rc
    card = json.loads((work / "out" / "dataset_description.json").read_text())["GeneratedBy"][0]
    mask_meta = json.loads(derivative_paths(work / "out", f"sub-{patients[0]}/ses-1/anat/sub-{patients[0]}_ses-1_FLAIR"
                                            ".nii.gz")["mask_json"].read_text())
    definition = LesionDefinition(connectivity=connectivity_of(mask_meta["Connectivity"]),
                                  min_size_mm3=mask_meta["MinimumLesionSize_mm3"])
    table = evaluate(data, work / "out", patients, definition)
    table.insert(2, "registration_mm", REGISTRATION_MM)
    for registration_mm in args.also_registration_mm:
        from bids_msseg.bids import collect_flair_runs  # lazy: only for this comparison
        from bids_msseg.longitudinal import run_longitudinal

        # a copy of the outputs, so that those of the command line stay as it wrote them
        other = work / f"out_registration-{registration_mm:g}mm"
        shutil.rmtree(other, ignore_errors=True)
        shutil.copytree(work / "out", other)
        runs = collect_flair_runs(work / "bids", participant_labels=list(patients), database_dir=work / "compare_db")
        run_longitudinal(other, runs, bids_dir=work / "bids", threshold=float(mask_meta["Threshold"]),
                         definition=definition, seed_threshold=float(mask_meta.get("SeedThreshold", 0.0)),
                         meta={"ModelID": mask_meta["ModelID"]}, registration_mm=registration_mm)
        extra = evaluate(data, other, patients, definition, ("bids_msseg",),
                         f" (registration {registration_mm:g} mm)" if registration_mm else " (registration full grid)")
        extra.insert(2, "registration_mm", registration_mm)
        table = pd.concat([table, extra], ignore_index=True)
    table.insert(2, "model", mask_meta["ModelID"])
    table.to_csv(work / "longitudinal_evaluation.tsv", sep="\t", index=False)
    print(f"bids_msseg {card.get('Version')}, model {mask_meta['ModelID']}, threshold {mask_meta['Threshold']}, "
          f"seed threshold {mask_meta.get('SeedThreshold', 0.0)}")
    print(table.drop(columns=["model"]).to_string(index=False))
    medians = table.groupby("method", sort=False)[["change_dice", "new_dice", "new_sensitivity", "false_new_lesions",
                                                   "change_sensitivity", "gone_lesions", "false_gone_lesions",
                                                   "seconds_per_pair"]].median()
    print("\nmedians:\n" + medians.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
