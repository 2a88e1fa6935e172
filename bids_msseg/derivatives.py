"""Names and writing of the BIDS derivatives of one FLAIR run, and of the dataset-level files.

Every output of a run is named from the source FLAIR's entities (``sub``, ``ses``, ``acq``,
``run``...; the ``FLAIR`` suffix is dropped, as the BIDS derivatives rules require) plus
``space-orig`` and the output's own entities (../shared/docs/conventions.md):

=========== =============================================== =====================================
key         name (``<e>`` = source entities)                content
=========== =============================================== =====================================
mask        ``<e>_space-orig_label-lesion_mask.nii.gz``     binary lesion mask, uint8
probseg     ``<e>_space-orig_label-lesion_probseg.nii.gz``  lesion probability, float32 in [0, 1]
dseg        ``<e>_space-orig_seg-lesions_dseg.nii.gz``      lesions numbered 1..N, largest first
dseg_tsv    ``<e>_space-orig_seg-lesions_dseg.tsv``         one row per lesion (index, name, ...)
brain       ``<e>_space-orig_desc-brain_mask.nii.gz``       brain mask used for normalization
summary     ``<e>_desc-lesions_summary.tsv`` (+ ``.json``)  one row: count, volumes, model, choices
location    ``<e>_space-orig_seg-lesionlocation_dseg.nii.gz`` location class of each lesion voxel
            (+ ``.tsv`` of the classes)                     (1 PV, 2 JC, 3 IT, 4 SC)
tpl_mask    ``<e>_space-MNI152NLin2009aSym_label-lesion_    the lesion mask and probability map
            mask.nii.gz`` and ``..._probseg.nii.gz``        resampled to the template (1 mm)
report      ``<e>_desc-lesions_report.html`` at the root    QC report (MRIQC puts reports there)
=========== =============================================== =====================================

Each NIfTI has a ``.json`` sidecar (``<key>_json``) whose ``Sources`` and ``SpatialReference``
are BIDS URIs into the raw dataset (``bids:raw:sub-01/anat/...``), resolved through
``DatasetLinks`` in ``dataset_description.json``. The official validator (``bids-validator-deno``)
accepts the images and the dseg TSV as they are. BIDS has no name for a per-run summary table
or an HTML report, so those two are listed in ``.bidsignore`` (as fMRIPrep and MRIQC do for
their reports), which the validator honours.

``space-orig`` is "the grid of the input FLAIR": every image is written with the input's shape,
affine and qform/sform (codes included), so it overlays the raw FLAIR in any viewer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.errors import OutputError
from bids_msseg.io import atomic_path, write_text_atomic
from bids_msseg.lesions import LesionDefinition, location_columns, location_label_table
from bids_msseg.settings import TEMPLATE_SPACE

LOGGER = logging.getLogger(__name__)

#: BIDS version the outputs are written against.
BIDS_VERSION = "1.10.0"
#: Name of the raw dataset in BIDS URIs (``bids:raw:...``) and in ``DatasetLinks``.
RAW_LINK = "raw"
#: Name of this pipeline in ``GeneratedBy`` (folders it generated never hold expert masks).
PIPELINE_NAME = "bids_msseg"
#: Group-level tables at the output root (``group`` without ``--train``).
COHORT_TSV = "group_lesions.tsv"
EVALUATION_TSV = "group_evaluation.tsv"
EVALUATION_SUMMARY_TSV = "group_evaluation_summary.tsv"
DATASET_NAME = "bids_msseg: multiple-sclerosis lesion segmentation of FLAIR images"
HOW_TO_ACKNOWLEDGE = (
    "Please cite Badea & Popa (2024), 'Toward Generalizable Multiple Sclerosis Lesion Segmentation "
    "Models' (arXiv:2410.19623), state the bids_msseg version and model id, and cite the references "
    "listed in logs/CITATION.md."
)
#: Files the BIDS specification has no name for; the validator skips what ``.bidsignore`` lists.
BIDSIGNORE_LINES = (
    "logs/",
    "*.html",
    "*_desc-lesions_summary.tsv",
    "*_desc-lesions_summary.json",
    "group_*",
)

#: Entity keys in the order BIDS requires them in file names (BIDS schema ``rules.entities``).
ENTITY_ORDER = (
    "sub", "tpl", "ses", "cohort", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc",
    "stain", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi",
    "space", "split", "recording", "chunk", "atlas", "seg", "scale", "res", "den", "label", "desc",
)
#: Entities whose values are indices (digits only) rather than alphanumeric labels.
INDEX_ENTITIES = frozenset({"run", "echo", "flip", "inv", "split", "chunk"})
#: Entities this pipeline sets itself; a source value for them (a derivative as input) is dropped.
OWN_ENTITIES = frozenset({"space", "desc", "label", "seg"})

_LABEL = re.compile(r"[A-Za-z0-9]+")
_INDEX = re.compile(r"[0-9]+")
_SUFFIX = re.compile(r"[A-Za-z0-9]+")
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")

#: The outputs of one run: key -> (entities added to the source's, suffix, extension).
_OUTPUTS: dict[str, tuple[dict[str, str], str, str]] = {
    "mask": ({"space": "orig", "label": "lesion"}, "mask", ".nii.gz"),
    "probseg": ({"space": "orig", "label": "lesion"}, "probseg", ".nii.gz"),
    "dseg": ({"space": "orig", "seg": "lesions"}, "dseg", ".nii.gz"),
    "dseg_tsv": ({"space": "orig", "seg": "lesions"}, "dseg", ".tsv"),
    "brain": ({"space": "orig", "desc": "brain"}, "mask", ".nii.gz"),
    "summary": ({"desc": "lesions"}, "summary", ".tsv"),
    "summary_json": ({"desc": "lesions"}, "summary", ".json"),
    "location": ({"space": "orig", "seg": "lesionlocation"}, "dseg", ".nii.gz"),
    "location_tsv": ({"space": "orig", "seg": "lesionlocation"}, "dseg", ".tsv"),
    "tpl_mask": ({"space": TEMPLATE_SPACE, "label": "lesion"}, "mask", ".nii.gz"),
    "tpl_probseg": ({"space": TEMPLATE_SPACE, "label": "lesion"}, "probseg", ".nii.gz"),
}
_NIFTI_KEYS = ("mask", "probseg", "dseg", "brain", "location", "tpl_mask", "tpl_probseg")
#: Outputs written only when the run's template registration succeeded (``location_status`` ok).
OPTIONAL_OUTPUTS = frozenset({"location", "location_json", "location_tsv", "tpl_mask", "tpl_mask_json",
                              "tpl_probseg", "tpl_probseg_json"})


def required_outputs(paths: Mapping[str, Path]) -> dict[str, Path]:
    """The outputs every complete run has (:func:`derivative_paths` less :data:`OPTIONAL_OUTPUTS`)."""
    return {key: path for key, path in paths.items() if key not in OPTIONAL_OUTPUTS}

#: Descriptions of the dseg TSV's own columns (BIDS defines ``index`` and ``name``), kept in the
#: dseg sidecar so the validator knows them.
LESION_COLUMNS: dict[str, dict[str, str]] = {
    "volume_mm3": {"Description": "Lesion volume.", "Units": "mm^3"},
    "voxels": {"Description": "Number of voxels of the lesion."},
    "centroid_x_mm": {"Description": "Centroid x in the image's scanner coordinates.", "Units": "mm"},
    "centroid_y_mm": {"Description": "Centroid y in the image's scanner coordinates.", "Units": "mm"},
    "centroid_z_mm": {"Description": "Centroid z in the image's scanner coordinates.", "Units": "mm"},
    "mean_probability": {"Description": "Mean lesion probability over the lesion's voxels."},
    "max_probability": {"Description": "Maximum lesion probability over the lesion's voxels."},
    **{k: v for k, v in location_columns().items() if k in ("location", "confluent", "touches")},
    **{f"centroid_{axis}_template_mm": {
        "Description": f"Centroid {axis} in the coordinates of the MNI152NLin2009aSym template (MNI mm), through the "
                       "run's registration to the template (lesion location step); n/a without it.",
        "Units": "mm"} for axis in "xyz"},
}

#: Column descriptions of the per-run summary TSV (preprocessing columns are described generically).
SUMMARY_COLUMNS: dict[str, dict[str, str]] = {
    "participant_id": {"Description": "Participant label with its sub- prefix."},
    "session_id": {"Description": "Session label with its ses- prefix, n/a without sessions."},
    "source": {"Description": "Path of the source FLAIR relative to the raw BIDS dataset."},
    "lesion_count": {"Description": "Number of lesions (see Connectivity and MinimumLesionSize_mm3)."},
    "total_lesion_volume_ml": {"Description": "Total volume of all lesions.", "Units": "mL"},
    "brain_volume_ml": {"Description": "Volume of the brain mask.", "Units": "mL"},
    "threshold": {"Description": "Probability threshold of the lesion mask."},
    "seed_threshold": {"Description": "Probability every lesion reaches somewhere (hysteresis; 0: off)."},
    "min_lesion_size_mm3": {"Description": "Smallest lesion kept.", "Units": "mm^3"},
    "connectivity": {"Description": "Neighbourhood of connected components (6, 18 or 26)."},
    "model_id": {"Description": "Identifier of the model bundle (name@sha256 prefix of the weights)."},
    **{k: v for k, v in location_columns().items() if k not in ("location", "confluent", "touches")},
}


# --------------------------------------------------------------------------------------- naming


def parse_source(source_relpath: str | Path) -> tuple[PurePosixPath, dict[str, str], str]:
    """Check a source path relative to the BIDS root; return it, its entities and its suffix.

    The path must be relative, must not climb out with ``..``, and its name must be a BIDS name
    (``key-label`` pairs with known keys and alphanumeric labels, a suffix, a NIfTI extension) whose
    ``sub``/``ses`` agree with its folders. Anything else raises :class:`OutputError`: output names
    are built from these labels, so a bad label could otherwise place files outside the output.
    A bare file name is accepted and placed in ``sub-<label>/[ses-<label>/]anat/``.
    """
    text = os.fspath(source_relpath)
    if not text or "\x00" in text:
        raise OutputError(f"invalid source path {text!r}")
    if "\\" in text or PureWindowsPath(text).drive:
        raise OutputError(f"source path {text!r}: use a POSIX path relative to the BIDS root")
    rel = PurePosixPath(text)
    if rel.is_absolute():
        raise OutputError(f"source path {text!r} must be relative to the BIDS root, not absolute")
    if any(part in ("..", ".") for part in text.split("/")):
        raise OutputError(f"source path {text!r} must not contain '..' or '.' components")

    name = rel.name
    ext = next((e for e in _NIFTI_EXTENSIONS if name.endswith(e)), None)
    if ext is None:
        raise OutputError(f"source {text!r} is not a NIfTI file (.nii or .nii.gz)")
    *pairs, suffix = name[: -len(ext)].split("_")
    if not pairs or not _SUFFIX.fullmatch(suffix):
        raise OutputError(f"source {text!r}: not a BIDS file name (sub-<label>_..._<suffix>{ext})")
    entities: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("-")
        pattern = _INDEX if key in INDEX_ENTITIES else _LABEL
        if not sep or key not in ENTITY_ORDER or not pattern.fullmatch(value):
            raise OutputError(f"source {text!r}: invalid BIDS entity {pair!r}")
        if key in entities:
            raise OutputError(f"source {text!r}: entity {key!r} appears twice")
        entities[key] = value
    if next(iter(entities)) != "sub":
        raise OutputError(f"source {text!r}: the file name must start with sub-<label>")

    expected_dirs = [f"sub-{entities['sub']}"] + ([f"ses-{entities['ses']}"] if "ses" in entities else [])
    dirs = list(rel.parts[:-1])
    if not dirs:
        rel = PurePosixPath(*expected_dirs, "anat", name)
    elif dirs[:-1] != expected_dirs or not re.fullmatch(r"[a-z]+", dirs[-1]):
        raise OutputError(
            f"source {text!r}: expected it under {'/'.join(expected_dirs)}/<datatype>/ as its name says"
        )
    return rel, entities, suffix


def _bids_name(entities: Mapping[str, str], suffix: str, extension: str) -> str:
    """Join entities in BIDS order, then the suffix and extension."""
    ordered = sorted(entities.items(), key=lambda kv: ENTITY_ORDER.index(kv[0]))
    return "_".join([f"{k}-{v}" for k, v in ordered] + [suffix]) + extension


def derivative_paths(out_dir: Path, source_relpath: str | Path) -> dict[str, Path]:
    """Paths of every output of one source FLAIR (see the module docstring for the names).

    Keys: ``mask``, ``probseg``, ``dseg``, ``dseg_tsv``, ``brain``, ``summary``,
    ``summary_json``, ``report``, and ``<key>_json`` for each NIfTI. Pure: nothing is created.
    Raises :class:`OutputError` when the source path is not a safe relative BIDS path.
    """
    out_dir = Path(out_dir)
    _, entities, _ = parse_source(source_relpath)
    dropped = {k: v for k, v in entities.items() if k in OWN_ENTITIES}
    if dropped:
        LOGGER.warning("source %s: entities %s are replaced in the output names", source_relpath, dropped)
    base = {k: v for k, v in entities.items() if k not in OWN_ENTITIES}
    folder = out_dir / f"sub-{base['sub']}"
    if "ses" in base:
        folder = folder / f"ses-{base['ses']}"
    folder = folder / "anat"

    paths: dict[str, Path] = {}
    for key, (added, suffix, ext) in _OUTPUTS.items():
        paths[key] = folder / _bids_name({**base, **added}, suffix, ext)
    for key in _NIFTI_KEYS:
        paths[f"{key}_json"] = paths[key].with_name(paths[key].name[: -len(".nii.gz")] + ".json")
    paths["report"] = out_dir / _bids_name({**base, "desc": "lesions"}, "report", ".html")
    return paths


def raw_uri(source_relpath: str | Path) -> str:
    """BIDS URI of the source in the raw dataset, e.g. ``bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz``."""
    rel, _, _ = parse_source(source_relpath)
    return f"bids:{RAW_LINK}:{rel.as_posix()}"


def _self_uri(out_dir: Path, path: Path) -> str:
    """BIDS URI of a file of this derivative dataset (``bids::<relative path>``)."""
    return "bids::" + Path(path).relative_to(out_dir).as_posix()


# --------------------------------------------------------------------------------------- writing


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and sets to JSON; non-finite floats become null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json(path: Path, content: Mapping[str, Any]) -> Path:
    """Write a JSON file atomically, indented and with a final newline."""
    return write_text_atomic(path, json.dumps(_jsonable(content), indent=2, allow_nan=False) + "\n")


#: Numbers in TSV tables: at most 6 decimals, and 7 significant digits below 1, so float noise such
#: as ``-1.6320000000000006`` is not written while volumes keep their voxel precision.
TSV_DECIMALS = 6
TSV_DIGITS = 7


def tsv_value(value: Any) -> Any:
    """A cell as a table shows it: floats to :data:`TSV_DECIMALS` decimals (:data:`TSV_DIGITS`
    significant digits below 1; integral ones without a decimal point), booleans as ``true``/``false``,
    missing values as they are."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        number = float(value)
        if not np.isfinite(number):
            return value if np.isnan(number) else ("inf" if number > 0 else "-inf")
        rounded = round(number, TSV_DECIMALS) if abs(number) >= 1 else float(f"{number:.{TSV_DIGITS}g}")
        text = np.format_float_positional(rounded, trim="-")
        return "0" if text == "-0" else text
    return value


def write_tsv(path: Path, frame: pd.DataFrame) -> Path:
    """Write a BIDS TSV atomically (tab separated, ``n/a`` for missing values, no index; numbers and
    booleans as :func:`tsv_value` writes them)."""
    shown = frame.copy()
    for column in shown.columns:
        if shown[column].dtype.kind in "fbO":
            shown[column] = shown[column].map(tsv_value).astype(object)
    with atomic_path(path) as tmp:
        shown.to_csv(tmp, sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    return Path(path)


def _save_like(data: np.ndarray, dtype: type, reference: nib.Nifti1Image, target: Path,
               *, intent: str = "none", description: str = "") -> Path:
    """Save ``data`` as ``dtype`` with ``reference``'s header, affine and qform/sform codes.

    The header is copied so units, pixdim and orientation fields survive; scaling and display
    range are reset (they describe the FLAIR's intensities, not a mask), and qform and sform are
    set explicitly from the reference so neither drifts (LST-AI's qform/sform complaint).
    """
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, copy=False), reference.affine, header)
    qform, qcode = reference.get_qform(coded=True)
    sform, scode = reference.get_sform(coded=True)
    img.set_qform(qform if qform is not None else reference.affine, int(qcode))
    img.set_sform(sform if sform is not None else reference.affine, int(scode))
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0
    img.header["cal_max"] = 0
    img.header.set_intent(intent)
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    with atomic_path(target) as tmp:
        nib.save(img, tmp)
    return Path(target)


def _dseg_dtype(n_lesions: int) -> type:
    """The smallest unsigned type that numbers ``n_lesions`` lesions (int32 beyond uint16)."""
    if n_lesions <= np.iinfo(np.uint8).max:
        return np.uint8
    if n_lesions <= np.iinfo(np.uint16).max:
        return np.uint16
    return np.int32


def _flatten_decisions(decisions: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested decisions into ``preproc_<key>[_<subkey>]`` scalar columns for the summary TSV."""
    if not decisions:
        return {}
    flat = pd.json_normalize(_jsonable(dict(decisions)), sep="_").iloc[0].to_dict()
    return {f"preproc_{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in flat.items()}


#: The outputs whose presence says a run is complete: the summary TSV (last file of
#: write_run_derivatives) and the report (written after it).
COMPLETION_KEYS = ("summary", "report")


def stale_temporaries(paths: Mapping[str, Path]) -> list[Path]:
    """Hidden temporaries of :func:`bids_msseg.io.atomic_path` left beside ``paths`` by a killed run.

    ``atomic_path`` names them ``.<stem>.<random><suffixes>`` next to their target; a run's stems
    are its own (they carry all its entities), so no other run's files can match.
    """
    found: set[Path] = set()
    for path in paths.values():
        stem = path.name.split(".")[0]
        if path.parent.is_dir():
            found.update(p for p in path.parent.glob(f".{stem}.*") if p.is_file())
    return sorted(found)


def begin_run_outputs(paths: Mapping[str, Path]) -> None:
    """Before (re)writing a run: remove its completion markers and any stale temporaries.

    Outputs of an earlier run stay in place (each is replaced atomically), but without the
    markers (``COMPLETION_KEYS``) the run counts as incomplete until every file has been
    rewritten, whatever happens in between.
    """
    for key in COMPLETION_KEYS:
        paths[key].unlink(missing_ok=True)
    for stale in stale_temporaries(paths):
        LOGGER.info("removing %s, left by an interrupted run", stale)
        stale.unlink(missing_ok=True)


def _check_inputs(original_img: nib.Nifti1Image, arrays: Mapping[str, np.ndarray], labels: np.ndarray,
                  n_lesions: int, table: pd.DataFrame) -> None:
    """Raise ValueError unless every array is on the original grid and labels, count and table agree."""
    shape = tuple(original_img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"the original image must be 3D, got shape {original_img.shape}")
    for name, array in arrays.items():
        if tuple(np.shape(array)) != shape:
            raise ValueError(f"{name} has shape {np.shape(array)}, the original image {shape}")
    top = int(np.max(labels)) if np.size(labels) else 0
    if top != n_lesions or int(np.min(labels, initial=0)) < 0:
        raise ValueError(f"labels must number lesions 1..{n_lesions}, found values up to {top}")
    if len(table) != n_lesions:
        raise ValueError(f"the lesion table has {len(table)} rows for {n_lesions} lesions")


def write_run_derivatives(
    out_dir: Path,
    source_relpath: str | Path,
    original_img: nib.Nifti1Image,
    probability: np.ndarray,
    labels: np.ndarray,
    n_lesions: int,
    brain_mask: np.ndarray,
    table: pd.DataFrame,
    *,
    threshold: float,
    definition: LesionDefinition,
    seed_threshold: float = 0.0,
    model_id: str,
    decisions: Mapping[str, Any],
    extra_meta: Mapping[str, Any] | None = None,
    summary_extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write all derivatives of one FLAIR run; return :func:`derivative_paths` (``report`` unwritten).

    ``probability``, ``labels`` (lesions numbered 1..``n_lesions``, from
    :func:`bids_msseg.lesions.binarize`) and ``brain_mask`` must already be on the grid of
    ``original_img``; ``table`` is :func:`bids_msseg.lesions.lesion_table`'s output. The lesion
    mask is ``labels > 0``, so mask, dseg, count and table always agree. ``decisions`` (the
    preprocessing choices and their reasons) go into every sidecar and the summary;
    ``extra_meta`` is added to every sidecar without overriding the keys set here; ``summary_extra``
    adds columns to the summary (the lesion locations of :func:`write_location_derivatives`).

    Every file is written atomically; the summary TSV is written last, so its presence marks a
    complete run for the group level (the report, written after it by the workflow, marks a
    complete run for reruns). Both are removed first (:func:`begin_run_outputs`), so a run killed
    while rewriting its outputs never looks complete.
    """
    out_dir = Path(out_dir)
    paths = derivative_paths(out_dir, source_relpath)
    rel, entities, _ = parse_source(source_relpath)
    labels = np.asarray(labels)
    _check_inputs(original_img, {"probability": probability, "labels": labels, "brain_mask": brain_mask},
                  labels, n_lesions, table)
    begin_run_outputs(paths)

    voxel_mm3 = float(abs(np.linalg.det(original_img.affine[:3, :3])))
    mask = labels > 0
    brain = np.asarray(brain_mask).astype(bool)
    prob = np.asarray(probability, dtype=np.float32)
    if not np.all(np.isfinite(prob)):
        LOGGER.warning("%s: non-finite probabilities set to 0", rel)
        prob = np.nan_to_num(prob, nan=0.0, posinf=1.0, neginf=0.0)
    prob = np.clip(prob, 0.0, 1.0)

    source_uri = f"bids:{RAW_LINK}:{rel.as_posix()}"
    decisions = dict(decisions)
    definition_meta = {
        "Threshold": float(threshold),
        "SeedThreshold": float(seed_threshold),
        "MinimumLesionSize_mm3": float(definition.min_size_mm3),
        "Connectivity": definition.neighbours,
    }
    common = {"SpatialReference": source_uri, "ModelID": model_id, "PreprocessingDecisions": decisions}
    extra = dict(extra_meta or {})

    def sidecar(own: dict[str, Any]) -> dict[str, Any]:
        return {**extra, **own}

    _save_like(prob, np.float32, original_img, paths["probseg"], intent="estimate",
               description="bids_msseg lesion probability")
    write_json(paths["probseg_json"], sidecar({
        "Description": "Voxel-wise lesion probability (sigmoid output of the network), in [0, 1].",
        "Sources": [source_uri], **common}))

    _save_like(mask, np.uint8, original_img, paths["mask"], intent="label",
               description="bids_msseg lesion mask")
    write_json(paths["mask_json"], sidecar({
        "Description": "Binary lesion mask: connected components of probability >= Threshold that are at "
                       "least MinimumLesionSize_mm3 large and reach SeedThreshold somewhere.",
        "Type": "Lesion",
        "Sources": [source_uri, _self_uri(out_dir, paths["probseg"])],
        **definition_meta, **common}))

    _save_like(labels, _dseg_dtype(n_lesions), original_img, paths["dseg"], intent="label",
               description="bids_msseg numbered lesions")
    dseg_table = table.copy()
    if "index" not in dseg_table.columns:
        dseg_table.insert(0, "index", np.arange(1, n_lesions + 1))
    if "name" not in dseg_table.columns:
        dseg_table.insert(1, "name", [f"lesion-{i:03d}" for i in dseg_table["index"]])
    dseg_table = dseg_table[["index", "name"] + [c for c in dseg_table.columns if c not in ("index", "name")]]
    columns = {c: LESION_COLUMNS.get(c, {"Description": c}) for c in dseg_table.columns[2:]}
    write_tsv(paths["dseg_tsv"], dseg_table)
    write_json(paths["dseg_json"], sidecar({
        "Description": "Lesions numbered 1..N by decreasing volume (0 is background); the TSV lists them.",
        "Sources": [source_uri, _self_uri(out_dir, paths["probseg"])],
        **definition_meta, **common, **columns}))

    _save_like(brain, np.uint8, original_img, paths["brain"], intent="label",
               description="bids_msseg brain mask")
    write_json(paths["brain_json"], sidecar({
        "Description": "Brain mask used for intensity normalization and slice selection.",
        "Type": "Brain", "Sources": [source_uri], **common}))

    row = {
        "participant_id": f"sub-{entities['sub']}",
        "session_id": f"ses-{entities['ses']}" if "ses" in entities else None,
        "source": rel.as_posix(),
        "lesion_count": int(n_lesions),
        "total_lesion_volume_ml": round(float(mask.sum()) * voxel_mm3 / 1000.0, 4),
        "brain_volume_ml": round(float(brain.sum()) * voxel_mm3 / 1000.0, 3),
        "threshold": float(threshold),
        "seed_threshold": float(seed_threshold),
        "min_lesion_size_mm3": float(definition.min_size_mm3),
        "connectivity": definition.neighbours,
        "model_id": model_id,
        **dict(summary_extra or {}),
        **_flatten_decisions(decisions),
    }
    summary_columns = {c: SUMMARY_COLUMNS.get(c, {"Description": f"Preprocessing decision {c[8:]}."})
                       for c in row}
    write_json(paths["summary_json"], sidecar({
        "Description": "Per-run summary of the lesion segmentation (one row).",
        "Sources": [source_uri, _self_uri(out_dir, paths["dseg"]), _self_uri(out_dir, paths["brain"])],
        "ModelID": model_id, "PreprocessingDecisions": decisions, **summary_columns}))
    write_tsv(paths["summary"], pd.DataFrame([row]))
    LOGGER.info("%s: %d lesions, %.2f mL, written under %s", rel, n_lesions,
                row["total_lesion_volume_ml"], paths["mask"].parent)
    return paths


def write_location_derivatives(
    out_dir: Path,
    source_relpath: str | Path,
    original_img: nib.Nifti1Image,
    location_map: np.ndarray | None,
    template_mask: np.ndarray | None,
    template_probability: np.ndarray | None,
    template_affine: np.ndarray | None,
    *,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the lesion-location label map (+ TSV of its classes) and the template-space mask and
    probability map of one run; a None array (registration failed) removes that output instead.

    Call before :func:`write_run_derivatives`, whose summary marks the run complete.
    """
    out_dir = Path(out_dir)
    paths = derivative_paths(out_dir, source_relpath)
    rel, _, _ = parse_source(source_relpath)
    source_uri = f"bids:{RAW_LINK}:{rel.as_posix()}"
    meta = dict(meta or {})
    written: dict[str, Path] = {}
    if location_map is None:
        for key in ("location", "location_json", "location_tsv"):
            paths[key].unlink(missing_ok=True)
    else:
        _save_like(location_map, np.uint8, original_img, paths["location"], intent="label",
                   description="bids_msseg lesion location classes")
        write_tsv(paths["location_tsv"], location_label_table())
        write_json(paths["location_json"], {**meta,
            "Description": "Location class of each lesion voxel (McDonald 2017 / MAGNIMS 2016; the TSV names "
                           "the classes, docs/lesion_location.md gives the rules).",
            "Sources": [source_uri, _self_uri(out_dir, paths["dseg"])], "SpatialReference": source_uri,
            "description": {"Description": "The class's rule in words (the TSV's own column)."}})
        written.update({k: paths[k] for k in ("location", "location_json", "location_tsv")})
    for key, data, dtype, intent, text in (
            ("tpl_mask", template_mask, np.uint8, "label", "Binary lesion mask resampled to the template"),
            ("tpl_probseg", template_probability, np.float32, "estimate", "Lesion probability resampled to the "
                                                                         "template")):
        if data is None or template_affine is None:
            paths[key].unlink(missing_ok=True)
            paths[f"{key}_json"].unlink(missing_ok=True)
            continue
        img = nib.Nifti1Image(np.asarray(data).astype(dtype), template_affine)
        img.set_qform(template_affine, 4)
        img.set_sform(template_affine, 4)
        img.header.set_intent(intent)
        img.header.set_xyzt_units("mm")
        with atomic_path(paths[key]) as tmp:
            nib.save(img, tmp)
        own: dict[str, Any] = {"Description": f"{text} ({TEMPLATE_SPACE}, 1 mm; nilearn's copy of the ICBM 2009a "
                                              "nonlinear symmetric template) through the run's registration.",
                               "Sources": [_self_uri(out_dir, paths["mask" if key == "tpl_mask" else "probseg"])],
                               "SpatialReference": f"{TEMPLATE_SPACE}: nilearn's "
                                                   "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz (1 mm)"}
        if key == "tpl_mask":
            own["Type"] = "Lesion"
        write_json(paths[f"{key}_json"], {**meta, **own})
        written.update({key: paths[key], f"{key}_json": paths[f"{key}_json"]})
    return written


# --------------------------------------------------------------------------------- dataset level


def _raw_link(out_dir: Path, bids_root: Path) -> str:
    """How ``DatasetLinks`` points at the raw dataset: a relative path when the output lies inside it
    (``derivatives/bids_msseg`` -> ``../..``, which survives moving the whole dataset), else a file URI.
    """
    out_abs, raw_abs = Path(os.path.abspath(out_dir)), Path(os.path.abspath(bids_root))
    if out_abs != raw_abs and out_abs.is_relative_to(raw_abs):
        return PurePosixPath(*[".."] * len(out_abs.relative_to(raw_abs).parts)).as_posix()
    return raw_abs.as_uri()


def dataset_description(bids_root: Path, out_dir: Path, *, version: str,
                        container: Mapping[str, Any] | None = None, code_url: str | None = None,
                        description: str | None = None) -> dict:
    """The content of the derivative ``dataset_description.json`` (see write_dataset_description).

    ``description`` (``GeneratedBy[0].Description``) names the software versions and the model.
    """
    generated: dict[str, Any] = {"Name": PIPELINE_NAME, "Version": version}
    if description:
        generated["Description"] = description
    if code_url:
        generated["CodeURL"] = code_url
    if container:
        generated["Container"] = dict(container)
    description: dict[str, Any] = {
        "Name": DATASET_NAME,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "HowToAcknowledge": HOW_TO_ACKNOWLEDGE,
        "DatasetLinks": {RAW_LINK: _raw_link(out_dir, bids_root)},
    }
    raw_description = Path(bids_root) / "dataset_description.json"
    try:
        doi = json.loads(raw_description.read_text()).get("DatasetDOI")
    except (OSError, ValueError, AttributeError, RecursionError):
        doi = None
    if doi:
        description["SourceDatasets"] = [{"DOI": doi}]
    return description


def write_dataset_description(
    out_dir: Path,
    bids_root: Path,
    *,
    version: str,
    container: Mapping[str, Any] | None = None,
    code_url: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``dataset_description.json``, ``.bidsignore`` and a README at the output root.

    An identical existing description is left alone, so every participant job can call this.
    One written by another pipeline, or for a raw dataset, raises :class:`OutputError` rather than
    being overwritten; one from bids_msseg that differs (another version, a moved input) is
    replaced with a warning naming the fields that changed. ``.bidsignore`` only gains missing
    lines and an existing README is kept.
    """
    out_dir = Path(out_dir)
    target = out_dir / "dataset_description.json"
    wanted = _jsonable(dataset_description(bids_root, out_dir, version=version, container=container,
                                           code_url=code_url, description=description))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():
            try:
                existing = json.loads(target.read_text())
            except (ValueError, RecursionError) as err:
                raise OutputError(f"{target} is not valid JSON ({err}); refusing to replace it") from err
            if not isinstance(existing, dict):
                raise OutputError(f"{target} exists and is not a JSON object; refusing to replace it")
            pipelines = [g.get("Name") for g in existing.get("GeneratedBy", []) if isinstance(g, dict)]
            if existing.get("DatasetType") != "derivative" or PIPELINE_NAME not in pipelines:
                raise OutputError(
                    f"{target} describes another dataset ({existing.get('Name')!r}, generated by "
                    f"{pipelines or 'unknown'}); choose an output folder of its own for bids_msseg"
                )
            if existing == wanted:
                LOGGER.debug("%s is up to date", target)
            else:
                changed = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
                LOGGER.warning("%s: replacing fields %s written by an earlier run (%s)", target, changed,
                               existing.get("GeneratedBy"))
                write_json(target, wanted)
        else:
            write_json(target, wanted)
        _update_bidsignore(out_dir / ".bidsignore")
        readme = out_dir / "README.md"
        if not readme.exists():
            write_text_atomic(readme, _README)
    except OSError as err:
        raise OutputError(f"cannot write the dataset files in {out_dir}: {err}") from err
    return target


def _update_bidsignore(path: Path) -> Path:
    """Add the lines of BIDSIGNORE_LINES that ``path`` lacks, keeping the user's own lines."""
    lines = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in BIDSIGNORE_LINES if line not in lines]
    if missing:
        write_text_atomic(path, "\n".join(lines + missing) + "\n")
    return path


_README = """\
# bids_msseg derivatives

Multiple-sclerosis lesion segmentation of FLAIR images by bids_msseg. For each FLAIR run,
`sub-<label>/[ses-<label>/]anat/` holds, on the FLAIR's own voxel grid (`space-orig`):

- `*_space-orig_label-lesion_mask.nii.gz`: binary lesion mask
- `*_space-orig_label-lesion_probseg.nii.gz`: lesion probability in [0, 1]
- `*_space-orig_seg-lesions_dseg.nii.gz` and `.tsv`: numbered lesions and one row per lesion
- `*_space-orig_desc-brain_mask.nii.gz`: brain mask
- `*_desc-lesions_summary.tsv`: lesion count, total lesion volume, brain volume, model, choices,
  lesion counts and volumes per location class
- `*_space-orig_seg-lesionlocation_dseg.nii.gz` and `.tsv`: location class of each lesion
  (periventricular, juxtacortical, infratentorial, subcortical; McDonald 2017 / MAGNIMS 2016)
- `*_space-MNI152NLin2009aSym_label-lesion_mask.nii.gz` / `_probseg.nii.gz`: the same in template space

Each image has a JSON sidecar (threshold, lesion definition, model id, preprocessing decisions).
QC reports are the `*_desc-lesions_report.html` files at this folder's root; `logs/` holds the
methods text (`CITATION.md`) and crash reports.
"""


def segmented_runs(out_dir: Path) -> dict[str, dict[str, Any]]:
    """``{source FLAIR (relative to the raw dataset): its recorded PreprocessingDecisions}`` of every run
    whose lesion mask is in ``out_dir`` (decisions ``{}`` when the sidecar has none), sorted by source.

    Read from the masks' sidecars (``Sources``: ``bids:raw:<relpath>``), so the methods text and
    the group level describe every run of the output folder, whichever invocation made it.
    """
    runs: dict[str, dict[str, Any]] = {}
    prefix = f"bids:{RAW_LINK}:"
    for sidecar in Path(out_dir).glob("sub-*/**/anat/*_space-orig_label-lesion_mask.json"):
        if not sidecar.with_name(sidecar.name[: -len(".json")] + ".nii.gz").is_file():
            continue
        try:
            content = json.loads(sidecar.read_text())
            uris = content.get("Sources") or []
            decisions = content.get("PreprocessingDecisions")
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
        for uri in uris:
            if isinstance(uri, str) and uri.startswith(prefix):
                runs[uri[len(prefix):]] = dict(decisions) if isinstance(decisions, dict) else {}
    return dict(sorted(runs.items()))


def segmented_sources(out_dir: Path) -> list[str]:
    """The source FLAIRs (relative to the raw dataset) whose lesion mask is in ``out_dir``, sorted
    (:func:`segmented_runs`)."""
    return list(segmented_runs(out_dir))
