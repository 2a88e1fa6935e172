"""The command line's run-level behaviour: CITATION.md over every run of the output folder, the
group level on a missing output folder (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

from bids_msseg.cli.parser import parse_args
from bids_msseg.cli.run import main, write_run_citation
from bids_msseg.derivatives import derivative_paths, segmented_sources
from bids_msseg.errors import EXIT_NO_INPUT


def _fake_outputs(out: Path, relpaths: list[str]) -> None:
    """A lesion mask and its sidecar per run, as the participant level writes them."""
    for relpath in relpaths:
        paths = derivative_paths(out, relpath)
        paths["mask"].parent.mkdir(parents=True, exist_ok=True)
        paths["mask"].write_bytes(b"")
        paths["mask_json"].write_text(json.dumps({"Sources": [f"bids:raw:{relpath}", "bids::x"]}))


def test_citation_counts_every_run_of_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = ["sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz",
            "sub-02/anat/sub-02_FLAIR.nii.gz", "sub-26/anat/sub-26_FLAIR.nii.gz"]
    _fake_outputs(out, runs)
    assert segmented_sources(out) == sorted(runs)
    # a later invocation for one participant (a cluster job) still describes all four runs
    options = parse_args([str(tmp_path / "bids"), str(out), "participant", "--participant-label", "26"])
    text = write_run_citation(options).read_text()
    assert "4 FLAIR images of 3 participants" in text
    assert "Lesjak" in text and "Iglesias" in text and "Tustison" in text and "Zhou" in text


def test_group_does_not_create_a_missing_output_folder(tmp_path: Path) -> None:
    (tmp_path / "bids").mkdir()
    out = tmp_path / "missing"
    assert main([str(tmp_path / "bids"), str(out), "group"]) == EXIT_NO_INPUT
    assert not out.exists()
