"""``bids_msseg --help``: short, grouped, each default written once (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bids_msseg.cli.parser import build_parser, parse_args
from bids_msseg.cli.run import main
from bids_msseg.settings import DEFAULT_RANDOM_SEED

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
