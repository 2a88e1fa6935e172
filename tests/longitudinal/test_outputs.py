"""The change derivatives, summary, report and group table (bids_msseg.longitudinal.outputs, .report)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.derivatives import derivative_paths, write_dataset_description
from bids_msseg.longitudinal.outputs import pair_paths, subject_paths
from tests.longitudinal.helpers import LESIONS, grid_affine, phantom


def test_outputs_names_summary_and_report(shifted_pair):
    out, move, _, _ = shifted_pair
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
    ijk = np.rint(np.linalg.inv(grid_affine()) @ np.array([*new_centre, 1.0]))[:3].astype(int)
    assert on_followup[tuple(ijk)] == 2 and f_true[tuple(ijk)]
    meta = json.loads(paths["change_followup_json"].read_text())
    assert meta["SpatialReference"].endswith("ses-2/anat/sub-01_ses-2_FLAIR.nii.gz")
    summary = pd.read_csv(subject_paths(out, "01")["summary"], sep="\t")
    row = summary.iloc[0]
    assert row["new_count"] == 1 and row["enlarging_count"] == 1 and row["status"] == "ok"
    assert row["days_between"] == pytest.approx(365.0)
    # each run's own volume (as in its summary) and the paired comparison's, both labelled
    for session, column in (("1", "baseline_volume_ml"), ("2", "followup_volume_ml")):
        run = pd.read_csv(derivative_paths(out, f"sub-01/ses-{session}/anat/sub-01_ses-{session}_FLAIR.nii.gz")
                          ["summary"], sep="\t").iloc[0]
        assert row[column] == pytest.approx(run["total_lesion_volume_ml"])
    assert row["volume_change_ml"] == pytest.approx(row["followup_volume_ml"] - row["baseline_volume_ml"], abs=1e-4)
    assert row["paired_volume_change_ml"] == pytest.approx(
        row["paired_followup_volume_ml"] - row["paired_baseline_volume_ml"], abs=1e-3)
    assert row["not_seen_count"] == 0 and row["disappearing_count"] == 0
    dictionary = json.loads(subject_paths(out, "01")["summary_json"].read_text())
    assert "its summary and report" in dictionary["baseline_volume_ml"]["Description"]
    assert "paired comparison" in dictionary["paired_baseline_volume_ml"]["Description"]
    report = subject_paths(out, "01")["report"].read_text()
    assert "data:image/png;base64" in report and "ses-2 against baseline ses-1" in report
    assert "Total lesion volume, each run on its own (as in its report)" in report
    assert f"{row['baseline_volume_ml']:.2f} mL at baseline" in report
    assert "Lesion volume in the paired comparison" in report and 'class="table-scroll"' in report
    assert "1 new lesion," in report and "1 enlarging lesion," in report  # singular, readable
    assert "baseline_volume_mm3" not in report and "not_seen" not in report  # no raw keys
    assert "*_desc-longitudinal_*" in (out / ".bidsignore").read_text()


def test_report_fits_the_page(shifted_pair, check_report_fits):
    out, _, _, _ = shifted_pair
    check_report_fits(subject_paths(out, "01")["report"])  # headless chromium at 1024 and 1440 px


def test_group_collects_summaries_and_plots(shifted_pair, tmp_path: Path):
    from bids_msseg.longitudinal.outputs import citation_context, collect_summaries
    from bids_msseg.reports.group import longitudinal_figure

    out, _, _, _ = shifted_pair
    table = collect_summaries(out)
    assert len(table) == 1 and table.iloc[0]["participant_id"] == "sub-01"
    assert table.iloc[0]["new_count"] == 1
    assert longitudinal_figure(table, tmp_path).is_file()
    assert collect_summaries(tmp_path).empty
    # what the methods text says of the step: one pair of one subject, none where nothing was compared
    context = citation_context(out)
    assert (context["longitudinal_pairs"], context["longitudinal_subjects"]) == (1, 1)
    assert context["rule"]["AbsentProbability"] == 0.3 and citation_context(tmp_path)["longitudinal_pairs"] == 0


@pytest.mark.skipif(shutil.which("bids-validator-deno") is None,
                    reason="bids-validator-deno is not on PATH (pip install bids-validator-deno)")
def test_bids_validator_accepts_longitudinal_outputs(shifted_pair, tmp_path: Path, run_validator):

    out, _, _, _ = shifted_pair
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
