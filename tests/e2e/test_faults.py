"""Faults around a run: killed mid-way and resumed; no network use at any point.

Both tests start ``python -m bids_msseg`` in a subprocess (the first must be killed, the second must
watch every process of the run, nipype's forkserver workers included), so they are marked slow.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from tests.helpers import DEFAULT_RUNS, REPO_ROOT

#: Flags that make two runs comparable bit for bit (fp32 inference, fixed seeds, one process at a time:
#: with one process nipype finishes the runs one after the other, so a kill falls between runs).
DETERMINISTIC = ("--nprocs", "1", "--omp-nthreads", "1", "--precision", "fp32", "--random-seed", "7")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, extra.pop("PYTHONPATH_EXTRA", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _argv(bids: Path, out: Path, work: Path, bundle: Path, *extra: str) -> list[str]:
    return [str(bids), str(out), "participant", "-w", str(work), "--model", str(bundle), *extra]


def _files(root: Path) -> set[str]:
    """Every file under ``root`` (relative, hidden ones included), leaving out logs/."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "logs"}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path: Path, tiny_bundle: Path,
                                               caplog: pytest.LogCaptureFixture, make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids")
    relpaths = [relpath for relpath, _ in DEFAULT_RUNS]

    # The reference: one uninterrupted run.
    ref = tmp_path / "ref"
    assert main(_argv(bids, ref, tmp_path / "work_ref", tiny_bundle, *DETERMINISTIC)) == 0

    # The same run in a subprocess, killed (its whole process group, as a cluster scheduler does)
    # as soon as the first run's report, its last output, exists.
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "bids_msseg", *_argv(bids, out, work, tiny_bundle,
                                                                        *DETERMINISTIC)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    reports = [derivative_paths(out, relpath)["report"] for relpath in relpaths]
    deadline = time.monotonic() + 400
    try:
        while not any(r.exists() for r in reports):
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no run finished in 400 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stderr.close()
    done = [relpath for relpath, r in zip(relpaths, reports, strict=True) if r.exists()]
    assert 1 <= len(done) < len(relpaths), f"the kill did not fall mid-way: {done}"

    # The rerun: finished runs skipped, the others resumed, nothing left half-written.
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert main(_argv(bids, out, work, tiny_bundle, *DETERMINISTIC)) == 0
    for relpath in done:
        name = Path(relpath).name.split(".")[0]
        assert f"{name}: outputs complete, skipped" in caplog.text
    assert f"{len(relpaths) - len(done)} ok, 0 failed, {len(done)} skipped" in caplog.text

    assert _files(out) == _files(ref), "the resumed output differs in its files from the uninterrupted one"
    assert not [f for f in _files(out) if any(part.startswith(".") for part in f.split("/"))
                and f != ".bidsignore"], "temporary files were left behind"
    for relpath in relpaths:
        ours, theirs = derivative_paths(out, relpath), derivative_paths(ref, relpath)
        for key in ("mask", "probseg", "dseg", "brain"):
            np.testing.assert_array_equal(np.asanyarray(nib.load(str(ours[key])).dataobj),
                                          np.asanyarray(nib.load(str(theirs[key])).dataobj),
                                          err_msg=f"{relpath}: {key}")
        for key in ("dseg_tsv", "summary", "mask_json"):
            assert ours[key].read_text() == theirs[key].read_text(), f"{relpath}: {key}"


#: Installed as ``sitecustomize`` on PYTHONPATH: every Python process of the run (the main one, the
#: forkserver, and the workers it forks, which inherit the patched module) refuses and records any
#: IPv4/IPv6 socket use and name lookup. Unix sockets (multiprocessing's own) stay allowed.
NETGUARD = textwrap.dedent('''
    import os
    import socket
    import traceback

    _LOG = os.environ.get("NETGUARD_LOG")
    if _LOG:
        with open(_LOG + ".loaded", "a") as fh:
            fh.write(f"{os.getpid()}\\n")

        def _refuse(what, detail):
            with open(_LOG, "a") as fh:
                fh.write(f"pid {os.getpid()}: {what} {detail!r}\\n{''.join(traceback.format_stack(limit=12))}\\n")
            raise OSError(f"network use during a bids_msseg run: {what} {detail!r}")

        _INET = (socket.AF_INET, socket.AF_INET6)
        _connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto

        def connect(self, address):
            if self.family in _INET:
                _refuse("connect", address)
            return _connect(self, address)

        def connect_ex(self, address):
            if self.family in _INET:
                _refuse("connect_ex", address)
            return _connect_ex(self, address)

        def sendto(self, *args):
            if self.family in _INET:
                _refuse("sendto", args[-1])
            return _sendto(self, *args)

        socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
        socket.getaddrinfo = lambda *a, **k: _refuse("getaddrinfo", a)
        socket.gethostbyname = lambda *a, **k: _refuse("gethostbyname", a)
        socket.gethostbyname_ex = lambda *a, **k: _refuse("gethostbyname_ex", a)
        socket.create_connection = lambda *a, **k: _refuse("create_connection", a)
''')


@pytest.mark.slow
def test_a_participant_run_uses_no_network(tmp_path: Path, tiny_bundle: Path, make_bids_dataset) -> None:
    guard = tmp_path / "netguard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETGUARD)
    log = tmp_path / "network.log"
    env = _env(PYTHONPATH_EXTRA=str(guard), NETGUARD_LOG=str(log))

    # The guard works: a deliberate request is refused and recorded.
    probe = subprocess.run([sys.executable, "-c", "import urllib.request as u; u.urlopen('http://example.org', "
                            "timeout=5)"], env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode != 0 and "network use during a bids_msseg run" in probe.stderr
    assert "create_connection (('example.org', 80)" in log.read_text()
    log.unlink()
    Path(f"{log}.loaded").unlink()

    # A full participant run (two runs, two worker processes) under the guard.
    bids = make_bids_dataset(tmp_path / "bids", DEFAULT_RUNS[1:])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "bids_msseg",
                           *_argv(bids, out, tmp_path / "work", tiny_bundle, "--nprocs", "2", "--omp-nthreads", "1")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not log.exists(), f"network use during the run:\n{log.read_text()[:5000]}"
    loaded = set(Path(f"{log}.loaded").read_text().split())
    assert len(loaded) >= 2, "the guard did not reach the forkserver (only the main process loaded it)"
    for relpath, _ in DEFAULT_RUNS[1:]:
        assert derivative_paths(out, relpath)["report"].is_file()
