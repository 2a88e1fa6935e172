"""The cross-site study through the command line (``group --cross-site``): refusals, the whole matrix end to end.

The end-to-end test builds two synthetic sites (32x32x12 FLAIRs with blob lesions and their masks
as a derivatives dataset; the sites differ in contrast and in their sidecars' ``Manufacturer``) and
runs every experiment through the CLI with a tiny training: one epoch of 2 steps of 2 slices of
32 pixels (``bids_training.TRAIN_INPUT_SIZE`` lowered from 224), so the 6 models train in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_msseg.cli.run import main
from bids_msseg.crosssite.stats import wilcoxon_paired
from bids_msseg.train import bids_training
from tests.helpers import head_like_flair

SHAPE = (32, 32, 12)
ZOOMS = (6.0, 6.0, 8.0)  # a head of realistic size (the brain-volume check wants 300-2500 mL)
SITES = {"Siemens": {"scale": 1.0, "lesion": 700.0}, "Philips": {"scale": 0.6, "lesion": 520.0}}


# ------------------------------------------------------------------------------- end to end


def _save(path: Path, data: np.ndarray) -> None:
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _two_site_dataset(root: Path, per_site: int = 4) -> Path:
    """sub-01..08: the first ``per_site`` from a Siemens site, the others from a darker Philips site."""
    (root / "derivatives" / "manual").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "two sites", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    (root / "derivatives" / "manual" / "dataset_description.json").write_text(json.dumps(
        {"Name": "expert masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}))
    index = np.indices(SHAPE)
    participants = ["participant_id\tsite"]
    for i, site in enumerate(s for s in SITES for _ in range(per_site)):
        sub = f"sub-{i + 1:02d}"
        rng = np.random.default_rng(i)
        image = head_like_flair(SHAPE, seed=i, skull=False, n_lesions=0).astype(np.float32) * SITES[site]["scale"]
        lesion = np.zeros(SHAPE, bool)
        for _ in range(3):
            centre = np.array(SHAPE) // 2 + rng.integers([-6, -6, -2], [7, 7, 3])
            lesion |= np.sqrt(((index - centre[:, None, None, None]) ** 2).sum(axis=0)) < rng.uniform(1.2, 2.0)
        image[lesion] = SITES[site]["lesion"] + rng.normal(0.0, 10.0, int(lesion.sum()))
        _save(root / sub / "anat" / f"{sub}_FLAIR.nii.gz", image.astype(np.int16))
        (root / sub / "anat" / f"{sub}_FLAIR.json").write_text(json.dumps({"Manufacturer": site}))
        _save(root / "derivatives" / "manual" / sub / "anat" / f"{sub}_label-lesion_mask.nii.gz",
              lesion.astype(np.uint8))
        participants.append(f"{sub}\t{site}")
    (root / "participants.tsv").write_text("\n".join(participants) + "\n")
    return root


def _args(bids: Path, out: Path, work: Path, *more: str) -> list[str]:
    return [str(bids), str(out), "group", "--cross-site", "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "2", "--architecture", "Unet", "--precision", "fp32", "--device", "cpu",
            "--nprocs", "1", "--omp-nthreads", "1", "--random-seed", "3", "--n4", "off", "--skullstrip", "off",
            "--test-fraction", "0.5", "-w", str(work), *more]


def test_crosssite_cli_sites_and_refusals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Site rules through the CLI (no training: each call stops before it)."""
    bids = _two_site_dataset(tmp_path / "bids")
    other = _two_site_dataset(tmp_path / "other")
    base = [str(bids), str(tmp_path / "out"), "group", "--cross-site", "-w", str(tmp_path / "work")]
    assert main([*base, "--extra-bids-dir", str(other), "--sites", "Nowhere"]) == 64
    assert "no such site; the sites are ['bids', 'other']" in caplog.text
    assert main([*base, "--site-column", "site", "--sites", "Nowhere"]) == 64
    assert "the sites are ['Philips', 'Siemens']" in caplog.text
    assert main([*base, "--site-column", "site", "--sites", "Philips"]) == 66  # one site is no study
    assert main([*base, "--combinations", "everything"]) == 64  # argparse choices
    assert not (tmp_path / "out" / "crosssite" / "models").exists()


def test_an_extra_train_dataset_joins_every_training_and_is_never_tested(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """--extra-train-dataset in a study: its scans train every model, are no site and are never scored."""
    monkeypatch.setattr(bids_training, "TRAIN_INPUT_SIZE", 32)
    bids, out, work = _two_site_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    extra = _two_site_dataset(tmp_path / "negatives", per_site=1)
    assert main(_args(bids, out, work, "--extra-train-dataset", str(extra), "--holdout", "site",
                      "--combinations", "leave-one-out")) == 0
    plan = json.loads((out / "crosssite" / "plan.json").read_text())
    assert plan["train_only"] == ["negatives__sub-01_FLAIR", "negatives__sub-02_FLAIR"]
    assert sorted(plan["sites"]) == ["Philips", "Siemens"] and len(plan["experiments"]) == 2
    for experiment in plan["experiments"]:
        assert set(plan["train_only"]) <= set(experiment["train"]) and not set(plan["train_only"]) & set(
            experiment["val"])
        manifest = json.loads(next((work / "crosssite" / experiment["id"]).glob("*/manifest.json")).read_text())
        assert set(plan["train_only"]) <= set(manifest["train"])  # what the model really trained on
    scored = _read(out / "crosssite" / "scans.tsv")
    assert len(scored) == 8 and not scored.scan.str.startswith("negatives").any()


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


@pytest.mark.parametrize("ablation", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["matrix", "matrix+normalization-ablation"])
def test_crosssite_end_to_end_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ablation: bool) -> None:
    """The whole matrix through the CLI (3 models; 6 with the ablation arm), then resuming."""
    monkeypatch.setattr(bids_training, "TRAIN_INPUT_SIZE", 32)
    bids, out, work = _two_site_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = _args(bids, out, work, *(["--ablation", "normalization"] if ablation else []))
    assert main(args) == 0
    study = out / "crosssite"
    arm_labels = ["Unet-quantile", "Unet-linear"] if ablation else ["Unet-quantile"]
    n_arms = len(arm_labels)

    plan = json.loads((study / "plan.json").read_text())
    assert plan["site_rule"] == {"kind": "fields", "names": ["Manufacturer"]}
    assert sorted(plan["sites"]) == ["Philips", "Siemens"] and all(len(v) == 2 for v in plan["test"].values())
    ids = [e["id"] for e in plan["experiments"]]
    assert ids == [f"{arm}__{t}" for t in ("Philips", "Siemens", "Philips+Siemens") for arm in arm_labels]
    tests = {k for v in plan["test"].values() for k in v}
    for e in plan["experiments"]:  # test subjects never train or validate
        assert e["train"] and e["val"] and not tests & set(e["train"] + e["val"])

    scans = _read(study / "scans.tsv")
    assert len(scans) == 3 * n_arms * 4 and set(scans.test_site) == {"Philips", "Siemens"}
    assert scans.dice.between(0, 1).all() and {"iou", "ppv", "tpr", "ltpr", "lesion_f1"} <= set(scans.columns)
    assert scans.in_domain.sum() == n_arms * (2 * 2 + 4)  # single-site models: 2 of 4 scans; merged: all 4
    matrix = _read(study / "matrix.tsv")
    assert list(matrix.columns) == ["arm", "train_set", "Philips", "Siemens", "all", "out_of_domain"]
    assert len(matrix) == 3 * n_arms and matrix[["Philips", "Siemens", "all"]].notna().all().all()
    row = matrix[(matrix.arm == "Unet-quantile") & (matrix.train_set == "Siemens")].iloc[0]
    own = scans[(scans.arm == "Unet-quantile") & (scans.train_set == "Siemens")]
    assert row.Philips == pytest.approx(own[own.test_site == "Philips"].dice.mean(), abs=1e-5)
    assert row["all"] == pytest.approx(own.dice.mean(), abs=1e-5)
    assert row.out_of_domain == pytest.approx(row.Philips, abs=1e-5)
    assert matrix[matrix.train_set == "Philips+Siemens"].out_of_domain.isna().all()
    consistency = _read(study / "consistency.tsv")
    assert len(consistency) == n_arms * 4 * 3 and consistency.dice.between(0, 1).all()  # arms x scans x pairs

    stats_table = _read(study / "stats.tsv")
    anova = stats_table[stats_table.test == "anova"]
    assert len(anova) == n_arms * 3 and list(anova.n[:3]) == [6, 6, 12]  # Philips, Siemens, all
    assert len(stats_table[stats_table.test == "tukey_hsd"]) == n_arms * 3 * 3
    first = anova.iloc[0]
    groups = [own_site.dice.to_numpy() for _, own_site in scans[(scans.arm == "Unet-quantile")
                                                               & (scans.test_site == "Philips")].groupby("train_set")]
    assert first.statistic == pytest.approx(stats.f_oneway(*groups).statistic, rel=1e-4)
    wil = stats_table[stats_table.test == "wilcoxon"]
    if ablation:
        assert list(wil.scope) == ["Philips", "Siemens", "all"] and list(wil.n) == [6, 6, 12]
        base = scans[scans.arm == "Unet-quantile"].sort_values(["train_set", "scan"])
        abl = scans[scans.arm == "Unet-linear"].sort_values(["train_set", "scan"])
        expected = wilcoxon_paired(base.dice.to_numpy(), abl.dice.to_numpy())
        got = wil[wil.scope == "all"].iloc[0]
        assert (np.isnan(got.pvalue) and np.isnan(expected["pvalue"])) or got.pvalue == pytest.approx(
            expected["pvalue"], rel=1e-4)
    else:
        assert wil.empty
    html = (study / "report.html").read_text()
    assert html.count("data:image/png;base64,") == n_arms and f"{arm_labels[-1]}__Philips+Siemens" in html

    # a rerun resumes: no model trained or prediction made again, same tables
    models = sorted((study / "models").rglob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in models + sorted((study / "predictions").rglob("*_mask.nii.gz"))}
    matrix_text = (study / "matrix.tsv").read_text()
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (study / "matrix.tsv").read_text() == matrix_text
    # an interrupted study: one model's predictions lost -> only they are made again
    lost = study / "predictions" / f"{arm_labels[-1]}__Siemens"
    for path in lost.glob("*_mask.nii.gz"):
        path.unlink()
    assert main(args) == 0
    assert len(list(lost.glob("*_mask.nii.gz"))) == 4
    kept = {p: s for p, s in stamps.items() if lost not in p.parents}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (study / "matrix.tsv").read_text() == matrix_text  # the same model predicts the same masks
    # another recipe for finished models is refused rather than mixed in
    more = [a if not (a == "1" and args[i - 1] == "--epochs") else "2" for i, a in enumerate(args)]
    assert main(more) == 64
    if ablation:  # --overwrite starts every experiment over with the new recipe
        assert main([*more, "--overwrite"]) == 0
        cards = [json.loads(p.read_text()) for p in sorted((study / "models").glob("*/model.json"))]
        assert len(cards) == 6 and all(c["training"]["recipe"]["epochs"] == 2 for c in cards)
        assert len(_read(study / "scans.tsv")) == 24
    else:  # ... but another study may share the work directory: each spec trains in its own folder
        assert main([more[0], str(tmp_path / "out2"), *more[2:]]) == 0
        for experiment in plan["experiments"]:
            runs = sorted((work / "crosssite" / experiment["id"]).glob("*/run"))
            assert len(runs) == 2 and all((r / "last.json").is_file() for r in runs)


def test_leave_site_out_protocol_with_a_given_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--holdout site``: each model tested on the site it did not train on, a given model (``--compare-model``) on
    every scan; the per-site / pooled summary and the operating-point grid from the stored probabilities."""
    monkeypatch.setattr(bids_training, "TRAIN_INPUT_SIZE", 32)
    bids, out, work = _two_site_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = _args(bids, out, work, "--holdout", "site", "--combinations", "leave-one-out", "all")
    assert main(args) == 0
    study = out / "crosssite"
    given = tmp_path / "given_model"  # a bundle of the study stands for the model to beat (the default's is slow)
    shutil.copytree(study / "models" / "Unet-quantile__Philips", given)
    assert main([*args, "--compare-model", str(given)]) == 0  # resumes: only the given model predicts
    plan = json.loads((study / "plan.json").read_text())
    assert plan["holdout"] == "site" and all(len(v) == 4 for v in plan["test"].values())
    assert [e["id"] for e in plan["experiments"]] == [
        "Unet-quantile__Philips", "Unet-quantile__Siemens", "Unet-quantile__model-given_model"]
    scans = _read(study / "scans.tsv")
    trained = scans[~scans.train_set.str.startswith("model:")]
    assert len(trained) == 8 and not trained.in_domain.any() and (trained.train_set != trained.test_site).all()
    assert len(scans[scans.train_set == "model:given_model"]) == 8
    assert {"n_true_small", "detected_large", "n_false_lesions", "false_volume_ml"} <= set(scans.columns)
    summary = _read(study / "summary.tsv")
    pooled = summary[(summary.test_site == "pooled") & (summary.model == "leave-one-site-out")]
    assert len(pooled) == 1 and pooled.n_scans.iloc[0] == 8
    assert pooled.dice.iloc[0] == pytest.approx(trained.dice.mean(), abs=1e-5)
    operating = _read(study / "operating.tsv")
    assert {"threshold", "seed_threshold", "lesion_f1"} <= set(operating.columns)
    assert set(operating.model) == {"leave-one-site-out", "model:given_model"}
    assert len(list((study / "predictions" / "Unet-quantile__Philips").glob("*_probseg.nii.gz"))) == 4
    assert "Leave-one-site-out" in (study / "report.html").read_text()
