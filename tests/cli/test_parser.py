"""The command-line parser (bids_msseg/cli/parser.py): defaults, flags, labels, version."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bids_msseg import __version__
from bids_msseg.cli.parser import Options, build_parser, parse_args, suggest_flags
from bids_msseg.cli.run import main
from bids_msseg.settings import DEFAULT_RANDOM_SEED


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


# ---- ``bids_msseg --help``: short, grouped, each default written once (issue 14).

TRAINING_FLAGS = ("--epochs", "--batch-size", "--lr", "--train-name", "--init-model", "--cross-site",
                  "--combinations", "--ablation", "--extra-bids-dir")


def _help(capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    assert main(list(flags)) == 0
    return capsys.readouterr().out


def test_help_is_short_and_participant_first(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "--help")
    lines = text.splitlines()
    assert len(lines) < 100, len(lines)
    assert lines[0] == "usage: bids_msseg bids_dir output_dir {participant,group} [options]"
    for flag in TRAINING_FLAGS:
        assert not re.search(rf"^\s+{flag}\b", text, flags=re.M), flag  # no option line
    assert "--help-all" in text and "--participant-label" in text and "--expert-masks" in text
    order = [text.index(title) for title in ("Selecting the input:", "Model and lesion definition:",
                                              "Preprocessing:", "Running:", "Resources:", "Group level:")]
    assert order == sorted(order)


@pytest.mark.parametrize("flag", ["--help-all", "--help-training"])
def test_help_all_shows_training_and_cross_site(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    text = _help(capsys, flag)
    for flag_name in TRAINING_FLAGS:
        assert re.search(rf"^\s+{flag_name}\b", text, flags=re.M), flag_name
    assert "Training (group --train):" in text and "Cross-site study (group --cross-site):" in text


def test_defaults_are_written_once(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(capsys, "--help-all").split())
    assert "(default: None)" not in text
    options = re.split(r" (?=-{1,2}[a-z])", text)
    doubled = [o for o in options if o.count("default") > 1 and "(default" in o]
    assert not doubled, doubled


def test_build_parser_hides_but_parses_training_flags(tmp_path: Path) -> None:
    assert "--epochs" not in build_parser().format_help()
    assert "--epochs" in build_parser(show_all=True).format_help()
    options = parse_args([str(tmp_path), str(tmp_path / "o"), "group", "--train", "--epochs", "3"])
    assert options.group.train and options.group.training.epochs == 3


def test_runs_are_seeded_by_default(tmp_path: Path) -> None:
    options = parse_args([str(tmp_path), str(tmp_path / "o"), "participant"])
    assert options.random_seed == DEFAULT_RANDOM_SEED
    assert parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--random-seed", "7"]).random_seed == 7


def test_command_line_is_recorded(tmp_path: Path) -> None:
    options = parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--participant-label", "01"])
    assert options.command_line == f"bids_msseg {tmp_path} {tmp_path / 'o'} participant --participant-label 01"


def test_seed_threshold_zero_turns_hysteresis_off(tmp_path: Path) -> None:
    base = [str(tmp_path / "bids"), str(tmp_path / "out"), "participant"]
    assert parse_args(base).seed_threshold is None  # the bundle's
    assert parse_args([*base, "--seed-threshold", "0"]).seed_threshold == 0.0
    assert parse_args([*base, "--seed-threshold", "0.97"]).seed_threshold == 0.97
    with pytest.raises(SystemExit):
        parse_args([*base, "--seed-threshold", "1.5"])


def test_no_location_switch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), str(tmp_path / "out"), "participant"]
    assert parse_args(argv).location is True
    assert parse_args([*argv, "--no-location"]).location is False
    assert re.search(r"^\s+--no-location\s+no McDonald location classes", _help(capsys, "--help"), flags=re.M)


@pytest.mark.parametrize(("extra", "message"), [
    (["--random-seed", str(2**80)], f"'{2**80}' is out of range: use 0 to {2**32 - 1}"),
    (["--random-seed", str(2**32)], "is out of range"),
    (["-w", ""], "an empty path; give the work folder"),
    (["--mem", "nan"], "'nan' is not a number"),
    (["--min-brain-volume", "nan"], "'nan' is not a number"),
    (["--bids-filter-file", "/dev/null"], "/dev/null: not a regular file (a folder or a device)"),
])
def test_options_that_used_to_fail_later_exit_64(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 extra: list[str], message: str) -> None:
    """Issue 26 items 10 and 15: a seed past 2**64 failed every run ("Overflow when unpacking long long"),
    ``-w ''`` meant the current folder, NaN was "negative", /dev/null "no such file"."""
    assert main([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", *extra]) == 64
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_largest_seed_is_accepted(tmp_path: Path) -> None:
    opts = parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--random-seed",
                       str(2**32 - 1)])
    assert opts.random_seed == 2**32 - 1


# ---- typo'd flags, and the README's account of the defaults (issue 25).


@pytest.mark.parametrize(("argv", "hint"), [
    (["--participant-lable", "01"], "did you mean --participant-label?"),
    (["--skulstrip", "off"], "did you mean --skullstrip?"),
    (["--thresold=0.4"], "did you mean --threshold?"),
    (["--sesion-label", "1", "--no-locaton"], "did you mean --session-label (for --sesion-label), --no-location "
                                               "(for --no-locaton)?"),
])
def test_a_typod_flag_gets_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                        hint: str) -> None:
    assert main([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", *argv]) == 64
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and err.rstrip().endswith(hint), err


def test_an_unrelated_flag_gets_no_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--fs-license-file", "x"]) == 64
    assert "did you mean" not in capsys.readouterr().err


def test_suggest_flags_skips_values_and_known_flags() -> None:
    known = ["--participant-label", "--participant_label", "--n4", "-w"]
    assert suggest_flags(["--participant-lable", "01", "--n4", "--participant_labl=02"], known) == {
        "--participant-lable": "--participant-label", "--participant_labl": "--participant_label"}


def test_readme_gives_the_help_defaults_of_the_resources(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` and the README say the same of ``--nprocs`` and ``--omp-nthreads`` (they disagreed)."""
    text = " ".join(_help(capsys, "--help").split())
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    omp_default = re.search(r"--omp-nthreads N .*?\(default: ([^)]+\))\)", text).group(1)
    assert omp_default == "min(nprocs, 8)"
    assert f"`--omp-nthreads` to {omp_default}" in readme
    assert "(default: the CPUs available)" in text and "`--nprocs` defaults to the CPUs available" in readme
    opts = parse_args(["/bids", "/out", "participant", "--nprocs", "12"])
    assert opts.omp_nthreads == 8
