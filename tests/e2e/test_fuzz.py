"""Bounded fuzzing of the NIfTI and sidecar handling (opt-in: ``pytest -m fuzz``).

Random bytes, randomly damaged NIfTI headers and random JSON sidecars go into the functions that
read inputs before any work. Only the documented exceptions may come out:

* ``screen_flair`` / ``load_flair``: :class:`~bids_msseg.errors.InputError` (called in the app's
  order: a file that fails the screening never reaches ``load_flair``);
* ``read_sidecars``: ``ValueError`` naming the sidecar;
* ``decide_preprocessing``, ``collect_flair_runs`` and the nipype input hashing of the metadata:
  nothing (a bad sidecar becomes a warning, or the run's ``problem``).

Examples per test are bounded (``FUZZ_EXAMPLES``, default 150) so a run takes a minute or two.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bids_msseg.bids import collect_flair_runs, read_sidecars  # noqa: E402
from bids_msseg.errors import InputError  # noqa: E402
from bids_msseg.preproc.decisions import decide_preprocessing  # noqa: E402
from bids_msseg.preproc.orient import load_flair  # noqa: E402
from bids_msseg.validate import screen_flair  # noqa: E402

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

SHAPE = (14, 12, 11)


def _valid_nifti_bytes() -> bytes:
    """A small, valid single-file NIfTI-1 (int16 head-like blob) as bytes."""
    rng = np.random.default_rng(0)
    data = (rng.normal(300, 40, SHAPE) * (np.indices(SHAPE)[0] > 2)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    return img.to_bytes()


VALID = _valid_nifti_bytes()
#: Header fields worth damaging one at a time: (byte offset, struct format).
FIELDS = {
    "sizeof_hdr": (0, "<i"), "dim": (40, "<8h"), "intent_code": (68, "<h"), "datatype": (70, "<h"),
    "bitpix": (72, "<h"), "pixdim": (76, "<8f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"), "xyzt_units": (123, "<B"), "qform_code": (252, "<h"), "sform_code": (254, "<h"),
    "quatern": (256, "<6f"), "srow": (280, "<12f"), "magic": (344, "<4s"),
}

floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
shorts = st.one_of(st.integers(-32768, 32767), st.sampled_from([0, 1, 2, 3, 4, 5, 7, 1024, 32767, -1]))


def _field_values(fmt: str) -> st.SearchStrategy:
    count = int(fmt[1:-1] or 1) if fmt[1:-1].isdigit() else 1
    kind = fmt[-1]
    if kind == "s":
        return st.binary(min_size=4, max_size=4).map(lambda b: (b,))
    element = {"h": shorts, "i": st.integers(-(2**31), 2**31 - 1), "f": floats, "B": st.integers(0, 255)}[kind]
    return st.lists(element, min_size=count, max_size=count).map(tuple)


@st.composite
def damaged_niftis(draw) -> bytes:
    """VALID with a few header fields set to random values, random bytes, or a cut."""
    blob = bytearray(VALID)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True)):
        offset, fmt = FIELDS[name]
        struct.pack_into(fmt, blob, offset, *draw(_field_values(fmt)))
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(blob) - 1))
        blob[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        blob = blob[: draw(st.integers(0, len(blob)))]
    return bytes(blob)


def _check_input(blob: bytes, suffix: str) -> None:
    """Write ``blob`` as a FLAIR; screening then loading may only raise InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"sub-01_FLAIR{suffix}"
        path.write_bytes(gzip.compress(blob, compresslevel=1) if suffix == ".nii.gz" else blob)
        try:
            screen_flair(path)
        except InputError:
            return
        try:
            img = load_flair(path)
        except InputError:
            return
        assert img.ndim == 3 and np.all(np.isfinite(np.asarray(img.dataobj)))


@FUZZ
@given(blob=st.binary(min_size=0, max_size=2048), suffix=st.sampled_from([".nii", ".nii.gz"]),
       raw_gzip=st.booleans())
def test_random_bytes(blob: bytes, suffix: str, raw_gzip: bool) -> None:
    if raw_gzip and suffix == ".nii.gz":  # bytes that are not gzip at all
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sub-01_FLAIR.nii.gz"
            path.write_bytes(blob)
            try:
                screen_flair(path)
                load_flair(path)
            except InputError:
                pass
        return
    _check_input(blob, suffix)


@FUZZ
@given(blob=damaged_niftis(), suffix=st.sampled_from([".nii", ".nii.gz"]))
def test_damaged_headers(blob: bytes, suffix: str) -> None:
    _check_input(blob, suffix)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
#: Keys the preprocessing decisions read, mixed with random ones.
sidecar_keys = st.sampled_from(["SkullStripped", "SkullStripping", "BiasCorrected", "N4BiasFieldCorrection",
                                "MRAcquisitionType", "MagneticFieldStrength", "ImageType"]) | st.text(max_size=12)
sidecars = st.dictionaries(sidecar_keys, json_values, max_size=6)


@FUZZ
@given(sidecar=sidecars)
def test_random_sidecars_in_decisions_and_hashing(sidecar: dict) -> None:
    from nipype.pipeline import engine as pe

    from bids_msseg.interfaces import Preprocess

    data = np.zeros(SHAPE, np.float32)
    data[3:11, 3:9, 3:8] = 300.0
    decisions = decide_preprocessing(data, (2.0, 2.0, 3.0), sidecar)
    json.loads(decisions.to_json())
    node = pe.Node(Preprocess(), name="preprocess")
    node.inputs.metadata = sidecar
    node.inputs.in_file = __file__
    assert node.inputs.get_hashval()[1]


@FUZZ
@given(content=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_random_sidecar_files(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        anat = Path(tmp) / "sub-01" / "anat"
        anat.mkdir(parents=True)
        flair = anat / "sub-01_FLAIR.nii.gz"
        flair.write_bytes(b"")
        (anat / "sub-01_FLAIR.json").write_bytes(content)
        try:
            metadata = read_sidecars(Path(tmp), flair)
        except ValueError as err:
            assert "sub-01_FLAIR.json" in str(err)
        else:
            assert isinstance(metadata, dict)


@settings(max_examples=max(5, EXAMPLES // 10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(content=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100)))
def test_random_sidecars_through_pybids(content: bytes, tmp_path_factory: pytest.TempPathFactory,
                                        make_bids_dataset) -> None:
    root = make_bids_dataset(tmp_path_factory.mktemp("fuzz_bids"), runs=(
        ("sub-01/anat/sub-01_FLAIR.nii.gz", {"seed": 1, "shape": (20, 22, 18)}),
        ("sub-02/anat/sub-02_FLAIR.nii.gz", {"seed": 2, "shape": (20, 22, 18)}),
    ), extra_files=())
    (root / "sub-01" / "anat" / "sub-01_FLAIR.json").write_bytes(content)
    runs = {run.subject: run for run in collect_flair_runs(root)}
    assert runs["02"].problem is None and runs["02"].metadata["SeriesDescription"] == "sub-02_FLAIR"
    assert runs["01"].problem is None or "sub-01_FLAIR.json" in runs["01"].problem
    io.StringIO().write(json.dumps(dict(runs["01"].metadata), default=str))
