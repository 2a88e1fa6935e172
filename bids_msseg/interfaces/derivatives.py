"""Writing a run's BIDS derivatives and its QC report, as nipype interfaces.

Both interfaces write outside the node's directory (into the output dataset) and are marked
``always_run``: nipype's cache cannot tell whether someone deleted or replaced those files, and
writing them again from cached inputs costs seconds.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_msseg.anatomy.location import summary_columns, with_locations
from bids_msseg.derivatives import write_location_derivatives, write_run_derivatives
from bids_msseg.interfaces.common import load_array, load_original, measure_peak_memory, read_json
from bids_msseg.lesions import LOCATION_OFF, LesionDefinition

LOGGER = logging.getLogger(__name__)


def read_table(path: str) -> pd.DataFrame:
    """Read a lesion TSV written by LesionStats (``n/a`` = missing)."""
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


class _WriteDerivativesInputSpec(BaseInterfaceInputSpec):
    out_dir = traits.Str(mandatory=True, desc="root of the derivative dataset")
    source_relpath = traits.Str(mandatory=True, desc="the source FLAIR relative to the BIDS root")
    in_file = File(exists=True, mandatory=True, desc="the source FLAIR (defines grid and header)")
    probability = File(exists=True, mandatory=True, desc="probability on the input's grid")
    labels = File(exists=True, mandatory=True, desc="numbered lesions on the input's grid")
    n_lesions = traits.Int(mandatory=True, desc="number of lesions")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the input's grid")
    table = File(exists=True, mandatory=True, desc="lesion table TSV")
    threshold = traits.Float(mandatory=True)
    seed_threshold = traits.Float(0.0, usedefault=True)
    min_lesion_size_mm3 = traits.Float(mandatory=True)
    connectivity = traits.Enum(1, 2, 3, mandatory=True)
    model_id = traits.Str(mandatory=True)
    decisions = File(exists=True, mandatory=True, desc="JSON from Preprocess")
    extra_meta = traits.Dict(desc="added to every sidecar (normalization, precision, ...)")
    device = traits.Str(desc="the device the network ran on (recorded as InferenceDevice)")
    location = File(exists=True, desc="JSON from LesionLocation (summary columns, registration); "
                                      "undefined: location is off (--no-location)")
    location_map = File(desc="location classes on the input's grid (LesionLocation)")
    template_mask = File(desc="lesion mask in template space (LesionLocation)")
    template_probseg = File(desc="lesion probability in template space (LesionLocation)")
    precision = traits.Str(desc="the arithmetic it ran in (recorded as InferencePrecision)")


class _WriteDerivativesOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="every file written")
    mask = File(exists=True, desc="the binary lesion mask")
    summary = File(exists=True, desc="the per-run summary TSV")
    table = File(exists=True, desc="the lesion TSV as written (with its location columns)")


class WriteDerivatives(SimpleInterface):
    """Call :func:`bids_msseg.derivatives.write_run_derivatives` with the run's results."""

    input_spec = _WriteDerivativesInputSpec
    output_spec = _WriteDerivativesOutputSpec
    always_run = True

    @measure_peak_memory
    def _run_interface(self, runtime):
        extra = dict(self.inputs.extra_meta) if self.inputs.extra_meta else {}
        if self.inputs.device:
            extra["InferenceDevice"] = self.inputs.device
        if self.inputs.precision:
            extra["InferencePrecision"] = self.inputs.precision
        table, summary_extra = self._write_location(read_table(self.inputs.table), extra)
        paths = write_run_derivatives(
            self.inputs.out_dir,
            self.inputs.source_relpath,
            load_original(self.inputs.in_file),
            load_array(self.inputs.probability, np.float32),
            load_array(self.inputs.labels, np.int32),
            int(self.inputs.n_lesions),
            load_array(self.inputs.brain_mask).astype(bool),
            table,
            threshold=float(self.inputs.threshold),
            seed_threshold=float(self.inputs.seed_threshold),
            definition=LesionDefinition(connectivity=int(self.inputs.connectivity),
                                        min_size_mm3=float(self.inputs.min_lesion_size_mm3)),
            model_id=self.inputs.model_id,
            decisions=read_json(self.inputs.decisions)["decisions"],
            extra_meta=extra or None,
            summary_extra=summary_extra,
        )
        self._results["out_files"] = sorted(str(p) for p in paths.values() if p.exists())
        self._results["mask"] = str(paths["mask"])
        self._results["summary"] = str(paths["summary"])
        self._results["table"] = str(paths["dseg_tsv"])
        return runtime

    def _write_location(self, table: pd.DataFrame, extra: dict) -> tuple[pd.DataFrame, dict]:
        """Write the outputs of LesionLocation; return the lesion table and the summary's location columns.

        Without LesionLocation (``--no-location``) the location outputs of an earlier run are removed
        and the columns are n/a.
        """
        if not isdefined(self.inputs.location):
            write_location_derivatives(self.inputs.out_dir, self.inputs.source_relpath,
                                       load_original(self.inputs.in_file), None, None, None, None)
            table = with_locations(table, None)
            return table, summary_columns(table, None, LOCATION_OFF, None)
        info = read_json(self.inputs.location)

        def optional(name: str, dtype: type) -> tuple[np.ndarray | None, np.ndarray | None]:
            path = getattr(self.inputs, name)
            if not isdefined(path) or not path:
                return None, None
            img = nib.load(path)
            return np.asarray(img.dataobj).astype(dtype), img.affine

        location_map, _ = optional("location_map", np.uint8)
        tpl_mask, tpl_affine = optional("template_mask", np.uint8)
        tpl_prob, _ = optional("template_probseg", np.float32)
        meta = {**extra, "LocationRules": "docs/lesion_location.md", "Registration": info.get("registration"),
                "VentriclesFrom": info.get("ventricles_from")}
        write_location_derivatives(self.inputs.out_dir, self.inputs.source_relpath,
                                   load_original(self.inputs.in_file), location_map, tpl_mask, tpl_prob,
                                   tpl_affine, meta=meta)
        return table, dict(info["summary"])


class _ReportInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the source FLAIR")
    mask = File(exists=True, mandatory=True, desc="lesion mask (or numbered lesions) on its grid")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on its grid")
    table = File(exists=True, mandatory=True, desc="lesion table TSV")
    summary = File(exists=True, mandatory=True, desc="the run's summary TSV (one row)")
    decisions = File(exists=True, mandatory=True, desc="JSON from Preprocess")
    out_report = traits.Str(mandatory=True, desc="where the HTML report goes")
    probability = File(exists=True, desc="lesion probability on the FLAIR's grid")
    expert_mask = traits.Str("", usedefault=True, desc="an expert lesion mask of this FLAIR (outlined on its grid)")
    about = traits.Dict(desc="command line, software and model versions (shown in the report)")
    citation = traits.Str("", usedefault=True, desc="logs/CITATION.md, shown as the report's methods section")


class _ReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="the HTML report")


class ParticipantReport(SimpleInterface):
    """Call :func:`bids_msseg.reports.participant.render_participant_report` for one run."""

    input_spec = _ReportInputSpec
    output_spec = _ReportOutputSpec
    always_run = True

    @measure_peak_memory
    def _run_interface(self, runtime):
        # lazy: matplotlib, only in the worker that renders the report
        from bids_msseg.reports.participant import render_participant_report

        flair = load_original(self.inputs.in_file)
        summary = read_table(self.inputs.summary).iloc[0].to_dict()
        summary = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in summary.items()}
        expert, expert_source = _expert_on_grid(self.inputs.expert_mask, flair)
        about = {"Date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), **dict(self.inputs.about or {})}
        citation = Path(self.inputs.citation) if self.inputs.citation else None
        out = render_participant_report(
            self.inputs.out_report,
            flair,
            load_array(self.inputs.mask),
            load_array(self.inputs.brain_mask).astype(bool),
            read_table(self.inputs.table),
            summary,
            read_json(self.inputs.decisions)["decisions"],
            probability=load_array(self.inputs.probability, np.float32) if isdefined(self.inputs.probability) else None,
            expert_mask=expert,
            expert_source=expert_source,
            about=about,
            methods=_methods_body(citation),
        )
        self._results["out_report"] = str(out)
        return runtime


def _expert_on_grid(path: str, flair: nib.Nifti1Image) -> tuple[np.ndarray | None, str]:
    """The expert mask at ``path`` when it lies on the FLAIR's grid (else None, with a warning)."""
    if not path:
        return None, ""
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        data = data.reshape(data.shape[:3]) if data.ndim == 4 and data.shape[3] == 1 else data
    except (OSError, ValueError) as err:
        LOGGER.warning("expert mask %s unreadable (%s): not shown in the report", path, err)
        return None, ""
    if data.shape != flair.shape[:3] or not np.allclose(img.affine, flair.affine, atol=1e-3):
        LOGGER.warning("expert mask %s is not on the FLAIR's grid: not shown in the report", path)
        return None, ""
    return data > 0, Path(path).name


def _methods_body(citation: Path | None) -> str:
    """The text of ``CITATION.md`` without its title line ('' when absent)."""
    if citation is None or not citation.is_file():
        return ""
    lines = citation.read_text(encoding="utf-8").splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines)
