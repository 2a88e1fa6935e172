"""Lesion location on real scans: per-class counts, registration time and one figure per scan.

    python benchmarks/lesion_location_realdata.py --out scratch/location [--data ../shared/data]
        [--predicted OUTPUT_DIR ...]

Expert masks: patient 26 (3D-MR-MS) and MSLesSeg P14 (three visits) with their FLAIRs. With
``--predicted``, the location dseg of participant outputs (raw FLAIRs' predicted lesions) is drawn
too. The figure shows, per location class, the axial slice through that class's largest lesion,
with the lesions coloured by class and the FLAIR-refined ventricles and the template cortex outlined.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_msseg.anatomy.location import locate_run
from bids_msseg.anatomy.registration import refine_ventricles
from bids_msseg.anatomy.template import REGIONS
from bids_msseg.lesions import LOCATION_CLASSES, LOCATION_COLOURS, LesionDefinition, label_lesions


def figure(path: Path, flair: np.ndarray, location_map: np.ndarray, lesions: np.ndarray,
           ventricles: np.ndarray | None, cortex: np.ndarray | None, title: str) -> Path:
    import matplotlib  # lazy: matplotlib, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([(0, 0, 0, 0)] + [LOCATION_COLOURS[c] for c in LOCATION_CLASSES])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
    vmax = np.percentile(flair[flair > 0], 99.5) if (flair > 0).any() else 1
    for ax, (name, value) in zip(axes, LOCATION_CLASSES.items(), strict=True):
        ids = np.unique(lesions[location_map == value])
        ids = ids[ids > 0]
        ax.set_axis_off()
        if not ids.size:
            ax.set_title(f"{name}: none")
            continue
        largest = ids.min()  # lesions are numbered largest first
        z = int(np.round(np.argwhere(lesions == largest)[:, 2].mean()))
        ax.imshow(np.rot90(flair[:, :, z]), cmap="gray", vmax=vmax)
        ax.imshow(np.rot90(location_map[:, :, z]), cmap=cmap, vmin=0, vmax=4, alpha=0.7, interpolation="nearest")
        if ventricles is not None:
            ax.contour(np.rot90(ventricles[:, :, z]), levels=[0.5], colors="cyan", linewidths=0.6)
        if cortex is not None:
            ax.contour(np.rot90(cortex[:, :, z]), levels=[0.5], colors="yellow", linewidths=0.3)
        ax.set_title(f"{name}: {len(ids)} lesions (slice {z})")
    fig.suptitle(title + "  (cyan: ventricles from the FLAIR; yellow: template cortex)")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def expert(flair_path: Path, mask_path: Path, out: Path, name: str) -> dict:
    img = nib.load(flair_path)
    flair = np.asarray(img.dataobj, np.float32)
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    zooms = img.header.get_zooms()[:3]
    lesions, n = label_lesions(mask, float(np.prod(zooms)), LesionDefinition())
    brain = flair > 0  # skull-stripped scans
    started = time.perf_counter()
    result = locate_run(flair, img.affine, brain, lesions, n, mask.astype(np.float32))
    total = time.perf_counter() - started
    counts = {c: int(np.sum(np.asarray(result.locations.classes) == c)) for c in LOCATION_CLASSES} \
        if result.locations else None
    ventricles = cortex = None
    if result.anatomy.ok:
        ventricles, _ = refine_ventricles(flair, brain, result.anatomy.labels == REGIONS["lateral_ventricles"],
                                          zooms, lesions=mask)
        cortex = result.anatomy.labels == REGIONS["cortex"]
        figure(out / f"{name}_location.png", flair, result.location_map, lesions, ventricles, cortex,
               f"{name} (expert mask, {n} lesions)")
    return {"scan": name, "lesions": n, "status": result.status, "counts": counts,
            "confluent": int(sum(result.locations.confluent)) if result.locations else None,
            "registration_s": round(result.anatomy.seconds, 2), "locate_run_s": round(total, 2),
            "ventricles_from": result.ventricles_from}


def predicted(out_dir: Path, raw_root: Path, out: Path) -> list[dict]:
    rows = []
    for loc in sorted(out_dir.glob("sub-*/**/anat/*_seg-lesionlocation_dseg.nii.gz")):
        stem = loc.name.split("_space-")[0]
        lesions = nib.load(next(loc.parent.glob(f"{stem}_space-orig_seg-lesions_dseg.nii.gz")))
        src = next(raw_root.glob(f"**/{stem}_FLAIR.nii*"))
        flair = np.asarray(nib.load(src).dataobj, np.float32)
        location_map = np.asarray(nib.load(loc).dataobj)
        figure(out / f"{stem}_predicted_location.png", flair, location_map, np.asarray(lesions.dataobj),
               None, None, f"{stem} (predicted lesions)")
        summary = json.loads("{}")
        import pandas as pd

        s = pd.read_csv(next(loc.parent.glob(f"{stem}_desc-lesions_summary.tsv")), sep="\t").iloc[0]
        summary = {c: s.get(f"{c}_count") for c in LOCATION_CLASSES}
        rows.append({"scan": stem, "counts": summary, "registration_s": s.get("registration_seconds"),
                     "status": s.get("location_status")})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    p.add_argument("--predicted", type=Path, nargs="*", default=[])
    p.add_argument("--raw", type=Path, default=None, help="the raw BIDS root of --predicted")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [expert(args.data / "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz",
                   args.data / "3d-mr-ms/patient26/patient26_lesion-mask_mni.nii.gz", args.out, "patient26")]
    for visit in ("T1", "T2", "T3"):
        rows.append(expert(args.data / f"mslesseg/P14/P14_{visit}_FLAIR.nii.gz",
                           args.data / f"mslesseg/P14/P14_{visit}_MASK.nii.gz", args.out, f"P14_{visit}"))
    for out_dir in args.predicted:
        rows += predicted(out_dir, args.raw or out_dir, args.out)
    for row in rows:
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    main()
