"""Normalization and network inference of one preprocessed FLAIR as a nipype interface.

The model bundle is loaded once per process and kept (keyed by its path and id): MultiProc's
workers live for the whole workflow, so a worker that segments several FLAIRs reads and checks
the weights once. The device and the thread count are not part of nipype's hash: moving a run
from a GPU to a CPU does not invalidate the cached probability maps (``model_id``, the
normalization and the precision are).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_msseg.interfaces.common import load_array, measure_peak_memory, save_nifti
from bids_msseg.model.bundle import load_bundle
from bids_msseg.runtime import seed_everything, set_threads

LOGGER = logging.getLogger(__name__)

_BUNDLES: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


def get_bundle(path: str | Path, model_id: str = ""):
    """The :class:`~bids_msseg.model.bundle.ModelBundle` at ``path``, loaded once per process."""
    key = (str(Path(path).resolve()), model_id)
    with _LOCK:
        if key not in _BUNDLES:
            start = time.perf_counter()
            bundle = load_bundle(Path(path))
            if model_id and bundle.card.model_id != model_id:
                raise RuntimeError(f"{path}: the bundle changed during the run (model id "
                                   f"{bundle.card.model_id}, expected {model_id})")
            _BUNDLES[key] = bundle
            LOGGER.debug("model %s loaded in %.1f s", bundle.card.model_id, time.perf_counter() - start)
        return _BUNDLES[key]


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="bias-corrected FLAIR on the RAS+ grid")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    bundle_path = traits.Str(mandatory=True, desc="model bundle directory")
    model_id = traits.Str(mandatory=True, desc="the bundle's id (name@sha256 prefix): part of the hash")
    normalization = traits.Enum("model", "quantile", "linear", usedefault=True,
                                desc="'model' = the bundle's own normalization")
    precision = traits.Enum("auto", "fp32", "bf16", usedefault=True, desc="inference precision")
    device = traits.Enum("auto", "cpu", "cuda", usedefault=True, nohash=True, desc="where to run")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="torch threads")
    batch_size = traits.Int(4, usedefault=True, nohash=True, desc="slices per forward pass")
    random_seed = traits.Either(None, traits.Int, usedefault=True, nohash=True, desc="torch seed")


class _SegmentOutputSpec(TraitedSpec):
    probability = File(exists=True, desc="lesion probability, float32, on the RAS+ grid")
    device = traits.Str(desc="the device the network ran on")
    precision = traits.Str(desc="the arithmetic the network ran in (fp32, bf16 or fp16)")
    seconds = traits.Float(desc="wall-clock time of normalization and inference")


class Segment(SimpleInterface):
    """Run :func:`bids_msseg.segment.segment_volume` with a cached model bundle."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    @measure_peak_memory
    def _run_interface(self, runtime):
        from bids_msseg.model.predict import (  # lazy: torch, only in the worker that segments
            effective_precision,
            resolve_device,
        )
        from bids_msseg.segment import segment_volume  # lazy: torch, only in the worker that segments

        set_threads(self.inputs.omp_nthreads)
        seed_everything(self.inputs.random_seed)
        bundle = get_bundle(self.inputs.bundle_path, self.inputs.model_id)
        device = resolve_device(self.inputs.device)
        img = nib.load(self.inputs.in_file)
        data = np.asarray(img.dataobj, dtype=np.float32)
        mask = load_array(self.inputs.brain_mask).astype(bool)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        start = time.perf_counter()
        probability = segment_volume(
            data, mask, zooms, bundle, device,
            precision=self.inputs.precision,
            normalization=None if self.inputs.normalization == "model" else self.inputs.normalization,
            batch_size=self.inputs.batch_size,
        )
        seconds = time.perf_counter() - start
        out = save_nifti(probability, img.affine, Path(runtime.cwd) / "probability.nii", np.float32)
        self._results.update(probability=str(out), device=str(device), seconds=round(seconds, 2),
                             precision=effective_precision(device, self.inputs.precision))
        return runtime
