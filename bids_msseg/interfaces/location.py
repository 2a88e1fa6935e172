"""Lesion location of one run as a nipype interface (:func:`bids_msseg.anatomy.location.locate_run`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_msseg.anatomy.location import locate_run, summary_columns, template_centroids, with_locations
from bids_msseg.interfaces.common import load_array, load_original, save_nifti, write_json
from bids_msseg.interfaces.derivatives import read_table
from bids_msseg.runtime import set_threads

LOGGER = logging.getLogger(__name__)


class _LesionLocationInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the raw FLAIR (grid of every input)")
    probability = File(exists=True, mandatory=True, desc="lesion probability on the input's grid")
    labels = File(exists=True, mandatory=True, desc="numbered lesions on the input's grid")
    n_lesions = traits.Int(mandatory=True, desc="number of lesions")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the input's grid")
    table = File(exists=True, mandatory=True, desc="lesion table TSV")
    random_seed = traits.Int(0, usedefault=True, desc="seed of the registration")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="numpy/BLAS threads")


class _LesionLocationOutputSpec(TraitedSpec):
    table = File(exists=True, desc="the lesion table with location, confluent and touches columns")
    location = File(exists=True, desc="JSON: status, registration time, summary columns")
    location_map = File(desc="location classes on the input's grid (absent when registration failed)")
    template_mask = File(desc="lesion mask in template space (absent when registration failed)")
    template_probseg = File(desc="lesion probability in template space (absent when registration failed)")


class LesionLocation(SimpleInterface):
    """Register the template, classify each lesion, map mask and probability to the template.

    A failed registration is a warning: the table's location columns and the summary's are n/a,
    the other outputs are absent, and the run goes on.
    """

    input_spec = _LesionLocationInputSpec
    output_spec = _LesionLocationOutputSpec

    def _run_interface(self, runtime):
        set_threads(self.inputs.omp_nthreads)  # ITK on one thread: the registration repeats exactly
        original = load_original(self.inputs.in_file)
        affine = original.affine
        flair = np.asarray(original.dataobj, np.float32)
        labels = load_array(self.inputs.labels, np.int32)
        result = locate_run(flair, affine, load_array(self.inputs.brain_mask) > 0, labels,
                            int(self.inputs.n_lesions), load_array(self.inputs.probability, np.float32),
                            seed=int(self.inputs.random_seed))
        if result.locations is None:
            LOGGER.warning("%s: lesion locations are n/a (%s)", self.inputs.in_file, result.status)
        table = read_table(self.inputs.table)
        table = with_locations(table, result.locations, template_centroids(result.anatomy, table))
        cwd = Path(runtime.cwd)
        table_path = cwd / "lesions_located.tsv"
        table.to_csv(table_path, sep="\t", index=False, na_rep="n/a")
        self._results["table"] = str(table_path)
        summary = summary_columns(table, result.locations, result.status, result.anatomy.seconds)
        info = {"summary": summary, "registration": result.anatomy.details, "ventricles_from": result.ventricles_from}
        if result.location_map is not None:
            self._results["location_map"] = str(save_nifti(result.location_map, affine, cwd / "location.nii",
                                                           np.uint8))
        if result.template_mask is not None and result.anatomy.template is not None:
            tpl_affine = result.anatomy.template.affine
            self._results["template_mask"] = str(save_nifti(result.template_mask, tpl_affine,
                                                            cwd / "template_mask.nii", np.uint8))
            self._results["template_probseg"] = str(save_nifti(result.template_probability, tpl_affine,
                                                               cwd / "template_probseg.nii"))
        self._results["location"] = str(write_json(cwd / "location.json", info))
        return runtime
