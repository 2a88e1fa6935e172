#!/usr/bin/env python
"""Rescan stability: do lesions come and go between pseudo-rescans of one scan?

    python benchmarks/rescan_stability.py --bids BIDS_DIR [--model BUNDLE] [--copies 4] [--participant-label p26 ...]
        [--threshold T --seed-threshold S --seed-threshold-thick S] [--perturb input|preprocessed]

Each FLAIR of the dataset (with ``--participant-label``, those subjects) is copied ``--copies`` times
with what a rescan on the same grid changes: an independent smooth multiplicative bias field
(+-10 %), a global gain (0.8-1.25) and Rician-like noise (2 % of the brain's median). Every copy is
segmented (:func:`bids_msseg.segment.segment_volume`, the bundle's threshold, seed threshold (its
thick-slice one on a thick-slice scan) and the one lesion definition), and the copies are compared
with the unchanged scan: lesions of 10 mm3 or more that appear or vanish (no overlap with any lesion
of the other mask), and the lesion volume's change in %. The issue's target: no such lesion, volume
within 2 %. Prints one line per copy and a summary per scan; seeded (``--seed``), so a rerun gives the same copies.

Where the copy is made (``--perturb``):

* ``input`` (default), what a rescan is: the input file is perturbed (inside its non-zero support, so
  a skull-stripped input stays skull-stripped) and every copy goes through the participant level's
  preprocessing (:func:`bids_msseg.preproc.preprocess_flair`) on its own, decisions included. N4
  then removes the new field of a raw scan; a skull-stripped input is not bias-corrected (the
  product assumes its pipeline did it), so its copies keep the field.
* ``preprocessed``: the scan is preprocessed once and the copies perturb the preprocessed image, so
  the network sees the whole field even where N4 would have removed it (the measure of bids_msseg
  0.2.2 and earlier).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_msseg.bids import collect_flair_runs
from bids_msseg.lesions import LesionDefinition, binarize, label_lesions, seed_threshold_for
from bids_msseg.model.bundle import load_bundle
from bids_msseg.model.predict import resolve_device
from bids_msseg.preproc import preprocess_flair
from bids_msseg.runtime import seed_everything, set_threads
from bids_msseg.segment import segment_volume
from bids_msseg.settings import Options, SegmentationSettings

LOGGER = logging.getLogger("rescan_stability")
MIN_MM3 = 10.0


def pseudo_rescan(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                  tissue: np.ndarray | None = None) -> np.ndarray:
    """One copy of ``image`` with a new smooth bias field, gain and noise inside ``brain`` (module docstring).

    Outside ``brain`` the image only takes the gain. The noise is 2 % of the median of ``tissue``
    (default ``brain``).
    """
    coarse = rng.normal(0.0, 1.0, (4, 4, 4))
    field = ndimage.zoom(coarse, np.array(image.shape) / 4.0, order=3)[: image.shape[0], : image.shape[1],
                                                                        : image.shape[2]]
    field = 1.0 + 0.1 * field / max(1e-6, float(np.abs(field).max()))
    gain = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    sigma = 0.02 * float(np.median(image[brain if tissue is None else tissue]))
    noisy = np.hypot(image * field * gain + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))
    return np.where(brain, noisy, image * gain).astype(np.float32)


def unmatched(a: np.ndarray, b: np.ndarray, voxel_mm3: float, definition: LesionDefinition) -> int:
    """Lesions of ``a`` of at least :data:`MIN_MM3` that touch no voxel of ``b``."""
    labels, n = label_lesions(a, voxel_mm3, definition)
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_mm3
    touched = np.zeros(n + 1, bool)
    touched[np.unique(labels[(labels > 0) & b])] = True
    return int(((sizes >= MIN_MM3) & ~touched[1:]).sum())


def rescan_file(path: Path, rng: np.random.Generator, out: Path) -> Path:
    """A pseudo-rescan of the input file ``path`` written to ``out`` (same grid and header, float32).

    Field and noise apply inside the input's non-zero support; its zeros (a skull-stripped input's
    background) stay zero.
    """
    original = nib.load(str(path))
    data = np.asarray(original.dataobj, np.float32)
    support = data != 0
    # A raw scan's support includes the air: its noise is scaled to the voxels brighter than the mean.
    copy = pseudo_rescan(data, support, rng, tissue=support & (data > data[support].mean()))
    header = original.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    nib.save(nib.Nifti1Image(copy, original.affine, header), str(out))
    return out


def lesion_mask(image: np.ndarray, brain: np.ndarray, zooms: tuple[float, float, float], bundle, device,
                definition: LesionDefinition, threshold: float, seed_threshold: float) -> np.ndarray:
    """The participant level's lesion mask of a preprocessed image."""
    probability = segment_volume(image, brain, zooms, bundle, device, "auto")
    return binarize(probability, threshold, float(np.prod(zooms)), definition, seed_threshold)[0] > 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bids", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None, help="bundle (default: the packaged model)")
    p.add_argument("--participant-label", nargs="+", default=None)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force-contrast", action="store_true")
    p.add_argument("--threshold", type=float, default=None, help="default: the bundle's")
    p.add_argument("--seed-threshold", type=float, default=None, help="default: the bundle's")
    p.add_argument("--seed-threshold-thick", type=float, default=None,
                   help="thick-slice scans' seed threshold (default: the bundle's; with --seed-threshold alone, that)")
    p.add_argument("--perturb", choices=("input", "preprocessed"), default="input",
                   help="perturb the input file and preprocess every copy (default), or the preprocessed image")
    args = p.parse_args()
    set_threads(os.cpu_count() or 1)  # and ITK on one thread, as the participant level: N4 and registration repeat
    seed_everything(args.seed)
    bundle = load_bundle(args.model)
    card = bundle.card
    definition = LesionDefinition(card.connectivity, card.min_lesion_size_mm3)
    device = resolve_device("auto")
    given = Options(args.bids, args.bids, "participant", threshold=args.threshold, seed_threshold=args.seed_threshold,
                    seed_threshold_thick=args.seed_threshold_thick)
    settings = SegmentationSettings.resolve(given, card)  # the point as the participant level resolves it
    threshold, seed, seed_thick = settings.threshold, settings.seed_threshold, settings.seed_threshold_thick
    LOGGER.info("model %s, threshold %g, seed threshold %g (thick-slice scans %s); copies perturb the %s",
                card.model_id, threshold, seed, "the same" if seed_thick is None else f"{seed_thick:g}",
                "input file" if args.perturb == "input" else "preprocessed image")
    worst_lesions, worst_volume = 0, 0.0
    scratch = tempfile.TemporaryDirectory(prefix="rescan_")
    for run in collect_flair_runs(args.bids, participant_labels=args.participant_label):
        result = preprocess_flair(run.path, force_contrast=args.force_contrast)
        brain = np.asarray(result.brain_mask, bool)
        voxel = float(np.prod(result.zooms))
        point = (threshold, seed_threshold_for(result.zooms, seed, seed_thick))
        reference = lesion_mask(result.corrected, brain, result.zooms, bundle, device, definition, *point)
        rng = np.random.default_rng([args.seed, len(run.name)])
        ref_ml = reference.sum() * voxel / 1000.0
        for copy in range(args.copies):
            if args.perturb == "input":
                copied = preprocess_flair(rescan_file(run.path, rng, Path(scratch.name) / f"copy{copy}.nii.gz"),
                                          force_contrast=args.force_contrast)
                image, copy_brain = copied.corrected, np.asarray(copied.brain_mask, bool)
            else:
                image, copy_brain = pseudo_rescan(result.corrected, brain, rng), brain
            mask = lesion_mask(image, copy_brain, result.zooms, bundle, device, definition, *point)
            appeared, vanished = unmatched(mask, reference, voxel, definition), unmatched(reference, mask, voxel,
                                                                                         definition)
            change = 100.0 * (mask.sum() * voxel / 1000.0 - ref_ml) / ref_ml if ref_ml else 0.0
            worst_lesions = max(worst_lesions, appeared + vanished)
            worst_volume = max(worst_volume, abs(change))
            LOGGER.info("%s copy %d: %d lesion(s) >= %g mm3 appeared, %d vanished; volume %.2f mL -> %.2f mL "
                        "(%+.1f %%)", run.name, copy + 1, appeared, MIN_MM3, vanished, ref_ml,
                        mask.sum() * voxel / 1000.0, change)
    LOGGER.info("worst copy: %d lesion(s) >= %g mm3 appeared or vanished, volume change %.1f %% (targets: 0, < 2 %%)",
                worst_lesions, MIN_MM3, worst_volume)


if __name__ == "__main__":
    main()
