"""A self-contained demo: build a small BIDS dataset offline, run participant and group on it.

    python -m bids_msseg.demo /tmp/bids_msseg_demo

Each FLAIR is synthesized the way the default model's training data are: a FLAIR-like contrast
made from nilearn's MNI152 template (shipped inside the nilearn wheel), with real MS lesions
painted in (the expert masks of two 3D-MR-MS patients, shipped with the package under
``bids_msseg/data/demo_lesions``, CC-BY, Lesjak et al. 2017), then resampled onto a random
scanner grid with bias field and noise. The same masks are written as expert masks under
``derivatives/manual`` so that the group level evaluates the segmentation against them.

What the figures mean: the demo shows the pipeline end to end on data like a user's (real lesion
shapes, sizes and places, FLAIR contrast, a scanner grid), not the model's accuracy on unseen
patients: the two masks are among those the default model was trained with (on other images).

The dataset is built in a temporary folder and moved into place when complete, so an
interrupted build is never reused; a complete one is (delete the folder to start over).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
import time
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_msseg.cli.run import configure_logging
from bids_msseg.cli.run import main as cli_main

LOGGER = logging.getLogger("bids_msseg.demo")

#: (subject, packaged expert mask) of each demo participant.
SUBJECTS = (("demo01", "3dmrms-patient02_lesion-mask_mni.nii.gz"),
            ("demo02", "3dmrms-patient15_lesion-mask_mni.nii.gz"))
#: Written last into a complete demo dataset.
COMPLETE_MARKER = ".bids_msseg_demo_complete"
EXPLANATION = (
    "these FLAIRs are synthetic (MNI152 anatomy, a FLAIR-like contrast, a random scanner grid) with the real lesions "
    "of two 3D-MR-MS patients painted in, and the figures compare bids_msseg's lesions with those expert masks. "
    "Read the Dice first (voxel overlap: 1 is perfect, two human experts typically agree at 0.6-0.7); the lesion "
    "counts also include small false lesions, which the current default model tends to add. Both masks were among "
    "the model's training lesions (on other images), so this shows the pipeline at work, not its accuracy on new "
    "patients (see docs/model_card.md)."
)


def _packaged_mask(name: str) -> nib.Nifti1Image:
    path = resources.files("bids_msseg").joinpath("data", "demo_lesions", name)
    with resources.as_file(path) as local:
        img = nib.load(str(local))
        return nib.Nifti1Image(np.asarray(img.dataobj) > 0, img.affine, img.header)


def expert_volumes(lesion_1mm: np.ndarray, lesion_scan: np.ndarray, zooms: tuple[float, ...]) -> str:
    """The expert mask's volume on the 1 mm template and as written on the demo scan's grid, in words.

    They differ, and the evaluation uses the second: the scan's grid is another size and shape
    (random voxel sizes, slices up to 5 mm thick, a random scaling of up to 10% per axis), and the mask
    is kept where at least half of a scan voxel is lesion, so thin and small lesions shrink or vanish
    on thick slices (patient 02's mask: 1.4 mL on the 1 mm grid, 0.9 mL on the demo scan's).
    """
    native = float(np.count_nonzero(lesion_1mm)) * 1e-3
    scan = float(np.count_nonzero(lesion_scan)) * float(np.prod(zooms[:3])) * 1e-3
    return (f"{native:.1f} mL on the 1 mm template; the expert mask resampled onto this scan's grid, which the "
            f"evaluation uses: {scan:.1f} mL")


def make_demo_dataset(bids_dir: Path, n_subjects: int = len(SUBJECTS), seed: int = 0) -> Path:
    """Write a BIDS dataset of ``n_subjects`` (at most 2) synthetic FLAIRs with expert masks in derivatives.

    Built next to ``bids_dir`` and renamed into place at the end: ``bids_dir`` exists only complete.
    """
    # lazy: torch, scipy and nilearn, only when a demo dataset is built
    from bids_msseg.train.synth import flair_contrast, load_anatomies, paint_lesions, simulate_acquisition

    bids_dir = Path(bids_dir)
    subjects = SUBJECTS[: max(1, min(n_subjects, len(SUBJECTS)))]
    partial = bids_dir.with_name(f".{bids_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "derivatives" / "manual").mkdir(parents=True)
    (partial / "dataset_description.json").write_text(json.dumps(
        {"Name": "bids_msseg demo (synthetic FLAIR, real 3D-MR-MS lesion masks)", "BIDSVersion": "1.9.0",
         "DatasetType": "raw", "License": "CC-BY-4.0 (lesion masks: Lesjak et al. 2017)"}, indent=1))
    (partial / "derivatives" / "manual" / "dataset_description.json").write_text(json.dumps(
        {"Name": "3D-MR-MS expert consensus lesion masks (demo)", "BIDSVersion": "1.9.0",
         "DatasetType": "derivative", "GeneratedBy": [{"Name": "bids_msseg.demo"}]}, indent=1))
    rows = ["participant_id\tsite"]
    # The training synthesis notes a missing optional template (Colin27) as a warning: not a demo concern.
    synth_logger = logging.getLogger("bids_msseg.train.synth")
    level = synth_logger.level
    synth_logger.setLevel(logging.ERROR)
    try:
        anatomy = None
        for i, (label, mask_name) in enumerate(subjects):
            start = time.perf_counter()
            mask_img = _packaged_mask(mask_name)
            if anatomy is None:
                anatomy = load_anatomies(mask_img)[0]
            rng = np.random.default_rng([seed, i])
            lesion = np.asarray(mask_img.dataobj, bool) & anatomy.brain
            image, wm_level = flair_contrast(anatomy, rng)
            image = paint_lesions(image, lesion, wm_level, rng)
            vol = simulate_acquisition(image, anatomy.brain, lesion, rng, anatomy.affine)
            affine = np.diag([*vol.zooms, 1.0])
            affine[:3, 3] = -np.array(vol.image.shape) * np.array(vol.zooms) / 2
            sub = f"sub-{label}"
            anat = partial / sub / "anat"
            anat.mkdir(parents=True)
            nib.save(nib.Nifti1Image(vol.image, affine), anat / f"{sub}_FLAIR.nii.gz")
            (anat / f"{sub}_FLAIR.json").write_text(json.dumps(
                {"Manufacturer": "Synthetic", "InstitutionName": f"demo-site-{i % 2 + 1}", "SkullStripped": True}))
            manual = partial / "derivatives" / "manual" / sub / "anat"
            manual.mkdir(parents=True)
            nib.save(nib.Nifti1Image(vol.lesion.astype(np.uint8), affine), manual / f"{sub}_label-lesion_mask.nii.gz")
            rows.append(f"{sub}\tdemo-site-{i % 2 + 1}")
            LOGGER.info("  %s: %s FLAIR, %s mm voxels, lesions of 3D-MR-MS %s (%s) in %.0f s", sub,
                        "x".join(map(str, vol.image.shape)), "x".join(f"{z:.2f}" for z in vol.zooms),
                        mask_name.split("_")[0].split("-")[1],
                        expert_volumes(lesion, vol.lesion, vol.zooms), time.perf_counter() - start)
    finally:
        synth_logger.setLevel(level)
    (partial / "participants.tsv").write_text("\n".join(rows) + "\n")
    (partial / COMPLETE_MARKER).write_text("")
    if bids_dir.exists():
        shutil.rmtree(bids_dir)
    partial.rename(bids_dir)
    return bids_dir


def _is_complete(bids_dir: Path) -> bool:
    return (bids_dir / COMPLETE_MARKER).is_file()


def _read_tsv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))
    except OSError:
        return []


def _grid(bids_dir: Path | None, source: str) -> str:
    """`` (1.13x1.13x3.75 mm)``: the voxel size of a run's FLAIR ('' when unreadable)."""
    try:
        zooms = nib.load(str(Path(bids_dir) / source)).header.get_zooms()[:3]
    except (OSError, TypeError, ValueError):
        return ""
    return " (" + "x".join(f"{z:.3g}" for z in zooms) + " mm)"


def _figures(out_dir: Path, bids_dir: Path | None = None) -> list[str]:
    """One line per evaluated run: lesions found against the expert's, Dice, lesion TPR and FPR."""
    lines = []
    for row in _read_tsv(out_dir / "group_evaluation.tsv"):
        if row.get("evaluation_status") != "ok":
            continue

        def num(key: str, digits: int = 2, row: dict[str, str] = row) -> str:
            try:
                return f"{float(row[key]):.{digits}f}"
            except (KeyError, ValueError):
                return "n/a"

        grid = _grid(bids_dir, row.get("source", "")) if bids_dir is not None else ""
        lines.append(f"{row['participant_id']}{grid}: {row.get('n_pred_lesions', '?')} lesions found "
                     f"({num('pred_volume_ml', 1)} mL), {row.get('n_true_lesions', '?')} in the expert mask "
                     f"({num('true_volume_ml', 1)} mL on the scan's grid); Dice {num('dice')}, share of expert "
                     f"lesions found {num('ltpr')}, share of found lesions that are false {num('lfpr')}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Build the demo dataset under ``argv[0]`` and run both analysis levels on it."""
    configure_logging(0)  # the CLI's own handler, so messages are not printed twice
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "bids_msseg_demo").resolve()
    bids_dir, out_dir, work_dir = root / "bids", root / "derivatives" / "bids_msseg", root / "work"
    if _is_complete(bids_dir):
        LOGGER.info("demo dataset already built: %s (delete %s to build it again)", bids_dir, root)
    else:
        if bids_dir.exists():
            LOGGER.info("%s is incomplete (an interrupted build): building it again", bids_dir)
        LOGGER.info("building the demo dataset in %s: %d synthetic FLAIRs with real lesion masks "
                    "(about 15 s each)", bids_dir, len(SUBJECTS))
        make_demo_dataset(bids_dir)
    for level in ("participant", "group"):
        code = cli_main([str(bids_dir), str(out_dir), level, "-w", str(work_dir)])
        if code != 0:
            LOGGER.error("the %s level exited with %d", level, code)
            return code
    LOGGER.info("demo dataset: %s", bids_dir)
    LOGGER.info("outputs:      %s", out_dir)
    for html in sorted(out_dir.rglob("*.html")):
        LOGGER.info("report:       %s", html)
    for line in _figures(out_dir, bids_dir):
        LOGGER.info("result:       %s", line)
    LOGGER.info("what this means: %s", EXPLANATION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
