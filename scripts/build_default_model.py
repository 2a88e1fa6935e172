#!/usr/bin/env python
"""Reproduce the packaged default model: synthetic pool -> training -> bundle.

    python scripts/build_default_model.py pool  --out scratch/pool --n 600
    python scripts/build_default_model.py train --pool scratch/pool --run scratch/run
    python scripts/build_default_model.py export --pool scratch/pool --run scratch/run \
        --bundle bids_msseg/data/default_model
    python scripts/build_default_model.py curve --run scratch/run --out docs/default_model_training

``pool`` and ``train`` can run at the same time (training picks up new shards every epoch) and
both resume after an interruption. Anatomy: nilearn's MNI152 and Debian's mricron-data Colin27
(``apt-get install mricron-data``); lesion shapes: the 27 3D-MR-MS masks in
../shared/data/3d-mr-ms/lesion-masks-mni (Lesjak et al. 2017, CC-BY). Patient 26 is never read.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from bids_msseg.train.data import list_shards, make_shard, split_by_scan
from bids_msseg.train.synth import load_anatomies, load_lesion_masks, synth_volume

LOGGER = logging.getLogger("build_default_model")
MASKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "3d-mr-ms" / "lesion-masks-mni"
N_REFERENCE = 24


def build_pool(out: Path, n: int, seed: int, masks_dir: Path) -> None:
    """Generate ``n`` synthetic scans as shards; the first N_REFERENCE define the quantile reference."""
    from bids_msseg.normalize import brain_quantiles, reference_from_quantiles

    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(masks_dir.glob("patient*_lesion-mask_mni.nii.gz"))
    assert not any("patient26" in p.name for p in paths), "patient 26 is the check, never training data"
    masks, grid = load_lesion_masks(paths)
    anatomies = load_anatomies(grid)
    ref_path = out / "reference.json"
    pending: list = []
    if not ref_path.exists():
        quantiles = []
        for i in range(N_REFERENCE):
            vol = synth_volume(anatomies, masks, np.random.default_rng([seed, i]))
            quantiles.append(brain_quantiles(vol.image, vol.brain))
            pending.append((i, vol))
        reference = reference_from_quantiles(np.stack(quantiles))
        ref_path.write_text(json.dumps({"reference": reference.tolist(), "n_scans": N_REFERENCE,
                                        "lesion_masks": [p.name for p in paths], "seed": seed}))
    reference = np.asarray(json.loads(ref_path.read_text())["reference"])
    for i, vol in pending:
        make_shard(out / f"vol_{i:05d}.npz", vol.image, vol.brain, vol.lesion, vol.zooms, reference,
                   meta=vol.params)
    for i in range(n):
        target = out / f"vol_{i:05d}.npz"
        if target.exists():
            continue
        t0 = time.time()
        vol = synth_volume(anatomies, masks, np.random.default_rng([seed, i]))
        make_shard(target, vol.image, vol.brain, vol.lesion, vol.zooms, reference, meta=vol.params)
        LOGGER.info("shard %d: %s, %.1f s", i, vol.params, time.time() - t0)


def run_training(pool: Path, run: Path, args: argparse.Namespace) -> None:
    import torch

    from bids_msseg.train.loop import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    while len(list_shards(pool)) < args.wait_for:
        LOGGER.info("waiting for %d shards (have %d)", args.wait_for, len(list_shards(pool)))
        time.sleep(30)
    first = list_shards(pool)[: args.wait_for]
    val = split_by_scan(first, 0.2, args.seed)[1]
    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch,
                      normalization=args.normalization, architecture=args.arch, seed=args.seed,
                      crop=args.crop, max_val_scans=args.max_val_scans, lr_schedule=args.lr_schedule)
    init = None
    if args.init_bundle:
        from bids_msseg.model.bundle import load_bundle

        init = load_bundle(args.init_bundle).network.state_dict()
    train(run, None, val, cfg, shard_source=pool, init_weights=init)


def export(pool: Path, run: Path, bundle: Path, name: str, extra_info: dict) -> None:
    """Export the run's best checkpoint with the pool's reference (see ``bids_msseg.train.export``)."""
    from bids_msseg.train.export import export_bundle

    ref = json.loads((pool / "reference.json").read_text())
    export_bundle(run, bundle, np.asarray(ref["reference"]), name, {
        "data": "synthetic FLAIR from MNI152 2009 / Colin27 anatomy with the 27 real 3D-MR-MS expert "
                "lesion masks (patients 01-30 except 07, 19, 26), randomized contrast, lesions, "
                "deformation, acquisition grid, bias, noise, blur (see docs/model_card.md)",
        "threshold_chosen_on": "synthetic validation scans (max mean Dice), never patient 26",
        **extra_info,
    }, metric_name="synthetic_val_dice")


def plot_curve(run: Path, out: Path) -> None:
    """Copy the run's per-epoch metrics to ``out``.tsv and plot loss and validation Dice to ``out``.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.read_csv(run / "metrics.tsv", sep="\t")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".tsv"), sep="\t", index=False)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(table["epoch"], table["train_loss"], "o-")
    ax_loss.set(xlabel="epoch", ylabel="weighted BCE (train)", title="training loss")
    for col in [c for c in table.columns if c.startswith("val_dice@")]:
        ax_dice.plot(table["epoch"], table[col], "o-", label=col.split("@")[1])
    ax_dice.set(xlabel="epoch", ylabel="mean Dice", title="synthetic validation scans")
    ax_dice.legend(title="threshold", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    LOGGER.info("curve written to %s.{tsv,png}", out)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pool")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--masks", type=Path, default=MASKS)
    t = sub.add_parser("train")
    t.add_argument("--pool", type=Path, required=True)
    t.add_argument("--run", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--wait-for", type=int, default=40)
    t.add_argument("--normalization", default="quantile", choices=["quantile", "linear"])
    t.add_argument("--arch", default="UnetPlusPlus", choices=["UnetPlusPlus", "Unet"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--crop", type=int, default=None, help="train on random crops (budget); default whole slices")
    t.add_argument("--max-val-scans", type=int, default=12)
    t.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    t.add_argument("--init-bundle", type=Path, default=None, help="start from this bundle's weights (fine-tune)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    e = sub.add_parser("export")
    e.add_argument("--pool", type=Path, required=True)
    e.add_argument("--run", type=Path, required=True)
    e.add_argument("--bundle", type=Path, required=True)
    e.add_argument("--name", default="msseg-synth-unetpp-r18")
    e.add_argument("--note", action="append", default=[], metavar="KEY=TEXT",
                   help="extra provenance for the card's training section (repeatable)")
    c = sub.add_parser("curve")
    c.add_argument("--run", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True, help="path without suffix; .tsv and .png are written")
    args = parser.parse_args()
    if args.cmd == "curve":
        plot_curve(args.run, args.out)
    elif args.cmd == "pool":
        build_pool(args.out, args.n, args.seed, args.masks)
    elif args.cmd == "train":
        run_training(args.pool, args.run, args)
    else:
        export(args.pool, args.run, args.bundle, args.name, dict(n.split("=", 1) for n in args.note))


if __name__ == "__main__":
    main()
