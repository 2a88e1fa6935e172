"""From a probability map on the processing grid to lesions on the input's grid."""

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

from bids_msseg.interfaces.common import load_array, load_original, measure_peak_memory, save_nifti
from bids_msseg.lesions import LesionDefinition, binarize, lesion_table
from bids_msseg.preproc.orient import from_ras

LOGGER = logging.getLogger(__name__)


class _LesionStatsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the raw FLAIR: defines the output grid")
    probability = File(exists=True, mandatory=True, desc="lesion probability on the RAS+ grid")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the RAS+ grid")
    threshold = traits.Range(low=0.0, high=1.0, mandatory=True, desc="probability threshold")
    seed_threshold = traits.Range(low=0.0, high=1.0, value=0.0, usedefault=True,
                                  desc="a lesion must reach this probability somewhere (0: off)")
    min_lesion_size_mm3 = traits.Float(mandatory=True, desc="smallest lesion kept, mm^3")
    connectivity = traits.Enum(1, 2, 3, mandatory=True, desc="1: 6-, 2: 18-, 3: 26-neighbourhood")


class _LesionStatsOutputSpec(TraitedSpec):
    probability = File(exists=True, desc="lesion probability on the input's grid, float32")
    labels = File(exists=True, desc="lesions numbered 1..N (largest first) on the input's grid, int32")
    brain_mask = File(exists=True, desc="brain mask on the input's grid, uint8")
    table = File(exists=True, desc="TSV: one row per lesion")
    n_lesions = traits.Int(desc="number of lesions")


class LesionStats(SimpleInterface):
    """Map probability and brain mask back to the input grid, then binarize and tabulate lesions.

    Lesions are defined on the input's own grid (the one the outputs are written on), with the
    single lesion definition of :mod:`bids_msseg.lesions`, so mask, count and table agree with
    what a user measures on the output files.
    """

    input_spec = _LesionStatsInputSpec
    output_spec = _LesionStatsOutputSpec

    @measure_peak_memory
    def _run_interface(self, runtime):
        original = load_original(self.inputs.in_file)
        probability = np.asarray(from_ras(load_array(self.inputs.probability, np.float32), original),
                                 dtype=np.float32)
        brain = np.asarray(from_ras(load_array(self.inputs.brain_mask, np.uint8), original)) > 0
        definition = LesionDefinition(connectivity=int(self.inputs.connectivity),
                                      min_size_mm3=float(self.inputs.min_lesion_size_mm3))
        voxel_mm3 = float(abs(np.linalg.det(original.affine[:3, :3])))
        _, labels, n = binarize(probability, float(self.inputs.threshold), voxel_mm3, definition,
                                float(self.inputs.seed_threshold))
        table = lesion_table(labels, n, original.affine, probability)

        cwd = Path(runtime.cwd)
        affine = original.affine
        self._results["probability"] = str(save_nifti(probability, affine, cwd / "probability.nii"))
        self._results["labels"] = str(save_nifti(labels, affine, cwd / "labels.nii", np.int32))
        self._results["brain_mask"] = str(save_nifti(brain, affine, cwd / "brain_mask.nii", np.uint8))
        table_path = cwd / "lesions.tsv"
        table.to_csv(table_path, sep="\t", index=False, na_rep="n/a")
        self._results["table"] = str(table_path)
        self._results["n_lesions"] = int(n)
        LOGGER.debug("%s: %d lesions", self.inputs.in_file, n)
        return runtime
