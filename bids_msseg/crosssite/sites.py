"""Which site each scan comes from: its dataset, a ``participants.tsv`` column or sidecar fields.

One rule applies to the whole study (:class:`SiteRule`):

* ``column``: the value of a ``participants.tsv`` column for the scan's subject (each dataset's
  own table);
* ``fields``: the values of sidecar fields (e.g. ``Manufacturer``, ``MagneticFieldStrength``),
  joined; a scan lacking all of them has no site;
* ``dataset``: the dataset the scan comes from (the default when several datasets are given).

With one dataset and no explicit rule the fields of :data:`DEFAULT_SITE_FIELDS` that any sidecar
has are used. Scans without a site are left out of the study with a warning. Site labels are made
of letters, digits and ``-`` so they can name files (``1.5`` becomes ``1p5``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bids_msseg.errors import UsageError
from bids_msseg.masks import dataset_root
from bids_msseg.sites import read_participants
from bids_msseg.train.split import TrainingScan

LOGGER = logging.getLogger(__name__)

#: Sidecar fields that tell scanners apart, used when one dataset is given without a rule.
DEFAULT_SITE_FIELDS = ("InstitutionName", "Manufacturer", "ManufacturersModelName", "MagneticFieldStrength")


@dataclass(frozen=True)
class SiteRule:
    """How a scan's site is read: ``kind`` is ``dataset``, ``column`` or ``fields``; ``names`` the column/fields."""

    kind: str = "dataset"
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "dataset":
            return "the dataset of each scan"
        if self.kind == "column":
            return f"participants.tsv column {self.names[0]!r}"
        return f"sidecar field(s) {', '.join(self.names)}"


def site_label(value: object) -> str:
    """A file-name-safe label of a site value: letters, digits and ``-`` (``.`` becomes ``p``)."""
    text = str(value).strip().replace(".", "p")
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9]+", "-", text)).strip("-")


def choose_rule(scans: Sequence[TrainingScan], column: str | None, fields: Sequence[str] | None) -> SiteRule:
    """The rule for these flags: the column, else the fields, else datasets (several) or default fields."""
    if column and fields:
        raise UsageError("--site-column and --site-field are exclusive: give one")
    if column:
        return SiteRule("column", (column,))
    if fields:
        return SiteRule("fields", tuple(fields))
    if len({s.dataset for s in scans}) > 1:
        return SiteRule("dataset")
    present = tuple(f for f in DEFAULT_SITE_FIELDS if any(s.run.metadata.get(f) not in (None, "") for s in scans))
    if not present:
        raise UsageError(f"cannot tell sites apart: one dataset and no sidecar has any of {list(DEFAULT_SITE_FIELDS)}; "
                         "give --site-column (participants.tsv) or --site-field, or several datasets "
                         "(--extra-bids-dir)")
    return SiteRule("fields", present)


def _participants(root: Path, column: str) -> dict[str, str]:
    """``{subject label: value}`` of one column of a dataset's participants.tsv (the cohort's reader)."""
    rows, _ = read_participants(root, column)
    values = {pid.removeprefix("sub-"): row.get(column) for pid, row in rows.items()}
    return {pid: str(v).strip() for pid, v in values.items() if not pd.isna(v) and str(v).strip() not in ("", "n/a")}


def assign_sites(scans: Sequence[TrainingScan], rule: SiteRule) -> dict[str, str]:
    """``{scan key: site label}`` for the scans that have a site under ``rule`` (others logged and left out)."""
    tables: dict[Path, Mapping[str, str]] = {}
    sites: dict[str, str] = {}
    for scan in scans:
        if rule.kind == "dataset":
            value = scan.dataset
        elif rule.kind == "column":
            root = dataset_root(scan.run)
            if root not in tables:
                tables[root] = _participants(root, rule.names[0])
            value = tables[root].get(scan.run.subject, "")
        else:
            values = [scan.run.metadata.get(f) for f in rule.names]
            value = "-".join(str(v) for v in values if v not in (None, ""))
        label = site_label(value)
        if not label:
            LOGGER.warning("%s: no site under %s; left out of the cross-site study", scan.run.relpath,
                           rule.describe())
            continue
        sites[scan.key] = label
    counts = pd.Series(list(sites.values()), dtype=str).value_counts().sort_index()
    LOGGER.info("sites from %s: %s", rule.describe(),
                ", ".join(f"{site} ({n} scan(s))" for site, n in counts.items()) or "none")
    return sites
