#!/usr/bin/env python
"""The labelled real scans of ``../shared/data`` as one BIDS dataset: the material of protocol v2.

    python scripts/protocol_dataset.py --out /work/scratch/realbids [--rater-agreement]

Links (never copies) the 25 expert-labelled FLAIRs of 21 patients from four sites into
``OUT/sub-*/[ses-*/]anat/`` and their masks into derivatives datasets, so that the product's own
group level runs the leave-one-site-out protocol on them (``docs/model_card.md``, "Protocol v2"):

* ``3D-MR-MS``: patient 26 (Lesjak et al. 2017, CC-BY);
* ``MSLesSeg``: P14 (three visits), P47 (two), P48-P51, P53 (two) (Guarnera et al. 2025, CC BY 4.0);
* ``ISBI2015``: training 1-3, raw thick-slice FLAIRs with skull (Carass et al. 2017); rater 1 is the
  expert mask, rater 2 is kept as ``desc-rater2`` (the human reference; :func:`pick_mask` prefers
  the mask without ``desc``);
* ``MS3SEG``: ten raw 1.5 T clinical FLAIRs, 6-8 mm slices (Bashiri Bawil et al.); their masks of
  normal periventricular hyperintensities go to ``derivatives/normal-wmh/`` (``label-normalwmh``),
  where training can use them as hard negatives.

``participants.tsv`` names each subject's dataset in its ``site`` column. Visits of one patient are
sessions of one subject, so every split by subject keeps them together.

``--negatives-out DIR`` also writes a lesion-free dataset for ``--extra-train-dataset`` (train-only in a
cross-site study): the GG-853 FLAIR template (Winkler et al. 2012; the average of 853 subjects, with
the normal FLAIR-bright anatomy and no individual lesions) with an all-zero lesion mask. py_synthsr is
left out on purpose: it is the specificity check, which must come from a model that did not train on it.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.crosssite.evaluate import scan_metrics
from bids_msseg.lesions import LesionDefinition

LOGGER = logging.getLogger("protocol_dataset")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SITES = ("3D-MR-MS", "MSLesSeg", "ISBI2015", "MS3SEG")


def scans(data: Path = DATA) -> list[dict]:
    """One dict per labelled FLAIR: site, subject, session (or None), flair, mask, rater2, normal_wmh."""
    out = [dict(site="3D-MR-MS", subject="p26", session=None,
                flair=data / "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz",
                mask=data / "3d-mr-ms/patient26/patient26_lesion-mask_mni.nii.gz")]
    for flair in sorted((data / "mslesseg").glob("P*/P*_T*_FLAIR.nii.gz")):
        patient, visit = flair.name.split("_")[:2]
        out.append(dict(site="MSLesSeg", subject=patient, session=visit, flair=flair,
                        mask=flair.with_name(f"{patient}_{visit}_MASK.nii.gz")))
    for flair in sorted((data / "isbi2015").glob("training*/training*_01_FLAIR.nii.gz")):
        stem = flair.name.replace("_FLAIR.nii.gz", "")
        out.append(dict(site="ISBI2015", subject=f"isbi{stem[8:10]}", session=None, flair=flair,
                        mask=flair.with_name(f"{stem}_mask1.nii.gz"), rater2=flair.with_name(f"{stem}_mask2.nii.gz")))
    for flair in sorted((data / "ms3seg").glob("*/*_FLAIR.nii.gz")):
        case = flair.name.split("_")[0]
        wmh = flair.with_name(f"{case}_normal-wmh-mask.nii.gz")
        out.append(dict(site="MS3SEG", subject=f"ms{case}", session=None, flair=flair,
                        mask=flair.with_name(f"{case}_lesion-mask.nii.gz"), normal_wmh=wmh if wmh.is_file() else None))
    return out


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() != target.resolve():
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(target.resolve())


def _derivative(root: Path, name: str, description: str) -> Path:
    folder = root / "derivatives" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_description.json").write_text(json.dumps(
        {"Name": description, "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "Manual"}]}, indent=1) + "\n")
    return folder


def _raw_dataset(out: Path, name: str, subjects: Iterable[tuple[str, str]]) -> None:
    """The top of a raw BIDS dataset: its description, .bidsignore and participants.tsv (subject, site)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": name, "BIDSVersion": "1.10.0", "DatasetType": "raw"}, indent=1) + "\n")
    (out / ".bidsignore").write_text("derivatives/\n")
    (out / "participants.tsv").write_text("participant_id\tsite\n" + "".join(
        f"sub-{subject}\t{site}\n" for subject, site in subjects))


def make_dataset(out: Path, data: Path = DATA) -> Path:
    """Build (or refresh) the dataset under ``out``; returns ``out``."""
    items = scans(data)
    missing = [str(s["flair"]) for s in items if not s["flair"].is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} FLAIR(s) missing under {data}: {missing[:3]}")
    subjects = dict.fromkeys((s["subject"], s["site"]) for s in items)
    _raw_dataset(out, "3D-MR-MS, MSLesSeg, ISBI-2015 and MS3SEG (protocol v2)", subjects)
    expert = _derivative(out, "expert", "Expert lesion masks (ISBI-2015: rater 1; rater 2 as desc-rater2)")
    normal = _derivative(out, "normal-wmh", "MS3SEG masks of normal periventricular hyperintensities")
    for s in items:
        parts = [f"sub-{s['subject']}"] + ([f"ses-{s['session']}"] if s["session"] else [])
        stem, rel = "_".join(parts), Path(*parts, "anat")
        _link(s["flair"], out / rel / f"{stem}_FLAIR.nii.gz")
        _link(s["mask"], expert / rel / f"{stem}_label-lesion_mask.nii.gz")
        if s.get("rater2"):
            _link(s["rater2"], expert / rel / f"{stem}_label-lesion_desc-rater2_mask.nii.gz")
        if s.get("normal_wmh"):
            _link(s["normal_wmh"], normal / rel / f"{stem}_label-normalwmh_mask.nii.gz")
    LOGGER.info("%s: %d labelled FLAIRs of %d subjects from %s", out, len(items), len(subjects),
                ", ".join(SITES))
    return out


def make_negatives(out: Path, data: Path = DATA) -> Path:
    """A BIDS dataset of the GG-853 FLAIR template with an empty expert mask (module docstring)."""
    flair = data / "flair-template" / "GG-853-FLAIR-2.0mm.nii.gz"
    if not flair.is_file():
        raise SystemExit(f"{flair} is missing")
    _raw_dataset(out, "GG-853 FLAIR template, lesion-free (hard negative)", [("gg853", "GG-853")])
    rel = Path("sub-gg853", "anat")
    _link(flair, out / rel / "sub-gg853_FLAIR.nii.gz")
    img = nib.load(str(flair))
    expert = _derivative(out, "expert", "No lesions (a template of 853 subjects)")
    mask = expert / rel / "sub-gg853_label-lesion_mask.nii.gz"
    mask.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine), str(mask))
    LOGGER.info("%s: GG-853 with an empty lesion mask", out)
    return out


def rater_agreement(data: Path = DATA) -> pd.DataFrame:
    """ISBI-2015's second rater scored against the first with the study's metrics: the human reference
    beside the models' figures (the one lesion definition, :class:`~bids_msseg.lesions.LesionDefinition`)."""
    rows = []
    for s in scans(data):
        if not s.get("rater2"):
            continue
        first, second = nib.load(str(s["mask"])), nib.load(str(s["rater2"]))
        voxel = float(np.prod(first.header.get_zooms()[:3]))
        values = scan_metrics(np.asarray(second.dataobj) >= 0.5, np.asarray(first.dataobj) >= 0.5, voxel,
                              LesionDefinition())
        rows.append({"scan": s["subject"], **values})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder of the BIDS dataset (links only)")
    parser.add_argument("--rater-agreement", action="store_true",
                        help="also print ISBI-2015's rater 2 scored against rater 1 (the human reference)")
    parser.add_argument("--negatives-out", type=Path,
                        help="also write the lesion-free GG-853 dataset here (for --extra-train-dataset)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_dataset(args.out)
    if args.negatives_out:
        make_negatives(args.negatives_out)
    if args.rater_agreement:
        table = rater_agreement()
        columns = ["scan", "dice", "lesion_f1", "ltpr", "n_true_lesions", "n_pred_lesions", "n_false_lesions",
                   "true_volume_ml", "pred_volume_ml"]
        LOGGER.info("ISBI-2015 rater 2 against rater 1:\n%s\nmean Dice %.3f, mean lesion F1 %.3f",
                    table[columns].to_string(index=False, float_format="%.3f"), table.dice.mean(),
                    table.lesion_f1.mean())


if __name__ == "__main__":
    main()
