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


def read_participants(bids_dir: Path, site_column: str | None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Rows of ``participants.tsv`` by ``participant_id``, and the site column to use.

    An explicit ``site_column`` that the file lacks is a usage error (64); without one, the
    ``site`` column is used when present.
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        if site_column:
            raise UsageError(f"--site-column {site_column}: {path} does not exist")
        return {}, None
    table = pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False)
    if "participant_id" not in table.columns:
        LOGGER.warning("%s has no participant_id column; not used", path)
        return {}, None
    if site_column and site_column not in table.columns:
        raise UsageError(f"--site-column {site_column}: {path} has no such column "
                         f"(columns: {', '.join(table.columns)})")
    column = site_column or (DEFAULT_SITE_COLUMN if DEFAULT_SITE_COLUMN in table.columns else None)
    rows = {str(r["participant_id"]): r for r in table.to_dict("records")}
    return rows, column
