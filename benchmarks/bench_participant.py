#!/usr/bin/env python
"""Wall time of whole participant runs through the command line, against the goals.

    python benchmarks/bench_participant.py --work /tmp/bench

Two single-subject BIDS datasets linking ../shared/data: 3D-MR-MS patient 26 (skull-stripped,
1 mm; goal <= 15 s) and a raw clinical FLAIR with skull (N4 + brain extraction; goal <= 60 s).
Each is run once cold (fresh output and work directories). Prints seconds and the ratio to goal,
then each workflow node's duration as nipype recorded it (``_report/report.rst``).
Run it on a quiet machine: the figures are wall clock.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

LOGGER = logging.getLogger("bench_participant")
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASES = {
    "patient26 (skull-stripped 3D)": (SHARED / "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz", 15.0),
    "raw clinical 2D FLAIR (N4 + brain extraction)":
        (SHARED / "raw-flair/ljubljana-longitudinal_patient01_study1_FLAIR.nii.gz", 60.0),
    "raw 3D FLAIR (N4 + brain extraction)": (SHARED / "raw-flair/py_synthsr_FLAIR.nii.gz", 60.0),
}


def one_subject_dataset(root: Path, flair: Path) -> Path:
    anat = root / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (root / "bids" / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.9.0"}))
    (anat / "sub-01_FLAIR.nii.gz").symlink_to(flair)
    return root / "bids"


def node_durations(work: Path) -> list[tuple[str, float]]:
    """(node name, seconds) of every finished node under a work directory, from nipype's reports."""
    found = []
    for report in sorted(work.rglob("_report/report.rst")):
        match = re.search(r"^\* duration : ([0-9.]+)", report.read_text(errors="replace"), re.MULTILINE)
        if match:
            found.append((report.parent.parent.name, float(match.group(1))))
    return found


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    if not SHARED.exists():
        LOGGER.error("%s is absent", SHARED)
        return 2
    for i, (name, (flair, goal)) in enumerate(CASES.items()):
        root = args.work / f"case{i}"
        shutil.rmtree(root, ignore_errors=True)
        bids = one_subject_dataset(root, flair)
        cmd = [sys.executable, "-m", "bids_msseg", str(bids), str(root / "out"), "participant",
               "--skip-bids-validation", "-w", str(root / "work")]
        t0 = time.perf_counter()
        code = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        LOGGER.info("%-48s exit %d  %6.1f s  goal %4.0f s  ratio %.2f", name, code, dt, goal, dt / goal)
        LOGGER.info("    nodes: %s", ", ".join(f"{node} {sec:.1f} s" for node, sec in node_durations(root / "work")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
