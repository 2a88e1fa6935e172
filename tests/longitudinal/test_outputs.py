"""The change derivatives, summary, report and group table (bids_msseg.longitudinal.outputs, .report)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.derivatives import write_dataset_description
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
    report = subject_paths(out, "01")["report"].read_text()
    assert "data:image/png;base64" in report and "ses-2 vs baseline ses-1" in report
    assert "*_desc-longitudinal_*" in (out / ".bidsignore").read_text()


def test_group_collects_summaries_and_plots(shifted_pair, tmp_path: Path):
    from bids_msseg.longitudinal.outputs import collect_summaries
    from bids_msseg.reports.group import longitudinal_figure

    out, _, _, _ = shifted_pair
    table = collect_summaries(out)
    assert len(table) == 1 and table.iloc[0]["participant_id"] == "sub-01"
    assert table.iloc[0]["new_count"] == 1
    assert longitudinal_figure(table, tmp_path).is_file()
    assert collect_summaries(tmp_path).empty


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
