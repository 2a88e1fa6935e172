"""Checks of the output and work directories, shared by the participant and group levels.

The output directory may not be (or lie in) the raw dataset except strictly below
``derivatives/``; the work directory may not lie inside the dataset (pybids would index it).
Both are created here; a failure is an :class:`~bids_msseg.errors.OutputError` (73), a work
directory inside the dataset a :class:`~bids_msseg.errors.UsageError` (64).
"""

from __future__ import annotations

import os
from pathlib import Path

from bids_msseg.errors import NoInputError, OutputError, UsageError


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or path.is_relative_to(parent)


def check_output_dir(bids_dir: Path, output_dir: Path, create: bool = True) -> None:
    """Refuse an output directory that would write into the raw dataset; create it; check writes.

    Allowed: anywhere outside ``bids_dir``, or strictly below ``bids_dir/derivatives/``.
    Raises :class:`OutputError` (73) otherwise, or when the directory cannot be created or written.
    With ``create=False`` (the group level, which reads the participant outputs) a missing
    directory raises :class:`NoInputError` (66) instead of being created.
    """
    bids = Path(bids_dir).resolve()
    out = Path(output_dir).resolve()
    if out == bids:
        raise OutputError(f"the output directory is the BIDS directory ({bids}); use e.g. "
                          f"{bids / 'derivatives' / 'bids_msseg'}")
    derivatives = bids / "derivatives"
    if _is_within(out, bids) and not (out != derivatives and _is_within(out, derivatives)):
        raise OutputError(f"the output directory {out} lies inside the BIDS dataset; put it under "
                          f"{derivatives}/ (e.g. {derivatives / 'bids_msseg'}) or outside the dataset")
    if not create and not out.is_dir():
        raise NoInputError(f"the output directory {output_dir} does not exist: the group level reads the "
                           "participant level's outputs, run 'participant' first")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output directory {output_dir}: {err.strerror or err}") from err
    probe = out / f".bids_msseg_write_test_{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise OutputError(
            f"cannot write into the output directory {output_dir}: {err.strerror or err}"
        ) from err


def check_work_dir(bids_dir: Path, work_dir: Path) -> None:
    """Create the work directory; refuse one inside the raw dataset (pybids would index it)."""
    bids = Path(bids_dir).resolve()
    work = Path(work_dir).resolve()
    if _is_within(work, bids) and not work.is_relative_to(bids / "derivatives"):
        raise UsageError(f"the work directory {work} lies inside the BIDS dataset; choose another one (-w)")
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the work directory {work_dir}: {err.strerror or err}") from err
