"""Training shards (bids_msseg/train/data.py): content and the split by scan."""


import numpy as np

from bids_msseg.train.data import list_shards, load_shard, split_by_scan


def test_shard_content(shards):
    s = load_shard(list_shards(shards)[0])
    assert s.images.shape == s.labels.shape and s.images.shape[1:] == (64, 64)
    assert s.lesion_slices.size == 3 and s.meta["i"] == 0
    assert np.isfinite(s.images.astype(np.float32)).all()


def test_split_is_by_scan_and_deterministic(shards):
    paths = list_shards(shards)
    tr, va = split_by_scan(paths, 0.34, seed=3)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(paths)
    assert (tr, va) == split_by_scan(paths, 0.34, seed=3)
