#!/usr/bin/env python
"""Left-right flip averaging at inference, scored on a leave-site-out study's own fold models.

    python benchmarks/flip_averaging.py STUDY_OUT/crosssite WORK/crosssite/preproc [THREADS]

For each leave-one-site-out model of the study (``group --cross-site --holdout site``), every scan of
the site it did not train on is predicted plainly and as the mean of the plain and the mirrored pass
(slices mirrored along x, output mirrored back), from the study's preprocessing cache. Both are
scored with the protocol's ``scan_metrics`` and lesion definition on a grid of thresholds and seed
thresholds; prints the pooled rows and writes ``tta_scans.tsv`` / ``tta_summary.tsv`` beside the study
(probabilities cached in ``tta_probs/``). The plain pass must reproduce the study's own figures.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bids_msseg.crosssite.evaluate import scan_metrics
from bids_msseg.crosssite.protocol import _summarize
from bids_msseg.lesions import LesionDefinition, binarize
from bids_msseg.model.bundle import load_bundle
from bids_msseg.model.predict import predict_slices
from bids_msseg.normalize import normalize
from bids_msseg.slicing import cut_slices, paste_slices, plan_geometry
from bids_msseg.train.cache import load_preprocessed

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
study, preproc = Path(sys.argv[1]), Path(sys.argv[2])
plan = json.loads((study / "plan.json").read_text())
sites = plan["test"]
site_of = {k: s for s, ks in sites.items() for k in ks}
definition = LesionDefinition()
rows = []
device = torch.device("cpu")
out_dir = study.parent / "tta_probs"
out_dir.mkdir(exist_ok=True)
for e in plan["experiments"]:
    if e["model"] or len(e["train_sites"]) != 3:
        continue
    bundle = load_bundle(study / "models" / e["id"])
    test_site = next(s for s in sites if s not in e["train_sites"])
    for key in sites[test_site]:
        vol = load_preprocessed(preproc / f"{key}.npz")
        zooms = tuple(float(z) for z in vol["zooms"])
        brain = vol["brain"].astype(bool)
        normalized = normalize(vol["corrected"], brain, bundle.card.normalization, bundle.reference)
        geom = plan_geometry(brain, zooms, bundle.card.input_size)
        slices = cut_slices(normalized, geom)
        cached = out_dir / f"{key}.npz"
        if cached.is_file():
            z = np.load(cached)
            plain, flipped = z["plain"], z["flipped"]
        else:
            p = predict_slices(bundle.network, slices, device)
            f = predict_slices(bundle.network, slices.flip(2), device).flip(2)
            plain = np.clip(paste_slices(p, geom), 0, 1)
            flipped = np.clip(paste_slices(f, geom), 0, 1)
            plain[~brain] = 0
            flipped[~brain] = 0
            np.savez_compressed(cached, plain=plain.astype(np.float16), flipped=flipped.astype(np.float16))
        plain, flipped = plain.astype(np.float32), flipped.astype(np.float32)
        truth = vol["lesion"].astype(bool)
        vv = float(np.prod(zooms))
        for variant, prob in (("plain", plain), ("flip_mean", (plain + flipped) / 2)):
            for thr in (0.3, 0.4, 0.5, 0.6, 0.7):
                for seed in (0.0, 0.9, 0.97):
                    if seed and seed <= thr:
                        continue
                    mask, _, _ = binarize(prob, thr, vv, definition, seed)
                    rows.append({"variant": variant, "threshold": thr, "seed": seed, "test_site": test_site,
                                 "scan": key, **scan_metrics(mask, truth, vv, definition)})
        print(key, flush=True)  # progress
frame = pd.DataFrame(rows)
frame.to_csv(study.parent / "tta_scans.tsv", sep="\t", index=False)
out = []
for (variant, thr, seed), part in frame.groupby(["variant", "threshold", "seed"]):
    for site, p in part.groupby("test_site"):
        out.append({"variant": variant, "threshold": thr, "seed": seed, "site": site, **_summarize(p)})
    out.append({"variant": variant, "threshold": thr, "seed": seed, "site": "pooled", **_summarize(part)})
table = pd.DataFrame(out)
table.to_csv(study.parent / "tta_summary.tsv", sep="\t", index=False)
pd.set_option("display.width", 250)
print(table[table.site == "pooled"][["variant", "threshold", "seed", "dice", "lesion_f1", "ltpr_small",
                                     "false_lesions_max"]].to_string())
