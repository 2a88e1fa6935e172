"""Execution plugins passed through to nipype: ``--use-plugin FILE``, ``--nipype-plugin``, ``--plugin-args``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bids_msseg.cli.parser import NIPYPE_PLUGINS, parse_args
from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from tests.helpers import DEFAULT_RUNS


def _parse(tmp_path: Path, *extra: str):
    return parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", *extra])


def test_default_is_multiproc_without_arguments(tmp_path: Path) -> None:
    options = _parse(tmp_path)
    assert options.nipype_plugin == "MultiProc" and dict(options.plugin_args) == {}


@pytest.mark.parametrize("suffix, text", [
    (".yml", "plugin: SLURM\nplugin_args:\n  sbatch_args: -p short --mem 8G\n  max_jobs: 20\n"),
    (".json", json.dumps({"plugin": "SLURM", "plugin_args": {"sbatch_args": "-p short --mem 8G", "max_jobs": 20}})),
])
def test_use_plugin_file_yaml_or_json(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"plugin{suffix}"
    path.write_text(text)
    options = _parse(tmp_path, "--use-plugin", str(path))
    assert options.nipype_plugin == "SLURM"
    assert dict(options.plugin_args) == {"sbatch_args": "-p short --mem 8G", "max_jobs": 20}
    # The flags override the file's plugin and are merged over its arguments.
    options = _parse(tmp_path, "--use-plugin", str(path), "--nipype-plugin", "SGE",
                     "--plugin-args", '{"max_jobs": 4, "qsub_args": "-q all.q"}')
    assert options.nipype_plugin == "SGE"
    assert dict(options.plugin_args) == {"sbatch_args": "-p short --mem 8G", "max_jobs": 4, "qsub_args": "-q all.q"}


@pytest.mark.parametrize("content", ["plugin: Nonexistent\n", "plugin_args: {}\n", "plugin: Linear\nfoo: 1\n",
                                     "plugin: Linear\nplugin_args: [1, 2]\n", "plugin: [unclosed\n"])
def test_bad_plugin_files_are_usage_errors(tmp_path: Path, content: str, capsys) -> None:
    path = tmp_path / "plugin.yml"
    path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        _parse(tmp_path, "--use-plugin", str(path))
    assert exc.value.code == 64
    assert "--use-plugin" in capsys.readouterr().err


def test_bad_plugin_args_and_names_are_usage_errors(tmp_path: Path) -> None:
    for extra in (["--plugin-args", "[1]"], ["--plugin-args", "{nope"], ["--nipype-plugin", "Nope"],
                  ["--use-plugin", str(tmp_path / "missing.yml")]):
        with pytest.raises(SystemExit) as exc:
            _parse(tmp_path, *extra)
        assert exc.value.code == 64, extra


def test_every_plugin_name_is_a_nipype_plugin() -> None:
    import nipype.pipeline.plugins as plugins

    missing = [name for name in NIPYPE_PLUGINS if not hasattr(plugins, f"{name}Plugin")]
    assert not missing, f"not nipype plugins: {missing}"


def test_linear_plugin_runs_the_workflow(tmp_path: Path, tiny_bundle: Path, caplog: pytest.LogCaptureFixture,
                                         make_bids_dataset) -> None:
    """Another plugin than MultiProc (Linear, in this process) produces the same complete outputs."""
    relpath = DEFAULT_RUNS[2][0]
    bids = make_bids_dataset(tmp_path / "bids", runs=[DEFAULT_RUNS[2]], extra_files=())
    plugin_file = tmp_path / "plugin.yml"
    plugin_file.write_text("plugin: Linear\nplugin_args: {}\n")
    caplog.set_level(logging.INFO, logger="bids_msseg")
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--model", str(tiny_bundle),
                 "--use-plugin", str(plugin_file), "--omp-nthreads", "1"])
    assert code == 0
    assert "nipype's Linear plugin" in caplog.text and "1 ok, 0 failed" in caplog.text
    paths = derivative_paths(out, relpath)
    assert all(p.is_file() for p in paths.values())
