#!/usr/bin/env python
"""Where the wall time of a whole participant run goes, for each case of ``bench_participant.py``.

    python benchmarks/profile_participant.py --work /tmp/prof [--cases 0 2] [--cprofile 15] [--cpu-time]

For each case (the same single-subject datasets as ``bench_participant.py``) one cold run through
the command line, then a timeline read from nipype's result files: start-up (process start to the
first node: imports, BIDS discovery, validation, workflow build, worker start), each node and the
gaps between nodes (scheduler polls, a worker's own imports are inside its first node), and the
tail (last node to exit: longitudinal step, methods text). Peak memory: each node's (as the run
records it) and the largest child process (``RUSAGE_CHILDREN``).

Before the cases: the import cost of the command line's start-up (``python -X importtime``), top
packages, for the main process and for a worker's first node.

``--cprofile N`` re-runs every node of each case in a fresh process under cProfile (its imports
included) and prints its N most expensive functions by cumulative time. ``--cpu-time`` makes those
profiles count CPU time of the process (all threads) instead of wall time: use it on a busy machine,
where wall time measures the other jobs. The CPU model, whether it has native bf16 and the
precision ``auto`` picks are printed first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_participant import SHARED, cpu_description, run_case, selected_cases  # noqa: E402

LOGGER = logging.getLogger("profile_participant")
NODE_ORDER = ("preprocess", "segment", "lesion_stats", "lesion_location", "write_derivatives", "report")

#: Re-runs one node's interface (read from its ``_node.pklz``) in a temporary folder under cProfile.
_NODE_PROFILER = r"""
import cProfile, os, pstats, sys, tempfile, time
os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
timer = time.process_time if sys.argv[3] == "cpu" else time.perf_counter
profile = cProfile.Profile(timer)
profile.enable()
from nipype.utils.filemanip import loadpkl
node = loadpkl(os.path.join(sys.argv[1], "_node.pklz"))
with tempfile.TemporaryDirectory() as tmp:
    node.interface.run(cwd=tmp)
profile.disable()
pstats.Stats(profile).sort_stats("cumulative").print_stats(int(sys.argv[2]))
"""


def import_costs(statement: str, top: int = 8) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds of ``python -X importtime -c statement`` and the ``top`` packages by own time."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True,
                          env={**os.environ, "NIPYPE_NO_ET": "1"}, check=False)
    per_package: dict[str, float] = defaultdict(float)
    total = 0.0
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if not match:
            continue
        own, cumulative, indent, name = int(match[1]), int(match[2]), len(match[3]), match[4]
        per_package[name.split(".")[0]] += own / 1e6
        if indent == 1:
            total += cumulative / 1e6
    return total, sorted(per_package.items(), key=lambda kv: -kv[1])[:top]


def node_timeline(work: Path) -> list[tuple[str, float, float, float | None]]:
    """(node, start, end, peak GB) of every finished node under ``work``, from its result file."""
    from nipype.utils.filemanip import loadpkl  # lazy: nipype only once a case has run

    found = []
    for result_file in work.rglob("result_*.pklz"):
        runtime = loadpkl(result_file).runtime
        start = dt.datetime.fromisoformat(runtime.startTime).timestamp()
        end = dt.datetime.fromisoformat(runtime.endTime).timestamp()
        found.append((result_file.parent.name, start, end, getattr(runtime, "peak_memory_gb", None)))
    return sorted(found, key=lambda row: row[1])


def profile_node(node_dir: Path, top: int, cpu_time: bool) -> str:
    """cProfile's report of one node re-run in a fresh process (imports included)."""
    proc = subprocess.run([sys.executable, "-c", _NODE_PROFILER, str(node_dir), str(top),
                           "cpu" if cpu_time else "wall"], capture_output=True, text=True, check=False)
    lines = proc.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if "function calls" in line), 0)
    return "\n".join(lines[start:]) if proc.returncode == 0 else proc.stderr[-2000:]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--cases", type=int, nargs="+", default=None, help="case numbers to run (default: all)")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="profile each node, N functions each")
    ap.add_argument("--cpu-time", action="store_true", help="profiles count CPU time, not wall time")
    ap.add_argument("--no-imports", action="store_true", help="skip the import-time part")
    ap.add_argument("--extra", action="append", default=[], help="an option passed to every run")
    args = ap.parse_args()
    model, bf16 = cpu_description()
    print(f"CPU: {model}; {os.cpu_count()} CPUs; native bf16: {bf16} (precision auto = {'bf16' if bf16 else 'fp32'})")
    if not args.no_imports:
        for label, statement in (("command line (main process)", "import bids_msseg.cli.run"),
                                 ("workflow build (main process)", "import bids_msseg.workflows.participant"),
                                 ("a worker's first node (interfaces)", "import bids_msseg.interfaces")):
            total, top = import_costs(statement)
            print(f"imports, {label}: {total:.2f} s; " + ", ".join(f"{name} {sec:.2f}" for name, sec in top))
    if not SHARED.exists():
        LOGGER.error("%s is absent", SHARED)
        return 2
    for i, name, flair, _goal, root in selected_cases(args.work, args.cases):
        started = time.time()
        code = run_case(root, flair, args.extra)
        ended = time.time()
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        nodes = node_timeline(root / "work")
        print(f"\n== case {i}: {name}: exit {code}, {ended - started:.1f} s, largest child process "
              f"{child_peak:.2f} GB (cumulative over cases)")
        previous = started
        rows = []
        for node, start, end, peak in nodes:
            if start - previous > 0.05:
                rows.append(("start-up" if previous == started else "(gap)", previous, start, None))
            rows.append((node, start, end, peak))
            previous = end
        rows.append(("tail (after the last node)", previous, ended, None))
        for label, start, end, peak in rows:
            memory = f"  peak {peak:.2f} GB" if peak else ""
            print(f"  {start - started:6.2f} -> {end - started:6.2f}  {end - start:6.2f} s  {label}{memory}")
        inside = sum(end - start for _, start, end, _ in nodes)
        peaks = [peak for *_, peak in nodes if peak]
        print(f"  nodes {inside:.1f} s, outside nodes {ended - started - inside:.1f} s; peak memory as the run "
              f"prints it (largest step) {max(peaks) if peaks else float('nan'):.2f} GB")
        if args.cprofile:
            dirs = {p.parent.name: p.parent for p in (root / "work").rglob("_node.pklz")}
            for node in NODE_ORDER:
                if node in dirs:
                    print(f"\n  -- cProfile of {node} ({'CPU' if args.cpu_time else 'wall'} time, fresh process)")
                    print(profile_node(dirs[node], args.cprofile, args.cpu_time))
    return 0


if __name__ == "__main__":
    sys.exit(main())
