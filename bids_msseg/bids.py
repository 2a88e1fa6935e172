"""Finding the FLAIR images of a BIDS dataset with pybids.

Every FLAIR (``anat/*_FLAIR.nii[.gz]``) is its own run: sessions, acquisitions and repeated runs
are never merged, because each one is segmented on its own grid. The layout is indexed into a
SQLite database under the work directory and reused when the dataset has not changed since (a
fingerprint of file names, sizes and modification times decides; re-indexing a large dataset
takes seconds, reopening it milliseconds).

Errors carry the exit codes of the BIDS Apps spec: a directory that is not BIDS raises
:class:`~bids_msseg.errors.ValidationError` (16), labels or filters that match nothing
:class:`~bids_msseg.errors.NoMatchError` (18), a dataset without any FLAIR (or no dataset at all)
:class:`~bids_msseg.errors.NoInputError` (66).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bids_msseg.errors import NoInputError, NoMatchError, ValidationError

LOGGER = logging.getLogger(__name__)

FLAIR_QUERY: dict[str, Any] = {"suffix": "FLAIR", "datatype": "anat", "extension": [".nii", ".nii.gz"]}
#: Top-level folders pybids does not index; they are left out of the fingerprint too.
_IGNORED_TOP = {"derivatives", "sourcedata", "code", "stimuli", "models"}
_DATABASE_FILE = "layout_index.sqlite"  # the file pybids writes in its database_path


@dataclass(frozen=True)
class FlairRun:
    """One FLAIR image to segment."""

    path: Path  # absolute path of the image
    relpath: str  # path relative to the BIDS root, POSIX style (names the derivatives)
    entities: Mapping[str, Any] = field(default_factory=dict)  # subject, session, acquisition, run...
    metadata: Mapping[str, Any] = field(default_factory=dict)  # the JSON sidecar(s), inheritance applied
    #: Why the run cannot be processed although its image was found (e.g. an unreadable sidecar);
    #: such runs are refused, with this message, by :func:`bids_msseg.validate.screen_runs`.
    problem: str | None = None

    @property
    def subject(self) -> str:
        """The subject label (from the path's ``sub-<label>`` folder when pybids read none from the name)."""
        if "subject" in self.entities:
            return str(self.entities["subject"])
        return Path(self.relpath).parts[0].partition("-")[2]

    @property
    def session(self) -> str | None:
        ses = self.entities.get("session")
        return None if ses is None else str(ses)

    @property
    def name(self) -> str:
        """The file name without extension, e.g. ``sub-01_ses-1_acq-3D_FLAIR``: the run's label."""
        base = Path(self.relpath).name
        for ext in (".nii.gz", ".nii"):
            if base.endswith(ext):
                return base[: -len(ext)]
        return base


#: Deepest folder nesting walked below the dataset root (BIDS needs 4: sub/ses/datatype/file).
MAX_WALK_DEPTH = 32
#: Largest JSON sidecar read (bytes). Real sidecars are a few kB; a larger one is not metadata, and
#: pybids would copy it into its index (a 100 MB sidecar grew the work directory to 413 MB).
MAX_SIDECAR_BYTES = 1_000_000


@dataclass(frozen=True)
class DatasetScan:
    """One bounded walk of the dataset: what the index fingerprint, the sidecar and FLAIR checks need."""

    entries: tuple[tuple[str, int, int], ...]  # (relative path, size, mtime_ns) of every file pybids indexes
    large_sidecars: tuple[str, ...]  # relative paths of JSON files above MAX_SIDECAR_BYTES
    flair_like: tuple[tuple[str, str], ...]  # (relative path, why it is not a FLAIR run) of look-alikes
    #: (relative path, why) of folder links not walked (nor indexed by pybids): loops and aliases.
    skipped_links: tuple[tuple[str, str], ...] = ()


def _flair_lookalike(rel: Path, is_dir: bool) -> str | None:
    """Why ``rel`` looks like a FLAIR image that pybids will not index (None when it does not)."""
    name = rel.name
    lower = name.strip().lower()
    if not (lower.endswith("_flair.nii.gz") or lower.endswith("_flair.nii")):
        return None
    if is_dir:
        return "a directory, not an image file"
    if name != name.strip():
        return "its name starts or ends with a blank (space, tab or newline); rename it"
    if not (name.endswith("_FLAIR.nii.gz") or name.endswith("_FLAIR.nii")):
        return "the suffix and extension must be spelled _FLAIR.nii[.gz] (case matters)"
    if len(rel.parts) < 3 or rel.parts[-2] != "anat" or not rel.parts[0].startswith("sub-"):
        return "not in a sub-<label>/[ses-<label>/]anat/ folder"
    labels = [part.partition("-")[2] for part in rel.parts[:-2]] + [
        pair.partition("-")[2] for pair in name.split("_")[:-1]]
    if any(not label.isascii() or not label.isalnum() for label in labels):
        return "a label that is not letters and digits (A-Z, a-z, 0-9)"
    return None


def _walked(rel: PurePosixPath) -> bool:
    """Whether the walk (and pybids) reaches the dataset path ``rel``: not hidden, not in an ignored top folder."""
    return not (rel.parts and rel.parts[0] in _IGNORED_TOP) and not any(p.startswith(".") for p in rel.parts)


def _skipped_link(path: Path, key: tuple[int, int], ancestors: tuple[tuple[int, int], ...],
                  real_root: str) -> str | None:
    """Why the folder link ``path`` is not walked (None: walk it).

    A link to a folder that contains it (``anat/latest -> .``) is a loop: walking it never ends. A
    link to another folder that the walk reaches anyway (``ses-latest -> ses-2``) is an alias: its
    files would be indexed twice, under two names. A link to a folder outside the dataset (data
    kept elsewhere) or into one the walk skips (``sourcedata/``) is walked.
    """
    target = os.path.realpath(path)
    if key in ancestors:
        return f"a link to {target}, a folder that contains it (a loop)"
    if target == real_root or target.startswith(real_root + os.sep):
        rel = PurePosixPath(Path(os.path.relpath(target, real_root)).as_posix())
        if _walked(rel):
            return f"a link to {rel.as_posix()}/ in the dataset, whose files are used under their own path"
    return None


def scan_dataset(bids_dir: Path) -> DatasetScan:
    """Walk the dataset as pybids will (top-level derivatives/, sourcedata/... and hidden entries
    skipped), following symbolic links, and at most :data:`MAX_WALK_DEPTH` deep.

    Folder links that loop (``anat/latest -> .``: pybids would index them forever) or alias a
    folder of the dataset are not walked: they are listed in ``skipped_links`` (and left out of
    pybids' index by :func:`_indexer`), so every real file is used once. Raises
    :class:`ValidationError` (16) for a loop that is not a symbolic link (a bind mount).
    """
    bids_dir = Path(bids_dir)
    entries: list[tuple[str, int, int]] = []
    large: list[str] = []
    lookalikes: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    real_root = os.path.realpath(bids_dir)
    root_stat = os.stat(bids_dir)
    stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = [(bids_dir, ((root_stat.st_dev, root_stat.st_ino),))]
    while stack:
        folder, ancestors = stack.pop()
        rel_root = folder.relative_to(bids_dir)
        if len(rel_root.parts) > MAX_WALK_DEPTH:
            raise ValidationError(f"{folder}: folders nested more than {MAX_WALK_DEPTH} deep in {bids_dir}; "
                                  "a BIDS dataset is at most a few folders deep")
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            LOGGER.warning("cannot list %s (%s): its files are not indexed", folder, err.strerror or err)
            continue
        subfolders = []
        for child in children:
            if child.name.startswith(".") or (folder == bids_dir and child.name in _IGNORED_TOP):
                continue
            path = Path(child.path)
            rel = rel_root / child.name
            try:
                st = os.stat(path)  # follows symlinks: a changed target counts
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                why = _flair_lookalike(rel, True)
                if why:
                    lookalikes.append((rel.as_posix(), why))
                key = (st.st_dev, st.st_ino)
                why_skipped = _skipped_link(path, key, ancestors, real_root) if child.is_symlink() else None
                if why_skipped:
                    skipped.append((rel.as_posix(), why_skipped))
                    continue
                if key in ancestors:
                    raise ValidationError(
                        f"{path} is {os.path.realpath(path)}, a folder that contains it (a bind mount?): a loop "
                        "that makes indexing the dataset endless")
                subfolders.append((path, (*ancestors, key)))
                continue
            entries.append((rel.as_posix(), st.st_size, st.st_mtime_ns))
            if child.name.endswith(".json") and st.st_size > MAX_SIDECAR_BYTES:
                large.append(rel.as_posix())
            why = _flair_lookalike(rel, False)
            if why:
                lookalikes.append((rel.as_posix(), why))
        stack.extend(reversed(subfolders))
    for rel, why in skipped:
        LOGGER.warning("%s is not used: %s; remove the link to silence this warning", rel, why)
    return DatasetScan(tuple(sorted(entries)), tuple(large), tuple(lookalikes), tuple(skipped))


def _indexer(validate: bool, scan: DatasetScan | None, index_metadata: bool = True):
    """The pybids indexer: its defaults, plus the folder links that :func:`scan_dataset` skipped."""
    from bids import BIDSLayoutIndexer  # lazy: pybids is slow to import; only dataset indexing needs it
    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE  # lazy: pybids, as above

    links = [re.compile("^/" + re.escape(rel) + "(/|$)") for rel, _ in (scan.skipped_links if scan else ())]
    ignore = [*DEFAULT_LOCATIONS_TO_IGNORE, *links] if links else None
    return BIDSLayoutIndexer(validate=validate, index_metadata=index_metadata, ignore=ignore)


def _dataset_fingerprint(bids_dir: Path, validate: bool, scan: DatasetScan | None = None) -> str:
    """Hash of the root, every indexed file's relative path, size and mtime, and the indexing options."""
    import bids  # lazy: pybids is slow to import; only dataset indexing needs it

    scan = scan or scan_dataset(bids_dir)
    digest = hashlib.sha256()
    digest.update(f"{bids_dir}\npybids={bids.__version__};validate={validate}\n".encode())
    for rel, size, mtime in scan.entries:
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def check_dataset_description(bids_dir: Path) -> None:
    """Refuse a ``dataset_description.json`` that pybids cannot read (not JSON, not an object): 16."""
    path = Path(bids_dir) / "dataset_description.json"
    if not path.is_file():
        return  # missing: pybids' validation says so (and --skip-bids-validation goes on)
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes")
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValidationError(f"{path} is not readable JSON ({type(err).__name__}: {str(err)[:200]}); fix it "
                              "(it must be a JSON object with Name and BIDSVersion)") from err
    if not isinstance(content, dict):
        raise ValidationError(f"{path} holds a JSON {type(content).__name__}, not an object; fix it (it must "
                              "be a JSON object with Name and BIDSVersion)")


#: What pybids raises when a JSON sidecar anywhere in the dataset is unreadable while it indexes
#: metadata (invalid JSON, not UTF-8: OSError; a JSON that is not an object: TypeError/ValueError).
_METADATA_ERRORS = (OSError, TypeError, ValueError, AttributeError, RecursionError)


def _open_layout(bids_dir: Path, validate: bool, database_dir: Path | None, scan: DatasetScan | None = None):
    """A ``BIDSLayout`` and whether it indexed sidecar metadata (see :func:`_open_indexed_layout`).

    pybids reads every JSON sidecar of the dataset while indexing, and one unreadable sidecar
    (of any modality) makes the whole index fail. Then the dataset is indexed again without
    metadata, in memory, and :func:`read_sidecars` reads each FLAIR's own sidecars, so a broken
    file costs at most the run it belongs to. The same happens, without trying pybids first, when
    the dataset holds a JSON file larger than :data:`MAX_SIDECAR_BYTES` (pybids would copy it into
    its index).
    """
    from bids.exceptions import BIDSValidationError  # lazy: pybids is slow to import; only dataset indexing needs it

    scan = scan or scan_dataset(bids_dir)
    try:
        if scan is not None and scan.large_sidecars:
            shown = ", ".join(scan.large_sidecars[:5]) + (" ..." if len(scan.large_sidecars) > 5 else "")
            raise ValueError(f"JSON files larger than {MAX_SIDECAR_BYTES // 1_000_000} MB ({shown}) are not "
                             "sidecar metadata")
        return _open_indexed_layout(bids_dir, validate, database_dir, scan), True
    except BIDSValidationError as err:
        raise ValidationError(f"{bids_dir} is not a valid BIDS dataset: {err}") from err
    except _METADATA_ERRORS as err:
        if isinstance(err, OSError) and "JSON" not in str(err):
            raise  # not a sidecar problem (e.g. the work directory's database)
        cause = f"{err}" + (f" ({err.__cause__})" if err.__cause__ else "")
        LOGGER.warning("indexing the sidecar metadata of %s failed: %s; the FLAIRs' sidecars are read "
                       "one by one instead (a FLAIR whose own sidecar is unreadable is not processed)",
                       bids_dir, cause)
    from bids import BIDSLayout  # lazy: pybids is slow to import; only dataset indexing needs it

    indexer = _indexer(validate, scan, index_metadata=False)
    return BIDSLayout(str(bids_dir), validate=validate, indexer=indexer), False


def _open_indexed_layout(bids_dir: Path, validate: bool, database_dir: Path | None,
                         scan: DatasetScan | None = None):
    """A ``BIDSLayout``, reusing the database in ``database_dir`` when the dataset is unchanged.

    Each state of the dataset (its fingerprint) gets its own database folder
    ``database_dir/<fingerprint>``. A new index is built in a temporary folder and renamed into
    place, so participant jobs started together on one work directory (a common cluster pattern)
    never read a half-written database: the first rename wins, the others reuse it.
    """
    from bids import BIDSLayout  # lazy: pybids is slow to import; only dataset indexing needs it

    scan = scan or scan_dataset(bids_dir)
    if database_dir is None:
        return BIDSLayout(str(bids_dir), validate=validate, indexer=_indexer(validate, scan))
    database_dir = Path(database_dir)
    database_dir.mkdir(parents=True, exist_ok=True)
    target = database_dir / _dataset_fingerprint(bids_dir, validate, scan)[:24]
    if (target / _DATABASE_FILE).is_file():
        LOGGER.debug("BIDS database %s: reused", target)
        return BIDSLayout(str(bids_dir), validate=validate, database_path=str(target))
    LOGGER.debug("BIDS database %s: re-indexing", target)
    tmp = Path(tempfile.mkdtemp(prefix=".indexing-", dir=database_dir))
    try:
        BIDSLayout(str(bids_dir), validate=validate, database_path=str(tmp), reset_database=True,
                   indexer=_indexer(validate, scan))
        try:
            os.rename(tmp, target)
        except OSError:  # another job indexed the same state first: use theirs
            LOGGER.debug("BIDS database %s was created concurrently", target)
        else:
            for old in database_dir.iterdir():  # earlier states of the dataset
                if old != target and old.is_dir() and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return BIDSLayout(str(bids_dir), validate=validate, database_path=str(target))


def _as_query_values(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Translate filter-file values: ``null`` -> entity absent, ``"*"`` -> entity present."""
    from bids.layout import Query  # lazy: pybids is slow to import; only dataset indexing needs it

    def convert(value: Any) -> Any:
        if value is None:
            return Query.NONE
        if value == "*":
            return Query.ANY
        return value

    return {k: [convert(v) for v in val] if isinstance(val, list) else convert(val)
            for k, val in filters.items()}


_SIDECAR_EXTENSIONS = (".nii.gz", ".nii", ".json")


def _name_entities(name: str) -> tuple[dict[str, str], str] | None:
    """``({key: value}, suffix)`` of a BIDS file name, or None when it is not one."""
    ext = next((e for e in _SIDECAR_EXTENSIONS if name.endswith(e)), None)
    if ext is None:
        return None
    *pairs, suffix = name[: -len(ext)].split("_")
    entities = {}
    for pair in pairs:
        key, sep, value = pair.partition("-")
        if not sep:
            return None
        entities[key] = value
    return entities, suffix


def read_sidecars(bids_dir: Path, path: Path) -> dict[str, Any]:
    """The metadata of ``path`` from its JSON sidecars, by the BIDS inheritance principle.

    Every ``*.json`` with the same suffix whose entities are a subset of the file's, in the file's
    folder or a parent up to ``bids_dir``, merged from the farthest to the nearest. Used when
    pybids could not index metadata (:func:`_open_layout`). Raises ``ValueError`` naming a
    sidecar that is not a readable JSON object.
    """
    bids_dir = Path(bids_dir)
    parsed = _name_entities(Path(path).name)
    if parsed is None:
        return {}
    entities, suffix = parsed
    found: list[Path] = []
    folder = Path(path).parent
    while True:
        here = []
        for candidate in sorted(folder.glob("*.json")):
            other = _name_entities(candidate.name)
            if other is not None and other[1] == suffix and all(
                    entities.get(k) == v for k, v in other[0].items()):
                here.append((len(other[0]), candidate))
        # In one folder the more specific sidecar (more entities) is the nearer one, as in pybids.
        found.extend(candidate for _, candidate in sorted(here, key=lambda item: -item[0]))
        if folder == bids_dir or folder.parent == folder or not folder.is_relative_to(bids_dir):
            break
        folder = folder.parent
    metadata: dict[str, Any] = {}
    for sidecar in reversed(found):  # farthest first: nearer files override
        try:
            size = sidecar.stat().st_size
            if size > MAX_SIDECAR_BYTES:
                raise ValueError(f"{size} bytes, more than the {MAX_SIDECAR_BYTES} accepted for metadata")
            content = json.loads(sidecar.read_text(encoding="utf-8"))
        except RecursionError as err:
            raise ValueError(f"its sidecar {sidecar} is not readable JSON (nested too deeply); fix or remove "
                             "it") from err
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"its sidecar {sidecar} is not readable JSON ({err}); fix or remove it") from err
        if not isinstance(content, dict):
            raise ValueError(f"its sidecar {sidecar} holds a JSON {type(content).__name__}, not an object; "
                             "fix or remove it")
        metadata.update(content)
    return metadata


def _check_labels(kind: str, wanted: Iterable[str] | None, available: Sequence[str]) -> None:
    """Raise NoMatchError naming the labels that exist when any wanted label does not."""
    if not wanted:
        return
    missing = sorted(set(wanted) - set(available))
    if missing:
        shown = ", ".join(sorted(available)[:50]) + (" ..." if len(available) > 50 else "")
        raise NoMatchError(
            f"{kind} label(s) {', '.join(missing)} not found in the dataset; available: {shown or '(none)'}"
        )


def collect_flair_runs(
    bids_dir: Path,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
    bids_filters: Mapping[str, Any] | None = None,
    skip_validation: bool = False,
    database_dir: Path | None = None,
) -> list[FlairRun]:
    """Every FLAIR of the dataset that the labels and filters select, sorted by path.

    ``bids_filters`` are the pybids entity filters of the FLAIR query (the ``flair`` entry of a
    filter file). ``database_dir`` (under the work directory) caches the index between calls.
    """
    bids_dir = Path(bids_dir).absolute()
    if not bids_dir.is_dir():
        raise NoInputError(f"{bids_dir}: the BIDS directory does not exist")
    check_dataset_description(bids_dir)
    scan = scan_dataset(bids_dir)
    layout, with_metadata = _open_layout(bids_dir, validate=not skip_validation, database_dir=database_dir,
                                         scan=scan)

    all_flairs = layout.get(return_type="object", **FLAIR_QUERY)
    indexed = {Path(f.path).relative_to(bids_dir).as_posix() for f in all_flairs}
    for relpath, why in scan.flair_like:
        if relpath not in indexed:
            LOGGER.warning("%s looks like a FLAIR but is not used: %s", relpath, why)
    if not all_flairs:
        raise NoInputError(
            f"{bids_dir}: no FLAIR image in the dataset (looked for sub-*/[ses-*/]anat/*_FLAIR.nii[.gz])"
            + _case_hint(bids_dir)
        )
    _check_labels("participant", participant_labels, layout.get_subjects())
    _check_labels("session", session_labels, layout.get_sessions())

    query = dict(FLAIR_QUERY)
    if bids_filters:
        query.update(_as_query_values(bids_filters))
        query.update(FLAIR_QUERY)  # never another suffix (the parser refuses such filters too)
    if participant_labels:
        query["subject"] = list(participant_labels)
    if session_labels:
        query["session"] = list(session_labels)
    files = layout.get(return_type="object", **query)
    if not files:
        parts = []
        if participant_labels:
            parts.append(f"participants {', '.join(participant_labels)}")
            without = [label for label in participant_labels if not layout.get(subject=label, **FLAIR_QUERY)]
            if without:
                parts[-1] += (f" (sub-{', sub-'.join(without)} ha{'s' if len(without) == 1 else 've'} no "
                              "FLAIR image at all: looked for sub-<label>/[ses-*/]anat/*_FLAIR.nii[.gz])")
        if session_labels:
            parts.append(f"sessions {', '.join(session_labels)}")
        if bids_filters:
            parts.append(f"filters {json.dumps(dict(bids_filters))}")
        raise NoMatchError(
            f"no FLAIR matches {' and '.join(parts)} ({len(all_flairs)} FLAIR(s) in the dataset)"
        )

    runs = []
    for bf in sorted(files, key=lambda f: f.path):
        path = Path(bf.path)
        entities = {k: v for k, v in bf.get_entities().items() if k not in ("extension",)}
        problem = None
        if "subject" not in entities:
            problem = (f"cannot use FLAIR {path}: pybids reads no subject label from its name (labels are "
                       "letters and digits only); rename it following BIDS")
        if with_metadata:
            metadata = layout.get_metadata(bf.path)
        else:
            try:
                metadata = read_sidecars(bids_dir, path)
            except ValueError as err:
                metadata, problem = {}, f"cannot use FLAIR {path}: {err}"
        runs.append(FlairRun(
            path=path,
            relpath=path.relative_to(bids_dir).as_posix(),
            entities=entities,
            metadata=metadata,
            problem=problem,
        ))
    wanted = set(participant_labels) if participant_labels else set(layout.get_subjects())
    without = sorted(wanted - {run.subject for run in runs})
    if without:
        LOGGER.log(logging.WARNING if participant_labels else logging.INFO,
                   "no FLAIR selected for participant(s) %s (none in the dataset or none matching the "
                   "filters): nothing to do for them", ", ".join(without))
    LOGGER.info("found %d FLAIR image(s) in %s", len(runs), bids_dir)
    return runs


def _case_hint(bids_dir: Path, limit: int = 3) -> str:
    """A hint when FLAIRs exist under another spelling of the suffix (``_flair``, ``_Flair``):
    BIDS names are case-sensitive and the suffix is ``FLAIR``."""
    misspelt = []
    for pattern in ("sub-*/anat/*", "sub-*/ses-*/anat/*"):
        for path in sorted(Path(bids_dir).glob(pattern)):
            stem = path.name.split(".")[0]
            if stem.lower().endswith("_flair") and not stem.endswith("_FLAIR") and ".nii" in path.name:
                misspelt.append(path.relative_to(bids_dir).as_posix())
    if not misspelt:
        return ""
    more = f" and {len(misspelt) - limit} more" if len(misspelt) > limit else ""
    return (f"; found {', '.join(misspelt[:limit])}{more}: BIDS suffixes are case-sensitive, rename them to "
            "*_FLAIR.nii.gz")
