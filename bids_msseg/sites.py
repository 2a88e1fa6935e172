"""The site rule of the group level: which site and scanner a FLAIR run comes from.

Shared by the cohort table (:mod:`bids_msseg.cohort`), its report and the cross-site study
(:mod:`bids_msseg.crosssite.sites`): the site of a run follows :data:`SITE_RULE`
(:func:`site_of`), reading ``participants.tsv`` (:func:`read_participants`) and the sidecar.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bids_msseg.errors import UsageError

LOGGER = logging.getLogger(__name__)

#: Sidecar fields naming the scanner, in the order they are joined.
SCANNER_FIELDS = ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength")
#: participants.tsv column used for the site when --site-column is not given.
DEFAULT_SITE_COLUMN = "site"
SITE_RULE = (
    "The site is the first of: the --site-column of participants.tsv (default: its 'site' column when there is "
    "one); the FLAIR sidecar's InstitutionName; the scanner, i.e. the sidecar's Manufacturer, "
    "ManufacturersModelName and MagneticFieldStrength (as '3T') joined by spaces; else n/a."
)


def scanner_of(metadata: Mapping[str, Any]) -> str | None:
    """``"Siemens TrioTim 3T"`` from a sidecar's Manufacturer, ManufacturersModelName, MagneticFieldStrength."""
    parts = []
    for key in SCANNER_FIELDS:
        value = metadata.get(key)
        if value in (None, ""):
            continue
        if key == "MagneticFieldStrength":
            try:
                value = f"{float(value):g}T"
            except (TypeError, ValueError):
                value = f"{value}T"
        parts.append(str(value).strip())
    return " ".join(parts) or None


def site_of(metadata: Mapping[str, Any], participant: Mapping[str, Any] | None,
            site_column: str | None) -> tuple[str, str]:
    """``(site, site_source)`` of a run by the rule of the module docstring."""
    if site_column and participant:
        value = participant.get(site_column)
        if value is not None and not pd.isna(value) and str(value).strip() not in ("", "n/a"):
            return str(value).strip(), f"participants.tsv:{site_column}"
    institution = metadata.get("InstitutionName")
    if institution not in (None, ""):
        return str(institution).strip(), "InstitutionName"
    scanner = scanner_of(metadata)
    if scanner:
        return scanner, "scanner"
    return "n/a", "n/a"


#: Largest participants.tsv read (bytes): a million participants' rows fit many times.
MAX_PARTICIPANTS_BYTES = 200_000_000


def _read_tsv_text(path: Path) -> str:
    """The text of a TSV: UTF-8 (a BOM is dropped), else Latin-1 with a warning (spreadsheets save it)."""
    size = path.stat().st_size
    if size > MAX_PARTICIPANTS_BYTES:
        raise UsageError(f"{path}: {size} bytes, too large for a participants table")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        LOGGER.warning("%s is not UTF-8 (%s); read as Latin-1: save it as UTF-8 (BIDS requires it)", path, err)
        return raw.decode("latin-1")


def read_tsv_rows(path: Path) -> tuple[list[str], list[dict[str, str | None]]]:
    """Header and rows of a BIDS TSV (tab-separated, no quoting, ``n/a`` -> None), never raising on a bad row.

    A row with more fields than the header is kept when the extra fields are empty (trailing
    tabs) and skipped with a warning naming its line otherwise (its columns cannot be told apart);
    a shorter row gets None for the missing columns, with a warning.
    """
    lines = _read_tsv_text(Path(path)).splitlines()
    if not lines:
        return [], []
    header = [h.strip() for h in lines[0].split("\t")]
    rows: list[dict[str, str | None]] = []
    too_long: list[int] = []
    too_short: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > len(header):
            if any(f.strip() for f in fields[len(header):]):
                too_long.append(number)
                continue
            fields = fields[:len(header)]
        if len(fields) < len(header):
            too_short.append(number)
            fields += [""] * (len(header) - len(fields))
        rows.append({h: (None if f.strip() in ("", "n/a") else f.strip()) for h, f in zip(header, fields, strict=True)})
    if too_long:
        LOGGER.warning("%s: line(s) %s have more fields than the %d columns of the header: skipped (their "
                       "participants get no site from this file); fix the file", path,
                       ", ".join(map(str, too_long[:20])), len(header))
    if too_short:
        LOGGER.warning("%s: line(s) %s have fewer fields than the %d columns of the header: the missing "
                       "ones are n/a", path, ", ".join(map(str, too_short[:20])), len(header))
    return header, rows


def read_participants(bids_dir: Path, site_column: str | None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Rows of ``participants.tsv`` by ``participant_id``, and the site column to use.

    An explicit ``site_column`` that the file lacks is a usage error (64); without one, the
    ``site`` column is used when present. The file is read by :func:`read_tsv_rows` (UTF-8 or
    Latin-1; a malformed row is skipped with a warning, never the whole file).
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        if site_column:
            raise UsageError(f"--site-column {site_column}: {path} does not exist")
        return {}, None
    try:
        columns, records = read_tsv_rows(path)
    except OSError as err:
        LOGGER.warning("%s cannot be read (%s); not used", path, err.strerror or err)
        columns, records = [], []
    if "participant_id" not in columns:
        LOGGER.warning("%s has no participant_id column; not used", path)
        return {}, None
    if site_column and site_column not in columns:
        raise UsageError(f"--site-column {site_column}: {path} has no such column "
                         f"(columns: {', '.join(columns)})")
    column = site_column or (DEFAULT_SITE_COLUMN if DEFAULT_SITE_COLUMN in columns else None)
    rows: dict[str, dict[str, Any]] = {}
    duplicates: dict[str, int] = {}
    for record in records:
        if not record.get("participant_id"):
            continue
        participant = str(record["participant_id"])
        if participant in rows:
            duplicates[participant] = duplicates.get(participant, 1) + 1
        rows[participant] = dict(record)
    if duplicates:
        listed = ", ".join(f"{p} ({n} rows)" for p, n in sorted(duplicates.items())[:20])
        LOGGER.warning("%s lists participant(s) more than once: %s; the last row of each is used (its site may "
                       "not be the one meant); keep one row per participant", path, listed)
    return rows, column
