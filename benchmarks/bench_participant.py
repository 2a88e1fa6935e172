#!/usr/bin/env python
"""Wall time of whole participant runs through the command line, against the goals.

    python benchmarks/bench_participant.py --work /tmp/bench [--cases 0 2] [--extra=--seed-threshold=0]

Two single-subject BIDS datasets linking ../shared/data: 3D-MR-MS patient 26 (skull-stripped,
1 mm; goal <= 15 s) and a raw clinical FLAIR with skull (N4 + brain extraction; goal <= 60 s).
Each is run once cold (fresh output and work directories). Prints seconds and the ratio to goal,
then each workflow node's duration as nipype recorded it (``_report/report.rst``).
Run it on a quiet machine: the figures are wall clock. The CPU model and whether it has native
bf16 (the precision ``auto`` picks) are printed first. ``--extra`` passes options to every run
(e.g. ``--seed-threshold=0`` for the default model without hysteresis).
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


def cpu_description() -> tuple[str, bool]:
    """(CPU model, whether it has native bf16) from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 "unknown CPU")
    return model, "avx512_bf16" in info


def selected_cases(work: Path, cases: list[int] | None) -> list[tuple[int, str, Path, float, Path]]:
    """(number, name, FLAIR, goal in s, case folder under ``work``) of the cases asked for (all when None)."""
    return [(i, name, flair, goal, work / f"case{i}") for i, (name, (flair, goal)) in enumerate(CASES.items())
            if cases is None or i in cases]


def run_case(root: Path, flair: Path, extra: list[str]) -> int:
    """A cold participant run of ``flair`` as a one-subject dataset under ``root`` (fresh); its exit code.

    The command line runs from ``root``: from a checkout's root, ``-m bids_msseg`` would import that
    checkout's package before PYTHONPATH's (a "before" run of another tree would run this one).
    """
    shutil.rmtree(root, ignore_errors=True)
    bids = one_subject_dataset(root, flair)
    cmd = [sys.executable, "-m", "bids_msseg", str(bids), str(root / "out"), "participant",
           "--skip-bids-validation", "-w", str(root / "work"), *extra]
    return subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)


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
    ap.add_argument("--cases", type=int, nargs="+", default=None, help="case numbers to run (default: all)")
    ap.add_argument("--extra", action="append", default=[], help="an option passed to every run")
    args = ap.parse_args()
    cpu, bf16 = cpu_description()
    LOGGER.info("CPU: %s; native bf16: %s (precision auto = %s); options: %s", cpu, bf16,
                "bf16" if bf16 else "fp32", " ".join(args.extra) or "defaults")
    if not SHARED.exists():
        LOGGER.error("%s is absent", SHARED)
        return 2
    for _i, name, flair, goal, root in selected_cases(args.work, args.cases):
        t0 = time.perf_counter()
        code = run_case(root, flair, args.extra)
        dt = time.perf_counter() - t0
        LOGGER.info("%-48s exit %d  %6.1f s  goal %4.0f s  ratio %.2f", name, code, dt, goal, dt / goal)
        LOGGER.info("    nodes: %s", ", ".join(f"{node} {sec:.1f} s" for node, sec in node_durations(root / "work")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
