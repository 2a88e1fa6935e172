"""The training scans of ``group --train`` and the cross-site study, and their train/validation split.

A :class:`TrainingScan` is a FLAIR with its expert mask (:func:`bids_msseg.masks.find_training_pairs`),
tagged by its dataset so that scans of merged datasets never collide. :func:`split_scans` splits
by subject (seeded, with the hash of :func:`~bids_msseg.train.data.split_by_scan`): no subject is
on both sides, so two sessions of one patient never leak across.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bids_msseg.bids import FlairRun
from bids_msseg.errors import NoInputError
from bids_msseg.masks import dataset_root
from bids_msseg.train.data import split_rank

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingScan:
    """One FLAIR with its expert mask, named for the shards (``<dataset>__<run name>``), and the expert's
    mask of normal hyperintensities where there is one (hard negatives)."""

    run: FlairRun
    mask: Path
    dataset: str  # short tag of the dataset (folder name, made unique)
    normal: Path | None = None

    @property
    def key(self) -> str:
        """Shard and cache file stem; unique across the merged datasets."""
        return f"{self.dataset}__{self.run.name}"

    @property
    def group(self) -> str:
        """Split unit: the subject within its dataset."""
        return f"{self.dataset}__sub-{self.run.subject}"


def _dataset_tags(roots: Sequence[Path]) -> dict[Path, str]:
    """A short unique tag per dataset root: its folder name (alphanumerics), numbered on collisions."""
    tags: dict[Path, str] = {}
    for root in roots:
        base = re.sub(r"[^A-Za-z0-9]+", "", root.name) or "dataset"
        tag, n = base, 2
        while tag in tags.values():
            tag, n = f"{base}{n}", n + 1
        tags[root] = tag
    return tags


def split_scans(scans: Sequence[TrainingScan], val_fraction: float, seed: int
                ) -> tuple[list[TrainingScan], list[TrainingScan]]:
    """Training and validation scans, split by subject (seeded, deterministic).

    Subjects are ordered by :func:`~bids_msseg.train.data.split_rank`, the seeded hash
    :func:`~bids_msseg.train.data.split_by_scan` thresholds, and the first ``round(val_fraction *
    n)`` (at least one, never all) go to validation: unlike a threshold, this keeps the asked
    proportion on the small cohorts that site-specific training has. With a single subject the
    split falls back to scans.
    """
    if len(scans) < 2:
        raise NoInputError(f"training needs at least 2 FLAIRs with expert masks (one for validation); "
                           f"found {len(scans)}")
    by_subject = len({s.group for s in scans}) >= 2
    unit = (lambda s: s.group) if by_subject else (lambda s: s.key)
    if not by_subject:
        LOGGER.warning("all training scans come from one subject: validation scans share it with training")
    units = sorted({unit(s) for s in scans}, key=lambda u: (split_rank(u, seed), u))
    n_val = min(len(units) - 1, max(1, round(val_fraction * len(units))))
    val_units = set(units[:n_val])
    train = [s for s in scans if unit(s) not in val_units]
    val = [s for s in scans if unit(s) in val_units]
    LOGGER.info("split by %s (seed %d): %d training scan(s) of %d unit(s), %d validation scan(s) of %d",
                "subject" if by_subject else "scan", seed, len(train), len(units) - n_val, len(val), n_val)
    return train, val


def _dataset_name(root: Path) -> str:
    try:
        return str(json.loads((root / "dataset_description.json").read_text()).get("Name") or root.name)
    except (OSError, ValueError):
        return root.name


def scans_from_pairs(pairs: Sequence[tuple[FlairRun, Path, Path | None]]) -> tuple[list[TrainingScan], dict[str, str]]:
    """(FLAIR, lesion mask, normal-hyperintensity mask) triples as :class:`TrainingScan` (tagged by
    dataset), and each tag's dataset name."""
    roots = list(dict.fromkeys(dataset_root(run) for run, *_ in pairs))
    tags = _dataset_tags(roots)
    scans = [TrainingScan(run, mask, tags[dataset_root(run)], normal) for run, mask, normal in pairs]
    return scans, {tags[root]: _dataset_name(root) for root in roots}
