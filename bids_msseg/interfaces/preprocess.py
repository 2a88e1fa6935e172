"""Preprocessing of one FLAIR (orientation, N4, brain extraction) as a nipype interface."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_msseg.interfaces.common import measure_peak_memory, save_nifti, write_json
from bids_msseg.preproc import preprocess_flair
from bids_msseg.runtime import seed_everything, set_threads
from bids_msseg.settings import force_flag

LOGGER = logging.getLogger(__name__)



class _PreprocessInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the raw FLAIR (any orientation)")
    metadata = traits.Dict(desc="the FLAIR's JSON sidecar metadata (helps the N4/skull decisions)")
    n4 = traits.Enum("auto", "on", "off", usedefault=True, desc="N4 bias-field correction")
    skullstrip = traits.Enum("auto", "on", "off", usedefault=True, desc="brain extraction")
    random_seed = traits.Either(None, traits.Int, usedefault=True, desc="seed of ANTs' sampling")
    force_contrast = traits.Bool(desc="segment an image whose contrast does not look like FLAIR (warned)")
    min_brain_volume = traits.Float(desc="smallest plausible brain-mask volume (mL)")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="threads (not part of the hash)")
    source_sha256 = traits.Str(desc="sha256 of in_file: part of the hash, so a FLAIR replaced by another with the "
                                    "same size and time (which nipype's file hash compares) is recomputed")


class _PreprocessOutputSpec(TraitedSpec):
    corrected = File(exists=True, desc="bias-corrected FLAIR, float32, RAS+ (the processing grid)")
    brain_mask = File(exists=True, desc="brain mask on the processing grid, uint8")
    decisions = File(exists=True, desc="JSON: decisions with their reasons, timings, voxel sizes")


class Preprocess(SimpleInterface):
    """Run :func:`bids_msseg.preproc.preprocess_flair` and save its arrays on the RAS+ grid.

    The corrected image and mask keep the RAS+ affine of the reoriented FLAIR, so they are
    correct images in world space; :class:`~bids_msseg.interfaces.lesions.LesionStats` maps the
    results back onto the input's grid.
    """

    input_spec = _PreprocessInputSpec
    output_spec = _PreprocessOutputSpec

    @measure_peak_memory
    def _run_interface(self, runtime):
        seeded = self.inputs.random_seed is not None
        set_threads(self.inputs.omp_nthreads, itk_threads=1 if seeded else self.inputs.omp_nthreads)
        seed_everything(self.inputs.random_seed, with_torch=False)  # no torch here: not imported for it
        result = preprocess_flair(
            self.inputs.in_file,
            sidecar=dict(self.inputs.metadata) or None,
            force_n4=force_flag(self.inputs.n4),
            force_skullstrip=force_flag(self.inputs.skullstrip),
            random_seed=self.inputs.random_seed,
            force_contrast=bool(isdefined(self.inputs.force_contrast) and self.inputs.force_contrast),
            min_brain_ml=self.inputs.min_brain_volume if isdefined(self.inputs.min_brain_volume) else None,
        )
        cwd = Path(runtime.cwd)
        affine = result.ras.affine
        corrected = save_nifti(result.corrected, affine, cwd / "corrected.nii", np.float32)
        brain_mask = save_nifti(result.brain_mask, affine, cwd / "brain_mask.nii", np.uint8)
        self._results.update(corrected=str(corrected), brain_mask=str(brain_mask))
        decisions = result.decisions.to_json()
        if isinstance(decisions, str):  # PreprocDecisions.to_json() returns the JSON text
            decisions = json.loads(decisions)
        if getattr(result, "contrast_warning", None):  # only then: other runs' outputs stay as they were
            decisions["contrast_warning"] = result.contrast_warning
        self._results["decisions"] = str(write_json(cwd / "preprocessing.json", {
            "decisions": decisions,
            "timings": dict(getattr(result, "timings", {}) or {}),
            "zooms": [float(z) for z in result.zooms],
        }))
        return runtime
