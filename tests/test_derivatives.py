"""Derivative names, writing and dataset files (bids_msseg/derivatives.py), and the official validator."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg import derivatives
from bids_msseg.derivatives import derivative_paths, write_dataset_description, write_run_derivatives
from bids_msseg.errors import OutputError
from bids_msseg.lesions import LesionDefinition, binarize, lesion_table

SHAPE = (20, 24, 18)
SES_SOURCE = "sub-01/ses-1/anat/sub-01_ses-1_acq-3d_run-2_FLAIR.nii.gz"
PLAIN_SOURCE = "sub-02/anat/sub-02_FLAIR.nii"
DECISIONS = {"n4": {"applied": True, "reason": "no bias-correction flag in the sidecar"},
             "brain_extraction": {"applied": False, "reason": "background is zero: already skull-stripped"}}


def oblique_img(qform_differs: bool = True) -> nib.Nifti1Image:
    """A FLAIR with an oblique, anisotropic, flipped affine; optionally a qform unlike the sform."""
    rng = np.random.default_rng(0)
    angle = np.deg2rad(12)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.9, 1.1, 1.5])
    affine[:3, 3] = [12.0, -20.0, -14.0]
    img = nib.Nifti1Image((rng.random(SHAPE) * 300).astype(np.int16), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=2)
    qform = affine.copy()
    if qform_differs:
        qform[:3, 3] += [1.0, 0.0, 0.0]
    img.set_qform(qform, code=1)
    return img


def segmentation(img: nib.Nifti1Image, n_blobs: int = 2):
    """Probability, labels, count, brain mask and lesion table on the image's grid."""
    prob = np.zeros(SHAPE, np.float32)
    prob[4:8, 4:8, 4:8] = 0.9
    if n_blobs > 1:
        prob[13:15, 15:18, 10:12] = 0.7
    prob[1, 1, 1] = 0.8  # a single voxel, below the minimum size: not a lesion
    definition = LesionDefinition(connectivity=3, min_size_mm3=5.0)
    voxel = float(abs(np.linalg.det(img.affine[:3, :3])))
    _, labels, n = binarize(prob, 0.5, voxel, definition)
    brain = np.zeros(SHAPE, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    return prob, labels, n, brain, lesion_table(labels, n, img.affine, prob), definition


def write(out: Path, source: str, img: nib.Nifti1Image, **kwargs) -> dict[str, Path]:
    prob, labels, n, brain, table, definition = segmentation(img)
    return write_run_derivatives(out, source, img, prob, labels, n, brain, table, threshold=0.5,
                                 definition=definition, model_id="msseg-unetplusplus@0123456789ab",
                                 decisions=DECISIONS, **kwargs)


# ------------------------------------------------------------------------------------------ names


def test_names_keep_session_acq_run(tmp_path):
    paths = derivative_paths(tmp_path, SES_SOURCE)
    folder = tmp_path / "sub-01" / "ses-1" / "anat"
    stem = "sub-01_ses-1_acq-3d_run-2"
    assert paths["mask"] == folder / f"{stem}_space-orig_label-lesion_mask.nii.gz"
    assert paths["probseg"] == folder / f"{stem}_space-orig_label-lesion_probseg.nii.gz"
    assert paths["dseg"] == folder / f"{stem}_space-orig_seg-lesions_dseg.nii.gz"
    assert paths["dseg_tsv"] == folder / f"{stem}_space-orig_seg-lesions_dseg.tsv"
    assert paths["brain"] == folder / f"{stem}_space-orig_desc-brain_mask.nii.gz"
    assert paths["summary"] == folder / f"{stem}_desc-lesions_summary.tsv"
    assert paths["summary_json"] == folder / f"{stem}_desc-lesions_summary.json"
    assert paths["report"] == tmp_path / f"{stem}_desc-lesions_report.html"
    for key in ("mask", "probseg", "dseg", "brain"):
        assert paths[f"{key}_json"] == paths[key].with_name(paths[key].name.replace(".nii.gz", ".json"))
    assert not any(tmp_path.iterdir()), "naming must not create anything"


def test_names_without_session_and_plain_nii(tmp_path):
    paths = derivative_paths(tmp_path, PLAIN_SOURCE)
    assert paths["mask"] == tmp_path / "sub-02/anat/sub-02_space-orig_label-lesion_mask.nii.gz"
    assert paths["dseg_tsv"].name == "sub-02_space-orig_seg-lesions_dseg.tsv"
    assert paths["report"] == tmp_path / "sub-02_desc-lesions_report.html"


def test_names_follow_bids_entity_order(tmp_path):
    # chunk comes after space in BIDS order; ce/rec/echo/part stay where they were.
    source = "sub-01/anat/sub-01_ce-gad_rec-norm_run-1_echo-2_part-mag_chunk-3_FLAIR.nii.gz"
    assert derivative_paths(tmp_path, source)["mask"].name == (
        "sub-01_ce-gad_rec-norm_run-1_echo-2_part-mag_space-orig_chunk-3_label-lesion_mask.nii.gz")


def test_bare_file_name_is_placed_in_its_subject_folder(tmp_path):
    paths = derivative_paths(tmp_path, "sub-03_ses-a_FLAIR.nii.gz")
    assert paths["brain"] == tmp_path / "sub-03/ses-a/anat/sub-03_ses-a_space-orig_desc-brain_mask.nii.gz"
    uri = derivatives.raw_uri("sub-03_ses-a_FLAIR.nii.gz")
    assert uri == "bids:raw:sub-03/ses-a/anat/sub-03_ses-a_FLAIR.nii.gz"


@pytest.mark.parametrize("source", [
    "../sub-01/anat/sub-01_FLAIR.nii.gz",
    "sub-01/anat/../../../etc/sub-01_FLAIR.nii.gz",
    "sub-01/./anat/sub-01_FLAIR.nii.gz",
    "/data/sub-01/anat/sub-01_FLAIR.nii.gz",
    "C:/data/sub-01_FLAIR.nii.gz",
    "sub-01\\anat\\sub-01_FLAIR.nii.gz",
    "sub-02/anat/sub-01_FLAIR.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-1_FLAIR.nii.gz",
    "sub-01/anat/sub-0..1_FLAIR.nii.gz",
    "sub-01/anat/sub-01_acq-a_b_FLAIR.nii.gz",
    "sub-01/anat/sub-01_acq-a-b_FLAIR.nii.gz",
    "sub-01/anat/sub-01_foo-1_FLAIR.nii.gz",
    "sub-01/anat/sub-01_run-x_FLAIR.nii.gz",
    "sub-01/anat/sub-01_run-1_run-2_FLAIR.nii.gz",
    "sub-01/anat/acq-1_sub-01_FLAIR.nii.gz",
    "sub-01/anat/sub-01_FLAIR.mgz",
    "sub-01/anat/sub-01.nii.gz",
    "",
])
def test_unsafe_or_malformed_sources_are_rejected(tmp_path, source):
    with pytest.raises(OutputError):
        derivative_paths(tmp_path / "out", source)
    assert not (tmp_path / "out").exists()


def test_entity_order_matches_bids_schema():
    schema = pytest.importorskip("bidsschematools.schema").load_schema()
    order = [schema["objects"]["entities"][name]["name"] for name in schema["rules"]["entities"]]
    assert list(derivatives.ENTITY_ORDER) == order


# ---------------------------------------------------------------------------------------- writing


def test_outputs_keep_grid_affine_qform_and_sform(tmp_path):
    img = oblique_img(qform_differs=True)
    prob, labels, n, brain, _, _ = segmentation(img)
    paths = write(tmp_path, SES_SOURCE, img)
    for key in ("mask", "probseg", "dseg", "brain"):
        out = nib.load(paths[key])
        assert out.shape == img.shape
        np.testing.assert_allclose(out.affine, img.affine, atol=1e-5)
        for coded in ("get_qform", "get_sform"):
            ref_matrix, ref_code = getattr(img, coded)(coded=True)
            out_matrix, out_code = getattr(out, coded)(coded=True)
            assert int(out_code) == int(ref_code), (key, coded)
            np.testing.assert_allclose(out_matrix, ref_matrix, atol=1e-5, err_msg=f"{key} {coded}")
        assert out.header.get_xyzt_units() == ("mm", "sec")
    mask = nib.load(paths["mask"])
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), labels > 0)
    dseg = nib.load(paths["dseg"])
    assert dseg.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(dseg.dataobj), labels)
    assert n == 2 and np.asanyarray(dseg.dataobj).max() == 2
    probseg = nib.load(paths["probseg"])
    assert probseg.get_data_dtype() == np.float32
    np.testing.assert_array_equal(probseg.get_fdata(dtype=np.float32), prob)
    np.testing.assert_array_equal(np.asanyarray(nib.load(paths["brain"]).dataobj), brain)


def test_probability_is_clipped_and_dseg_widens_beyond_255_lesions(tmp_path):
    img = oblique_img(qform_differs=False)
    labels = np.zeros(SHAPE, np.int32)
    coords = np.argwhere(np.ones(SHAPE, bool))[::28][:300]  # 300 isolated single voxels
    labels[tuple(coords.T)] = np.arange(1, 301)
    prob = (labels > 0) * 1.2 - 0.1  # out of [0, 1] on purpose
    table = lesion_table(labels, 300, img.affine, None)
    paths = write_run_derivatives(tmp_path, PLAIN_SOURCE, img, prob, labels, 300, labels >= 0, table,
                                  threshold=0.5, definition=LesionDefinition(min_size_mm3=0.0),
                                  model_id="m", decisions={})
    dseg = nib.load(paths["dseg"])
    assert dseg.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asanyarray(dseg.dataobj), labels)
    values = nib.load(paths["probseg"]).get_fdata()
    assert values.min() == 0.0 and values.max() == 1.0
    assert len(pd.read_csv(paths["dseg_tsv"], sep="\t")) == 300


def test_sidecars_tables_and_summary(tmp_path):
    img = oblique_img()
    prob, labels, n, brain, table, _ = segmentation(img)
    paths = write(tmp_path, SES_SOURCE, img, extra_meta={"Type": "ignored", "Software": {"torch": "2"}})
    raw = "bids:raw:" + SES_SOURCE
    mask_meta = json.loads(paths["mask_json"].read_text())
    assert mask_meta["Type"] == "Lesion"
    assert mask_meta["Sources"][0] == raw and mask_meta["SpatialReference"] == raw
    assert mask_meta["Threshold"] == 0.5 and mask_meta["MinimumLesionSize_mm3"] == 5.0
    assert mask_meta["Connectivity"] == 26
    assert mask_meta["ModelID"] == "msseg-unetplusplus@0123456789ab"
    assert mask_meta["PreprocessingDecisions"] == DECISIONS
    assert mask_meta["Software"] == {"torch": "2"}
    for key in ("probseg", "dseg", "brain"):
        meta = json.loads(paths[f"{key}_json"].read_text())
        assert meta["SpatialReference"] == raw and raw in meta["Sources"] and meta["Description"]
    assert json.loads(paths["brain_json"].read_text())["Type"] == "Brain"

    tsv = pd.read_csv(paths["dseg_tsv"], sep="\t")
    assert list(tsv.columns[:2]) == ["index", "name"] and list(tsv.columns) == list(table.columns)
    assert tsv["index"].tolist() == [1, 2]
    assert tsv["volume_mm3"].tolist() == table["volume_mm3"].tolist()

    voxel = float(abs(np.linalg.det(img.affine[:3, :3])))
    summary = pd.read_csv(paths["summary"], sep="\t", keep_default_na=False)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["participant_id"] == "sub-01" and row["session_id"] == "ses-1" and row["source"] == SES_SOURCE
    assert row["lesion_count"] == n == 2
    assert row["total_lesion_volume_ml"] == pytest.approx((labels > 0).sum() * voxel / 1000, abs=1e-4)
    assert row["brain_volume_ml"] == pytest.approx(brain.sum() * voxel / 1000, abs=1e-3)
    assert row["model_id"] == "msseg-unetplusplus@0123456789ab"
    assert row["preproc_n4_reason"] == DECISIONS["n4"]["reason"]
    described = json.loads(paths["summary_json"].read_text())
    assert set(summary.columns) <= set(described)
    assert described["PreprocessingDecisions"] == DECISIONS


def test_summary_without_session_says_na(tmp_path):
    paths = write(tmp_path, PLAIN_SOURCE, oblique_img())
    assert "\tn/a\t" in paths["summary"].read_text().splitlines()[1]


@pytest.mark.parametrize("change", ["shape", "labels", "table"])
def test_inconsistent_inputs_are_refused(tmp_path, change):
    img = oblique_img()
    prob, labels, n, brain, table, definition = segmentation(img)
    if change == "shape":
        brain = brain[:-1]
    elif change == "labels":
        n += 1
        table = pd.concat([table, table.iloc[:1]])
    else:
        table = table.iloc[:1]
    with pytest.raises(ValueError):
        write_run_derivatives(tmp_path, SES_SOURCE, img, prob, labels, n, brain, table, threshold=0.5,
                              definition=definition, model_id="m", decisions={})
    assert not list(tmp_path.rglob("*.nii.gz"))


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    img = oblique_img()
    paths = write(tmp_path, SES_SOURCE, img)
    before = paths["probseg"].read_bytes()

    def broken_save(image, filename):
        Path(filename).write_bytes(b"half a NIfTI")
        raise OSError("disk full")

    monkeypatch.setattr(derivatives.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path, SES_SOURCE, img)
    assert paths["probseg"].read_bytes() == before, "the previous complete file must survive"
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "temporary files must be removed"


# ----------------------------------------------------------------------------------- dataset level


def test_dataset_description_content_and_idempotence(tmp_path, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "r", "BIDSVersion": "1.10.0",
                                                              "DatasetDOI": "doi:10.1/abc"}))
    out = tmp_path / "out"
    target = write_dataset_description(out, raw, version="1.2.3",
                                       container={"Type": "docker", "Tag": "bids_msseg:1.2.3"},
                                       code_url="https://example.org/bids_msseg")
    content = json.loads(target.read_text())
    assert content["DatasetType"] == "derivative" and content["BIDSVersion"]
    assert content["GeneratedBy"] == [{"Name": "bids_msseg", "Version": "1.2.3",
                                       "CodeURL": "https://example.org/bids_msseg",
                                       "Container": {"Type": "docker", "Tag": "bids_msseg:1.2.3"}}]
    assert content["DatasetLinks"] == {"raw": raw.resolve().as_uri()}
    assert content["SourceDatasets"] == [{"DOI": "doi:10.1/abc"}] and content["HowToAcknowledge"]
    ignore = (out / ".bidsignore").read_text().splitlines()
    assert {"logs/", "*.html", "*_desc-lesions_summary.tsv"} <= set(ignore)

    text = target.read_text()
    with caplog.at_level(logging.WARNING):
        write_dataset_description(out, raw, version="1.2.3", container={"Type": "docker",
                                  "Tag": "bids_msseg:1.2.3"}, code_url="https://example.org/bids_msseg")
    assert target.read_text() == text and not caplog.records
    (out / ".bidsignore").write_text("my_notes/\n")
    write_dataset_description(out, raw, version="1.3.0")
    assert "GeneratedBy" in caplog.text and "replacing" in caplog.text
    assert json.loads(target.read_text())["GeneratedBy"][0]["Version"] == "1.3.0"
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines[0] == "my_notes/" and "logs/" in lines and len(lines) == len(set(lines))


def test_dataset_links_relative_inside_raw(tmp_path):
    out = tmp_path / "derivatives" / "bids_msseg"
    content = json.loads(write_dataset_description(out, tmp_path, version="1").read_text())
    assert content["DatasetLinks"]["raw"] == "../.."


@pytest.mark.parametrize("existing", [
    {"Name": "fMRIPrep outputs", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
     "GeneratedBy": [{"Name": "fMRIPrep"}]},
    {"Name": "raw data", "BIDSVersion": "1.9.0"},
    "not json {",
])
def test_dataset_description_of_others_is_not_clobbered(tmp_path, existing):
    target = tmp_path / "dataset_description.json"
    target.write_text(existing if isinstance(existing, str) else json.dumps(existing))
    before = target.read_text()
    with pytest.raises(OutputError):
        write_dataset_description(tmp_path, tmp_path / "raw", version="1")
    assert target.read_text() == before


# --------------------------------------------------------------------------------------- validator


def make_raw_dataset(root: Path, sources: list[str]) -> None:
    """A tiny valid raw BIDS dataset holding synthetic FLAIRs at ``sources``."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "synthetic", "BIDSVersion": "1.10.0", "Authors": ["A. Tester", "B. Tester"]}))
    (root / "README").write_text("Synthetic FLAIR images for testing bids_msseg's derivatives.\n")
    (root / "participants.tsv").write_text("participant_id\n" + "".join(
        f"{s}\n" for s in sorted({src.split('/')[0] for src in sources})))
    for i, source in enumerate(sources):
        path = root / source
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(oblique_img(qform_differs=bool(i % 2)), path)
        path.with_name(path.name.split(".")[0] + ".json").write_text(json.dumps({"RepetitionTime": 9.0}))


@pytest.mark.skipif(shutil.which("bids-validator-deno") is None,
                    reason="bids-validator-deno is not on PATH (pip install bids-validator-deno)")
def test_bids_validator_accepts_outputs(tmp_path, run_validator):
    from bids_msseg.reports.participant import render_participant_report

    raw = tmp_path / "raw"
    sources = [SES_SOURCE, PLAIN_SOURCE, "sub-03/anat/sub-03_run-1_FLAIR.nii.gz"]
    make_raw_dataset(raw, sources)
    raw_errors = [i for i in run_validator(raw) if i["severity"] == "error"]
    assert not raw_errors, f"the synthetic raw dataset itself is invalid: {raw_errors}"

    out = raw / "derivatives" / "bids_msseg"
    write_dataset_description(out, raw, version="0.1.0")
    for source in sources:
        img = nib.load(raw / source)
        prob, labels, n, brain, table, definition = segmentation(img, n_blobs=0 if "sub-03" in source else 2)
        paths = write_run_derivatives(out, source, img, prob, labels, n, brain, table, threshold=0.5,
                                      definition=definition, model_id="msseg-unetplusplus@0123456789ab",
                                      decisions=DECISIONS)
        render_participant_report(paths["report"], img, labels, brain, table,
                                  {"lesion_count": n}, DECISIONS)
    (out / "logs").mkdir()
    (out / "logs" / "CITATION.md").write_text("# Methods\n")

    issues = run_validator(out)
    errors = [(i["code"], i.get("location"), i.get("issueMessage"))
              for i in issues if i["severity"] == "error"]
    assert not errors, "bids-validator-deno reports errors:\n" + "\n".join(map(str, errors))
    assert len(list(out.rglob("*_mask.nii.gz"))) == 6 and len(list(out.glob("*_report.html"))) == 3


def test_tables_round_floats_and_write_booleans_in_lowercase(tmp_path: Path) -> None:
    """Issue 14: no float noise (-1.6320000000000006), no True/False in the TSVs."""
    from bids_msseg.derivatives import tsv_value, write_tsv

    assert tsv_value(0.6718391580083659) == "0.6718392" and tsv_value(-1.6320000000000006) == "-1.632"
    assert tsv_value(1022.4639999999996) == "1022.464" and tsv_value(3.0) == "3"
    assert tsv_value(True) == "true" and tsv_value(np.bool_(False)) == "false" and tsv_value("x") == "x"
    frame = pd.DataFrame({"dice": [0.6718391580083659, np.nan], "n4": [True, False], "n": [3, 4]})
    text = write_tsv(tmp_path / "t.tsv", frame).read_text()
    assert text == "dice\tn4\tn\n0.6718392\ttrue\t3\nn/a\tfalse\t4\n"
