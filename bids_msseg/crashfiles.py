"""nipype crash files, read by the participant summary and by the group level's cohort table.

nipype writes ``crash-*.txt`` files into ``<output_dir>/logs`` whose first line names the failed
node (``Node: bids_msseg_participant_wf.single_flair_<run>_wf.segment``). The sub-workflow of a
run is named by :func:`flair_wf_name`, so a crash file can be traced back to its run without
nipype (the group level never imports it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bids_msseg.bids import FlairRun

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?")
_NODE_PREFIX = "Node: "


def flair_wf_name(run: FlairRun) -> str:
    """The sub-workflow name of a run, e.g. ``single_flair_sub_01_ses_1_FLAIR_wf``."""
    return f"single_flair_{re.sub(r'[^0-9A-Za-z]', '_', run.name)}_wf"


def crash_node(path: Path) -> str | None:
    """The full name of the node a crash file reports (its ``Node:`` line), or None when unreadable."""
    try:
        first = Path(path).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith(_NODE_PREFIX):
        return None
    return first[len(_NODE_PREFIX):].strip()


def crash_files(logs_dir: Path) -> list[Path]:
    """The crash files in ``logs_dir``, sorted by name (none when it does not exist)."""
    return sorted(Path(logs_dir).glob("crash-*.txt")) if Path(logs_dir).is_dir() else []


def crash_reason(crash_file: Path) -> str | None:
    """The innermost exception of a nipype crash file (``ValueError: ...``), for the summary."""
    try:
        lines = [line.strip() for line in crash_file.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line) and "NodeExecutionError" not in line:
            return line
    return None


def latest_crash_by_workflow(logs_dir: Path) -> dict[str, Path]:
    """The newest crash file of each participant sub-workflow (``single_flair_<run>_wf``) in ``logs_dir``."""
    found: dict[str, tuple[float, Path]] = {}
    for path in crash_files(logs_dir):
        node = crash_node(path)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if node is None:
            continue
        for part in node.split("."):
            if part.startswith("single_flair_") and (part not in found or found[part][0] < mtime):
                found[part] = (mtime, path)
    return {name: path for name, (_, path) in found.items()}
