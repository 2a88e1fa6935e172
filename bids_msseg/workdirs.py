"""Checks of the output and work directories, shared by the participant and group levels.

The output directory may not be (or lie in) the raw dataset except strictly below
``derivatives/``; the work directory may not lie inside the dataset (pybids would index it).
Both are created here; a failure is an :class:`~bids_msseg.errors.OutputError` (73), a work
directory inside the dataset or equal to the output directory a
:class:`~bids_msseg.errors.UsageError` (64).

The work directory holds nipype's cache, which is pickles: whoever can write there can make a
rerun execute code. It is therefore created owner-only (0700), and one that other users can
write (group or world write bit, or another owner) is refused (73). Write probes are created with
unpredictable names and ``O_EXCL`` (:func:`tempfile.mkstemp`), so a planted symbolic link is
never followed.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import multiprocessing.util
import os
import shutil
import stat
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from bids_msseg.errors import NoInputError, OutputError, UsageError

LOGGER = logging.getLogger(__name__)


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
    if _is_within(bids, out):
        raise OutputError(f"the output directory {out} contains the BIDS dataset {bids}: outputs and logs would "
                          f"be written beside (or over) the dataset's own folders; use a folder of its own, e.g. "
                          f"{derivatives / 'bids_msseg'} or {out / 'bids_msseg'}")
    if out.exists() and not out.is_dir():
        kind = "a regular file" if out.is_file() else "a device or special file"
        raise OutputError(f"the output directory {output_dir} exists and is {kind}, not a folder; choose a folder "
                          "(it is created when missing)")
    if not create and not out.is_dir():
        raise NoInputError(f"the output directory {output_dir} does not exist: the group level reads the "
                           "participant level's outputs, run 'participant' first")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output directory {output_dir}: {err.strerror or err}") from err
    check_output_links(out)
    try:
        probe_writable(out)
    except OSError as err:
        raise OutputError(
            f"cannot write into the output directory {output_dir}: {err.strerror or err}"
        ) from err


def check_output_links(out: Path) -> None:
    """Refuse (73) a symbolic link to a folder outside ``out`` planted anywhere in it (``out/logs ->
    /elsewhere``, ``out/sub-02 -> /elsewhere``): every file written below it (crash files, CITATION,
    a subject's derivatives) would land outside the output directory. Links to files need no check
    (files are written by renaming a new file over the name, which replaces the link itself), nor do
    links to folders inside ``out``. ``out`` itself may be a link."""
    root = Path(out).resolve()
    for folder, dirs, files in os.walk(root):  # no followlinks: links are looked at, never entered
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            target = path.resolve()
            if _is_within(target, root) or (target.exists() and not target.is_dir()):
                continue  # inside the output, or a link to a file (replaced, never written through)
            raise OutputError(f"{path} is a symbolic link to {target}, outside the output directory {root}: what "
                              "bids_msseg writes there would land outside it; remove the link (the folder is "
                              "created when needed) or choose another output directory")


def probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: a fresh random name opened with ``O_CREAT | O_EXCL``
    (``tempfile.mkstemp``), so no existing file or planted link is ever opened. Raises ``OSError``."""
    fd, name = tempfile.mkstemp(prefix=".bids_msseg_write_test_", dir=folder)
    os.close(fd)
    os.unlink(name)


def check_work_dir(bids_dir: Path, work_dir: Path, output_dir: Path | None = None) -> None:
    """Create the work directory (0700); refuse one inside the raw dataset (pybids would index it),
    one equal to or inside the output directory (64), and one that is not writable or that other
    users can write (73, see the module docstring)."""
    bids = Path(bids_dir).resolve()
    work = Path(work_dir).resolve()
    if _is_within(work, bids) and not work.is_relative_to(bids / "derivatives"):
        raise UsageError(f"the work directory {work} lies inside the BIDS dataset; choose another one (-w)")
    if output_dir is not None:
        out = Path(output_dir).resolve()
        if _is_within(work, out):
            raise UsageError(f"the work directory {work} is {'the' if work == out else 'inside the'} output "
                             f"directory {out}: it would fill the derivatives with nipype's cache; choose another "
                             "one (-w), e.g. a scratch folder")
    try:
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the work directory {work_dir}: {err.strerror or err}") from err
    check_private(work, "-w")
    try:
        probe_writable(work)
    except OSError as err:
        raise OutputError(f"cannot write into the work directory {work_dir}: {err.strerror or err}; choose "
                          "another one (-w)") from err


@contextlib.contextmanager
def temporary_folder_in(work_dir: Path) -> Iterator[Path]:
    """Make a fresh folder under ``work_dir`` the temporary folder (``TMPDIR`` and :mod:`tempfile`'s
    default) while the block runs, then remove it and restore the previous setting.

    Libraries leave files in the temporary folder of a successful run: ANTs' registrations write
    their transforms under a default prefix (``tempfile.mktemp``) and torch creates
    ``torchinductor_<user>/``. The workers inherit ``TMPDIR``, so everything lands here and goes with
    the folder. multiprocessing's own folder (``pymp-*``, which holds the forkserver's socket for the
    life of the process) is made first, in the usual place, and removed by multiprocessing at exit.
    """
    multiprocessing.util.get_temp_dir()
    folder = Path(tempfile.mkdtemp(prefix="tmp_", dir=work_dir))
    previous_env, previous_default = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        if previous_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous_env
        tempfile.tempdir = previous_default
        shutil.rmtree(folder, ignore_errors=True)


def check_private(folder: Path, what: str) -> None:
    """Refuse (73) a folder that another user owns or that group or others may write: it holds
    pickles that a rerun loads (nipype's cache)."""
    try:
        st = os.stat(folder)
    except OSError as err:
        raise OutputError(f"cannot read the work directory {folder}: {err.strerror or err}") from err
    others_write = stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
    foreign = hasattr(os, "getuid") and st.st_uid != os.getuid()
    if others_write or foreign:
        mode = stat.S_IMODE(st.st_mode)
        who = f"is owned by user id {st.st_uid}" if foreign else f"is writable by others (mode {mode:o})"
        raise OutputError(f"the work directory {folder} ({what}) {who}: it holds nipype's cache, which is loaded "
                          f"as pickles on a rerun, so only you may write there; use a private folder or run "
                          f"chmod go-w {folder}")


#: Largest nipype cache file checked (bytes, uncompressed); nipype's result files are kilobytes.
_MAX_CACHE_FILE_BYTES = 512 * 1024 * 1024


def _gzip_intact(path: Path) -> bool:
    """Whether ``path`` is a complete gzip stream (CRC and length checked), read in chunks, never unpickled."""
    try:
        with gzip.open(path, "rb") as fh:
            total = 0
            while chunk := fh.read(1 << 20):
                total += len(chunk)
                if total > _MAX_CACHE_FILE_BYTES:
                    return False
        return total > 0
    except (OSError, EOFError, zlib.error):
        return False


def discard_damaged_cache(cache_dir: Path, only: Iterable[str] | None = None) -> list[Path]:
    """Remove the node folders of nipype's cache whose ``*.pklz`` files are truncated or corrupt.

    A run killed while nipype wrote a result file, or a full disk, leaves a damaged file that makes
    the next run stop with ``EOFError`` before any node runs (every run lost). The files are only
    decompressed (never unpickled); a damaged node folder is deleted, with a warning, so that
    nipype recomputes that step. ``only`` limits the check to these sub-folders of ``cache_dir`` (the
    runs of this invocation: jobs running at the same time on one work directory are left alone).
    Returns the removed folders.
    """
    removed: list[Path] = []
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return removed
    tops = [cache_dir] if only is None else [cache_dir / name for name in sorted(set(only))]
    for top in tops:
        removed.extend(_discard_damaged(top))
    return removed


def _discard_damaged(top: Path) -> list[Path]:
    removed: list[Path] = []
    for root, dirs, files in os.walk(top):  # no followlinks: nipype writes no links to folders
        if any(name.endswith(".pklz") and not _gzip_intact(Path(root) / name) for name in files):
            LOGGER.warning("damaged nipype cache entry %s (truncated or corrupt result file): removed, the step "
                           "is recomputed", root)
            shutil.rmtree(root, ignore_errors=True)
            removed.append(Path(root))
            dirs[:] = []
    return removed
