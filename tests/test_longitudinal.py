"""Longitudinal change on synthetic pairs: a known new lesion, a known enlarging one, a shifted head.

The phantom is an analytic head (texture, asymmetric ventricles, lesions as bright spheres) sampled
on a 2 x 2 x 3 mm grid; the follow-up samples the same head after a rigid move, so the true
transform is known. Probability maps stand in for the network: high inside the lesions, plus a
"network-only" lesion at follow-up whose image did not change (the over-segmentation the change
rule must not call new).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.bids import FlairRun
from bids_msseg.derivatives import derivative_paths, write_dataset_description
from bids_msseg.lesions import LesionDefinition
from bids_msseg.longitudinal.change import ChangeRule, detect_change, normalize_visit, subtraction_change
from bids_msseg.longitudinal.outputs import pair_paths, subject_paths
from bids_msseg.longitudinal.pipeline import run_longitudinal, subject_visits
from bids_msseg.longitudinal.registration import itk_matrix, read_itk_affine, register_pair, resample, vox2vox

SHAPE = (96, 96, 40)
ZOOMS = (2.0, 2.0, 3.0)
DEFINITION = LesionDefinition(connectivity=3, min_size_mm3=5.0)
#: Lesions in head coordinates (mm): name -> (centre, radius at baseline, radius at follow-up).
LESIONS = {
    "stable": ((-20.0, 10.0, 5.0), 5.0, 5.0),
    "new": ((22.0, -15.0, 10.0), 0.0, 4.5),
    "enlarging": ((15.0, 25.0, -5.0), 4.0, 6.5),
}
NETWORK_ONLY = ((-25.0, -25.0, 15.0), 4.0)  # follow-up probability only, no image change


def _affine() -> np.ndarray:
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * np.array(ZOOMS)
    return affine


def rigid(rotation_deg: float = 0.0, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 head -> scanner move (rotation about the z axis, then a shift), RAS mm."""
    a = np.deg2rad(rotation_deg)
    move = np.eye(4)
    move[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    move[:3, 3] = shift_mm
    return move


def phantom(visit: int, move: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FLAIR, brain mask, lesion probability and true lesion mask of one visit (0 baseline, 1 follow-up)."""
    affine = _affine()
    ijk = np.indices(SHAPE).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    head = (np.linalg.inv(move) @ np.vstack([world, np.ones(world.shape[1])]))[:3]
    x, y, z = (c.reshape(SHAPE) for c in head)
    brain = (x / 70) ** 2 + (y / 85) ** 2 + (z / 50) ** 2 <= 1
    skull = ((x / 78) ** 2 + (y / 93) ** 2 + (z / 58) ** 2 <= 1) & ~brain
    flair = np.where(brain, 1.0 + 0.15 * np.sin(x / 7) * np.cos(y / 9) + 0.1 * np.sin(z / 6 + x / 20), 0.0)
    ventricle = ((x - 8) / 9) ** 2 + ((y + 5) / 22) ** 2 + (z / 14) ** 2 <= 1
    flair[ventricle] = 0.3
    flair[skull] = 1.6
    lesion = np.zeros(SHAPE, bool)
    prob = np.zeros(SHAPE, np.float32)
    for centre, r0, r1 in LESIONS.values():
        r = (r0, r1)[visit]
        if r <= 0:
            continue
        inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= r**2
        lesion |= inside
    flair[lesion] = 1.9
    prob[lesion] = 0.95
    if visit == 1:
        centre, r = NETWORK_ONLY
        prob[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= r**2] = 0.9
    rng = np.random.default_rng(seed + visit)
    flair = (flair + rng.normal(0, 0.02, SHAPE)) * 400
    return np.clip(flair, 0, None).astype(np.float32), brain, prob, lesion


def lesion_at(result_table: pd.DataFrame, centre_world: np.ndarray) -> pd.Series:
    """The table row whose centroid is closest to ``centre_world``."""
    xyz = result_table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)
    return result_table.iloc[int(np.argmin(np.linalg.norm(xyz - centre_world, axis=1)))]


# ------------------------------------------------------------------------------ the change rule


def test_change_rule_on_one_grid_finds_new_and_enlarging_and_ignores_network_only_lesions():
    move = np.eye(4)
    b_flair, brain, b_prob, b_true = phantom(0, move)
    f_flair, _, f_prob, f_true = phantom(1, move)
    result = detect_change(normalize_visit(b_flair, brain), normalize_visit(f_flair, brain), b_prob, f_prob, brain,
                           _affine(), threshold=0.5, definition=DEFINITION)
    table = result.table
    assert sorted(table["change"]) == ["enlarging", "new", "stable", "stable"]
    assert lesion_at(table, np.array(LESIONS["new"][0]))["change"] == "new"
    assert lesion_at(table, np.array(LESIONS["enlarging"][0]))["change"] == "enlarging"
    assert lesion_at(table, np.array(LESIONS["stable"][0]))["change"] == "stable"
    assert lesion_at(table, np.array(NETWORK_ONLY[0]))["change"] == "stable"  # the image did not change
    grown = np.isin(result.change_map, (2, 3))
    truth = f_true & ~b_true
    dice = 2 * (grown & truth).sum() / (grown.sum() + truth.sum())
    assert dice > 0.8
    # the naive subtraction also calls the network-only lesion new
    naive = subtraction_change(b_prob >= 0.5, f_prob >= 0.5)
    assert naive.sum() > grown.sum()


def test_change_rule_growth_thresholds_and_mirror_classes():
    move = np.eye(4)
    b_flair, brain, b_prob, _ = phantom(0, move)
    f_flair, _, f_prob, _ = phantom(1, move)
    nb, nf = normalize_visit(b_flair, brain), normalize_visit(f_flair, brain)
    # the other way round: the new lesion disappears, the enlarging one shrinks
    reverse = detect_change(nf, nb, f_prob, b_prob, brain, _affine(), threshold=0.5, definition=DEFINITION)
    assert lesion_at(reverse.table, np.array(LESIONS["new"][0]))["change"] == "disappearing"
    assert lesion_at(reverse.table, np.array(LESIONS["enlarging"][0]))["change"] == "shrinking"
    # growth below the relative rule is stable
    strict = detect_change(nb, nf, b_prob, f_prob, brain, _affine(), threshold=0.5, definition=DEFINITION,
                           rule=ChangeRule(relative_growth=5.0))
    assert lesion_at(strict.table, np.array(LESIONS["enlarging"][0]))["change"] == "stable"
    # without an intensity change nothing appears: identical visits are all stable
    same = detect_change(nb, nb, b_prob, b_prob, brain, _affine(), threshold=0.5, definition=DEFINITION)
    assert set(same.table["change"]) == {"stable"} and set(np.unique(same.change_map)) <= {0, 1}
    with pytest.raises(ValueError):
        ChangeRule(joint_threshold=0.0)


def test_change_rule_masks_follow_the_runs_hysteresis():
    """With a seed threshold, lesions the network never calls confidently are not lesions at either
    visit (as in the participant masks); a lesion whose appearance the image confirms is still new."""
    move = np.eye(4)
    b_flair, brain, b_prob, _ = phantom(0, move)
    f_flair, _, f_prob, _ = phantom(1, move)
    nb, nf = normalize_visit(b_flair, brain), normalize_visit(f_flair, brain)
    confident = np.where(b_prob > 0, 0.99, 0.0).astype(np.float32)  # only the baseline's lesions are confident
    f_seeded = np.maximum(f_prob, confident)
    result = detect_change(nb, nf, confident, f_seeded, brain, _affine(), threshold=0.5, definition=DEFINITION,
                           seed_threshold=0.97)
    table = result.table
    assert lesion_at(table, np.array(LESIONS["new"][0]))["change"] == "new"  # peak 0.95 < 0.97, image confirms it
    assert lesion_at(table, np.array(LESIONS["stable"][0]))["change"] == "stable"
    far = np.linalg.norm(table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)
                         - np.array(NETWORK_ONLY[0]), axis=1)
    assert far.min() > 5  # the network-only blob (peak 0.9) is no lesion at all
    without = detect_change(nb, nf, confident, f_seeded, brain, _affine(), threshold=0.5, definition=DEFINITION)
    assert len(without.table) == len(table) + 1


# ------------------------------------------------------------------------------ transforms


def test_itk_matrix_convention_round_trip():
    """An ITK affine (centre c) maps fixed points to moving points: y = A (x - c) + t + c."""
    a = rigid(10, (3, -2, 1))[:3, :3]
    c, t = np.array([5.0, -4.0, 2.0]), np.array([1.0, 2.0, 3.0])
    matrix = itk_matrix(np.concatenate([a.ravel(), t]), c)
    x = np.array([10.0, 20.0, 30.0])
    assert np.allclose(matrix[:3, :3] @ x + matrix[:3, 3], a @ (x - c) + t + c)


def test_read_itk_affine(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
                    "Parameters: 1 0 0 0 1 0 0 0 1 1 2 3\nFixedParameters: 0 0 0\n")
    assert np.allclose(read_itk_affine(path)[:3, 3], [1, 2, 3])
    path.write_text("Transform: Euler3DTransform_double_3_3\nParameters: 0 0 0 1 2 3\nFixedParameters: 0 0 0\n")
    with pytest.raises(ValueError):
        read_itk_affine(path)


# ------------------------------------------------------------------------------ registration + pipeline


def _write_session(bids: Path, out: Path, session: str, move: np.ndarray, visit: int) -> FlairRun:
    flair, brain, prob, _ = phantom(visit, move)
    rel = f"sub-01/ses-{session}/anat/sub-01_ses-{session}_FLAIR.nii.gz"
    (bids / rel).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(flair, _affine()), bids / rel)
    paths = derivative_paths(out, rel)
    paths["brain"].parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), _affine()), paths["brain"])
    nib.save(nib.Nifti1Image(prob, _affine()), paths["probseg"])
    return FlairRun(path=bids / rel, relpath=rel, entities={"subject": "01", "session": session})


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory):
    """Baseline, and a follow-up whose head moved by 8 degrees and (6, -5, 4) mm; the step run on them."""
    root = tmp_path_factory.mktemp("longitudinal")
    bids, out = root / "bids", root / "out"
    move = rigid(8.0, (6.0, -5.0, 4.0))
    runs = [_write_session(bids, out, "1", np.eye(4), 0), _write_session(bids, out, "2", move, 1),
            # a single-session subject is left alone
            FlairRun(path=bids / "x", relpath="sub-02/anat/sub-02_FLAIR.nii.gz", entities={"subject": "02"})]
    (bids / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-1\t2020-01-10T09:00:00\nses-2\t2021-01-09T09:00:00\n")
    results = run_longitudinal(out, runs, bids_dir=bids, threshold=0.5, definition=DEFINITION, seed=1)
    return out, move, results


def test_shifted_head_is_registered_and_changes_classified(shifted_pair):
    out, move, results = shifted_pair
    assert list(results) == ["01"]
    (pair,) = results["01"]
    assert pair.status == "ok", pair.status
    # the registration maps baseline points to follow-up points: here, the head's move (RAS)
    ras = np.diag([-1.0, -1, 1, 1]) @ pair.registration.itk_lps @ np.diag([-1.0, -1, 1, 1])
    points = np.array([[30, 0, 0, 1], [-30, 40, 20, 1], [0, -50, -20, 1]], float).T
    assert np.abs(ras @ points - move @ points).max() < 1.5
    table = pair.change.table
    assert lesion_at(table, np.array(LESIONS["new"][0]))["change"] == "new"
    assert lesion_at(table, np.array(LESIONS["enlarging"][0]))["change"] == "enlarging"
    assert set(table["change"]) <= {"new", "enlarging", "stable"}
    assert pair.change.count("new") == 1 and pair.change.count("enlarging") == 1


@pytest.mark.parametrize("registration_mm", [0.0, 4.0])
def test_registration_grid_does_not_change_the_fit(registration_mm: float):
    """Fitting on a coarse copy (or on the images' own grid) recovers the same move."""
    move = rigid(8.0, (6.0, -5.0, 4.0))
    b_flair, b_brain, _, _ = phantom(0, np.eye(4))
    f_flair, f_brain, _, _ = phantom(1, move)
    reg = register_pair(b_flair, _affine(), b_brain, f_flair, _affine(), f_brain, seed=1,
                        registration_mm=registration_mm)
    ras = np.diag([-1.0, -1, 1, 1]) @ reg.itk_lps @ np.diag([-1.0, -1, 1, 1])
    points = np.array([[30, 0, 0, 1], [-30, 40, 20, 1], [0, -50, -20, 1]], float).T
    assert np.abs(ras @ points - move @ points).max() < 1.5
    assert reg.resolution_mm == registration_mm and reg.brain_dice > 0.95


def test_outputs_names_summary_and_report(shifted_pair):
    out, move, _ = shifted_pair
    paths = pair_paths(out, "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz",
                       "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz")
    assert paths["change_followup"].name == "sub-01_ses-2_space-orig_seg-change_dseg.nii.gz"
    assert paths["change_baseline"].name == "sub-01_ses-1_space-orig_seg-change_desc-followup2_dseg.nii.gz"
    for key in ("change_followup", "change_baseline", "change_followup_tsv", "change_followup_json", "lesions"):
        assert paths[key].is_file(), key
    # the follow-up's change map lies on its own grid: the new lesion where the head moved it
    on_followup = np.asarray(nib.load(paths["change_followup"]).dataobj)
    _, _, _, f_true = phantom(1, move)
    new_centre = (move @ np.array([*LESIONS["new"][0], 1.0]))[:3]
    ijk = np.rint(np.linalg.inv(_affine()) @ np.array([*new_centre, 1.0]))[:3].astype(int)
    assert on_followup[tuple(ijk)] == 2 and f_true[tuple(ijk)]
    meta = json.loads(paths["change_followup_json"].read_text())
    assert meta["SpatialReference"].endswith("ses-2/anat/sub-01_ses-2_FLAIR.nii.gz")
    summary = pd.read_csv(subject_paths(out, "01")["summary"], sep="\t")
    row = summary.iloc[0]
    assert row["new_count"] == 1 and row["enlarging_count"] == 1 and row["status"] == "ok"
    assert row["days_between"] == pytest.approx(365.0)
    report = subject_paths(out, "01")["report"].read_text()
    assert "data:image/png;base64" in report and "ses-2 vs baseline ses-1" in report
    assert "*_desc-longitudinal_*" in (out / ".bidsignore").read_text()


def test_unregistrable_pair_is_reported_and_others_unaffected(tmp_path: Path, caplog):
    bids, out = tmp_path / "bids", tmp_path / "out"
    runs = [_write_session(bids, out, "1", np.eye(4), 0), _write_session(bids, out, "2", np.eye(4), 1)]
    # the follow-up's brain mask lies far away from its head: the brains cannot be made to overlap
    paths = derivative_paths(out, runs[1].relpath)
    empty = np.zeros(SHAPE, np.uint8)
    empty[:4, :4, :4] = 1
    nib.save(nib.Nifti1Image(empty, _affine()), paths["brain"])
    with caplog.at_level("WARNING", logger="bids_msseg"):
        results = run_longitudinal(out, runs, bids_dir=bids, threshold=0.5, definition=DEFINITION)
    assert results["01"][0].status.startswith("registration failed")
    assert "sub-01: ses-2 cannot be registered to ses-1" in caplog.text
    summary = pd.read_csv(subject_paths(out, "01")["summary"], sep="\t")
    assert summary.iloc[0]["status"].startswith("registration failed")


def test_visits_ordered_by_date_then_label(tmp_path: Path):
    runs = [FlairRun(path=Path("x"), relpath=f"sub-01/ses-{s}/anat/sub-01_ses-{s}_FLAIR.nii.gz",
                     entities={"subject": "01", "session": s}, metadata={"AcquisitionDate": d})
            for s, d in (("b", "2020-05-01"), ("a", "2021-01-01"))]
    assert [v.session for v in subject_visits(runs)["01"]] == ["b", "a"]
    undated = [FlairRun(path=Path("x"), relpath=f"sub-01/ses-{s}/anat/sub-01_ses-{s}_FLAIR.nii.gz",
                        entities={"subject": "01", "session": s}) for s in ("10", "2")]
    assert [v.session for v in subject_visits(undated)["01"]] == ["2", "10"]


def test_resample_identity_and_vox2vox():
    data = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    assert np.allclose(resample(data, vox2vox(_affine(), _affine()), data.shape), data, atol=1e-5)


# ------------------------------------------------------------------------------ group level, CLI, validator


def test_group_collects_summaries_and_plots(shifted_pair, tmp_path: Path):
    from bids_msseg.longitudinal.outputs import collect_summaries
    from bids_msseg.reports.group import longitudinal_figure

    out, _, _ = shifted_pair
    table = collect_summaries(out)
    assert len(table) == 1 and table.iloc[0]["participant_id"] == "sub-01"
    assert table.iloc[0]["new_count"] == 1
    assert longitudinal_figure(table, tmp_path).is_file()
    assert collect_summaries(tmp_path).empty


def test_cli_switch_turns_the_step_off(tmp_path: Path):
    from bids_msseg.cli.parser import parse_args

    assert parse_args([str(tmp_path), str(tmp_path / "out"), "participant"]).longitudinal is True
    assert parse_args([str(tmp_path), str(tmp_path / "out"), "participant", "--no-longitudinal"]).longitudinal is False


@pytest.mark.skipif(shutil.which("bids-validator-deno") is None,
                    reason="bids-validator-deno is not on PATH (pip install bids-validator-deno)")
def test_bids_validator_accepts_longitudinal_outputs(shifted_pair, tmp_path: Path, run_validator):

    out, _, _ = shifted_pair
    bids = out.parent / "bids"
    (bids / "dataset_description.json").write_text('{"Name": "phantom", "BIDSVersion": "1.10.0"}')
    copy = tmp_path / "derivatives"
    write_dataset_description(copy, bids, version="0.1.0")
    for path in out.rglob("*"):
        if path.is_file() and ("seg-change" in path.name or "longitudinal" in path.name or path.name == ".bidsignore"):
            target = copy / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    errors = [(i["code"], i.get("location"), i.get("issueMessage"))
              for i in run_validator(copy) if i["severity"] == "error"]
    assert not errors, "bids-validator-deno reports errors:\n" + "\n".join(map(str, errors))
    assert len(list(copy.rglob("*_seg-change*_dseg.nii.gz"))) == 2
