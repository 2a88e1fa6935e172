"""The longitudinal step of a subject (bids_msseg.longitudinal.pipeline): visits, a shifted head, a pair that
cannot be registered, single-session subjects, the command-line switch."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.bids import FlairRun
from bids_msseg.derivatives import derivative_paths
from bids_msseg.longitudinal.outputs import subject_paths
from bids_msseg.longitudinal.pipeline import run_longitudinal, subject_visits
from tests.longitudinal.helpers import DEFINITION, LESIONS, SHAPE, grid_affine, lesion_at, write_session


def test_single_session_subject_is_unaffected(shifted_pair):
    out, _, results, before = shifted_pair
    assert "02" not in results
    after = sorted(p for p in (out / "sub-02").rglob("*") if p.is_file())
    assert after == sorted(before) and all(p.read_bytes() == before[p] for p in after)
    assert not list(out.glob("sub-02_*"))  # no report, no summary


def test_shifted_head_is_registered_and_changes_classified(shifted_pair):
    out, move, results, _ = shifted_pair
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


def test_unregistrable_pair_is_reported_and_others_unaffected(tmp_path: Path, caplog):
    bids, out = tmp_path / "bids", tmp_path / "out"
    runs = [write_session(bids, out, "1", np.eye(4), 0), write_session(bids, out, "2", np.eye(4), 1),
            write_session(bids, out, "1", np.eye(4), 0, subject="03"),
            write_session(bids, out, "2", np.eye(4), 1, subject="03")]
    # sub-01's follow-up brain mask lies far away from its head: the brains cannot be made to overlap
    paths = derivative_paths(out, runs[1].relpath)
    empty = np.zeros(SHAPE, np.uint8)
    empty[:4, :4, :4] = 1
    nib.save(nib.Nifti1Image(empty, grid_affine()), paths["brain"])
    with caplog.at_level("WARNING", logger="bids_msseg"):
        results = run_longitudinal(out, runs, bids_dir=bids, threshold=0.5, definition=DEFINITION,
                                   seed_threshold=0.99, seed_threshold_thick=0.0)
    assert results["01"][0].status.startswith("registration failed")
    assert "sub-01: ses-2 cannot be registered to ses-1" in caplog.text
    summary = pd.read_csv(subject_paths(out, "01")["summary"], sep="\t")
    assert summary.iloc[0]["status"].startswith("registration failed")
    assert not list(out.rglob("sub-01_*seg-change*"))  # nothing half-written for the failed pair
    # the other subject is compared as usual
    assert results["03"][0].status == "ok" and results["03"][0].change.count("new") == 1
    assert pd.read_csv(subject_paths(out, "03")["summary"], sep="\t").iloc[0]["status"] == "ok"
    # its 2 x 2 x 3 mm baseline is a thick-slice scan: the masks were compared with the thick-slice seed
    (sidecar,) = (out / "sub-03").rglob("*seg-change_dseg.json")
    assert json.loads(sidecar.read_text())["SeedThreshold"] == 0.0


def test_visits_ordered_by_date_then_label(tmp_path: Path):
    runs = [FlairRun(path=Path("x"), relpath=f"sub-01/ses-{s}/anat/sub-01_ses-{s}_FLAIR.nii.gz",
                     entities={"subject": "01", "session": s}, metadata={"AcquisitionDate": d})
            for s, d in (("b", "2020-05-01"), ("a", "2021-01-01"))]
    assert [v.session for v in subject_visits(runs)["01"]] == ["b", "a"]
    undated = [FlairRun(path=Path("x"), relpath=f"sub-01/ses-{s}/anat/sub-01_ses-{s}_FLAIR.nii.gz",
                        entities={"subject": "01", "session": s}) for s in ("10", "2")]
    assert [v.session for v in subject_visits(undated)["01"]] == ["2", "10"]


def test_cli_switch_turns_the_step_off(tmp_path: Path):
    from bids_msseg.cli.parser import parse_args

    assert parse_args([str(tmp_path), str(tmp_path / "out"), "participant"]).longitudinal is True
    assert parse_args([str(tmp_path), str(tmp_path / "out"), "participant", "--no-longitudinal"]).longitudinal is False
