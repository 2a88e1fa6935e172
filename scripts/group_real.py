#!/usr/bin/env python
"""Participant and group levels on real FLAIRs, with patient 26's expert mask for the evaluation.

    python scripts/group_real.py --root /tmp/cohort_real [--skip-participant] [--screenshot PNG]

Builds a BIDS dataset under ``ROOT/bids`` whose FLAIRs are symlinks into ``../shared/data``
(nothing is copied): 3D-MR-MS patient 26 (Lesjak et al. 2017, CC-BY) with its expert consensus
mask as a derivatives dataset (``derivatives/expert/``), two sessions of a raw clinical FLAIR of
the Ljubljana longitudinal dataset (Lesjak et al. 2016, CC-BY) and the py_synthsr raw 3D FLAIR.
``participants.tsv`` names each subject's source dataset in a ``site`` column. Then it runs
``bids_msseg ROOT/bids ROOT/out participant`` (complete runs are skipped, so a second call reuses
the outputs) and ``bids_msseg ROOT/bids ROOT/out group``, and with ``--screenshot`` renders
``ROOT/out/group_report.html`` with headless chromium. Patient 26 is a check, never a tuning target.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

LOGGER = logging.getLogger("group_real")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
#: relative path in the BIDS dataset -> file under ../shared/data
RUNS = {
    "sub-p26/anat/sub-p26_FLAIR.nii.gz": "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz",
    "sub-lj01/ses-1/anat/sub-lj01_ses-1_FLAIR.nii.gz": "raw-flair/ljubljana-longitudinal_patient01_study1_FLAIR.nii.gz",
    "sub-lj01/ses-2/anat/sub-lj01_ses-2_FLAIR.nii.gz": "raw-flair/ljubljana-longitudinal_patient01_study2_FLAIR.nii.gz",
    "sub-synthsr/anat/sub-synthsr_FLAIR.nii.gz": "raw-flair/py_synthsr_FLAIR.nii.gz",
}
SITES = {"p26": "3D-MR-MS", "lj01": "Ljubljana-longitudinal", "synthsr": "py_synthsr"}
EXPERT = {"sub-p26/anat/sub-p26_label-lesion_mask.nii.gz": "3d-mr-ms/patient26/patient26_lesion-mask_mni.nii.gz"}


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(target)


def make_dataset(root: Path) -> Path:
    """The BIDS dataset (symlinks into ../shared/data) with the expert mask as a derivatives dataset."""
    bids = root / "bids"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "bids_msseg real-data cohort check", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    (bids / "participants.tsv").write_text("participant_id\tsite\n" + "".join(
        f"sub-{label}\t{site}\n" for label, site in SITES.items()))
    for rel, source in RUNS.items():
        _link(SHARED / source, bids / rel)
    expert = bids / "derivatives" / "expert"
    expert.mkdir(parents=True, exist_ok=True)
    (expert / "dataset_description.json").write_text(json.dumps({
        "Name": "3D-MR-MS expert consensus lesion masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "Manual", "Description": "consensus of three raters (Lesjak et al. 2017)"}]}))
    for rel, source in EXPERT.items():
        _link(SHARED / source, expert / rel)
    return bids


def _bids_msseg(*args: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bids_msseg", *args]
    start = time.time()
    code = subprocess.call(cmd, env=env)
    LOGGER.info("%s\nexit %d in %.1f s", " ".join(cmd), code, time.time() - start)
    return code


def screenshot(html: Path, png: Path) -> int:
    """Render ``html`` with headless chromium into ``png`` (1400 px wide, tall enough for the report)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        LOGGER.error("chromium is not installed (apt-get install -y chromium)")
        return 1
    png.parent.mkdir(parents=True, exist_ok=True)
    profile = png.parent / ".chromium-profile"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--window-size=1400,5200", f"--screenshot={png}", html.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    if done.returncode == 0:  # cut the blank page below the report
        import numpy as np
        from PIL import Image

        image = Image.open(png)
        rows = np.flatnonzero(np.asarray(image.convert("L")).min(axis=1) < 250)
        if rows.size:
            image.crop((0, 0, image.width, min(image.height, int(rows[-1]) + 20))).save(png)
    LOGGER.info("screenshot %s (exit %d)", png, done.returncode)
    return done.returncode


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--skip-participant", action="store_true", help="only run the group level")
    ap.add_argument("--screenshot", type=Path, help="PNG of the group report rendered by headless chromium")
    args = ap.parse_args()
    missing = [s for s in [*RUNS.values(), *EXPERT.values()] if not (SHARED / s).is_file()]
    if missing:
        LOGGER.error("real data absent: %s", ", ".join(str(SHARED / m) for m in missing))
        return 2
    root = args.root.absolute()
    bids = make_dataset(root)
    out, work = root / "out", root / "work"
    if not args.skip_participant:
        code = _bids_msseg(str(bids), str(out), "participant", "-w", str(work))
        if code not in (0, 1):
            return code
    code = _bids_msseg(str(bids), str(out), "group", "-w", str(work), "--msseg2016-metrics")
    if code == 0 and args.screenshot:
        code = screenshot(out / "group_report.html", args.screenshot)
    return code


if __name__ == "__main__":
    sys.exit(main())
