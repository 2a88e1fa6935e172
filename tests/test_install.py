"""The README's quick start installs the CPU build of torch on an ordinary Linux machine (issue 25).

The network test resolves the quick start's ``pip install`` exactly as written, without any local
pip configuration (``PIP_CONFIG_FILE=/dev/null``, no ``PIP_*`` variables: no local wheel folder
helps it), with ``--dry-run --report``, and fails if a CUDA package would be installed. It needs
PyPI and PyTorch's CPU index: opt in with ``-m network``; it skips when either cannot be reached.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import (
    PYPI_INDEX,
    REPO_ROOT,
    TORCH_CPU_INDEX,
    cuda_packages,
    index_reachable,
    readme_quick_start,
)


def quick_start_install() -> list[str]:
    """The quick start's ``pip install`` command as arguments (the part before ``&&``)."""
    first = readme_quick_start().split("&&")[0]
    args = shlex.split(first)
    assert args[:4] == ["python3", "-m", "pip", "install"], first
    return args


def test_quick_start_takes_the_cpu_index_and_the_constraints() -> None:
    args = quick_start_install()
    assert "--extra-index-url" in args and args[args.index("--extra-index-url") + 1] == TORCH_CPU_INDEX.rstrip("/")
    assert "-c" in args and args[args.index("-c") + 1] == "constraints.txt"


def test_cuda_packages_are_found_in_a_pip_report() -> None:
    def report(*dists: tuple[str, str]) -> dict:
        return {"install": [{"metadata": {"name": name, "version": version}} for name, version in dists]}

    assert cuda_packages(report(("torch", "2.13.0+cpu"), ("numpy", "2.3.1"), ("nvidia-ml-py", "12.0"))) == [
        "nvidia-ml-py==12.0"]
    assert cuda_packages(report(("torch", "2.13.0"), ("nvidia_cudnn_cu13", "9.1"), ("triton", "3.5.0"))) == [
        "nvidia-cudnn-cu13==9.1", "triton==3.5.0"]
    assert cuda_packages(report(("torch", "2.13.0+cu126"))) == ["torch==2.13.0+cu126"]
    assert cuda_packages(report(("torch", "2.13.0+cpu"), ("torchvision", "0.28.0+cpu"))) == []


@pytest.mark.network
def test_quick_start_resolves_without_cuda_packages(tmp_path: Path) -> None:
    """``pip install --dry-run --report`` of the quick start, no local configuration: no CUDA package."""
    for url in (PYPI_INDEX, TORCH_CPU_INDEX):
        if not index_reachable(url):
            pytest.skip(f"{url} cannot be reached from this machine: the quick start's resolution is not checked")
    if int(subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True,
                          check=True).stdout.split()[1].split(".")[0]) < 23:
        pytest.skip("needs pip >= 23 for --dry-run --report")
    report = tmp_path / "report.json"
    args = [sys.executable, *quick_start_install()[1:], "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(report)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf anywhere: no local wheel folder, no local index
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resolved = json.loads(report.read_text())
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in resolved["install"]}
    assert versions.get("torch", "").startswith("2.13.0+cpu"), versions.get("torch")
    assert cuda_packages(resolved) == [], "the quick start would install CUDA packages"
