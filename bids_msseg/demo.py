"""A self-contained demo: build a small BIDS dataset offline, run participant and group on it.

    python -m bids_msseg.demo /tmp/bids_msseg_demo

The FLAIRs are synthesized from nilearn's MNI152 template (shipped inside the nilearn wheel)
with the same FLAIR-contrast and acquisition simulation as the default model's training data,
and with random ellipsoidal "lesions" in white matter, so it needs no data beyond the installed
packages. The lesion masks used to paint them are written as expert masks under
``derivatives/manual`` so that the group level can evaluate against them.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_msseg.cli.run import configure_logging
from bids_msseg.cli.run import main as cli_main

LOGGER = logging.getLogger("bids_msseg.demo")


def _random_lesions(brain: np.ndarray, t1: np.ndarray, wm_level: float, rng: np.random.Generator,
                    n: int) -> np.ndarray:
    """``n`` small ellipsoids centred in white matter (bright T1 voxels deep in the brain)."""
    deep = ndimage.binary_erosion(brain, iterations=12) & (t1 > wm_level)
    candidates = np.argwhere(deep)
    lesion = np.zeros(brain.shape, bool)
    grid = np.indices(brain.shape, sparse=True)
    for c in candidates[rng.choice(len(candidates), size=n, replace=False)]:
        radii = rng.uniform(1.5, 5.0, 3)
        lesion |= sum(((g - ci) / r) ** 2 for g, ci, r in zip(grid, c, radii, strict=True)) <= 1.0
    return lesion & brain


def make_demo_dataset(bids_dir: Path, n_subjects: int = 2, seed: int = 0) -> Path:
    """Write a BIDS dataset of ``n_subjects`` synthetic FLAIRs with expert masks in derivatives."""
    from nilearn import datasets  # lazy: nilearn (scikit-learn) only to fetch the templates

    # lazy: torch and nilearn, only when a demo dataset is built
    from bids_msseg.train.synth import flair_contrast, load_anatomies, paint_lesions, simulate_acquisition

    bids_dir = Path(bids_dir)
    template = datasets.load_mni152_template(resolution=1)
    anatomy = load_anatomies(template)[0]
    (bids_dir / "derivatives" / "manual").mkdir(parents=True, exist_ok=True)
    (bids_dir / "dataset_description.json").write_text(json.dumps(
        {"Name": "bids_msseg demo (synthetic)", "BIDSVersion": "1.9.0", "DatasetType": "raw"}, indent=1))
    (bids_dir / "derivatives" / "manual" / "dataset_description.json").write_text(json.dumps(
        {"Name": "demo lesion masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "bids_msseg.demo"}]}, indent=1))
    rows = ["participant_id\tsite"]
    for i in range(n_subjects):
        rng = np.random.default_rng([seed, i])
        sub = f"sub-demo{i + 1:02d}"
        image, wm_level = flair_contrast(anatomy, rng)
        lesion = _random_lesions(anatomy.brain, anatomy.image, anatomy.centres[2], rng, n=int(rng.integers(4, 12)))
        image = paint_lesions(image, lesion, wm_level, rng)
        vol = simulate_acquisition(image, anatomy.brain, lesion, rng, anatomy.affine)
        affine = np.diag([*vol.zooms, 1.0])
        affine[:3, 3] = -np.array(vol.image.shape) * np.array(vol.zooms) / 2
        anat = bids_dir / sub / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol.image, affine), anat / f"{sub}_FLAIR.nii.gz")
        (anat / f"{sub}_FLAIR.json").write_text(json.dumps(
            {"Manufacturer": "Synthetic", "InstitutionName": f"demo-site-{i % 2 + 1}", "SkullStripped": True}))
        manual = bids_dir / "derivatives" / "manual" / sub / "anat"
        manual.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol.lesion.astype(np.uint8), affine),
                 manual / f"{sub}_label-lesion_mask.nii.gz")
        rows.append(f"{sub}\tdemo-site-{i % 2 + 1}")
    (bids_dir / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids_dir


def main(argv: list[str] | None = None) -> int:
    """Build the demo dataset under ``argv[0]`` and run both analysis levels on it."""
    configure_logging(0)  # the CLI's own handler, so messages are not printed twice
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "bids_msseg_demo").resolve()
    bids_dir, out_dir = root / "bids", root / "derivatives" / "bids_msseg"
    if not (bids_dir / "dataset_description.json").exists():
        make_demo_dataset(bids_dir)
    for level in ("participant", "group"):
        code = cli_main([str(bids_dir), str(out_dir), level, "-w", str(root / "work")])
        if code != 0:
            LOGGER.error("the %s level exited with %d", level, code)
            return code
    LOGGER.info("demo dataset: %s", bids_dir)
    LOGGER.info("outputs:      %s", out_dir)
    for html in sorted(out_dir.rglob("*.html")):
        LOGGER.info("report:       %s", html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
