#!/usr/bin/env python
"""Time the longitudinal step adds per pair of sessions, on a real pair, through the command line.

    python benchmarks/bench_longitudinal.py --work /tmp/bench_long [--patient 01]
    python benchmarks/bench_longitudinal.py --reuse /tmp/lj [--patient 01]

A one-subject BIDS dataset links the two raw clinical FLAIRs of a Ljubljana longitudinal patient
(Lesjak et al. 2016, CC BY; default patient 01: 320 x 320 x 36 and x 46, 0.72 x 0.72 x 4 and 3 mm).
``bids_msseg participant`` runs three times: cold (fresh output and work directories) with
``--no-longitudinal`` (segmenting both sessions), then on the finished outputs once more with
``--no-longitudinal`` (indexing and checks only: every run is complete) and once with the step (the
default; only the step has work left). The last two differ by the time the step adds per pair;
prints it, the cold run without the step, the estimated run with it and their ratio, and the
pair's own ``seconds`` from the longitudinal summary. Then, in process on these outputs, the
step's parts: loading both visits (N4 inside the brain, normalization), the ANTs rigid
registration fitted on 2 mm copies (the default) and on the baseline's own grid, with their
ratio, and resampling + classification.

``--reuse W`` skips the cold run and uses the folders ``W/bids``, ``W/out``, ``W/work`` of a run that
segmented the patient's sessions already (``scripts/evaluate_longitudinal.py --work W`` leaves
them): the time without the step is then the sum of the patient's workflow nodes' durations as
nipype recorded them (segmentation only, without start-up), and the step is recomputed (its
summary removed first).

The CPU model and whether it has native bf16 (the precision ``auto`` picks for segmentation) are
printed first, with the load average: the figures are wall clock, so run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

LOGGER = logging.getLogger("bench_longitudinal")
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               "unknown CPU")
    bf16 = "avx512_bf16" in info
    return (f"CPU: {cpu}, {os.cpu_count()} cores; native bf16: {bf16} (precision auto = {'bf16' if bf16 else 'fp32'}); "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def two_session_dataset(root: Path, patient: str) -> Path:
    bids = root / "bids"
    for study in ("1", "2"):
        anat = bids / f"sub-{patient}" / f"ses-{study}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        (anat / f"sub-{patient}_ses-{study}_FLAIR.nii.gz").symlink_to(
            SHARED / f"raw-flair/ljubljana-longitudinal_patient{patient}_study{study}_FLAIR.nii.gz")
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.10.0"}))
    return bids


def run(bids: Path, root: Path, extra: list[str], cold: bool = False) -> tuple[int, float]:
    if cold:
        shutil.rmtree(root / "out", ignore_errors=True)
        shutil.rmtree(root / "work", ignore_errors=True)
    cmd = [sys.executable, "-m", "bids_msseg", str(bids), str(root / "out"), "participant", "--skip-bids-validation",
           "-w", str(root / "work"), "--random-seed", "0", *extra]
    t0 = time.perf_counter()
    code = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return code, time.perf_counter() - t0


def parts(out: Path, bids: Path, patient: str) -> None:
    """The step's parts, in process, on the outputs of a complete run."""
    from bids_msseg.bids import FlairRun
    from bids_msseg.derivatives import derivative_paths
    from bids_msseg.lesions import LesionDefinition, connectivity_of
    from bids_msseg.longitudinal.change import detect_change, match_intensities
    from bids_msseg.longitudinal.pipeline import load_visit
    from bids_msseg.longitudinal.registration import REGISTRATION_MM, register_pair, resample

    rel = [f"sub-{patient}/ses-{s}/anat/sub-{patient}_ses-{s}_FLAIR.nii.gz" for s in ("1", "2")]
    mask = json.loads(derivative_paths(out, rel[0])["mask_json"].read_text())  # the run's lesion settings
    t0 = time.perf_counter()
    base, follow = (load_visit(out, FlairRun(path=bids / r, relpath=r, entities={})) for r in rel)
    LOGGER.info("  load + N4 + normalization, both visits     %6.1f s", time.perf_counter() - t0)
    seconds, registration = {}, None
    for grid in (REGISTRATION_MM, 0.0):
        t0 = time.perf_counter()
        reg = register_pair(base.flair, base.image.affine, base.brain, follow.flair, follow.image.affine,
                            follow.brain, registration_mm=grid)
        seconds[grid] = time.perf_counter() - t0
        registration = registration or reg
        LOGGER.info("  registration fitted on %-20s %6.1f s (brain Dice %.3f)",
                    f"{grid:g} mm copies" if grid else "the baseline grid", seconds[grid], reg.brain_dice)
    LOGGER.info("  registration: full grid / %g mm = %.2f", REGISTRATION_MM, seconds[0.0] / seconds[REGISTRATION_MM])
    t0 = time.perf_counter()
    to_base = registration.followup_to_baseline(base.image.affine, follow.image.affine)
    shape = base.flair.shape
    fu_flair = resample(follow.flair, to_base, shape)
    fu_prob = resample(follow.probability, to_base, shape)
    both = base.brain & (resample(follow.brain.astype("uint8"), to_base, shape, order=0) > 0)
    detect_change(base.flair, match_intensities(fu_flair, base.flair, both), base.probability, fu_prob, both,
                  base.image.affine, threshold=mask["Threshold"], seed_threshold=mask["SeedThreshold"],
                  definition=LesionDefinition(connectivity_of(mask["Connectivity"]), mask["MinimumLesionSize_mm3"]))
    LOGGER.info("  resampling + intensity matching + classification %6.1f s", time.perf_counter() - t0)


def node_seconds(work: Path, patient: str) -> float:
    """Sum of the durations nipype recorded for the patient's workflow nodes under ``work``."""
    total = 0.0
    for report in work.rglob(f"*sub_{patient}_*/*/_report/report.rst"):
        match = re.search(r"^\* duration : ([0-9.]+)", report.read_text(errors="replace"), re.MULTILINE)
        total += float(match.group(1)) if match else 0.0
    return total


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--work", type=Path, help="folder for a fresh dataset, outputs and work files")
    where.add_argument("--reuse", type=Path, help="folder with bids/, out/, work/ of a run that segmented the patient")
    ap.add_argument("--patient", default="01", choices=["01", "03", "12"])
    args = ap.parse_args()
    LOGGER.info(cpu_line())
    if not (SHARED / "raw-flair").exists():
        LOGGER.error("%s is absent", SHARED / "raw-flair")
        return 2
    root = (args.work or args.reuse).resolve()
    summary_path = root / f"out/sub-{args.patient}/sub-{args.patient}_desc-longitudinal_summary.tsv"
    if args.reuse:
        bids = root / "bids"
        cold, code_cold, how = node_seconds(root / "work", args.patient), 0, "nipype node durations"
        summary_path.unlink(missing_ok=True)
    else:
        shutil.rmtree(root / "bids", ignore_errors=True)
        bids = two_session_dataset(root, args.patient)
        (code_cold, cold), how = run(bids, root, ["--no-longitudinal"], cold=True), "cold run, wall"
    code_idle, idle = run(bids, root, ["--no-longitudinal", "--participant-label", args.patient])
    code_step, step = run(bids, root, ["--participant-label", args.patient])
    summary = pd.read_csv(summary_path, sep="\t").iloc[0]
    added = step - idle
    LOGGER.info("patient %s, two sessions, participant level:", args.patient)
    LOGGER.info("  segmenting both sessions (%s)     exit %d  %6.1f s", how, code_cold, cold)
    LOGGER.info("  complete outputs, --no-longitudinal     exit %d  %6.1f s", code_idle, idle)
    LOGGER.info("  complete outputs, with the step         exit %d  %6.1f s", code_step, step)
    LOGGER.info("  added per pair %.1f s (the step's own seconds %.1f, status %s); with the step about %.1f s, "
                "ratio to without %.2f", added, summary["seconds"], summary["status"], cold + added,
                (cold + added) / cold)
    LOGGER.info("parts of the step:")
    parts(root / "out", bids, args.patient)
    return 0


if __name__ == "__main__":
    sys.exit(main())
