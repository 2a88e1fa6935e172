"""Evaluation of the participant outputs against expert lesion masks (group level).

Three layers, each usable on its own (the cross-site study reuses the first two):

- :func:`evaluate_scan` — arrays in, one dict of per-scan metrics out (voxel-wise, volumes,
  lesion-wise under the run's lesion definition, optionally the MSSEG-2016 rules);
- :func:`summarize_cohort` — a DataFrame of per-scan rows in, one row per group (``all`` and each
  site) out: mean/SD/median of the metrics, Pearson and Spearman correlation of the volumes and
  the ISBI-2015 / DeepLesionBrain hybrid score;
- :func:`find_expert_masks` and :func:`evaluate_cohort` — finding the masks of a BIDS dataset and
  scoring every completed run of the cohort table (:mod:`bids_msseg.cohort`) that has one.

Expert masks are ``<FLAIR entities>_label-lesion_mask.nii[.gz]`` under ``sub-*/[ses-*/]anat/`` of
``--expert-masks`` or, by default, of any ``bids_dir/derivatives/*/`` that bids_msseg did not write
(the same search as ``group --train``); a mask belongs to the run whose FLAIR carries the same raw
entities (``sub``, ``ses``, ``acq``, ``run``...). The mask must lie on the FLAIR's voxel grid
(the participant outputs are ``space-orig``); one that does not is reported, never resampled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.derivatives import derivative_paths
from bids_msseg.io import load_3d
from bids_msseg.lesions import LesionDefinition, connectivity_of
from bids_msseg.masks import index_masks, mask_roots, name_entities, pick_mask
from bids_msseg.metrics import (
    Msseg2016Rule,
    hybrid_score,
    lesion_metrics,
    msseg2016_lesion_metrics,
    volume_correlation,
    volume_metrics,
    voxel_metrics,
)

LOGGER = logging.getLogger(__name__)

#: Per-scan metrics summarized over groups (those present in the frame are used).
SUMMARY_METRICS = ("dice", "iou", "ppv", "tpr", "avd", "abs_volume_difference_ml", "ltpr", "lfpr", "lesion_f1",
                   "msseg_lesion_sensitivity", "msseg_lesion_ppv", "msseg_lesion_f1")
#: Largest difference between the affines of a prediction and its expert mask (mm).
AFFINE_TOLERANCE_MM = 1e-3

#: Column descriptions of the per-scan evaluation TSV (for its JSON data dictionary).
EVALUATION_COLUMNS: dict[str, dict[str, str]] = {
    "participant_id": {"Description": "Participant label with its sub- prefix."},
    "session_id": {"Description": "Session label with its ses- prefix (n/a without sessions)."},
    "acq": {"Description": "acq entity of the FLAIR (n/a when absent)."},
    "run": {"Description": "run entity of the FLAIR (n/a when absent)."},
    "source": {"Description": "Source FLAIR, relative to the BIDS dataset."},
    "site": {"Description": "Site of the run (see group_lesions.json)."},
    "expert_mask": {"Description": "The expert lesion mask compared with (relative to the BIDS dataset when "
                                   "inside it)."},
    "evaluation_status": {"Description": "ok, or why the run could not be evaluated."},
    "expert_mask_note": {"Description": "How the expert mask was read when it was not binary (e.g. a probabilistic "
                                        "mask thresholded at 0.5); n/a otherwise."},
    "dice": {"Description": "Dice = 2|P&G|/(|P|+|G|), voxel-wise (1 when both masks are empty)."},
    "iou": {"Description": "Intersection over union (Jaccard), voxel-wise."},
    "ppv": {"Description": "Positive predictive value |P&G|/|P| (n/a for an empty prediction)."},
    "tpr": {"Description": "True positive rate |P&G|/|G| (n/a for an empty expert mask)."},
    "avd": {"Description": "Relative absolute volume difference |V_P-V_G|/V_G."},
    "pred_volume_ml": {"Description": "Volume of the predicted lesion mask.", "Units": "mL"},
    "true_volume_ml": {"Description": "Volume of the expert lesion mask.", "Units": "mL"},
    "volume_difference_ml": {"Description": "Predicted minus expert volume.", "Units": "mL"},
    "abs_volume_difference_ml": {"Description": "|Predicted - expert volume|.", "Units": "mL"},
    "n_true_lesions": {"Description": "Expert lesions under the run's lesion definition."},
    "n_pred_lesions": {"Description": "Predicted lesions under the run's lesion definition."},
    "ltpr": {"Description": "Lesion-wise TPR: expert lesions overlapped by any predicted lesion / expert lesions."},
    "lfpr": {"Description": "Lesion-wise FPR: predicted lesions overlapping no expert lesion / predicted lesions."},
    "lesion_f1": {"Description": "Lesion-wise F1 of (1 - LFPR) and LTPR."},
    "msseg_n_true_lesions": {"Description": "Expert lesions under MSSEG-2016 rules (6-connected, > 3 mm^3)."},
    "msseg_n_pred_lesions": {"Description": "Predicted lesions under MSSEG-2016 rules."},
    "msseg_lesion_sensitivity": {"Description": "MSSEG-2016 lesion-wise sensitivity (animaSegPerfAnalyzer)."},
    "msseg_lesion_ppv": {"Description": "MSSEG-2016 lesion-wise positive predictive value."},
    "msseg_lesion_f1": {"Description": "MSSEG-2016 lesion-wise F1."},
    "connectivity": {"Description": "Neighbourhood of the lesion definition (6, 18 or 26)."},
    "min_lesion_size_mm3": {"Description": "Smallest lesion of the lesion definition.", "Units": "mm^3"},
}


@dataclass(frozen=True)
class EvaluationOptions:
    """What :func:`evaluate_scan` computes: the lesion definition, and the MSSEG-2016 rules or not."""

    definition: LesionDefinition = LesionDefinition()
    msseg2016: bool = False
    msseg_rule: Msseg2016Rule = Msseg2016Rule()


def evaluate_scan(pred: np.ndarray, truth: np.ndarray, voxel_volume_mm3: float,
                  options: EvaluationOptions = EvaluationOptions()) -> dict[str, float]:
    """Every per-scan metric of a predicted mask against an expert mask on the same grid.

    Voxel-wise metrics and volumes use the masks as they are; lesion-wise metrics label both with
    ``options.definition`` (the run's own, so counts agree with its lesion table).
    """
    p, g = np.asarray(pred) > 0, np.asarray(truth) > 0
    result: dict[str, float] = {**voxel_metrics(p, g), **volume_metrics(p, g, voxel_volume_mm3),
                                **lesion_metrics(p, g, voxel_volume_mm3, options.definition)}
    if options.msseg2016:
        result.update(msseg2016_lesion_metrics(p, g, voxel_volume_mm3, options.msseg_rule))
    return result


def summarize_cohort(frame: pd.DataFrame, by: str | None = "site",
                     metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """One row for the whole cohort (``group`` = ``all``) and one per value of ``by``.

    ``frame`` has one row per evaluated scan with the columns of :func:`evaluate_scan`
    (``pred_volume_ml``, ``true_volume_ml``, ``dice``, ``ppv``, ``lfpr``, ``ltpr`` at least).
    Columns: ``group``, ``n_scans``, ``<metric>_mean``/``_sd``/``_median`` for the metrics present,
    the volume correlations of :func:`~bids_msseg.metrics.volume_correlation` (``volume_*``) and
    ``hybrid_score`` (:func:`~bids_msseg.metrics.hybrid_score`, NaN below 3 scans).
    """
    groups: list[tuple[str, pd.DataFrame]] = [("all", frame)]
    if by is not None and by in frame.columns and frame[by].nunique(dropna=False) > 1:
        groups += [(str(key), part) for key, part in frame.groupby(frame[by].fillna("n/a"), sort=True)]
    present = [m for m in metrics if m in frame.columns]
    rows = []
    for name, part in groups:
        row: dict[str, Any] = {"group": name, "n_scans": len(part)}
        for metric in present:
            values = pd.to_numeric(part[metric], errors="coerce")
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_sd"] = values.std()
            row[f"{metric}_median"] = values.median()
        corr = volume_correlation(part["pred_volume_ml"], part["true_volume_ml"])
        row.update({f"volume_{k}": v for k, v in corr.items() if k != "n_scans"})
        row["hybrid_score"] = hybrid_score(part["dice"], part["ppv"], part["lfpr"], part["ltpr"],
                                           corr["pearson_r"])
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ masks on disk


def find_expert_masks(bids_dir: Path, masks_dir: Path | None = None,
                      exclude: Sequence[Path] = ()) -> dict[frozenset, Path]:
    """Expert masks by the raw entities of their FLAIR (``frozenset`` of ``(key, value)`` pairs).

    Searches ``masks_dir``, else ``bids_dir/derivatives/*/`` minus ``exclude`` and bids_msseg's
    own outputs (:func:`bids_msseg.masks.mask_roots`). Where several masks share entities,
    :func:`bids_msseg.masks.pick_mask` chooses (one without ``desc``, then the first by name).
    """
    roots = mask_roots(bids_dir, masks_dir, exclude)
    found: dict[frozenset, Path] = {}
    for key, candidates in index_masks(roots).items():
        found[key] = pick_mask(candidates)
        if len(candidates) > 1:
            LOGGER.warning("%d expert masks share the entities %s; using %s", len(candidates),
                           dict(sorted(key)), found[key])
    LOGGER.info("%d expert mask(s) found in %s", len(found), ", ".join(map(str, roots)) or "(no folder)")
    if masks_dir is not None and not found:
        LOGGER.warning("--expert-masks %s: no mask found; expected sub-<label>/[ses-<label>/]anat/<the FLAIR's "
                       "entities>_label-lesion_mask.nii.gz, e.g. sub-01/anat/sub-01_label-lesion_mask.nii.gz for "
                       "sub-01/anat/sub-01_FLAIR.nii.gz%s", masks_dir, _seen_files(Path(masks_dir)))
    return found


def _seen_files(root: Path, limit: int = 3) -> str:
    """``; found instead: a, b, c`` for the NIfTI files under ``root`` (empty when none)."""
    seen = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.nii*") if p.is_file())
    if not seen:
        return "; the folder holds no NIfTI file"
    more = f" and {len(seen) - limit} more" if len(seen) > limit else ""
    return f"; found instead: {', '.join(seen[:limit])}{more}"


#: Threshold of a probabilistic (fractional) expert mask: a voxel is lesion from this probability on.
PROBABILISTIC_THRESHOLD = 0.5
#: Largest number of voxels of a mask (a header claiming more is broken; nothing is allocated).
MAX_MASK_VOXELS = 200_000_000


class MaskError(ValueError):
    """A mask file that cannot be used: the message says why (for the per-run row)."""


def load_mask(path: Path) -> tuple[np.ndarray, nib.Nifti1Image, str | None]:
    """A lesion mask as booleans, its image, and a note when it had to be interpreted.

    Binary masks and label maps (non-negative integers: several lesion labels) are read as ``> 0``;
    a probabilistic mask (values in [0, 1] with fractions) is thresholded at
    :data:`PROBABILISTIC_THRESHOLD`, and the note says so. Anything else raises :class:`MaskError`:
    unreadable or not NIfTI, not 3D (a 4th axis of more than one volume), too large, non-finite,
    negative, or fractional values outside [0, 1].
    """
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise MaskError(f"not a NIfTI image ({type(img).__name__})")
        shape = tuple(int(n) for n in img.shape)
        if len(shape) < 3 or (len(shape) > 3 and int(np.prod(shape[3:])) != 1):
            raise MaskError(f"not a 3D mask (shape {shape})")
        if int(np.prod(shape, dtype=np.int64)) > MAX_MASK_VOXELS:
            raise MaskError(f"absurd dimensions {shape}")
        data, img = load_3d(path)
        data = np.asarray(data)
    except MaskError:
        raise
    except Exception as err:  # noqa: BLE001 - nibabel raises many types on a broken file; the row says which
        raise MaskError(f"unreadable ({type(err).__name__}: {str(err)[:200]})") from err
    if data.dtype.kind not in "biuf":
        raise MaskError(f"unsupported voxel type {data.dtype}")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise MaskError("NaN or infinite values")
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if lo < 0:
        raise MaskError(f"negative values (min {lo:g}): not a lesion mask")
    if data.dtype.kind == "f" and not np.all(np.equal(np.mod(data, 1), 0)):
        if hi > 1.0:
            raise MaskError(f"fractional values up to {hi:g}: neither a binary, label nor probability mask")
        note = (f"probabilistic mask (values in [0, 1]) thresholded at {PROBABILISTIC_THRESHOLD:g}")
        return data >= PROBABILISTIC_THRESHOLD, img, note
    return data > 0, img, None


def _load_mask(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A mask as booleans (a trailing singleton 4th axis dropped) and its image (:func:`load_mask`)."""
    data, img, _ = load_mask(path)
    return data, img


def _same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=AFFINE_TOLERANCE_MM)


def evaluate_cohort(cohort: pd.DataFrame, output_dir: Path, masks: Mapping[frozenset, Path],
                    msseg2016: bool = False, relative_to: Path | None = None) -> pd.DataFrame:
    """Score every completed run of ``cohort`` (:func:`bids_msseg.cohort.build_cohort_table`) with a mask.

    Returns one row per run that has an expert mask: identity columns, ``expert_mask`` (relative to
    ``relative_to`` when it lies below it, e.g. ``derivatives/manual/sub-01/...``, else absolute),
    ``evaluation_status`` (``ok``, ``not segmented`` or ``grid mismatch``/``unreadable`` with
    details) and the metrics of :func:`evaluate_scan` under the run's own lesion definition.
    """
    rows = []
    for _, run in cohort.iterrows():
        entities, _ = name_entities(Path(run["source"]).name)
        mask_path = masks.get(frozenset(entities.items()))
        if mask_path is None:
            continue
        row: dict[str, Any] = {k: run.get(k) for k in ("participant_id", "session_id", "acq", "run", "source", "site")}
        shown = Path(mask_path).absolute()
        if relative_to is not None and shown.is_relative_to(Path(relative_to).absolute()):
            shown = shown.relative_to(Path(relative_to).absolute())
        row["expert_mask"] = shown.as_posix()
        if run["status"] != "ok":
            rows.append({**row, "evaluation_status": f"not segmented ({run['status']})"})
            continue
        pred_path = derivative_paths(output_dir, run["source"])["mask"]
        try:
            pred, pred_img = _load_mask(pred_path)
        except MaskError as err:
            LOGGER.error("%s: cannot read the predicted mask %s (%s)", run["source"], pred_path, err)
            rows.append({**row, "evaluation_status": f"unreadable predicted mask: {err}"})
            continue
        try:
            truth, truth_img, note = load_mask(mask_path)
        except MaskError as err:
            LOGGER.error("%s: unreadable expert mask %s (%s); not evaluated", run["source"], mask_path, err)
            rows.append({**row, "evaluation_status": f"unreadable expert mask: {err}"})
            continue
        if note:
            LOGGER.warning("%s: expert mask %s is a %s", run["source"], mask_path, note)
            row["expert_mask_note"] = note
        if not _same_grid(pred_img, truth_img):
            LOGGER.error("%s: the expert mask %s is not on the FLAIR's grid (shape %s vs %s); not evaluated",
                         run["source"], mask_path, truth_img.shape, pred_img.shape)
            rows.append({**row, "evaluation_status": "grid mismatch: the expert mask is not on the FLAIR's grid"})
            continue
        connectivity = connectivity_of(int(run["connectivity"]))
        options = replace(EvaluationOptions(msseg2016=msseg2016),
                          definition=LesionDefinition(connectivity, float(run["min_lesion_size_mm3"])))
        voxel_volume = float(abs(np.linalg.det(pred_img.affine[:3, :3])))
        metrics = evaluate_scan(pred, truth, voxel_volume, options)
        rows.append({**row, "evaluation_status": "ok", **metrics, "connectivity": int(run["connectivity"]),
                     "min_lesion_size_mm3": float(run["min_lesion_size_mm3"])})
        LOGGER.info("%s: Dice %.3f, LTPR %.3f, LFPR %.3f against %s", run["source"], metrics["dice"],
                    metrics["ltpr"], metrics["lfpr"], mask_path.name)
    return pd.DataFrame(rows)
