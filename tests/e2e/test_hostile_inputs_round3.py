"""Hostile and unlucky inputs, round three (issue 26): stale outputs, scale, links, leftovers.

Each test is one row of docs/bad_inputs.md ("round three"). Numerical rules have their own tests in
the mirrored modules (``tests/test_normalize.py``, ``tests/test_validate.py``...); here the app runs
through ``main`` on the small synthetic heads of ``tests/conftest.py`` with the tiny random model,
or, behind ``slow``, on patient 26 downsampled to 2 mm.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from bids_msseg.io import file_sha256
from tests.helpers import REPO_ROOT


def _main(bids: Path, out: Path, work: Path, *extra: str) -> int:
    return main([str(bids), str(out), "participant", "-w", str(work), "--nprocs", "1", "--omp-nthreads", "1",
                 "--no-location", "--no-longitudinal", *extra])


# ------------------------------------------------------------------------- 1. stale outputs


def test_a_replaced_flair_is_recomputed_not_skipped(tmp_path: Path, make_bids_dataset, save_flair,
                                                    tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = (("sub-01/anat/sub-01_FLAIR.nii.gz", {"seed": 1, "skull": False}),
            ("sub-02/anat/sub-02_FLAIR.nii.gz", {"seed": 2, "skull": False}))
    bids = make_bids_dataset(tmp_path / "bids", runs=runs, extra_files=())
    out, work = tmp_path / "out", tmp_path / "work"
    assert _main(bids, out, work, "--model", str(tiny_bundle)) == 0
    source = bids / runs[0][0]
    mask_json = derivative_paths(out, runs[0][0])["mask_json"]
    assert json.loads(mask_json.read_text())["SourceSHA256"] == file_sha256(source)

    # Another image under the same name, given the old modification time (as cp -p or rsync -t leave it).
    stat = source.stat()
    img = nib.load(source)
    data = np.asanyarray(img.dataobj).copy()
    data[:, :, data.shape[2] // 2:] = 0  # upper half empty
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(source))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.clear()
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert _main(bids, out, work, "--model", str(tiny_bundle)) == 0
    assert "sub-01_FLAIR: the source FLAIR changed since its outputs were made" in caplog.text
    assert "1 ok, 0 failed, 1 skipped" in caplog.text
    assert json.loads(mask_json.read_text())["SourceSHA256"] == file_sha256(source)
    mask = np.asanyarray(nib.load(derivative_paths(out, runs[0][0])["mask"]).dataobj)
    brain = np.asanyarray(nib.load(derivative_paths(out, runs[0][0])["brain"]).dataobj)
    assert not mask[:, :, data.shape[2] // 2:].any() and not brain[:, :, data.shape[2] // 2:].any()


# ----------------------------------------------------------- 8, 14. leftovers and interruptions


def _subprocess_env(tmpdir: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", NIPYPE_NO_ET="1", TMPDIR=str(tmpdir))


@pytest.mark.slow
def test_a_run_leaves_nothing_in_the_temporary_folder(tmp_path: Path, make_bids_dataset, tiny_bundle: Path) -> None:
    """Issue 26 item 8: ANTs' ``tmp*GenericAffine.mat`` (lesion location) and ``torchinductor_<user>/`` stayed in
    TMPDIR after every successful run. A subprocess, so that nipype's forkserver starts with its TMPDIR."""
    bids = make_bids_dataset(tmp_path / "bids", runs=(("sub-01/anat/sub-01_FLAIR.nii.gz", {"skull": False}),),
                             extra_files=())
    tmpdir, work = tmp_path / "tmp", tmp_path / "work"
    tmpdir.mkdir()
    done = subprocess.run([sys.executable, "-m", "bids_msseg", str(bids), str(tmp_path / "out"), "participant",
                           "-w", str(work), "--model", str(tiny_bundle), "--nprocs", "2", "--omp-nthreads", "1",
                           "--no-longitudinal"], env=_subprocess_env(tmpdir), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = derivative_paths(tmp_path / "out", "sub-01/anat/sub-01_FLAIR.nii.gz")["summary"]
    header, row = summary.read_text().splitlines()
    status = dict(zip(header.split("\t"), row.split("\t"), strict=True))["location_status"]
    assert status == "ok" or status.startswith("failed: the template covers"), status  # ANTs registered
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    assert not list(work.glob("tmp_*"))


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for its parent is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if _parent(int(entry.name)) == pid:
            found.extend([int(entry.name), *_children(int(entry.name))])
    return found


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_cleanly(tmp_path: Path, make_bids_dataset, tiny_bundle: Path, signum: int,
                                        code: int) -> None:
    """Issue 26 item 14: SIGTERM / SIGHUP exited 143 / 129 without a log line, with a leaked-semaphore warning
    and /tmp/pymp-* left; Ctrl-C printed a worker's 20-line traceback and a worker outlived the main process."""
    bids = make_bids_dataset(tmp_path / "bids")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "bids_msseg", str(bids), str(tmp_path / "out"), "participant",
                             "-w", str(tmp_path / "work"), "--model", str(tiny_bundle), "--nprocs", "2",
                             "--omp-nthreads", "1"], env=_subprocess_env(tmpdir), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until a run is under way in a worker
        lines.append(line)
        if "preprocessing in" in line or "started" in line and "[1/" in line:
            break
    time.sleep(1.0)
    helpers = _children(proc.pid)  # nipype's forkserver, its workers, multiprocessing's resource tracker
    workers = [pid for pid in helpers if _parent(pid) in helpers]  # forked by the forkserver
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole foreground process group
    else:
        proc.send_signal(signum)
    _, rest = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    assert proc.returncode == code, text[-3000:]
    assert ("stopped by " + signal.Signals(signum).name if signum != signal.SIGINT else "interrupted") in text
    assert "Traceback" not in text and "leaked semaphore" not in text
    assert workers and not [pid for pid in workers if _alive(pid)]  # ended by the main process itself
    deadline = time.monotonic() + 5.0  # the forkserver and the resource tracker end when the main process has
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in helpers if _alive(pid)]
    assert sorted(p.name for p in tmpdir.iterdir()) == []


# ---------------------------------------------------------------------- 13. read-only /dev/shm


def test_a_read_only_dev_shm_names_the_cause_and_the_way_out(tmp_path: Path, synthetic_bids: Path, tiny_bundle: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26 item 13: "Read-only file system (); free space or choose another -w/output directory"."""
    import bids_msseg.workflows.participant as participant

    def no_semaphores(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(participant, "ProcessPoolExecutor", no_semaphores)
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert main([str(synthetic_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--model", str(tiny_bundle), "--nprocs", "2"]) == 1
    assert ("Read-only file system: the MultiProc plugin needs a writable /dev/shm (shared memory for its queues and "
            "locks)") in caplog.text
    assert "--nipype-plugin Linear" in caplog.text and "free space" not in caplog.text


# ------------------------------------------------------------------------ 2. intensity scale


def _patient26_2mm(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Patient 26 at 2 mm on 256 grey levels (as float), and its affine: every rescaling below holds
    exactly this image, so only the storage scale differs."""
    from bids_msseg.preproc.orient import downsample

    path = shared_data / "3d-mr-ms" / "patient26" / "patient26_FLAIR_mni.nii.gz"
    if not path.is_file():
        pytest.skip(f"real data absent: {path}")
    img = nib.load(path)
    coarse, affine = downsample(img.get_fdata(dtype=np.float32), img.affine, 2.0)
    return np.round(coarse / coarse.max() * 255.0), affine


@pytest.mark.slow
@pytest.mark.realdata
def test_lesions_do_not_depend_on_the_intensity_scale(tmp_path: Path, shared_data: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26 item 2: the same anatomy as uint16 0-65535, uint32 0-4e9 and float 0-125 gave 6, 5 and 8
    lesions. Here uint8, uint16, uint32, float 0-125 and x1e-3 / x1e3 must give the same lesion count and
    volumes within 1 % (default model, automatic decisions)."""
    base, affine = _patient26_2mm(shared_data)
    variants = {"uint8": base.astype(np.uint8), "uint16": (base * 257).astype(np.uint16),
                "uint32": (base * 16843009).astype(np.uint32), "float": (base / 255 * 125).astype(np.float32),
                "milli": (base / 255 * 125e-3).astype(np.float32), "kilo": (base / 255 * 125e3).astype(np.float32)}
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text('{"Name": "scales", "BIDSVersion": "1.10.0"}')
    for label, data in variants.items():
        (bids / f"sub-{label}" / "anat").mkdir(parents=True)
        nib.save(nib.Nifti1Image(data, affine), str(bids / f"sub-{label}/anat/sub-{label}_FLAIR.nii.gz"))
    out = tmp_path / "out"
    assert _main(bids, out, tmp_path / "work") == 0
    results = {}
    for label in variants:
        header, row = derivative_paths(out, f"sub-{label}/anat/sub-{label}_FLAIR.nii.gz")["summary"].read_text() \
            .splitlines()
        summary = dict(zip(header.split("\t"), row.split("\t"), strict=True))
        results[label] = (int(summary["lesion_count"]), float(summary["total_lesion_volume_ml"]))
    reference = results["float"]
    assert reference[0] > 0, results
    for count, volume in results.values():
        assert count == reference[0], results
        assert volume == pytest.approx(reference[1], rel=0.01), results
