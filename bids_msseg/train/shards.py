"""Training shards: one file of slices per scan (plus degraded copies), and the manifest that guards them.

:func:`build_shards` writes the missing shards of the training and validation scans from the
preprocessing cache (:mod:`bids_msseg.train.cache`), plus ``--augment-quality`` degraded copies of
the training scans (:mod:`bids_msseg.train.augment`). :func:`check_manifest` compares the split,
reference and shard settings with those of an earlier call: when they changed, shards are
rebuilt, and a started training run is refused rather than silently continued on other data.
:func:`synthetic_pool` lists the shards of a synthetic pool (``scripts/build_default_model.py pool``)
that ``--synthetic-pool`` mixes into the training, after checking they were normalized as the model is.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_msseg.errors import UsageError
from bids_msseg.io import write_text_atomic
from bids_msseg.train.augment import degraded_copy
from bids_msseg.train.cache import load_preprocessed
from bids_msseg.train.data import list_shards, load_shard, make_shard
from bids_msseg.train.split import TrainingScan

LOGGER = logging.getLogger(__name__)


def _shard_meta(scan: TrainingScan, split: str, augmentation: dict | None = None) -> dict[str, Any]:
    return {"dataset": scan.dataset, "subject": scan.run.subject, "session": scan.run.session,
            "source": scan.run.relpath, "mask": scan.mask.name, "split": split,
            "augmentation": augmentation}


def build_shards(train: Sequence[TrainingScan], val: Sequence[TrainingScan], cache: Mapping[str, Path],
                 shards_dir: Path, reference: np.ndarray, size: int, augment_quality: int, seed: int
                 ) -> tuple[list[Path], list[Path]]:
    """Write the missing shards; return (training shards incl. augmented copies, validation shards).

    Augmented copies (``<key>_augq<j>``) come from :func:`~bids_msseg.train.augment.degraded_copy`.
    """
    train_paths: list[Path] = []
    val_paths: list[Path] = []
    for split, scans, out in (("train", train, train_paths), ("validation", val, val_paths)):
        for scan in scans:
            targets = [(shards_dir / f"{scan.key}.npz", None)]
            if split == "train":
                targets += [(shards_dir / f"{scan.key}_augq{j}.npz", j) for j in range(1, augment_quality + 1)]
            out.extend(t for t, _ in targets)
            todo = [(t, j) for t, j in targets if not t.is_file()]
            if not todo:
                continue
            vol = load_preprocessed(cache[scan.key])
            zooms = tuple(float(z) for z in vol["zooms"])
            brain, lesion = vol["brain"].astype(bool), vol["lesion"].astype(bool)
            for target, j in todo:
                image, params = vol["corrected"], None
                if j is not None:
                    image, params = degraded_copy(image, seed, scan.key, j)
                normal = vol["normal"].astype(bool) if "normal" in vol else None
                make_shard(target, image, brain, lesion, zooms, reference, size=size,
                           meta=_shard_meta(scan, split, params), normal=normal)
                LOGGER.info("shard %s written%s", target.name, f" ({params})" if params else "")
    return train_paths, val_paths


def n_slices(path: Path) -> int:
    with np.load(path, allow_pickle=False) as z:
        return int(json.loads(str(z["meta"]))["n_slices"])


def check_manifest(train_dir: Path, manifest: dict[str, Any]) -> None:
    """Compare with the manifest of an earlier call: rebuild stale shards, refuse a started run."""
    path = train_dir / "manifest.json"
    shards_dir, run_dir = train_dir / "shards", train_dir / "run"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != manifest:
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            if (run_dir / "last.json").is_file():
                raise UsageError(
                    f"the training data or split changed ({', '.join(changed)}) since the training in {run_dir} "
                    f"started; use another work directory (-w) or delete {train_dir} to start over")
            LOGGER.warning("training data changed (%s): rebuilding the shards", ", ".join(changed))
            shutil.rmtree(shards_dir, ignore_errors=True)
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")


def synthetic_pool(directory: Path, reference: np.ndarray, size: int) -> list[Path]:
    """The shards of the synthetic pool in ``directory`` (``--synthetic-pool``), refused with a
    :class:`UsageError` when they cannot join this training: no ``reference.json`` or no shards, another
    quantile reference than the model's (build the pool with ``--reference-from`` the ``--init-model``),
    or another slice size."""
    directory = Path(directory)
    ref_path = directory / "reference.json"
    shards = list_shards(directory)
    if not ref_path.is_file() or not shards:
        raise UsageError(f"--synthetic-pool {directory}: not a pool of scripts/build_default_model.py pool "
                         "(reference.json and *.npz shards)")
    pool_reference = np.asarray(json.loads(ref_path.read_text())["reference"], np.float64)
    if pool_reference.shape != np.shape(reference) or not np.allclose(pool_reference, reference, atol=1e-5):
        raise UsageError(f"--synthetic-pool {directory}: its shards were normalized to another quantile reference "
                         "than this model's; build the pool with --reference-from the --init-model")
    pool_size = load_shard(shards[0]).images.shape[-1]
    if pool_size != size:
        raise UsageError(f"--synthetic-pool {directory}: {pool_size}-pixel slices, this training uses {size}")
    return shards
