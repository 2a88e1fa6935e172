"""Training data as shards of network-ready axial slices.

A shard is one scan turned into what the network sees at inference: brain-masked, normalized (both
quantile and linear, for the paper's ablation), cut into 224x224 slices by :mod:`bids_msseg.slicing`
exactly as at inference, with its lesion label slices: 1 lesion, 0 background, :data:`NORMAL` on
background an expert marked as a normal hyperintensity (periventricular caps and bands: the hard
negatives the loss may weigh up and the sampler may draw more often) and :data:`UNKNOWN` where the
truth is not known (hyperintensities of a real FLAIR used as anatomy that no expert labelled: the
loss and validation skip them). Shards are ``.npz`` files (no pickles),
written atomically so a reader never sees a partial one. Splits are by scan (by shard), never by
slice, so no scan is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from bids_msseg.io import atomic_path
from bids_msseg.normalize import brain_quantiles, linear_normalize, quantile_normalize, reference_from_quantiles
from bids_msseg.slicing import context_window, cut_label_slices, cut_slices, plan_geometry, stack_context
from bids_msseg.train.augment import perturb_intensity

LOGGER = logging.getLogger(__name__)

#: Label value of voxels whose truth is unknown (neither taught nor scored).
UNKNOWN = 255
#: Label value of background voxels an expert marked as a normal hyperintensity (a hard negative).
NORMAL = 2


def make_shard(
    path: Path,
    image: np.ndarray,
    brain: np.ndarray,
    lesion: np.ndarray,
    zooms: tuple[float, float, float],
    reference: np.ndarray,
    size: int = 224,
    meta: dict | None = None,
    unknown: np.ndarray | None = None,
    normal: np.ndarray | None = None,
) -> Path:
    """Normalize, slice and save one RAS+ scan as a shard (``unknown``: voxels labelled UNKNOWN;
    ``normal``: background voxels labelled NORMAL)."""
    geom = plan_geometry(brain, zooms, size)
    quant = cut_slices(quantile_normalize(image, brain, reference), geom)[:, 0]
    lin = cut_slices(linear_normalize(image, brain), geom)[:, 0]
    label = cut_label_slices(lesion, geom)[:, 0].numpy().astype(np.uint8)
    if unknown is not None:
        label[(cut_label_slices(unknown, geom)[:, 0].numpy() > 0) & (label == 0)] = UNKNOWN
    if normal is not None:
        label[(cut_label_slices(normal, geom)[:, 0].numpy() > 0) & (label == 0)] = NORMAL
    voxel_ml = float(np.prod(zooms)) / 1000.0
    info = dict(meta or {}, lesion_ml=round(float(lesion.sum()) * voxel_ml, 3), n_slices=int(label.shape[0]))
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, quantile=quant.numpy().astype(np.float16), linear=lin.numpy().astype(np.float16),
                     label=label, meta=np.array(json.dumps(info)))
    return Path(path)


def list_shards(directory: Path) -> list[Path]:
    """Finished shards (atomic writes: hidden temporaries are never listed), in name order."""
    return sorted(p for p in Path(directory).glob("*.npz") if not p.name.startswith("."))


def split_rank(name: str, seed: int = 0) -> float:
    """A scan's seeded position in [0, 1] for splitting: depends on its name and the seed only."""
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_by_scan(shards: list[Path], val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Deterministic 80/20 split by scan: a shard's side depends on its name and the seed only."""
    train, val = [], []
    for p in shards:
        (val if split_rank(p.stem, seed) < val_fraction else train).append(p)
    return train, val


@dataclass
class Shard:
    """A loaded shard: images (n, H, W) float16 for one normalization, labels (n, H, W) uint8 (0, 1, NORMAL,
    UNKNOWN)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    meta: dict

    @property
    def lesion_slices(self) -> np.ndarray:
        return np.flatnonzero((self.labels == 1).reshape(self.labels.shape[0], -1).any(axis=1))

    @property
    def normal_slices(self) -> np.ndarray:
        """Slices holding expert-marked normal hyperintensities (hard negatives)."""
        return np.flatnonzero((self.labels == NORMAL).reshape(self.labels.shape[0], -1).any(axis=1))

    def lesions_by_slices(self) -> list[np.ndarray]:
        """The slices each lesion crosses, one array per lesion: 3D components of the label stack,
        26-connected as the default lesion definition (:mod:`bids_msseg.lesions`) counts them, here on
        the slices' own grid."""
        labelled, _ = ndimage.label(self.labels == 1, structure=np.ones((3, 3, 3), bool))
        # a connected component crosses every slice between its first and last
        return [np.arange(box[0].start, box[0].stop) for box in ndimage.find_objects(labelled) if box is not None]


def load_shard(path: Path, normalization: str = "quantile") -> Shard:
    """Read a shard's slices for ``normalization`` (``quantile`` or ``linear``)."""
    with np.load(path, allow_pickle=False) as z:
        return Shard(Path(path).stem, z[normalization], z["label"], json.loads(str(z["meta"])))


class SliceSampler:
    """Draws training batches: a share of slices containing lesions, the rest any brain slice.

    ``lesion_sampling`` says how a lesion slice is drawn from a scan: ``"slice"`` (any slice that
    holds lesion, so a large lesion crossing 20 slices is drawn 20 times as often as a small one)
    or ``"lesion"`` (a lesion first, each of the scan's lesions alike, then one of its slices: small
    lesions, most of the lesions and most of what lesion-wise detection counts, weigh as much as
    large ones). ``normal_fraction`` of each batch comes from slices with expert-marked normal
    hyperintensities (:data:`NORMAL`) when any shard has them. Shards are cached in memory (a few
    MB each); ``refresh`` picks up shards written since, so training can start while the synthetic
    pool is still growing. ``context`` > 0 gives each slice its neighbours as channels (2.5D,
    :func:`~bids_msseg.slicing.context_window`).
    """

    def __init__(self, shards: list[Path], normalization: str, lesion_fraction: float, seed: int,
                 lesion_sampling: str = "slice", normal_fraction: float = 0.0, context: int = 0,
                 augment_intensity: float = 0.0):
        if lesion_sampling not in ("slice", "lesion"):
            raise ValueError(f"unknown lesion_sampling {lesion_sampling!r} (slice or lesion)")
        self.normalization = normalization
        self.lesion_fraction = lesion_fraction
        self.lesion_sampling = lesion_sampling
        self.normal_fraction = normal_fraction
        self.context = context
        self.augment_intensity = augment_intensity
        self.rng = np.random.default_rng(seed)
        self.cache: dict[Path, Shard] = {}
        self.lesions: dict[str, list[np.ndarray]] = {}
        self.refresh(shards)

    def refresh(self, shards: list[Path]) -> None:
        for p in shards:
            if p not in self.cache:
                self.cache[p] = shard = load_shard(p, self.normalization)
                if self.lesion_sampling == "lesion":
                    self.lesions[shard.name] = shard.lesions_by_slices()
        self.items = list(self.cache.values())
        self.with_lesions = [s for s in self.items if s.lesion_slices.size]
        self.with_normal = [s for s in self.items if s.normal_slices.size] if self.normal_fraction else []

    def _lesion_slice(self, shard: Shard) -> int:
        if self.lesion_sampling == "lesion":
            lesions = self.lesions[shard.name]
            return int(self.rng.choice(lesions[self.rng.integers(len(lesions))]))
        return int(self.rng.choice(shard.lesion_slices))

    def _draw(self) -> tuple[Shard, int]:
        """One (shard, slice index): a lesion slice, a normal-hyperintensity slice or any slice."""
        u = self.rng.random()
        if self.with_lesions and u < self.lesion_fraction:
            shard = self.with_lesions[self.rng.integers(len(self.with_lesions))]
            return shard, self._lesion_slice(shard)
        if self.with_normal and u < self.lesion_fraction + self.normal_fraction:
            shard = self.with_normal[self.rng.integers(len(self.with_normal))]
            return shard, int(self.rng.choice(shard.normal_slices))
        shard = self.items[self.rng.integers(len(self.items))]
        return shard, int(self.rng.integers(shard.images.shape[0]))

    def batch(self, size: int, crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of float32 images (size, 1 + 2 context, H, W) and labels (size, 1, H, W), with random
        flips/rotations, and with probability ``augment_intensity`` a slice's intensities perturbed
        (:func:`~bids_msseg.train.augment.perturb_intensity`).

        ``crop`` takes a random ``crop`` x ``crop`` window of each slice (kept at full resolution,
        so lesions keep their size in pixels): a cheaper step for a fully convolutional network.
        """
        images, labels = [], []
        for _ in range(size):
            shard, k = self._draw()
            img = context_window(shard.images, k, self.context).astype(np.float32)  # (channels, H, W)
            lab = shard.labels[k].astype(np.float32)
            if crop is not None and crop < lab.shape[0]:
                x, y = self.rng.integers(0, lab.shape[0] - crop + 1), self.rng.integers(0, lab.shape[1] - crop + 1)
                img, lab = img[:, x : x + crop, y : y + crop], lab[x : x + crop, y : y + crop]
            if self.rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[::-1]  # left-right mirror (slice axis 0 is R-L)
            turns = int(self.rng.integers(-1, 2)) if self.rng.random() < 0.2 else 0
            img, lab = np.rot90(img, turns, axes=(1, 2)), np.rot90(lab, turns)
            if self.augment_intensity and self.rng.random() < self.augment_intensity:  # no draw when off
                img = perturb_intensity(img, self.rng)
            images.append(np.ascontiguousarray(img))
            labels.append(np.ascontiguousarray(lab))
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))[:, None]


def iter_validation(shards: list[Shard], batch: int = 8, context: int = 0
                    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(shard index, images, labels) chunks over every slice of the validation scans (images with
    ``context`` neighbouring slices on each side as channels)."""
    for i, shard in enumerate(shards):
        images = stack_context(torch.from_numpy(shard.images.astype(np.float32))[:, None], context)
        for start in range(0, shard.images.shape[0], batch):
            img = images[start : start + batch]
            lab = torch.from_numpy(shard.labels[start : start + batch].astype(np.float32))[:, None]
            yield i, img, lab


def reference_from_volumes(volumes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Quantile reference of a training set: the average of its scans' brain quantile curves."""
    return reference_from_quantiles(np.stack([brain_quantiles(img, mask) for img, mask in volumes]))
