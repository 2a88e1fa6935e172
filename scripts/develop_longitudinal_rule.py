#!/usr/bin/env python
"""Choose the longitudinal change rule on a development set that is not the scored Ljubljana patients.

The scored patients (01, 03, 12: ``scripts/evaluate_longitudinal.py``) are never read here. The
development pairs:

* **A synthetic pair** from the raw clinical FLAIR of another Ljubljana patient, who has one study
  only (04 study 1; Lesjak et al. 2016, CC BY): the baseline is the scan as it is, the follow-up the
  same scan with known changes, then moved (rigid, 2-5 degrees, 2-6 mm), resampled (linear, as a
  re-acquisition blurs), scaled by 1.25 with a 10 % linear bias across the head and Gaussian noise
  (2 % of the brain median), written as uint16. Changes: ``N_NEW`` new lesions, soft ellipsoids of
  1.5-4.5 mm radius, 30-80 % brighter than the tissue they sit in, placed in deep tissue of typical
  brightness (more than 10 mm inside the brain, FLAIR 0.85-1.25 times the brain median, away from
  anything the network calls lesion); and ``N_ENLARGING`` enlarging ones: lesions the network calls
  at baseline (20-400 mm3), grown by a soft 1.5 mm rim (about 1.5-3 times the volume) that takes
  the lesion's own mean brightness. Everything else is stable, so every other new/enlarging call
  is false.
* **A real pair**: MSLesSeg patient 14, visits T1 -> T2 (Guarnera et al. 2025, CC BY
  4.0; 3D FLAIR, 1 mm, skull-stripped) with the expert lesion masks of each visit: the expert
  lesions at follow-up that touch no baseline lesion are the new ones; a predicted new/enlarging
  lesion is false when it touches no voxel on which the two expert masks differ (dilated by one voxel).

Each visit is segmented by ``bids_msseg participant --no-longitudinal`` (packaged model, or
``--model``); each pair is registered once (:func:`~bids_msseg.longitudinal.pipeline.compare_visits`)
and every rule of the grid is applied to the same registered pair. Scores, pooled over the pairs:
new + enlarging lesions found (a new/enlarging voxel in the lesion), false new/enlarging lesions,
and their F1 (2 TP / (2 TP + FN + FP)). The rule with the highest F1 is chosen (ties: the larger
intensity step, then the higher joint threshold, i.e. the more conservative). The relative and
absolute growth steps (25 %, 15 mm3) and the 1 mm smoothing are not tuned: they follow common
practice (docs/longitudinal.md).

    nice -n 10 python scripts/develop_longitudinal_rule.py --work /tmp/dev [--model BUNDLE] [--registration-mm 2 0]

Writes ``WORK/rule_development.tsv`` (one row per rule and pair) and prints the pooled table and
the chosen rule. ``--registration-mm A B ...`` registers on grid A (default 2 mm, the pipeline's)
to choose the rule, then scores the chosen rule with the registration fitted on the other grids
(0: full resolution): their seconds, their error against the known move of the synthetic pair
(median over the brain, mm) and the same scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from bids_msseg.bids import FlairRun
from bids_msseg.derivatives import derivative_paths
from bids_msseg.lesions import LesionDefinition, connectivity_of, label_lesions
from bids_msseg.longitudinal.change import POSITIVE_LABELS, ChangeRule, detect_change
from bids_msseg.longitudinal.pipeline import Visit3D, compare_visits, load_visit
from bids_msseg.longitudinal.registration import REGISTRATION_MM, resample, vox2vox

LOGGER = logging.getLogger("develop_longitudinal_rule")
#: Synthetic sources: subject label -> raw FLAIR (file name in raw-flair/).
SYNTHETIC = {"04": "ljubljana-longitudinal_patient04_study1_FLAIR.nii.gz"}
N_NEW, N_ENLARGING = 12, 8
P14_FOLLOWUPS = (2,)
INTENSITY_STEPS = (0.05, 0.1, 0.15, 0.2, 0.3)
JOINT_THRESHOLDS = (0.1, 0.3, 0.5)


# ------------------------------------------------------------------------------ the dataset


def build_bids(data: Path, bids: Path) -> None:
    """A BIDS dataset of symlinks: the synthetic pairs' baselines (ses-1) and MSLesSeg P14's visits;
    the synthetic follow-ups are added by :func:`make_followup` once the baselines are segmented."""
    links = {f"sub-{s}/ses-1/anat/sub-{s}_ses-1_FLAIR.nii.gz": data / "raw-flair" / name
             for s, name in SYNTHETIC.items()}
    links |= {f"sub-P14/ses-{t}/anat/sub-P14_ses-{t}_FLAIR.nii.gz": data / f"mslesseg/P14/P14_T{t}_FLAIR.nii.gz"
              for t in (1, *P14_FOLLOWUPS)}
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "longitudinal rule development", "BIDSVersion": "1.10.0"}))
    for rel, target in links.items():
        link = bids / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target)


def soft_ellipsoid(shape: tuple[int, ...], affine: np.ndarray, centre_mm: np.ndarray, radii_mm: np.ndarray,
                   edge_mm: float = 1.0, supersample_z: int = 3) -> np.ndarray:
    """Fraction (0-1) of each voxel inside an ellipsoid with a soft ``edge_mm`` rim (thick slices
    averaged over ``supersample_z`` points)."""
    zoom = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    reach = np.ceil((radii_mm.max() + 2 * edge_mm) / zoom).astype(int) + 1
    centre_vox = np.rint(np.linalg.solve(affine[:3, :3], centre_mm - affine[:3, 3])).astype(int)
    lo, hi = np.maximum(centre_vox - reach, 0), np.minimum(centre_vox + reach + 1, shape)
    out = np.zeros(shape, np.float32)
    ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
    acc = np.zeros(ijk.shape[:3], np.float32)
    for dz in (np.arange(supersample_z) + 0.5) / supersample_z - 0.5:
        xyz = (ijk + [0, 0, dz]) @ affine[:3, :3].T + affine[:3, 3]
        q = np.sqrt((((xyz - centre_mm) / radii_mm) ** 2).sum(-1))
        acc += np.clip((1 - q) * radii_mm.min() / edge_mm + 0.5, 0, 1)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = acc / supersample_z
    return out


def random_rigid(rng: np.random.Generator) -> np.ndarray:
    """A 4x4 rigid move: 2-5 degrees about a random axis, 2-6 mm in a random direction."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(2, 5))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    move = np.eye(4)
    move[:3, :3] = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    direction = rng.normal(size=3)
    move[:3, 3] = direction / np.linalg.norm(direction) * rng.uniform(2, 6)
    return move


def lesion_sites(flair: np.ndarray, brain: np.ndarray, probability: np.ndarray, affine: np.ndarray, n: int,
                 rng: np.random.Generator, spacing_mm: float = 15.0) -> np.ndarray:
    """``n`` lesion centres (mm, RAS) in deep tissue of typical brightness, away from the network's lesions."""
    zoom = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    depth = ndimage.distance_transform_edt(brain, sampling=zoom)
    median = np.median(flair[brain])
    smooth = ndimage.gaussian_filter(flair, sigma=1.0 / zoom)
    near_lesion = ndimage.distance_transform_edt(probability < 0.3, sampling=zoom) < 6
    ok = (depth > 10) & (smooth > 0.85 * median) & (smooth < 1.25 * median) & ~near_lesion
    candidates = np.argwhere(ok) @ affine[:3, :3].T + affine[:3, 3]
    chosen: list[np.ndarray] = []
    for i in rng.permutation(len(candidates)):
        if all(np.linalg.norm(candidates[i] - c) >= spacing_mm for c in chosen):
            chosen.append(candidates[i])
            if len(chosen) == n:
                break
    if len(chosen) < n:
        LOGGER.warning("only %d of %d lesion sites found", len(chosen), n)
    return np.array(chosen)


def grown_lesions(probability_mask: np.ndarray, affine: np.ndarray, n: int, rng: np.random.Generator,
                  rim_mm: float = 1.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``n`` of the baseline's lesions (20-400 mm3): each as (lesion, soft rim around it, 0-1)."""
    zoom = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    voxel_mm3 = float(np.prod(zoom))
    labels, count = label_lesions(probability_mask, voxel_mm3, LesionDefinition())
    sizes = np.bincount(labels.ravel())[1:] * voxel_mm3
    fit = [k + 1 for k in range(count) if 20 <= sizes[k] <= 400]
    grown = []
    for k in rng.permutation(fit)[:n]:
        lesion = labels == k
        distance = ndimage.distance_transform_edt(~lesion, sampling=zoom)
        grown.append((lesion, np.clip((rim_mm - distance) / 1.0 + 0.5, 0, 1) * ~lesion))
    return grown


def make_followup(bids: Path, out: Path, truth_dir: Path, subject: str, seed: int) -> None:
    """Write sub-<subject>/ses-2 (ses-1 with known changes, moved) and its truth on the ses-1 grid."""
    rel = f"sub-{subject}/ses-1/anat/sub-{subject}_ses-1_FLAIR.nii.gz"
    target = bids / f"sub-{subject}/ses-2/anat/sub-{subject}_ses-2_FLAIR.nii.gz"
    if target.exists():
        return
    rng = np.random.default_rng(seed)
    img = nib.load(bids / rel)
    flair = np.asarray(img.dataobj, np.float32)
    paths = derivative_paths(out, rel)
    brain = np.asarray(nib.load(paths["brain"]).dataobj) > 0
    probability = np.asarray(nib.load(paths["probseg"]).dataobj, np.float32)
    lesions = np.asarray(nib.load(paths["mask"]).dataobj) > 0
    follow = flair.copy()
    truth = np.zeros(flair.shape, np.int16)  # 1..N_NEW new lesions, then the enlarging ones (follow-up extent)
    for k, centre in enumerate(lesion_sites(flair, brain, probability, img.affine, N_NEW, rng)):
        shape = np.array([1.0, 1.0, rng.uniform(0.8, 1.5)])
        p1 = soft_ellipsoid(flair.shape, img.affine, centre, rng.uniform(1.5, 4.5) * shape)
        follow *= 1 + rng.uniform(0.3, 0.8) * p1
        truth[(p1 >= 0.5) & (truth == 0)] = k + 1
    for k, (lesion, rim) in enumerate(grown_lesions(lesions, img.affine, N_ENLARGING, rng)):
        follow += (float(flair[lesion].mean()) - follow) * np.maximum(rim, 0) * (follow < flair[lesion].mean())
        truth[(lesion | (rim >= 0.5)) & (truth == 0)] = N_NEW + k + 1
    # the follow-up: the changed head moved, resampled, rescaled, with a bias and noise
    move = random_rigid(rng)  # LPS, follow-up points -> baseline points
    moved = resample(follow, vox2vox(img.affine, img.affine, move), flair.shape, order=1)
    xyz = np.indices(flair.shape).reshape(3, -1).T @ img.affine[:3, :3].T + img.affine[:3, 3]
    gradient = rng.normal(size=3)
    along = xyz @ (gradient / np.linalg.norm(gradient))
    bias = 1 + 0.1 * ((along - along.min()) / np.ptp(along)).reshape(flair.shape)
    median = float(np.median(flair[brain]))
    noisy = moved * 1.25 * bias + rng.normal(0, 0.02 * median * 1.25, flair.shape)
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.clip(np.rint(noisy), 0, 65535).astype(np.uint16), img.affine, img.header), target)
    truth_dir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(truth, img.affine), truth_dir / f"sub-{subject}_truth.nii.gz")
    (truth_dir / f"sub-{subject}_move.json").write_text(json.dumps({"FollowupToBaseline_LPS": move.tolist()}))


# ------------------------------------------------------------------------------ scoring


@dataclass
class PairTruth:
    """What a pair's changes are, on the baseline grid."""

    name: str
    wanted: np.ndarray  # int labels of the lesions to find (new + enlarging)
    n_wanted: int
    allowed: np.ndarray  # bool: a predicted lesion touching it is not false
    baseline_to_followup: np.ndarray | None = None  # the true move (LPS), synthetic pairs only


def synthetic_truth(truth_dir: Path, subject: str) -> PairTruth:
    truth = np.asarray(nib.load(truth_dir / f"sub-{subject}_truth.nii.gz").dataobj)
    move = np.asarray(json.loads((truth_dir / f"sub-{subject}_move.json").read_text())["FollowupToBaseline_LPS"])
    return PairTruth(f"synthetic sub-{subject}", truth, len(np.unique(truth)) - 1,
                     ndimage.binary_dilation(truth > 0),
                     np.linalg.inv(move))


def p14_truth(data: Path, visit: int, definition: LesionDefinition) -> PairTruth:
    masks = {t: np.asarray(nib.load(data / f"mslesseg/P14/P14_T{t}_MASK.nii.gz").dataobj) > 0 for t in (1, visit)}
    labels, n = label_lesions(masks[visit], 1.0, definition)
    touching = set(np.unique(labels[masks[1]]).tolist())
    new = [k for k in range(1, n + 1) if k not in touching]
    lut = np.zeros(n + 1, np.int32)
    lut[new] = np.arange(1, len(new) + 1)
    return PairTruth(f"MSLesSeg P14 T1->T{visit}", lut[labels], len(new),
                     ndimage.binary_dilation(masks[1] ^ masks[visit]))


def score(change_map: np.ndarray, truth: PairTruth, voxel_mm3: float, definition: LesionDefinition) -> dict:
    positive = np.isin(change_map, POSITIVE_LABELS)
    found = np.unique(truth.wanted[positive & (truth.wanted > 0)]).size
    labels, n = label_lesions(positive, voxel_mm3, definition)
    true_pred = np.unique(labels[(labels > 0) & truth.allowed]).size
    return {"found": found, "wanted": truth.n_wanted, "false_lesions": n - true_pred, "predicted_lesions": n}


def registration_error_mm(itk_lps: np.ndarray, truth: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> float:
    """Median distance over the brain between where the registration and the truth put a baseline point."""
    points = np.argwhere(brain)[::200]
    lps = np.diag([-1.0, -1, 1, 1]) @ affine @ np.c_[points, np.ones(len(points))].T
    return float(np.median(np.linalg.norm((itk_lps @ lps - truth @ lps)[:3], axis=0)))


# ------------------------------------------------------------------------------ main


def segment(bids: Path, out: Path, work: Path, model: Path | None) -> int:
    from bids_msseg.cli.run import main as bids_msseg  # lazy: the whole participant level

    cli = [str(bids), str(out), "participant", "-w", str(work), "--random-seed", "0", "--no-longitudinal",
           "--skip-bids-validation"]
    return bids_msseg(cli + (["--model", str(model)] if model else []))


@dataclass
class RegisteredPair:
    """A pair on the baseline grid, cropped to the common brain's box (the rule is translation-invariant)."""

    baseline: np.ndarray
    followup: np.ndarray
    baseline_prob: np.ndarray
    followup_prob: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    truth: PairTruth
    seconds: float
    error_mm: float


def register(base: Visit3D, follow: Visit3D, truth: PairTruth, registration_mm: float, *, threshold: float,
             seed_threshold: float, definition: LesionDefinition) -> RegisteredPair:
    started = time.perf_counter()
    _, registration, _, fu_flair = compare_visits(base, follow, threshold=threshold, definition=definition,
                                                  seed_threshold=seed_threshold, registration_mm=registration_mm)
    seconds = time.perf_counter() - started
    affine = base.image.affine
    error = (registration_error_mm(registration.itk_lps, truth.baseline_to_followup, base.brain, affine)
             if truth.baseline_to_followup is not None else np.nan)
    to_base = registration.followup_to_baseline(affine, follow.image.affine)
    shape = base.flair.shape
    fu_prob = resample(follow.probability, to_base, shape, order=1)
    both = base.brain & (resample(follow.brain.astype(np.uint8), to_base, shape, order=0) > 0)
    box = ndimage.find_objects(both.astype(np.uint8))[0]
    box = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in box)
    cropped = affine.copy()
    cropped[:3, 3] = affine[:3, :3] @ [b.start for b in box] + affine[:3, 3]
    crop_truth = PairTruth(truth.name, truth.wanted[box], truth.n_wanted, truth.allowed[box])
    LOGGER.info("%s: registered on %s in %.1f s (error vs the true move %.2f mm)", truth.name,
                f"{registration_mm:g} mm" if registration_mm else "the full grid", seconds, error)
    return RegisteredPair(base.flair[box], fu_flair[box], base.probability[box], fu_prob[box], both[box], cropped,
                          crop_truth, seconds, error)


def sweep(pair: RegisteredPair, rules: list[ChangeRule], registration_mm: float, *, threshold: float,
          seed_threshold: float, definition: LesionDefinition) -> list[dict]:
    voxel_mm3 = float(abs(np.linalg.det(pair.affine[:3, :3])))
    rows = []
    for rule in rules:
        change = detect_change(pair.baseline, pair.followup, pair.baseline_prob, pair.followup_prob, pair.brain,
                               pair.affine, threshold=threshold, definition=definition, rule=rule,
                               seed_threshold=seed_threshold)
        rows.append({"pair": pair.truth.name, "registration_mm": registration_mm,
                     "registration_seconds": round(pair.seconds, 1), "registration_error_mm": round(pair.error_mm, 3),
                     "intensity_increase": rule.intensity_increase, "joint_threshold": rule.joint_threshold,
                     **score(change.change_map, pair.truth, voxel_mm3, definition)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="model bundle (default: the packaged model)")
    parser.add_argument("--registration-mm", type=float, nargs="+", default=[REGISTRATION_MM],
                        help="registration grids (0: full resolution); the rule is chosen on the first, the "
                             "others are scored at the chosen rule")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data, work = args.data.resolve(), args.work.resolve()
    bids, out = work / "bids", work / "out"
    build_bids(data, bids)
    if segment(bids, out, work / "work", args.model):
        return 1
    for i, subject in enumerate(SYNTHETIC):
        make_followup(bids, out, work / "truth", subject, seed=i)
    if segment(bids, out, work / "work", args.model):  # the new follow-ups
        return 1
    mask_meta = json.loads(derivative_paths(out, "sub-P14/ses-1/anat/sub-P14_ses-1_FLAIR.nii.gz")["mask_json"]
                           .read_text())
    settings = {"threshold": float(mask_meta["Threshold"]), "seed_threshold": float(mask_meta.get("SeedThreshold", 0)),
                "definition": LesionDefinition(connectivity_of(mask_meta["Connectivity"]),
                                               mask_meta["MinimumLesionSize_mm3"])}
    pairs = {s: (s, "1", "2", synthetic_truth(work / "truth", s)) for s in SYNTHETIC}
    pairs |= {f"P14-{t}": ("P14", "1", str(t), p14_truth(data, t, settings["definition"])) for t in P14_FOLLOWUPS}
    visits = {}
    for name, (subject, s0, s1, _) in pairs.items():
        rel = [f"sub-{subject}/ses-{s}/anat/sub-{subject}_ses-{s}_FLAIR.nii.gz" for s in (s0, s1)]
        visits[name] = [load_visit(out, FlairRun(path=bids / r, relpath=r, entities={})) for r in rel]
    grid = [ChangeRule(intensity_increase=step, joint_threshold=joint)
            for step, joint in itertools.product(INTENSITY_STEPS, JOINT_THRESHOLDS)]
    first = args.registration_mm[0]
    rows = []
    for name, (*_, truth) in pairs.items():
        registered = register(*visits[name], truth, first, **settings)
        rows += sweep(registered, grid, first, **settings)
    table = pd.DataFrame(rows)
    pooled = table.groupby(["intensity_increase", "joint_threshold"])[
        ["found", "wanted", "false_lesions"]].sum().reset_index()
    pooled["sensitivity"] = (pooled["found"] / pooled["wanted"]).round(3)
    pooled["f1"] = (2 * pooled["found"] / (2 * pooled["found"] + (pooled["wanted"] - pooled["found"])
                                          + pooled["false_lesions"])).round(3)
    best = pooled.sort_values(["f1", "intensity_increase", "joint_threshold"], ascending=False).iloc[0]
    chosen = ChangeRule(intensity_increase=float(best["intensity_increase"]),
                        joint_threshold=float(best["joint_threshold"]))
    for registration_mm in args.registration_mm[1:]:
        for name, (*_, truth) in pairs.items():
            registered = register(*visits[name], truth, registration_mm, **settings)
            rows += sweep(registered, [chosen], registration_mm, **settings)
    table = pd.DataFrame(rows)
    table.to_csv(work / "rule_development.tsv", sep="\t", index=False)
    print(f"model {mask_meta['ModelID']}, threshold {settings['threshold']}, seed threshold "
          f"{settings['seed_threshold']}; pooled over {len(pairs)} pairs, registration on {first:g} mm")
    print(pooled.to_string(index=False))
    print(f"\nchosen: intensity_increase {chosen.intensity_increase}, joint_threshold {chosen.joint_threshold} "
          f"(F1 {best['f1']}, {int(best['found'])}/{int(best['wanted'])} found, {int(best['false_lesions'])} false)")
    per_pair = table[(table["intensity_increase"] == chosen.intensity_increase)
                     & (table["joint_threshold"] == chosen.joint_threshold)]
    print("\nper pair (and registration grid) at the chosen rule:\n" + per_pair.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
