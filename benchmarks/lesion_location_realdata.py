"""Lesion location on real scans: per-class counts, registration time and one figure per scan.

    python benchmarks/lesion_location_realdata.py --out scratch/location [--data ../shared/data]
        [--predicted OUTPUT_DIR ... --raw BIDS_DIR ...] [--no-expert] [--labels LABELS.nii.gz]

Expert masks: patient 26 (3D-MR-MS, Lesjak et al. 2017) and MSLesSeg P14 at three visits
(Guarnera et al. 2025) with their FLAIRs. With ``--predicted``, the predicted lesions of every run
in a participant output folder (its ``_seg-lesions_dseg``, brain mask and probability map, the raw
FLAIR found under ``--raw``) are located again with the current code and template labels, so
outputs made before a change of the rules (or without location) can be measured.

Each scan is located as the participant level does it (:func:`bids_msseg.anatomy.location.locate_run`,
one ITK thread as with the default ``--random-seed``); its wall and CPU seconds are printed with
the per-class counts. The figure shows, per location class, the axial slice through that class's
largest lesion (RAS, L on the left), the lesions coloured by class, the FLAIR-refined ventricles
(cyan) and the template cortex (yellow) outlined.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.anatomy.core import LabelledTemplate
from bids_msseg.anatomy.location import locate_run
from bids_msseg.anatomy.registration import refine_ventricles
from bids_msseg.anatomy.template import REGIONS, mni152_template
from bids_msseg.derivatives import derivative_paths
from bids_msseg.lesions import LOCATION_CLASSES, LOCATION_COLOURS, LesionDefinition, label_lesions

#: Width of the field of view around each class's largest lesion in the figure, mm.
CROP_MM = 90.0


def figure(path: Path, img: nib.Nifti1Image, flair: np.ndarray, location_map: np.ndarray, lesions: np.ndarray,
           ventricles: np.ndarray, cortex: np.ndarray, title: str) -> Path:
    import matplotlib  # lazy: matplotlib, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    ornt = nib.orientations.io_orientation(img.affine)
    flair, location_map, lesions, ventricles, cortex = (nib.orientations.apply_orientation(np.asarray(a), ornt)
                                                        for a in (flair, location_map, lesions, ventricles, cortex))
    cmap = ListedColormap([(0, 0, 0, 0)] + [LOCATION_COLOURS[c] for c in LOCATION_CLASSES])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.8))
    vmax = np.percentile(flair[flair > 0], 99.5) if (flair > 0).any() else 1

    ras_zooms = nib.affines.voxel_sizes(nib.as_closest_canonical(img).affine)
    half = [int(round(CROP_MM / 2 / ras_zooms[i])) for i in (0, 1)]

    def cut(a: np.ndarray, z: int, centre: np.ndarray) -> np.ndarray:
        x0, y0 = (max(0, int(centre[i]) - half[i]) for i in (0, 1))
        # RAS: anterior up, the participant's left on the left, CROP_MM around the lesion
        return np.rot90(a[x0:int(centre[0]) + half[0], y0:int(centre[1]) + half[1], z])

    for ax, (name, value) in zip(axes, LOCATION_CLASSES.items(), strict=True):
        ids = np.unique(lesions[location_map == value])
        ids = ids[ids > 0]
        ax.set_axis_off()
        if not ids.size:
            ax.set_title(f"{name}: none")
            continue
        largest = ids.min()  # lesions are numbered largest first
        centre = np.argwhere(lesions == largest).mean(axis=0)
        z = int(np.round(centre[2]))
        ax.imshow(cut(flair, z, centre), cmap="gray", vmax=vmax)
        ax.imshow(cut(location_map, z, centre), cmap=cmap, vmin=0, vmax=4, alpha=0.5, interpolation="nearest")
        ax.contour(cut(lesions == largest, z, centre).astype(float), levels=[0.5], colors="white", linewidths=1.0)
        ax.contour(cut(ventricles, z, centre).astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.contour(cut(cortex, z, centre).astype(float), levels=[0.5], colors="yellow", linewidths=0.5)
        ax.set_title(f"{name}: {len(ids)} lesions\n(slice {z}: the largest, outlined white)", fontsize=10)
    fig.suptitle(title + f"  ({CROP_MM:.0f} mm around each; cyan: ventricles from the FLAIR; yellow: template cortex)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


#: Template labels to classify against (``--labels``; None: the shipped ones).
TEMPLATE: LabelledTemplate | None = None


def locate(name: str, img: nib.Nifti1Image, brain: np.ndarray, lesions: np.ndarray, n: int,
           probability: np.ndarray, out: Path, what: str) -> dict:
    """Locate one scan's lesions, draw its figure, return its row."""
    flair = np.asarray(img.dataobj, np.float32)
    wall, cpu = time.perf_counter(), time.process_time()
    result = locate_run(flair, img.affine, brain, lesions, n, probability, template=TEMPLATE)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {"scan": name, "lesions": what, "n": n, "status": result.status,
           "counts": None, "confluent": None, "registration_s": round(result.anatomy.seconds, 2),
           "locate_run_wall_s": round(wall, 2), "locate_run_cpu_s": round(cpu, 2),
           "ventricles_from": result.ventricles_from}
    if result.locations is None:
        return row
    classes = np.asarray(result.locations.classes)
    row["counts"] = {c: int((classes == c).sum()) for c in LOCATION_CLASSES}
    row["confluent"] = int(sum(result.locations.confluent))
    row["touches_of_confluent"] = sorted({t for t, c in zip(result.locations.touches, result.locations.confluent,
                                                            strict=True) if c})
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    ventricles, _ = refine_ventricles(flair, brain, result.anatomy.labels == REGIONS["lateral_ventricles"],
                                      tuple(zooms), lesions=lesions > 0)
    figure(out / f"{name}_location.png", img, flair, result.location_map, lesions, ventricles,
           result.anatomy.labels == REGIONS["cortex"], f"{name} ({what}, {n} lesions)")
    return row


def expert(flair_path: Path, mask_path: Path, out: Path, name: str) -> dict:
    img = nib.load(flair_path)
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    lesions, n = label_lesions(mask, float(abs(np.linalg.det(img.affine[:3, :3]))), LesionDefinition())
    brain = np.asarray(img.dataobj) > 0  # skull-stripped scans
    return locate(name, img, brain, lesions, n, mask.astype(np.float32), out, "expert mask")


def predicted(out_dir: Path, raw_root: Path, out: Path) -> list[dict]:
    """Locate again the predicted lesions of every run of a participant output folder."""
    rows = []
    for summary in sorted(out_dir.glob("sub-*/**/anat/*_desc-lesions_summary.tsv")):
        source = str(pd.read_csv(summary, sep="\t").iloc[0]["source"])
        paths = derivative_paths(out_dir, source)
        lesions = np.asarray(nib.load(paths["dseg"]).dataobj).astype(np.int32)
        brain = np.asarray(nib.load(paths["brain"]).dataobj) > 0
        probability = np.asarray(nib.load(paths["probseg"]).dataobj, np.float32)
        rows.append(locate(Path(source).name.split("_FLAIR")[0], nib.load(raw_root / source), brain, lesions,
                           int(lesions.max()), probability, out, "predicted"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    p.add_argument("--predicted", type=Path, nargs="*", default=[], help="participant output folders")
    p.add_argument("--raw", type=Path, nargs="*", default=[], help="the BIDS folder of each --predicted")
    p.add_argument("--no-expert", action="store_true", help="only the --predicted runs")
    p.add_argument("--labels", type=Path, help="another label image on the template's grid (e.g. an earlier "
                                                "version of the shipped one, from git show)")
    args = p.parse_args()
    if args.labels is not None:
        global TEMPLATE
        shipped = mni152_template()
        TEMPLATE = LabelledTemplate(shipped.image, shipped.brain, np.asarray(nib.load(args.labels).dataobj, np.int32),
                                    shipped.affine, shipped.groups)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")  # as the participant level with a seed
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    if not args.no_expert:
        rows.append(expert(args.data / "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz",
                           args.data / "3d-mr-ms/patient26/patient26_lesion-mask_mni.nii.gz", args.out, "patient26"))
        for visit in ("T1", "T2", "T3"):
            rows.append(expert(args.data / f"mslesseg/P14/P14_{visit}_FLAIR.nii.gz",
                               args.data / f"mslesseg/P14/P14_{visit}_MASK.nii.gz", args.out, f"P14_{visit}"))
    for out_dir, raw in zip(args.predicted, args.raw, strict=True):
        rows += predicted(out_dir, raw, args.out)
    for row in rows:
        print(json.dumps(row, default=str), flush=True)


if __name__ == "__main__":
    main()
