#!/usr/bin/env python
"""Run the command line on 3D-MR-MS patient 26 and score it against the expert mask.

    python scripts/evaluate_real.py --out /tmp/eval [--precision fp32] [--model BUNDLE] [--threshold T]

Builds a one-subject BIDS dataset linking ../shared/data/3d-mr-ms/patient26 (Lesjak et al. 2017,
CC-BY), runs ``bids_msseg ... participant`` as a user would, then prints voxel-wise and lesion-wise
metrics of the output mask and of the naive "FLAIR > brain median + 3 MAD" baseline. Patient 26
is a check, never a tuning target: nothing here feeds back into training or thresholds.
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

from bids_msseg.lesions import LesionDefinition
from bids_msseg.metrics import lesion_metrics, median_mad_baseline, voxel_metrics

LOGGER = logging.getLogger("evaluate_real")
P26 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "3d-mr-ms" / "patient26"


def make_dataset(root: Path) -> Path:
    anat = root / "bids" / "sub-p26" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    (root / "bids" / "dataset_description.json").write_text(json.dumps({"Name": "p26", "BIDSVersion": "1.9.0"}))
    link = anat / "sub-p26_FLAIR.nii.gz"
    if not link.exists():
        link.symlink_to(P26 / "patient26_FLAIR_mni.nii.gz")
    return root / "bids"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--model", default=None)
    ap.add_argument("--normalization", default="model")
    ap.add_argument("--threshold", type=float, default=None, help="instead of the bundle's (e.g. to compare "
                    "models at one threshold)")
    args = ap.parse_args()
    if not P26.exists():
        LOGGER.error("%s is absent", P26)
        return 2
    bids = make_dataset(args.out)
    setting = args.normalization + (f"-t{args.threshold:g}" if args.threshold is not None else "")
    out = args.out / f"out-{args.precision}-{setting}"
    cmd = [sys.executable, "-m", "bids_msseg", str(bids), str(out), "participant", "--skip-bids-validation",
           "-w", str(args.out / "work"), "--precision", args.precision, "--normalization", args.normalization,
           "--overwrite"]
    if args.model:
        cmd += ["--model", args.model]
    if args.threshold is not None:
        cmd += ["--threshold", str(args.threshold)]
    t0 = time.time()
    code = subprocess.call(cmd)
    LOGGER.info("command: %s\nexit %d in %.1f s", " ".join(cmd), code, time.time() - t0)
    if code:
        return code
    mask_path = next(out.rglob("*_label-lesion_mask.nii.gz"))
    sidecar = json.loads(mask_path.with_name(mask_path.name.replace(".nii.gz", ".json")).read_text())
    pred = np.asarray(nib.load(mask_path).dataobj) > 0
    truth_img = nib.load(P26 / "patient26_lesion-mask_mni.nii.gz")
    truth = np.asarray(truth_img.dataobj) > 0
    flair = np.asarray(nib.load(P26 / "patient26_FLAIR_mni.nii.gz").dataobj, np.float32)
    brain = np.asarray(nib.load(next(out.rglob("*_desc-brain_mask.nii.gz"))).dataobj) > 0
    # The same lesion definition as the run's statistics (26 neighbours -> connectivity 3).
    connectivity = {6: 1, 18: 2, 26: 3}[int(sidecar["Connectivity"])]
    definition = LesionDefinition(connectivity, float(sidecar["MinimumLesionSize_mm3"]))
    voxel = float(np.prod(truth_img.header.get_zooms()[:3]))
    for name, mask in (("bids_msseg", pred), ("median+3MAD baseline", median_mad_baseline(flair, brain))):
        m = {**voxel_metrics(mask, truth), **lesion_metrics(mask, truth, voxel, definition)}
        LOGGER.info("%-22s %s", name, "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in m.items()))
    np.save(args.out / f"mask-{args.precision}-{setting}.npy", pred)
    # Agreement with the other precisions evaluated earlier into the same --out (bf16 vs fp32 check).
    for other in sorted(args.out.glob(f"mask-*-{setting}.npy")):
        if other.stem != f"mask-{args.precision}-{setting}":
            other_mask = np.load(other)
            LOGGER.info("mask agreement with %s: Dice %.4f (%d vs %d voxels)", other.stem,
                        voxel_metrics(pred, other_mask)["dice"], int(pred.sum()), int(other_mask.sum()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
