"""The command-line parser (bids_msseg/cli/parser.py): defaults, flags, labels, version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bids_msseg import __version__
from bids_msseg.cli.parser import Options, build_parser, parse_args
from bids_msseg.cli.run import main


def _filter_file(tmp_path: Path, content: object | str) -> str:
    path = tmp_path / "filters.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)



# ------------------------------------------------------------------------------------- parser


def test_build_parser_is_pure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    assert parser.prog == "bids_msseg"
    assert list(tmp_path.iterdir()) == []  # nothing created, not even ./work
    titles = {g.title for g in parser._action_groups}
    assert {"Selecting the input", "Resources", "Model and lesion definition", "Preprocessing",
            "Running", "Group level"} <= titles


def test_defaults(tmp_path: Path) -> None:
    opts = parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant"])
    assert isinstance(opts, Options)
    assert opts.bids_dir == tmp_path / "bids" and opts.output_dir == tmp_path / "out"
    assert opts.participant_label is None and opts.session_label is None and opts.bids_filters is None
    assert opts.nprocs >= 1 and 1 <= opts.omp_nthreads <= min(opts.nprocs, 8)
    assert opts.work_dir.is_absolute() and opts.work_dir.name == "work"
    assert (opts.device, opts.precision, opts.n4, opts.skullstrip, opts.normalization) == (
        "auto", "auto", "auto", "auto", "model")
    assert opts.threshold is None and opts.min_lesion_size is None and opts.model is None
    assert not (opts.overwrite or opts.stop_on_first_crash or opts.boilerplate_only)
    assert opts.logs_dir == tmp_path / "out" / "logs"
    with pytest.raises(AttributeError):
        opts.nprocs = 3  # type: ignore[misc]  # frozen


def test_labels_strip_prefixes_and_accumulate(tmp_path: Path) -> None:
    opts = parse_args([str(tmp_path), str(tmp_path / "o"), "participant",
                       "--participant-label", "sub-01", "02", "--participant_label", "03", "01",
                       "--session-label", "ses-1", "2"])
    assert opts.participant_label == ("01", "02", "03")
    assert opts.session_label == ("1", "2")


def test_all_flags(tmp_path: Path, tiny_bundle: Path) -> None:
    opts = parse_args([
        str(tmp_path), str(tmp_path / "o"), "participant", "-w", str(tmp_path / "w"), "--nprocs", "3",
        "--omp-nthreads", "2", "--device", "cpu", "--precision", "fp32", "--model", str(tiny_bundle),
        "--threshold", "0.4", "--min-lesion-size", "3", "--n4", "off", "--skullstrip", "on",
        "--normalization", "linear", "--stop-on-first-crash", "--random-seed", "7", "--overwrite",
        "--skip-bids-validation", "-vv", "--bids-filter-file",
        _filter_file(tmp_path, {"flair": {"acquisition": "3D", "run": [1, 2], "ceagent": None}}),
    ])
    assert (opts.nprocs, opts.omp_nthreads, opts.device, opts.precision) == (3, 2, "cpu", "fp32")
    assert (opts.threshold, opts.min_lesion_size, opts.n4, opts.skullstrip) == (0.4, 3.0, "off", "on")
    assert opts.model == tiny_bundle and opts.work_dir == tmp_path / "w"
    assert opts.normalization == "linear" and opts.random_seed == 7 and opts.verbose == 2
    assert opts.stop_on_first_crash and opts.overwrite and opts.skip_bids_validation
    assert opts.flair_filters == {"acquisition": "3D", "run": [1, 2], "ceagent": None}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
