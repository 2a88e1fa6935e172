"""Shared fixtures: the real data folder, a tiny random model bundle, synthetic BIDS datasets.

Tests request these by name; none imports from this file. Builders that a test calls with
arguments are factory fixtures (``save_flair``, ``make_bids_dataset``, ``run_validator``);
constants and the pure array generator live in :mod:`tests.helpers`.

The synthetic FLAIRs are small (48x56x40 voxels of 4 mm, so the head has a realistic physical
size), seeded, head-like: grey and white matter, ventricles and a few bright white-matter
"lesions", a smooth bias field and noise, optionally inside skull and scalp. Runs get different
orientations (RAS, LPS, LAS) so that every test of shapes and affines also checks the
reorientation round trip.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

# Assertions in shared check helpers get pytest's introspection like those in test modules.
pytest.register_assert_rewrite("tests.e2e.helpers")

from tests.helpers import DEFAULT_RUNS, SHARED_DATA, head_like_flair  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real MRI, never copied into the repository); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} does not exist")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle with random (seeded) weights: exercises the whole path, predicts nonsense."""
    import torch

    from bids_msseg.model.bundle import ModelCard, save_bundle
    from bids_msseg.model.network import build_network, default_architecture

    torch.manual_seed(0)
    arch = default_architecture()
    card = ModelCard(architecture=arch, reference_quantiles=list(np.linspace(0.0, 1.0, 1001)),
                     model_id="tiny-random")
    return save_bundle(tmp_path_factory.mktemp("tiny_bundle"), build_network(arch), card)


_ORIENTATION_FLIPS = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1), "LAS": (-1, 1, 1)}


def _save_flair(path: Path, *, orientation: str = "RAS", seed: int = 0, shape=(48, 56, 40),
               zooms=(4.0, 4.0, 4.0), skull: bool = True) -> Path:
    """Write a head-like FLAIR whose voxel axes follow ``orientation`` (world stays RAS+)."""
    data = head_like_flair(shape, seed=seed, skull=skull)
    flips = _ORIENTATION_FLIPS[orientation]
    for axis, flip in enumerate(flips):
        if flip < 0:
            data = np.flip(data, axis)
    affine = np.diag([f * z for f, z in zip(flips, zooms, strict=True)] + [1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _make_bids_dataset(
    root: Path,
    runs: Iterable[tuple[str, Mapping[str, Any]]] = DEFAULT_RUNS,
    *,
    description: bool = True,
    extra_files: Iterable[str] = ("sub-02/anat/sub-02_T1w.nii.gz",),
    sidecars: bool = True,
) -> Path:
    """Build a BIDS dataset under ``root``; ``runs`` are (relative path, save_flair options)."""
    root.mkdir(parents=True, exist_ok=True)
    if description:
        (root / "dataset_description.json").write_text(json.dumps(
            {"Name": "synthetic", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    for relpath, opts in runs:
        path = _save_flair(root / relpath, **dict(opts))
        if sidecars:
            stem = path.name.split(".")[0]
            (path.parent / f"{stem}.json").write_text(json.dumps(
                {"MRAcquisitionType": "3D", "MagneticFieldStrength": 3, "SeriesDescription": stem}))
    for relpath in extra_files:
        _save_flair(root / relpath, seed=99)
    return root


def _run_validator(dataset: Path) -> list[dict]:
    """Issues reported by the official BIDS validator (bids-validator-deno) on ``dataset``."""
    done = subprocess.run(["bids-validator-deno", str(dataset), "--format", "json"], capture_output=True,
                          text=True, timeout=300)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"bids-validator-deno gave no JSON (rc {done.returncode}): {done.stderr[-2000:]}")
    return report["issues"]["issues"]


# ------------------------------------------------------------------------ factory fixtures
# Session-scoped: each returns a pure function, so hypothesis tests may use them too.


#: Injected before </body>: once the page has laid out, records the page width, the document's width and,
#: per table, the right edge of its visible box (its scrolling box when it has one), its full width, the box's
#: width and the right edge of its first three header cells (the key columns).
_WIDTH_PROBE = """<script>
window.addEventListener("load", () => {
  const page = document.documentElement.clientWidth;
  const tables = Array.from(document.querySelectorAll("table")).map(t => {
    const box = t.closest(".table-scroll") || t;
    const first = t.rows.length ? Array.from(t.rows[0].cells).slice(0, 3) : [];
    return {name: t.id || t.className || "table", boxRight: box.getBoundingClientRect().right,
            boxWidth: box.clientWidth, tableWidth: t.getBoundingClientRect().width,
            keyRight: Math.max(0, ...first.map(c => c.getBoundingClientRect().right))};
  });
  const images = Array.from(document.images).map(i => [i.getAttribute("alt"), i.getBoundingClientRect().width]);
  document.body.setAttribute("data-widths", JSON.stringify({page, document: document.documentElement.scrollWidth,
                                                             tables, images}));
});
</script>
"""


def _layout_in_chromium(report: Path, width: int) -> dict[str, Any]:
    import html as html_lib
    import re
    import shutil
    import tempfile

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): the report layout check did not run")
    probe = report.with_name(".layout_" + report.name)
    probe.write_text(report.read_text().replace("</body>", _WIDTH_PROBE + "</body>"))
    try:
        with tempfile.TemporaryDirectory() as profile:
            done = subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                 f"--user-data-dir={profile}", f"--window-size={width},900", "--virtual-time-budget=10000",
                 "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=300)
    finally:
        probe.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r'data-widths="([^"]*)"', done.stdout)
    assert found, f"the layout probe did not run; stderr: {done.stderr[-3000:]}"
    return json.loads(html_lib.unescape(found.group(1)))


@pytest.fixture(scope="session")
def report_layout() -> Callable[[Path, int], dict[str, Any]]:
    """``report_layout(report, width) -> layout``: load the HTML ``report`` in headless chromium with a
    ``width``-pixel window and return its layout (``page``, ``document`` widths; per table ``name``,
    ``boxRight``, ``boxWidth``, ``tableWidth``, ``keyRight``; ``images`` as [alt, width]). Skips without chromium."""
    return _layout_in_chromium


@pytest.fixture(scope="session")
def check_report_fits() -> Callable[[Path], None]:
    """``check_report_fits(report)``: at 1024 and 1440 px, the page does not scroll sideways, no table's
    visible box is wider than the page, and every table's key columns (its first three) show without
    scrolling. A table too wide for the page may scroll inside its own box, never widen the page."""

    def check(report: Path) -> None:
        for width in (1024, 1440):
            layout = _layout_in_chromium(report, width)
            page = layout["page"]
            assert abs(page - width) <= 20, f"chromium laid the page out {page} px wide, not {width}"
            assert layout["document"] <= page, f"{report.name} at {width} px scrolls sideways: {layout['document']}"
            for table in layout["tables"]:
                where = f"{report.name} at {width} px, table {table['name']}"
                assert table["boxRight"] <= page + 0.5, f"{where} is wider than the page: {table}"
                assert table["keyRight"] <= table["boxRight"] + 0.5, f"{where}: key columns cut off: {table}"

    return check


@pytest.fixture(scope="session")
def save_flair() -> Callable[..., Path]:
    """``save_flair(path, *, orientation="RAS", seed=0, shape=..., zooms=..., skull=True) -> path``:
    write a head-like FLAIR whose voxel axes follow ``orientation`` (world stays RAS+)."""
    return _save_flair


@pytest.fixture(scope="session")
def make_bids_dataset() -> Callable[..., Path]:
    """``make_bids_dataset(root, runs=DEFAULT_RUNS, *, description=True, extra_files=..., sidecars=True)``:
    build a synthetic BIDS dataset under ``root``; ``runs`` are (relative path, save_flair options)."""
    return _make_bids_dataset


@pytest.fixture(scope="session")
def bids_factory(make_bids_dataset: Callable[..., Path]) -> Callable[..., Path]:
    """The same builder as :func:`make_bids_dataset` (its older name)."""
    return make_bids_dataset


@pytest.fixture(scope="session")
def run_validator() -> Callable[[Path], list[dict]]:
    """``run_validator(dataset) -> issues``: the official BIDS validator (bids-validator-deno) on ``dataset``."""
    return _run_validator


@pytest.fixture
def synthetic_bids(tmp_path: Path) -> Path:
    """The default synthetic dataset: sub-01 (ses-1, ses-2) and sub-02 (no session)."""
    return _make_bids_dataset(tmp_path / "bids")
