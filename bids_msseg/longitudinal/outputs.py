"""Names and writing of the longitudinal derivatives of a subject (BIDS derivatives, atomic writes).

For a follow-up session ``F`` compared with its subject's baseline session ``B`` (``<F>``/``<B>``:
the source entities of each session's FLAIR, as in :mod:`bids_msseg.derivatives`):

================= ============================================================== ==========================
key               name                                                           content
================= ============================================================== ==========================
change_followup   ``<F>_space-orig_seg-change_dseg.nii.gz`` (+ ``.json``, ``.tsv``) change map on F's grid
change_baseline   ``<B>_space-orig_seg-change_desc-followup<F ses>_dseg.nii.gz``    the same on B's grid
lesions           ``<F>_desc-longitudinal_lesions.tsv`` (+ ``.json``)             one row per lesion
summary           ``sub-<label>/sub-<label>_desc-longitudinal_summary.tsv``      one row per follow-up
report            ``sub-<label>_desc-longitudinal_report.html`` at the root      the visits side by side
================= ============================================================== ==========================

The change maps are ``dseg`` images whose TSV names their labels
(:data:`~bids_msseg.longitudinal.change.CHANGE_LABELS`), which the BIDS validator accepts; the
per-lesion table, the summary and the report have no BIDS name and are listed in ``.bidsignore``
(``*_desc-longitudinal_*``), like the per-run summaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.derivatives import (
    _bids_name,
    _save_like,
    derivative_paths,
    parse_source,
    raw_uri,
    write_json,
    write_tsv,
)
from bids_msseg.longitudinal.change import CHANGE_LABELS, ChangeRule
from bids_msseg.longitudinal.registration import REGISTRATION_MM

#: ``.bidsignore`` lines of the longitudinal outputs without a BIDS name.
BIDSIGNORE = ("*_desc-longitudinal_*",)

#: Columns of the per-subject summary (one row per follow-up).
SUMMARY_COLUMNS: dict[str, dict[str, str]] = {
    "participant_id": {"Description": "Participant label with its sub- prefix."},
    "baseline_session": {"Description": "Session the follow-up is compared with (ses- prefix)."},
    "followup_session": {"Description": "The follow-up session (ses- prefix)."},
    "days_between": {"Description": "Days between the sessions (sessions.tsv acq_time or the sidecars' "
                                    "AcquisitionDateTime/AcquisitionDate); n/a when unknown.", "Units": "days"},
    "status": {"Description": "ok, or why the pair was not compared (e.g. registration failed)."},
    "new_count": {"Description": "Number of new lesions."},
    "new_volume_ml": {"Description": "Volume of the new lesions.", "Units": "mL"},
    "enlarging_count": {"Description": "Number of enlarging lesions."},
    "enlarging_volume_ml": {"Description": "Volume grown by the enlarging lesions.", "Units": "mL"},
    "shrinking_count": {"Description": "Number of shrinking lesions."},
    "disappearing_count": {"Description": "Number of disappearing lesions: gone at follow-up with strong evidence "
                                          "(the network sees nothing there, the FLAIR got darker, the lesion was "
                                          "large enough; docs/longitudinal.md)."},
    "not_seen_count": {"Description": "Number of lesions not found at follow-up without the evidence to call them "
                                      "gone (often small lesions lost to partial volume or a probability just under "
                                      "the threshold): look at them."},
    "stable_count": {"Description": "Number of stable lesions."},
    "baseline_volume_ml": {"Description": "Total lesion volume of the baseline run as segmented on its own (its own "
                                          "lesion mask on its own grid): the number in its summary and report.",
                           "Units": "mL"},
    "followup_volume_ml": {"Description": "Total lesion volume of the follow-up run as segmented on its own: the "
                                          "number in its summary and report.", "Units": "mL"},
    "volume_change_ml": {"Description": "followup_volume_ml minus baseline_volume_ml.", "Units": "mL"},
    "paired_baseline_volume_ml": {
        "Description": "Lesion volume at baseline in the paired comparison, on the baseline grid: the baseline's "
                       "lesions plus the voxels the follow-up calls lesion where the image did not change (the "
                       "network missed them once); the sum of the lesion table's baseline_volume_mm3. It differs "
                       "from baseline_volume_ml by those voxels.", "Units": "mL"},
    "paired_followup_volume_ml": {
        "Description": "Lesion volume at follow-up in the paired comparison: the follow-up resampled onto the "
                       "baseline grid, plus the voxels the baseline calls lesion where the image did not change. It "
                       "differs from followup_volume_ml by those voxels and by the resampling.", "Units": "mL"},
    "paired_volume_change_ml": {
        "Description": "paired_followup_volume_ml minus paired_baseline_volume_ml: the sum of the lesions' volume "
                       "changes, the change the change classes describe (segmentation flicker without an image "
                       "change left out).", "Units": "mL"},
    "registration": {"Description": "ANTs transform of the follow-up to the baseline."},
    "registration_brain_dice": {"Description": "Dice of the two brain masks after registration."},
    "registration_correlation": {"Description": "FLAIR intensity correlation inside both brains after registration."},
    "seconds": {"Description": "Time spent on the pair.", "Units": "s"},
}


def _entities(source_relpath: str) -> dict[str, str]:
    _, entities, _ = parse_source(source_relpath)
    return {k: v for k, v in entities.items() if k not in ("space", "desc", "label", "seg")}


def pair_paths(out_dir: Path, baseline_relpath: str, followup_relpath: str) -> dict[str, Path]:
    """Paths of the outputs of one baseline/follow-up pair (module docstring); pure."""
    out_dir = Path(out_dir)
    base_folder = derivative_paths(out_dir, baseline_relpath)["mask"].parent
    fu_folder = derivative_paths(out_dir, followup_relpath)["mask"].parent
    b, f = _entities(baseline_relpath), _entities(followup_relpath)
    fu_label = f.get("ses", "")
    paths = {
        "change_followup": fu_folder / _bids_name({**f, "space": "orig", "seg": "change"}, "dseg", ".nii.gz"),
        "change_baseline": base_folder / _bids_name({**b, "space": "orig", "seg": "change",
                                                     "desc": f"followup{fu_label}"}, "dseg", ".nii.gz"),
        "lesions": fu_folder / _bids_name({**f, "desc": "longitudinal"}, "lesions", ".tsv"),
    }
    for key in ("change_followup", "change_baseline"):
        stem = paths[key].name[: -len(".nii.gz")]
        paths[f"{key}_json"] = paths[key].with_name(stem + ".json")
        paths[f"{key}_tsv"] = paths[key].with_name(stem + ".tsv")
    paths["lesions_json"] = paths["lesions"].with_suffix(".json")
    return paths


def subject_paths(out_dir: Path, subject: str) -> dict[str, Path]:
    """The per-subject summary (TSV, JSON) and report."""
    out_dir = Path(out_dir)
    summary = out_dir / f"sub-{subject}" / f"sub-{subject}_desc-longitudinal_summary.tsv"
    return {"summary": summary, "summary_json": summary.with_suffix(".json"),
            "report": out_dir / f"sub-{subject}_desc-longitudinal_report.html"}


def labels_table() -> pd.DataFrame:
    """The change map's labels (the dseg TSV)."""
    return pd.DataFrame({"index": list(CHANGE_LABELS), "name": list(CHANGE_LABELS.values())})


def write_pair(out_dir: Path, baseline_relpath: str, followup_relpath: str, *, baseline_img: nib.Nifti1Image,
               followup_img: nib.Nifti1Image, change_baseline: np.ndarray, change_followup: np.ndarray,
               table: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Path]:
    """Write the change maps (both grids), their label TSVs and sidecars, and the per-lesion table."""
    paths = pair_paths(out_dir, baseline_relpath, followup_relpath)
    b_uri, f_uri = raw_uri(baseline_relpath), raw_uri(followup_relpath)
    sources = [b_uri, f_uri]
    description = ("Lesion change between the baseline and this follow-up: "
                   + ", ".join(f"{k} {v}" for k, v in CHANGE_LABELS.items()) + " (0 background).")
    for key, data, img, ref in (("change_followup", change_followup, followup_img, f_uri),
                                ("change_baseline", change_baseline, baseline_img, b_uri)):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        _save_like(data, np.uint8, img, paths[key], intent="label", description="bids_msseg lesion change")
        write_tsv(paths[f"{key}_tsv"], labels_table())
        write_json(paths[f"{key}_json"], {"Description": description, "Sources": sources,
                                           "SpatialReference": ref, **meta})
    write_tsv(paths["lesions"], table)
    write_json(paths["lesions_json"], {
        "Description": "One row per lesion of the union of both visits (on the baseline grid) and its change "
                       "class; volumes in mm^3 are those of the paired comparison (summary: paired_*_volume_ml), "
                       "centroid in the baseline FLAIR's scanner coordinates.",
        "Sources": sources, **meta})
    return paths


def write_summary(out_dir: Path, subject: str, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """Write the subject's longitudinal summary (one row per follow-up)."""
    paths = subject_paths(out_dir, subject)
    paths["summary"].parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    write_json(paths["summary_json"], {"Description": "Longitudinal lesion change of one subject, one row per "
                                                      "follow-up session compared with the baseline.",
                                       **SUMMARY_COLUMNS})
    write_tsv(paths["summary"], frame)
    return paths


def citation_context(out_dir: Path) -> dict[str, Any]:
    """What the methods text says of the longitudinal step (:mod:`bids_msseg.boilerplate`): the pairs of
    sessions compared (``status`` ok) in every subject summary under ``out_dir``, their subjects, the
    change rule and the registration grid; no pairs when the step never compared any."""
    summaries = collect_summaries(out_dir)
    compared = summaries[summaries["status"] == "ok"] if len(summaries) else summaries
    return {"longitudinal_pairs": int(len(compared)),
            "longitudinal_subjects": int(compared["participant_id"].nunique()) if len(compared) else 0,
            "registration_mm": REGISTRATION_MM, "rule": ChangeRule().sidecar()}


#: The group level's table of every subject's longitudinal summary (at the output root).
GROUP_TSV = "group_longitudinal.tsv"


def collect_summaries(out_dir: Path) -> pd.DataFrame:
    """Every subject's longitudinal summary under ``out_dir`` in one table (empty without any)."""
    frames = []
    for path in sorted(Path(out_dir).glob("sub-*/sub-*_desc-longitudinal_summary.tsv")):
        try:
            frames.append(pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False))
        except (OSError, ValueError, pd.errors.ParserError):
            continue
    if not frames:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    return pd.concat(frames, ignore_index=True).reindex(columns=list(SUMMARY_COLUMNS))
