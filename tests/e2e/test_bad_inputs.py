"""The bad-input matrix of docs/bad_inputs.md: each input, its message, its exit code, what else happens.

Image-level inputs are checked against the two levels of :mod:`bids_msseg.validate`:
``screen_flair`` (header only, in the main process before the workflow) and ``load_flair`` (the
first step of every run). Dataset- and command-line-level inputs go through ``main`` and stop
before any workflow starts, so this file stays fast; the one end-to-end mixed dataset (good and
bad runs together through the workflow) is marked slow.
"""

from __future__ import annotations

import gzip
import json
import logging
import pickle
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.bids import FlairRun, collect_flair_runs, read_sidecars
from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from bids_msseg.errors import InputError
from bids_msseg.preproc import preprocess_flair
from bids_msseg.preproc.orient import load_flair
from bids_msseg.validate import screen_flair, screen_run, screen_runs
from tests.helpers import REPO_ROOT, head_like_flair

SHAPE = (48, 56, 40)
ZOOMS = (4.0, 4.0, 4.0)


def _affine(zooms=ZOOMS, shape=SHAPE) -> np.ndarray:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape[:3]) - 1) / 2.0)
    return affine


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = _affine(shape=data.shape) if affine is None and data.ndim >= 3 else affine
    img = nib.Nifti1Image(data, affine if affine is not None else np.eye(4))
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    nib.save(img, str(path))
    return path


def _head(dtype=np.float32) -> np.ndarray:
    return head_like_flair(SHAPE, seed=4, skull=False).astype(dtype)


# ---------------------------------------------------------------- image builders (one per input)


def corrupt_gz(path: Path) -> Path:
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)  # a gzip magic, then garbage
    return path


def truncated_gz(path: Path) -> Path:
    blob = _save(path, _head()).read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])
    return path


def truncated_nii(path: Path) -> Path:
    raw = _save(path.with_name("full.nii"), _head())
    path = path.with_name(path.name.replace(".nii.gz", ".nii"))
    path.write_bytes(raw.read_bytes()[:-1000])
    return path


def text_named_nii_gz(path: Path) -> Path:
    path.write_text("Patient: anonymous\nThis is a radiology report, not an image.\n" * 20)
    return path


def png_named_nii_gz(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 500)
    return path


def gzip_of_zeros(path: Path) -> Path:
    path.write_bytes(gzip.compress(b"\0" * 4000))  # valid gzip, no NIfTI header inside
    return path


def mgh_named_nii_gz(path: Path) -> Path:
    mgz = path.with_name("head.mgz")
    nib.save(nib.MGHImage(_head(), _affine()), str(mgz))
    return mgz


def four_d(path: Path) -> Path:
    return _save(path, np.stack([_head()] * 3, axis=-1))


def four_d_single_volume(path: Path) -> Path:
    return _save(path, _head()[..., None])


def two_d(path: Path) -> Path:
    return _save(path, _head()[:, :, 20], np.diag([4.0, 4.0, 4.0, 1.0]))


def single_slice(path: Path) -> Path:
    return _save(path, _head()[:, :, 20:21])


def nan_few(path: Path) -> Path:
    data = _head()
    data[0, 0, :7] = np.nan
    data[1, 1, 1] = np.inf
    return _save(path, data)


def nan_most(path: Path) -> Path:
    data = _head()
    data[:40] = np.nan
    return _save(path, data)


def inf_most(path: Path) -> Path:
    data = _head()
    data[:, :50] = -np.inf
    return _save(path, data)


def all_zero(path: Path) -> Path:
    return _save(path, np.zeros(SHAPE, np.int16))


def constant(path: Path) -> Path:
    return _save(path, np.full(SHAPE, 100, np.int16))


def binary_mask(path: Path) -> Path:
    return _save(path, (_head() > 100).astype(np.uint8))


def int8(path: Path) -> Path:
    return _save(path, (_head() / 8).astype(np.int8))


def uint16(path: Path) -> Path:
    return _save(path, (_head() * 20).astype(np.uint16))


def float64(path: Path) -> Path:
    return _save(path, _head(np.float64))


def complex64(path: Path) -> Path:
    return _save(path, _head().astype(np.complex64))


def rgb24(path: Path) -> Path:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    grey = np.clip(_head() / 3, 0, 255).astype(np.uint8)
    for channel in ("R", "G", "B"):
        rgb[channel] = grey
    return _save(path, rgb)


def huge_header(path: Path) -> Path:
    """A 352-byte header claiming a 30000^3 int16 array (54 TB); no data at all."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    header.set_zooms((1.0, 1.0, 1.0))
    path = path.with_name(path.name.replace(".nii.gz", ".nii"))
    path.write_bytes(header.binaryblock + b"\0" * 4)
    return path


def many_voxels_header(path: Path) -> Path:
    """Every axis within limits, but 1000 x 1000 x 300 voxels in all; the data are absent."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 300))
    header.set_data_dtype(np.uint8)
    header.set_zooms((0.5, 0.5, 0.5))
    with gzip.open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4)
    return path


def singular_affine(path: Path) -> Path:
    img = nib.Nifti1Image(_head(), None)
    img.header["qform_code"] = 0
    img.header["sform_code"] = 1
    img.header["srow_z"] = [0.0, 0.0, 0.0, 0.0]
    nib.save(img, str(path))
    return path


def zooms_in_metres(path: Path) -> Path:
    return _save(path, _head(), _affine(zooms=(0.004, 0.004, 0.004)))


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def oblique(path: Path) -> Path:
    affine = np.eye(4)
    affine[:3, :3] = _rotation(np.radians(20), np.radians(10)) @ np.diag([-4.0, -4.0, 4.0])
    return _save(path, _head(), affine)


def sagittal(path: Path) -> Path:
    # Voxel axes A->P, S->I, L->R: the slices are sagittal.
    data = np.ascontiguousarray(np.transpose(_head(), (1, 2, 0))[::-1, ::-1, :])
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0, 0, 4.0], [-4.0, 0, 0], [0, -4.0, 0]])
    return _save(path, data, affine)


def thick_slices(path: Path) -> Path:
    """1 mm in-plane, 5 mm slices: a clinical 2D FLAIR (shape 176 x 200 x 30)."""
    shape = (176, 200, 30)
    return _save(path, head_like_flair(shape, seed=5, skull=False), _affine((1.1, 1.1, 5.0), shape))


#: input -> (builder, level that refuses it or "accepted", message pattern)
IMAGE_CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "corrupt .nii.gz": (corrupt_gz, "screen", "unreadable or corrupt"),
    "truncated .nii.gz": (truncated_gz, "screen", "truncated or corrupt"),
    "truncated .nii": (truncated_nii, "screen", "truncated"),
    "text named .nii.gz": (text_named_nii_gz, "screen", "not a readable NIfTI"),
    "PNG named .nii.gz": (png_named_nii_gz, "screen", "not a readable NIfTI"),
    "gzip without NIfTI": (gzip_of_zeros, "screen", "not a readable NIfTI|unreadable or corrupt"),
    "MGH image": (mgh_named_nii_gz, "screen", "not a NIfTI image"),
    "4D FLAIR": (four_d, "screen", "4D image with 3 volumes"),
    "4D, one volume": (four_d_single_volume, "accepted", ""),
    "2D image": (two_d, "screen", "2D image"),
    "single slice": (single_slice, "screen", "too few voxels"),
    "a few NaN/Inf": (nan_few, "accepted", ""),
    "mostly NaN": (nan_most, "load", "NaN or Inf"),
    "mostly -Inf": (inf_most, "load", "NaN or Inf"),
    "all zero": (all_zero, "screen", "every voxel is 0"),  # compresses > 100-fold: streamed at screening
    "constant": (constant, "screen", "constant"),
    "binary mask": (binary_mask, "load", "binary mask"),
    "int8": (int8, "accepted", ""),
    "uint16": (uint16, "accepted", ""),
    "float64": (float64, "accepted", ""),
    "complex64": (complex64, "screen", "complex-valued"),
    "RGB24": (rgb24, "screen", "RGB or structured"),
    "header claims 30000^3": (huge_header, "screen", "absurd dimensions"),
    "header claims 3e8 voxels": (many_voxels_header, "screen", "absurd dimensions"),
    "singular affine": (singular_affine, "screen", "affine"),
    "voxel sizes in metres": (zooms_in_metres, "screen", "voxel sizes"),
    "oblique": (oblique, "accepted", ""),
    "sagittal": (sagittal, "accepted", ""),
    "5 mm slices": (thick_slices, "accepted", ""),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_matrix(case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build, level, message = IMAGE_CASES[case]
    path = build(tmp_path / "sub-01_FLAIR.nii.gz")
    if level == "screen":
        with pytest.raises(InputError, match=message) as info:
            screen_flair(path)
        assert str(path) in str(info.value)
        with pytest.raises(InputError, match=message):  # the workflow's own first step agrees
            load_flair(path)
        return
    screen_flair(path)  # header-level checks pass
    if level == "load":
        with pytest.raises(InputError, match=message) as info:
            load_flair(path)
        assert str(path) in str(info.value)
        return
    with caplog.at_level(logging.WARNING, logger="bids_msseg"):
        img = load_flair(path)
    source = nib.load(str(path))
    assert img.shape == source.shape[:3] and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, source.affine, atol=1e-6)
    data = np.asarray(img.dataobj)
    assert np.all(np.isfinite(data))
    if case == "a few NaN/Inf":
        assert "8 NaN/Inf voxels" in caplog.text and data[0, 0, 0] == 0


def test_gzip_size_check_reads_only_the_trailer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-formed .nii.gz is accepted from its gzip trailer; a multi-member gzip (whose trailer
    describes only its last member) is decompressed to count, and accepted too."""
    import bids_msseg.validate as validate

    path = _save(tmp_path / "sub-01_FLAIR.nii.gz", _head())

    def no_decompression(*args, **kwargs):
        raise AssertionError("decompressed although the trailer matched")

    with monkeypatch.context() as patch:
        patch.setattr(validate, "_gzip_uncompressed_size", no_decompression)
        screen_flair(path)
    raw = gzip.decompress(path.read_bytes())
    multi = tmp_path / "sub-02_FLAIR.nii.gz"
    multi.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    screen_flair(multi)
    assert np.array_equal(np.asarray(load_flair(multi).dataobj), np.asarray(load_flair(path).dataobj))


def test_huge_header_is_refused_without_allocating(tmp_path: Path) -> None:
    for build in (huge_header, many_voxels_header):
        path = build(tmp_path / f"{build.__name__}_FLAIR.nii.gz")
        tracemalloc.start()
        try:
            with pytest.raises(InputError, match="absurd dimensions"):
                load_flair(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 5_000_000, f"{build.__name__}: {peak} bytes allocated"


@pytest.mark.parametrize("case", ["oblique", "sagittal", "5 mm slices"])
def test_unusual_geometry_preprocesses_on_its_own_grid(case: str, tmp_path: Path) -> None:
    path = IMAGE_CASES[case][0](tmp_path / "sub-01_FLAIR.nii.gz")
    result = preprocess_flair(path, force_n4=False, force_skullstrip=False)
    assert nib.aff2axcodes(result.ras.affine) == ("R", "A", "S")
    assert result.brain_mask.shape == result.ras.shape
    assert 300 < result.brain_volume_ml < 2500


def test_flair_without_brain_is_refused(tmp_path: Path) -> None:
    data = _head()
    small = np.zeros_like(data)
    small[20:28, 24:32, 16:24] = data[20:28, 24:32, 16:24]  # 512 voxels of 64 mm3: 33 mL
    path = _save(tmp_path / "sub-01_FLAIR.nii.gz", small)
    screen_flair(path)
    load_flair(path)
    # Brain extraction forced off keeps this fast; the mixed end-to-end run below lets it decide.
    with pytest.raises(InputError, match="no brain found.*a 33 mL mask"):
        preprocess_flair(path, force_skullstrip=False)


# -------------------------------------------------------------------- runs refused before the workflow


def _run(bids: Path, relpath: str, **kwargs) -> FlairRun:
    return FlairRun(path=bids / relpath, relpath=relpath, entities={"subject": "01"}, **kwargs)


def test_screen_run_refuses_names_that_would_escape_the_output(tmp_path: Path, save_flair) -> None:
    good = save_flair(tmp_path / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz")
    screen_run(_run(tmp_path, "sub-01/anat/sub-01_FLAIR.nii.gz"), tmp_path / "out")
    for relpath in ("../../x/sub-01_FLAIR.nii.gz", "sub-01/anat/sub-..%2F_FLAIR.nii.gz",
                    "/etc/sub-01_FLAIR.nii.gz", "sub-01/anat/sub-01_acq-a.b_FLAIR.nii.gz"):
        run = FlairRun(path=good, relpath=relpath, entities={"subject": "01"})
        with pytest.raises(InputError, match="cannot name derivatives"):
            screen_run(run, tmp_path / "out")


def test_screen_runs_writes_a_crash_report_per_refused_run(tmp_path: Path, save_flair) -> None:
    bids = tmp_path / "bids"
    save_flair(bids / "sub-01/anat/sub-01_FLAIR.nii.gz")
    four_d(_mkparent(bids / "sub-02/anat/sub-02_FLAIR.nii.gz"))
    save_flair(bids / "sub-03/anat/sub-03_FLAIR.nii.gz")
    runs = [_run(bids, "sub-01/anat/sub-01_FLAIR.nii.gz"), _run(bids, "sub-02/anat/sub-02_FLAIR.nii.gz"),
            _run(bids, "sub-03/anat/sub-03_FLAIR.nii.gz", problem="cannot use FLAIR x: its sidecar is bad")]
    good, rejected = screen_runs(runs, tmp_path / "out")
    assert [r.relpath for r in good] == ["sub-01/anat/sub-01_FLAIR.nii.gz"]
    assert [r.run.name for r in rejected] == ["sub-02_FLAIR", "sub-03_FLAIR"]
    for refused in rejected:
        assert refused.crash_file.parent == tmp_path / "out" / "logs"
        text = refused.crash_file.read_text()
        assert refused.run.relpath in text and f"bids_msseg.errors.InputError: {refused.message}" in text
    assert "4D image with 3 volumes" in rejected[0].message and "sidecar is bad" in rejected[1].message


def _main(bids: Path, tmp_path: Path, *extra: str) -> int:
    return main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--nprocs", "1", "--omp-nthreads", "1", *extra])


def test_every_run_refused_exits_1_without_starting_the_workflow(
        tmp_path: Path, tiny_bundle: Path, caplog: pytest.LogCaptureFixture, make_bids_dataset, save_flair) -> None:
    bids = make_bids_dataset(tmp_path / "bids", runs=(), extra_files=())
    (bids / "dataset_description.json").unlink()  # not BIDS either: --skip-bids-validation gets past it
    four_d(_mkparent(bids / "sub-01/anat/sub-01_FLAIR.nii.gz"))
    truncated_gz(_mkparent(bids / "sub-02/anat/sub-02_FLAIR.nii.gz"))
    text_named_nii_gz(_mkparent(bids / "sub-03/anat/sub-03_FLAIR.nii.gz"))
    # Good images whose names cannot name derivatives (pybids indexes them when not validating).
    save_flair(bids / "sub-04/anat/sub-04_foo-bar_FLAIR.nii.gz")
    save_flair(bids / "sub-05/anat/sub-06_FLAIR.nii.gz")
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert _main(bids, tmp_path, "--model", str(tiny_bundle)) == 16  # validation on: not BIDS
    caplog.clear()
    assert _main(bids, tmp_path, "--model", str(tiny_bundle), "--skip-bids-validation") == 1
    out = tmp_path / "out"
    crash_files = sorted((out / "logs").glob("crash-*-validate.txt"))
    assert len(crash_files) == 5
    assert "0 ok, 5 failed, 0 skipped" in caplog.text
    for relpath, reason in (("sub-01/anat/sub-01_FLAIR.nii.gz", "4D image"),
                            ("sub-02/anat/sub-02_FLAIR.nii.gz", "truncated"),
                            ("sub-03/anat/sub-03_FLAIR.nii.gz", "not a readable NIfTI"),
                            ("sub-04/anat/sub-04_foo-bar_FLAIR.nii.gz", "invalid BIDS entity 'foo-bar'"),
                            ("sub-05/anat/sub-06_FLAIR.nii.gz", "expected it under sub-06/<datatype>/")):
        assert f"FAILED  {relpath} (failed at validate; crash file" in caplog.text
        assert reason in caplog.text
    assert not list(out.glob("sub-*")) and not list(out.glob("*.html"))
    assert not list((tmp_path / "work").glob("bids_msseg_*"))  # no workflow was built


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------- sidecars


def test_broken_sidecar_costs_only_its_own_run(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids", runs=(
        ("sub-01/anat/sub-01_FLAIR.nii.gz", {"seed": 1}),
        ("sub-02/anat/sub-02_FLAIR.nii.gz", {"seed": 2}),
        ("sub-03/anat/sub-03_FLAIR.nii.gz", {"seed": 3}),
    ))
    (bids / "FLAIR.json").write_text(json.dumps({"RepetitionTime": 9.0, "SkullStripped": False}))
    (bids / "sub-01/anat/sub-01_FLAIR.json").write_text("{not json")
    (bids / "sub-02/anat/sub-02_FLAIR.json").write_text("[1, 2, 3]")
    (bids / "sub-02/anat/sub-02_T1w.json").write_bytes(b"\xff\xfe not utf-8")  # another modality's
    with caplog.at_level(logging.WARNING, logger="bids_msseg"):
        runs = {r.subject: r for r in collect_flair_runs(bids)}
    assert "indexing the sidecar metadata" in caplog.text
    assert "not readable JSON" in runs["01"].problem and "sub-01_FLAIR.json" in runs["01"].problem
    assert "holds a JSON list, not an object" in runs["02"].problem
    assert runs["03"].problem is None
    assert runs["03"].metadata["RepetitionTime"] == 9.0  # inherited from the dataset-level sidecar
    assert runs["03"].metadata["SeriesDescription"] == "sub-03_FLAIR"
    good, rejected = screen_runs(list(runs.values()), tmp_path / "out")
    assert [r.subject for r in good] == ["03"] and len(rejected) == 2


def test_read_sidecars_agrees_with_pybids(tmp_path: Path, make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids", runs=(
        ("sub-01/ses-1/anat/sub-01_ses-1_acq-3D_FLAIR.nii.gz", {"seed": 1}),
        ("sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz", {"seed": 2}),
    ))
    (bids / "FLAIR.json").write_text(json.dumps({"RepetitionTime": 9.0, "EchoTime": 0.1}))
    (bids / "acq-3D_FLAIR.json").write_text(json.dumps({"EchoTime": 0.2, "MRAcquisitionType": "2D"}))
    (bids / "sub-01" / "sub-01_FLAIR.json").write_text(json.dumps({"RepetitionTime": 8.0}))
    for run in collect_flair_runs(bids):
        assert read_sidecars(bids, run.path) == dict(run.metadata), run.relpath


# -------------------------------------------------------------------- dataset and command line


def test_subject_without_flair(tmp_path: Path, caplog: pytest.LogCaptureFixture, make_bids_dataset) -> None:
    bids = make_bids_dataset(tmp_path / "bids", runs=(("sub-01/anat/sub-01_FLAIR.nii.gz", {"seed": 1}),),
                             extra_files=("sub-02/anat/sub-02_T1w.nii.gz",))
    assert _main(bids, tmp_path, "--participant-label", "02") == 18
    assert "sub-02 has no FLAIR image at all" in caplog.text
    with caplog.at_level(logging.WARNING, logger="bids_msseg"):
        runs = collect_flair_runs(bids, participant_labels=["01", "02"])
    assert [r.subject for r in runs] == ["01"]
    assert "no FLAIR selected for participant(s) 02" in caplog.text


@pytest.mark.parametrize("flag", ["--participant-label", "--session-label"])
@pytest.mark.parametrize("label", ["../../x", "sub-../x", "01/../../02", "01 02;rm"])
def test_labels_cannot_be_paths(flag: str, label: str, tmp_path: Path, synthetic_bids: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(synthetic_bids, tmp_path, flag, label) == 64
    assert "is not a BIDS label" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_filter_values_cannot_reach_outside(tmp_path: Path, synthetic_bids: Path) -> None:
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"flair": {"subject": "../../x", "session": ["..", "1"]}}))
    assert _main(synthetic_bids, tmp_path, "--bids-filter-file", str(filters)) == 18
    assert not list((tmp_path / "out").glob("sub-*")) and not (tmp_path / "x").exists()


def test_output_not_writable_exit_73(tmp_path: Path, synthetic_bids: Path) -> None:
    import os

    if os.geteuid() == 0:  # root writes through permission bits; /proc refuses even root
        out = Path("/proc/self")
    else:
        out = tmp_path / "readonly"
        out.mkdir()
        out.chmod(0o555)
    assert main([str(synthetic_bids), str(out), "participant", "-w", str(tmp_path / "w")]) == 73


def _copy_bundle(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).write_bytes(item.read_bytes())
    return dst


def test_bundle_with_wrong_checksum_exit_64(tmp_path: Path, synthetic_bids: Path, tiny_bundle: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    bundle = _copy_bundle(tiny_bundle, tmp_path / "bundle")
    weights = bundle / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    assert _main(synthetic_bids, tmp_path, "--model", str(bundle)) == 64
    assert "does not match the card" in caplog.text
    assert not list((tmp_path / "out").glob("sub-*"))


class _Payload:
    """Unpickling this object creates a file: proof that a pickle was (not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_refused(tmp_path: Path, synthetic_bids: Path, tiny_bundle: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    from bids_msseg.model.bundle import BundleError, load_bundle, read_card, sha256_file

    marker = tmp_path / "unpickled"
    bundle = _copy_bundle(tiny_bundle, tmp_path / "bundle")
    (bundle / "model.safetensors").unlink()
    (bundle / "model.pt").write_bytes(pickle.dumps(_Payload(marker)))
    assert _main(synthetic_bids, tmp_path, "--model", str(bundle)) == 64
    assert "pickled weights are refused" in caplog.text
    # A pickle renamed model.safetensors, with a card that vouches for its checksum.
    (bundle / "model.pt").rename(bundle / "model.safetensors")
    card = json.loads((bundle / "model.json").read_text())
    card["weights_sha256"] = sha256_file(bundle / "model.safetensors")
    (bundle / "model.json").write_text(json.dumps(card))
    assert read_card(bundle).weights_sha256 == card["weights_sha256"]
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        load_bundle(bundle)
    assert not marker.exists()


def test_no_pickle_loading_in_the_package() -> None:
    """torch.load (pickle-based) and pickle/joblib loaders appear nowhere in the package source."""
    import re

    package = REPO_ROOT / "bids_msseg"
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|joblib\.load\(|allow_pickle\s*=\s*True|dill\.")
    offenders = [f"{p.relative_to(package)}:{i + 1}" for p in package.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert offenders == []


def test_derivative_paths_stay_inside_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for relpath in ("sub-01/anat/sub-01_FLAIR.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_acq-3D_run-2_FLAIR.nii"):
        for path in derivative_paths(out, relpath).values():
            assert path.resolve().is_relative_to(out.resolve())


# ------------------------------------------------------------------ good and bad runs together (slow)


@pytest.mark.slow
def test_mixed_dataset_bad_runs_never_stop_the_good_ones(tmp_path: Path, tiny_bundle: Path,
                                                         caplog: pytest.LogCaptureFixture, make_bids_dataset) -> None:
    from tests.e2e.helpers import check_run_outputs

    bids = make_bids_dataset(tmp_path / "bids", runs=(), extra_files=("sub-08/anat/sub-08_T1w.nii.gz",))
    builders = {"01": oblique, "02": sagittal, "04": four_d, "05": nan_most, "07": oblique}
    for label, build in builders.items():
        build(_mkparent(bids / f"sub-{label}/anat/sub-{label}_FLAIR.nii.gz"))
    thick = (64, 72, 26)  # 3 x 3 x 5 mm
    _save(_mkparent(bids / "sub-03/anat/sub-03_FLAIR.nii.gz"), head_like_flair(thick, seed=6, skull=False),
          _affine((3.0, 3.0, 5.0), thick))
    no_brain = np.zeros(SHAPE, np.float32)
    no_brain[20:28, 24:32, 16:24] = _head()[20:28, 24:32, 16:24]
    _save(_mkparent(bids / "sub-06/anat/sub-06_FLAIR.nii.gz"), no_brain)
    (bids / "sub-07/anat/sub-07_FLAIR.json").write_text('{"SkullStripped": tru')
    caplog.set_level(logging.INFO, logger="bids_msseg")

    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--model", str(tiny_bundle),
                 "--nprocs", "2", "--omp-nthreads", "1"]) == 1

    for label in ("01", "02", "03"):
        check_run_outputs(out, bids, f"sub-{label}/anat/sub-{label}_FLAIR.nii.gz")
    assert "3 ok, 4 failed, 0 skipped" in caplog.text
    assert "no FLAIR selected for participant(s) 08" in caplog.text
    reasons = {"04": ("validate", "4D image with 3 volumes"), "05": ("preprocess", "NaN or Inf"),
               "06": ("preprocess", "no brain found"), "07": ("validate", "sub-07_FLAIR.json is not readable JSON")}
    logs = sorted((out / "logs").glob("crash-*.txt"))
    assert len(logs) == 4
    for label, (step, reason) in reasons.items():
        relpath = f"sub-{label}/anat/sub-{label}_FLAIR.nii.gz"
        assert f"FAILED  {relpath} (failed at {step}; crash file {out / 'logs'}" in caplog.text
        assert reason in caplog.text
        assert [p for p in logs if f"sub_{label}_FLAIR" in p.read_text() or f"sub-{label}_FLAIR" in p.name]
        paths = derivative_paths(out, relpath)
        assert not paths["summary"].exists() and not paths["report"].exists()
    hidden = [p for p in out.rglob(".*") if p.name != ".bidsignore"]
    assert hidden == []
