"""The exit codes of ``main`` (BIDS Apps spec: 16, 17, 18, 64, 66, 73) and its start-up checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bids_msseg.bids import FlairRun
from bids_msseg.cli.parser import parse_args
from bids_msseg.cli.run import check_output_dir, main, write_run_citation
from bids_msseg.derivatives import derivative_paths, segmented_sources
from bids_msseg.errors import EXIT_NO_INPUT, OutputError


def _filter_file(tmp_path: Path, content: object | str) -> str:
    path = tmp_path / "filters.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)



# ---------------------------------------------------------------------------- usage errors: 64


@pytest.mark.parametrize("extra", [
    [],  # fine on its own: used as the control below
    ["--nprocs", "0"],
    ["--omp-nthreads", "x"],
    ["--threshold", "1.5"],
    ["--min-lesion-size", "-1"],
    ["--device", "tpu"],
    ["--n4", "maybe"],
    ["--participant-label", "sub-0_1"],
    ["--model", "/no/such/bundle"],
    ["--unknown-flag"],
])
def test_usage_errors_exit_64(tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--boilerplate-only",
            "-w", str(tmp_path / "work"), *extra]
    if not extra:
        assert main(argv) == 0
        return
    assert main(argv) == 64
    assert "error" in capsys.readouterr().err


def test_missing_positionals_exit_64() -> None:
    assert main([]) == 64
    assert main(["bids_only"]) == 64


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ({"t1w": {"acquisition": "x"}}, "unknown key"),
    ({"flair": {"acquisiton": "3D"}}, "unknown BIDS entity"),
    ({"flair": {"suffix": "T2w"}}, "fixed"),
    ({"flair": {"acquisition": {"a": 1}}}, "values must be"),
    (["flair"], "JSON object"),
])
def test_bad_filter_files_exit_64(tmp_path: Path, content: object, message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), str(tmp_path / "out"), "participant",
            "--bids-filter-file", _filter_file(tmp_path, content)]
    assert main(argv) == 64
    assert message in capsys.readouterr().err


def test_missing_filter_file_exit_64(tmp_path: Path) -> None:
    assert main([str(tmp_path), str(tmp_path / "o"), "participant", "--bids-filter-file",
                 str(tmp_path / "nope.json")]) == 64


# --------------------------------------------------------------------- analysis level: 17


@pytest.mark.parametrize("level", ["participants", "grup", "Participant", "session"])
def test_unknown_analysis_level_exit_17(tmp_path: Path, level: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), str(tmp_path / "out"), level]) == 17
    assert "unknown analysis level" in capsys.readouterr().err


# -------------------------------------------------------------- dataset errors: 16, 18, 66


def _argv(bids: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"), *extra]


def test_not_bids_exit_16(tmp_path: Path, make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids", description=False)
    assert main(_argv(bids, tmp_path)) == 16


def test_unknown_participant_exit_18(synthetic_bids: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_argv(synthetic_bids, tmp_path, "--participant-label", "07")) == 18
    assert "available: 01, 02" in capsys.readouterr().err


def test_filters_matching_nothing_exit_18(synthetic_bids: Path, tmp_path: Path) -> None:
    argv = _argv(synthetic_bids, tmp_path, "--bids-filter-file",
                 _filter_file(tmp_path, {"flair": {"acquisition": "none"}}))
    assert main(argv) == 18


def test_no_flair_exit_66(tmp_path: Path, make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids", runs=())
    assert main(_argv(bids, tmp_path)) == 66


def test_missing_bids_dir_exit_66(tmp_path: Path) -> None:
    assert main(_argv(tmp_path / "missing", tmp_path)) == 66


def test_missing_model_exit_64(synthetic_bids: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty_bundle"
    empty.mkdir()
    assert main(_argv(synthetic_bids, tmp_path, "--model", str(empty))) == 64


# -------------------------------------------------------------------------- output errors: 73


def test_output_equal_to_input_exit_73(synthetic_bids: Path, tmp_path: Path) -> None:
    assert main([str(synthetic_bids), str(synthetic_bids), "participant", "-w", str(tmp_path / "w")]) == 73


@pytest.mark.parametrize("inside", ["out", "sub-01/out", "derivatives"])
def test_output_inside_input_exit_73(synthetic_bids: Path, tmp_path: Path, inside: str) -> None:
    out = synthetic_bids / inside
    assert main([str(synthetic_bids), str(out), "participant", "-w", str(tmp_path / "w")]) == 73
    assert not (synthetic_bids / "out").exists()


def test_output_not_creatable_exit_73(synthetic_bids: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([str(synthetic_bids), str(blocker / "out"), "participant", "-w", str(tmp_path / "w")]) == 73


def test_output_under_derivatives_is_allowed(synthetic_bids: Path, tmp_path: Path) -> None:
    check_output_dir(synthetic_bids, synthetic_bids / "derivatives" / "bids_msseg")
    assert (synthetic_bids / "derivatives" / "bids_msseg").is_dir()
    with pytest.raises(OutputError):
        check_output_dir(synthetic_bids, synthetic_bids / "derivatives")


def test_output_of_another_pipeline_exit_73(synthetic_bids: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "fmriprep outputs", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    assert main(_argv(synthetic_bids, tmp_path, "--model", str(tiny_bundle))) == 73


# ----------------------------------------------------------------------------- boilerplate


def test_boilerplate_only(synthetic_bids: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    assert main(_argv(synthetic_bids, tmp_path, "--model", str(tiny_bundle), "--boilerplate-only")) == 0
    citation = tmp_path / "out" / "logs" / "CITATION.md"
    assert citation.is_file() and "tiny-random@" in citation.read_text()
    assert not list((tmp_path / "out").glob("sub-*"))


# ------------------------------------------------------------------------------ start-up cost


def test_main_process_needs_no_torch(synthetic_bids: Path, tmp_path: Path) -> None:
    """The scheduler process (discovery, bundle check, screening, sidecars, workflow build) runs
    without torch, smp or ANTs: only the workers need them. Torch there was a slow import and made
    each of nipype's ``gc.collect()`` calls in the scheduling loop slow."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import bids_msseg.workflows.participant as wp\n"
        "from bids_msseg.cli.run import main\n"
        "def scheduler(workflow, *, options, tracker):\n"
        "    heavy = ('torch', 'segmentation_models_pytorch', 'ants')\n"
        "    print(sorted(m for m in heavy if m in sys.modules))\n"
        "    return True\n"
        "wp.run_participant_wf = scheduler\n"
        "main(sys.argv[1:])\n"
    )
    args = [str(synthetic_bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
            "-w", str(tmp_path / "work")]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]


# ---- The command line's run-level behaviour: CITATION.md over every run of the output folder, the

def _fake_outputs(out: Path, relpaths: list[str], decisions: list[dict] | None = None) -> None:
    """A lesion mask and its sidecar per run (with its preprocessing decisions), as the participant level
    writes them."""
    for i, relpath in enumerate(relpaths):
        paths = derivative_paths(out, relpath)
        paths["mask"].parent.mkdir(parents=True, exist_ok=True)
        paths["mask"].write_bytes(b"")
        sidecar = {"Sources": [f"bids:raw:{relpath}", "bids::x"]}
        if decisions is not None:
            sidecar["PreprocessingDecisions"] = decisions[i]
        paths["mask_json"].write_text(json.dumps(sidecar))


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


def test_citation_says_how_many_images_got_each_step(tmp_path: Path) -> None:
    """From the runs' recorded decisions (issue 25: the demo's text described N4 and ROBEX, neither of which ran)."""
    out = tmp_path / "out"
    runs = ["sub-01/anat/sub-01_FLAIR.nii.gz", "sub-02/anat/sub-02_FLAIR.nii.gz"]
    stripped = {"n4": False, "skullstrip": False, "reasons": {"n4": "skull-stripped", "skullstrip": "skull-stripped"}}
    _fake_outputs(out, runs, [stripped, stripped])
    options = parse_args([str(tmp_path / "bids"), str(out), "participant"])
    text = write_run_citation(options).read_text()
    assert "No intensity non-uniformity correction was run: both images" in text
    assert "No brain extraction was run: both images looked already skull-stripped" in text
    assert "Tustison" not in text and "Iglesias" not in text and "ROBEX" not in text
    raw = {**stripped, "n4": True, "skullstrip": True}
    _fake_outputs(out, runs + ["sub-03/anat/sub-03_FLAIR.nii.gz"], [stripped, stripped, raw])
    text = write_run_citation(options).read_text()
    assert "In 1 of the 3 images, intensity non-uniformity was corrected with N4" in text
    assert "From 1 of the 3 images, the brain was extracted" in text and "the other 2 looked already" in text
    assert "Tustison" in text and "Iglesias" in text
    # a run still to come has no decision yet: the text says "where needed" instead of counting
    pending = parse_args([str(tmp_path / "bids"), str(out), "participant"])
    text = write_run_citation(pending, pending=[FlairRun(path=tmp_path / "x.nii.gz",
                                                         relpath="sub-04/anat/sub-04_FLAIR.nii.gz")]).read_text()
    assert "4 FLAIR images" in text and "only where needed" in text and "of the 4 images" not in text


def test_group_does_not_create_a_missing_output_folder(tmp_path: Path) -> None:
    (tmp_path / "bids").mkdir()
    out = tmp_path / "missing"
    assert main([str(tmp_path / "bids"), str(out), "group"]) == EXIT_NO_INPUT
    assert not out.exists()
