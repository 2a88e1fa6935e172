#!/usr/bin/env python
"""Time the longitudinal step adds per pair of sessions, split into its parts.

    python benchmarks/bench_longitudinal.py --out OUTPUT_DIR --bids BIDS_DIR [--subject 01] [--repeat 1]

Needs a participant output in which the subject's two sessions are segmented (for instance the
one ``scripts/evaluate_longitudinal.py --work W`` leaves in ``W/out`` with ``W/bids``). Times, for
the subject's first follow-up: loading both visits (N4 inside the brain, normalization), the ANTs
rigid registration, resampling and change classification, and writing the derivatives and report
(:func:`bids_msseg.longitudinal.pipeline.run_subject` end to end). Single process; the thread
count is ITK's default unless ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` is set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bids_msseg.lesions import LesionDefinition
from bids_msseg.longitudinal.pipeline import compare_visits, load_visit, run_subject, subject_visits
from bids_msseg.longitudinal.registration import register_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bids", type=Path, required=True)
    parser.add_argument("--subject", default="01")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from bids_msseg.bids import collect_flair_runs

    runs = collect_flair_runs(args.bids, participant_labels=[args.subject], database_dir=args.out.parent / "bench_db")
    visits = subject_visits(runs, args.bids)[args.subject][:2]
    definition = LesionDefinition()
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        base, follow = load_visit(args.out, visits[0].run), load_visit(args.out, visits[1].run)
        t1 = time.perf_counter()
        print(f"load + N4 both visits {t1 - t0:.1f} s", flush=True)
        register_pair(base.flair, base.image.affine, base.brain, follow.flair, follow.image.affine, follow.brain)
        t2 = time.perf_counter()
        print(f"registration {t2 - t1:.1f} s", flush=True)
        compare_visits(base, follow, threshold=0.65, definition=definition)  # registration again + the rest
        t3 = time.perf_counter()
        run_subject(args.out, args.subject, visits, threshold=0.65, definition=definition)
        t4 = time.perf_counter()
        print(f"sub-{args.subject}: load + N4 both visits {t1 - t0:.1f} s, registration {t2 - t1:.1f} s, "
              f"resampling + classification {(t3 - t2) - (t2 - t1):.1f} s, whole step with outputs and report "
              f"{t4 - t3:.1f} s")


if __name__ == "__main__":
    main()
