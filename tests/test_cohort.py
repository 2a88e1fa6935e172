"""The group level without --train: cohort table, evaluation against expert masks, report.

A small synthetic BIDS dataset gets fake participant outputs written with
:func:`bids_msseg.derivatives.write_run_derivatives` (lesion masks of known boxes), expert masks in
``derivatives/manual`` and a crash file for one run; then ``main([... "group"])`` runs on it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.anatomy.location import LesionLocations, summary_columns, with_locations
from bids_msseg.cli.run import main
from bids_msseg.derivatives import (
    derivative_paths,
    write_dataset_description,
    write_location_derivatives,
    write_run_derivatives,
)
from bids_msseg.frequency import FREQUENCY_JSON, FREQUENCY_MAP
from bids_msseg.lesions import LesionDefinition, label_lesions, lesion_table

RUNS = (
    ("sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", {"orientation": "RAS", "seed": 1, "skull": False}),
    ("sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz", {"orientation": "LPS", "seed": 2, "skull": False}),
    ("sub-02/anat/sub-02_acq-2D_run-1_FLAIR.nii.gz", {"orientation": "LAS", "seed": 3, "skull": False}),
    ("sub-03/anat/sub-03_FLAIR.nii.gz", {"orientation": "RAS", "seed": 4, "skull": False}),
    ("sub-04/anat/sub-04_FLAIR.nii.gz", {"orientation": "RAS", "seed": 5, "skull": False}),
)
#: Voxel boxes of the predicted lesions (4 mm voxels: 64 mm3 each) of the runs that completed.
PRED_BOXES = {
    RUNS[0][0]: [(slice(20, 23), slice(20, 23), slice(18, 21)), (slice(30, 32), slice(30, 32), slice(10, 12))],
    RUNS[2][0]: [(slice(10, 14), slice(20, 22), slice(18, 20))],
    RUNS[3][0]: [],
}
#: Expert masks: run 0 overlaps its first predicted lesion partly and misses nothing else;
#: run 2 has one expert lesion elsewhere (a miss and a false positive).
EXPERT_BOXES = {
    RUNS[0][0]: [(slice(21, 24), slice(20, 23), slice(18, 21))],
    RUNS[2][0]: [(slice(30, 33), slice(30, 33), slice(25, 27))],
}
SIDECARS = {
    RUNS[0][0]: {"InstitutionName": "Ignored Hospital", "Manufacturer": "Siemens", "MagneticFieldStrength": 3},
    RUNS[2][0]: {"InstitutionName": "Second Hospital", "Manufacturer": "Philips",
                 "ManufacturersModelName": "Ingenia", "MagneticFieldStrength": 1.5},
    RUNS[3][0]: {"Manufacturer": "GE", "ManufacturersModelName": "Signa", "MagneticFieldStrength": 3},
}
DECISIONS = {"n4": False, "skullstrip": True, "reasons": {"n4": "sidecar says so", "skullstrip": "has skull"}}


def _boxes_mask(shape: tuple[int, ...], boxes) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for box in boxes:
        mask[box] = True
    return mask


def _fake_outputs(out: Path, bids: Path, relpath: str, boxes, classes: list[str] | None = None,
                  template_mask: nib.Nifti1Image | None = None) -> dict[str, Path]:
    """Participant outputs of ``relpath`` with lesions in ``boxes``; with ``classes`` (one per lesion,
    largest first) also the location outputs, the template-space mask being ``template_mask``."""
    img = nib.load(str(bids / relpath))
    mask = _boxes_mask(img.shape, boxes)
    voxel = float(abs(np.linalg.det(img.affine[:3, :3])))
    definition = LesionDefinition()
    labels, n = label_lesions(mask, voxel, definition)
    prob = mask.astype(np.float32) * 0.9
    brain = np.asanyarray(img.dataobj) > 0
    table = lesion_table(labels, n, img.affine, prob)
    located = None
    if classes is not None:
        located = LesionLocations(classes, [False] * n, [""] * n)
        table = with_locations(table, located)
        write_location_derivatives(out, relpath, img, located.map(labels), np.asarray(template_mask.dataobj), None,
                                   template_mask.affine)
    paths = write_run_derivatives(out, relpath, img, prob, labels, n, brain, table,
                                  threshold=0.5, definition=definition, model_id="fake@123", decisions=DECISIONS,
                                  summary_extra=summary_columns(table, located, "ok", 1.0) if located else None)
    paths["report"].write_text("<!DOCTYPE html><html><body>participant report</body></html>")
    return paths


@pytest.fixture
def cohort_dataset(tmp_path: Path, make_bids_dataset) -> tuple[Path, Path]:
    """(bids_dir, output_dir): outputs inside derivatives/, expert masks in derivatives/manual."""
    bids = make_bids_dataset(tmp_path / "bids", RUNS, extra_files=())
    for relpath, meta in SIDECARS.items():
        sidecar = bids / relpath.replace(".nii.gz", ".json")
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **meta}))
    (bids / "participants.tsv").write_text("participant_id\tcentre\nsub-01\tCentreA\nsub-02\tn/a\nsub-03\t\n")
    out = bids / "derivatives" / "bids_msseg"
    write_dataset_description(out, bids, version="test")
    for relpath, boxes in PRED_BOXES.items():
        _fake_outputs(out, bids, relpath, boxes)
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / "crash-20250101-000000-root-segment-abc.txt").write_text(
        "Node: bids_msseg_participant_wf.single_flair_sub_01_ses_2_FLAIR_wf.segment\nWorking directory: /w\n\n"
        "Traceback (most recent call last):\nbids_msseg.errors.InputError: the image is 4D with 3 volumes\n")
    manual = bids / "derivatives" / "manual"
    manual.mkdir(parents=True)
    (manual / "dataset_description.json").write_text(json.dumps(
        {"Name": "expert masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "Manual"}]}))
    for relpath, boxes in EXPERT_BOXES.items():
        img = nib.load(str(bids / relpath))
        name = Path(relpath).name.replace("_FLAIR.nii.gz", "_label-lesion_mask.nii.gz")
        target = manual / Path(relpath).parent / name
        target.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(_boxes_mask(img.shape, boxes).astype(np.uint8), img.affine), str(target))
    return bids, out


def _group(bids: Path, out: Path, tmp_path: Path, *extra: str) -> int:
    return main([str(bids), str(out), "group", "-w", str(tmp_path / "work"), "--skip-bids-validation", *extra])


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, dtype={"run": str})


def test_cohort_table_rows_and_values(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = cohort_dataset
    assert _group(bids, out, tmp_path, "--site-column", "centre") == 0

    table = _read_tsv(out / "group_lesions.tsv").set_index("source")
    assert list(table.index) == [r for r, _ in RUNS]
    status = table["status"].to_dict()
    assert status == {RUNS[0][0]: "ok", RUNS[1][0]: "failed", RUNS[2][0]: "ok", RUNS[3][0]: "ok",
                      RUNS[4][0]: "missing"}
    failed = table.loc[RUNS[1][0]]
    assert failed["crash_file"] == "logs/crash-20250101-000000-root-segment-abc.txt"
    assert failed["failure_reason"] == "bids_msseg.errors.InputError: the image is 4D with 3 volumes"
    assert pd.isna(failed["total_lesion_volume_ml"])

    # Volumes and counts come from the participant summaries: 4 mm voxels = 64 mm3.
    first = table.loc[RUNS[0][0]]
    assert first["lesion_count"] == 2
    assert first["total_lesion_volume_ml"] == pytest.approx((27 + 8) * 64 / 1000)
    assert table.loc[RUNS[3][0], "lesion_count"] == 0
    second = table.loc[RUNS[2][0]]
    voxel = float(abs(np.linalg.det(nib.load(str(bids / RUNS[2][0])).affine[:3, :3])))
    assert second["total_lesion_volume_ml"] == pytest.approx(16 * voxel / 1000, abs=1e-4)
    brain = np.count_nonzero(np.asanyarray(nib.load(str(bids / RUNS[2][0])).dataobj)) * voxel / 1000
    assert second["brain_volume_ml"] == pytest.approx(brain, abs=1e-3)
    assert (second["participant_id"], second["acq"], second["run"]) == ("sub-02", "2D", "1")
    assert pd.isna(second["session_id"]) and first["session_id"] == "ses-1"
    assert bool(first["n4"]) is False and bool(first["brain_extraction"]) is True
    assert first["brain_extraction_reason"] == "has skull"
    assert set(table.loc[table["status"] == "ok", "model_id"]) == {"fake@123"}
    assert first["report"] == "sub-01_ses-1_desc-lesions_report.html"

    # Site: participants.tsv column first; n/a or empty there -> InstitutionName -> scanner -> n/a.
    assert table["site"].to_dict() == {RUNS[0][0]: "CentreA", RUNS[1][0]: "CentreA", RUNS[2][0]: "Second Hospital",
                                       RUNS[3][0]: "GE Signa 3T", RUNS[4][0]: "3T"}
    assert table.loc[RUNS[0][0], "site_source"] == "participants.tsv:centre"
    assert table.loc[RUNS[2][0], "scanner"] == "Philips Ingenia 1.5T"

    dictionary = json.loads((out / "group_lesions.json").read_text())
    assert set(table.reset_index().columns) <= set(dictionary)
    assert dictionary["total_lesion_volume_ml"]["Units"] == "mL"
    assert "InstitutionName" in dictionary["SiteRule"]


def test_evaluation_against_expert_masks(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = cohort_dataset
    assert _group(bids, out, tmp_path, "--msseg2016-metrics") == 0

    evaluation = _read_tsv(out / "group_evaluation.tsv").set_index("source")
    # Only runs with an expert mask; our own masks in derivatives/bids_msseg are never taken as experts.
    assert sorted(evaluation.index) == sorted(EXPERT_BOXES)
    assert set(evaluation["evaluation_status"]) == {"ok"}
    assert evaluation.loc[RUNS[0][0], "expert_mask"] == ("derivatives/manual/sub-01/ses-1/anat/"
                                                         "sub-01_ses-1_label-lesion_mask.nii.gz")
    # Run 0: prediction 27 + 8 voxels, expert 27 voxels, overlap a 2x3x3 slab = 18 voxels.
    row = evaluation.loc[RUNS[0][0]]
    assert row["dice"] == pytest.approx(2 * 18 / (35 + 27))
    assert row["iou"] == pytest.approx(18 / (35 + 27 - 18))
    assert row["ppv"] == pytest.approx(18 / 35) and row["tpr"] == pytest.approx(18 / 27)
    assert row["abs_volume_difference_ml"] == pytest.approx(8 * 64 / 1000)
    assert row["avd"] == pytest.approx(8 / 27)
    assert (row["n_true_lesions"], row["n_pred_lesions"]) == (1, 2)
    assert row["ltpr"] == 1.0 and row["lfpr"] == 0.5
    assert row["msseg_lesion_sensitivity"] == 1.0 and row["msseg_lesion_ppv"] == 0.5
    # Run 2: disjoint -> nothing detected.
    row = evaluation.loc[RUNS[2][0]]
    assert row["dice"] == 0.0 and row["ltpr"] == 0.0 and row["lfpr"] == 1.0

    summary = _read_tsv(out / "group_evaluation_summary.tsv").set_index("group")
    assert summary.loc["all", "n_scans"] == 2
    assert summary.loc["all", "dice_mean"] == pytest.approx(np.mean([2 * 18 / 62, 0.0]))
    assert pd.isna(summary.loc["all", "hybrid_score"])  # 2 scans: no volume correlation
    assert {"Ignored Hospital", "Second Hospital"} <= set(summary.index)  # sidecars: no --site-column
    assert json.loads((out / "group_evaluation.json").read_text())["dice"]["Description"].startswith("Dice")

    # The report: every picture and link it names exists, relative to the report.
    html = (out / "group_report.html").read_text()
    assert 'id="evaluation-summary"' in html and "GE Signa 3T" in html
    links = [part.split('"', 1)[0] for part in html.split('src="')[1:] + html.split('href="')[1:]]
    assert any(link.startswith("group_figures/qc/") for link in links)
    assert "sub-01_ses-1_desc-lesions_report.html" in links
    for link in links:
        assert (out / link).is_file(), link
    assert len(list((out / "group_figures" / "qc").glob("*.png"))) == 3


def test_expert_masks_option_and_no_masks(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = cohort_dataset
    assert _group(bids, out, tmp_path) == 0
    assert (out / "group_evaluation.tsv").is_file()
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    assert _group(bids, out, tmp_path, "--expert-masks", str(empty)) == 0
    assert not (out / "group_evaluation.tsv").exists()  # the earlier evaluation is not left behind
    assert "Evaluation against expert masks" not in (out / "group_report.html").read_text()
    assert _group(bids, out, tmp_path, "--expert-masks", str(bids / "derivatives" / "manual")) == 0
    assert len(_read_tsv(out / "group_evaluation.tsv")) == 2


def test_usage_and_no_outputs(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = cohort_dataset
    assert _group(bids, out, tmp_path, "--site-column", "scanner_room") == 64
    assert _group(bids, tmp_path / "elsewhere", tmp_path) == 66  # no participant outputs at all
    assert _group(bids, out, tmp_path, "--participant-label", "04") == 66


def test_grid_mismatch_is_reported(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = cohort_dataset
    mask = next((bids / "derivatives" / "manual").rglob("sub-02_*_mask.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(mask))
    assert _group(bids, out, tmp_path) == 0
    evaluation = _read_tsv(out / "group_evaluation.tsv").set_index("source")
    assert evaluation.loc[RUNS[2][0], "evaluation_status"].startswith("grid mismatch")
    assert evaluation.loc[RUNS[0][0], "evaluation_status"] == "ok"
    assert _read_tsv(out / "group_evaluation_summary.tsv").loc[0, "n_scans"] == 1


def test_paths_of_derivatives_unchanged() -> None:
    """The group level reads the participant outputs by these names (a rename must be seen here)."""
    paths = derivative_paths(Path("/o"), "sub-1/anat/sub-1_FLAIR.nii.gz")
    assert paths["summary"].name == "sub-1_desc-lesions_summary.tsv"
    assert paths["report"] == Path("/o/sub-1_desc-lesions_report.html")


# ------------------------------------------------------------------- the report in a browser

_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(i => [i.getAttribute("src"), i.naturalWidth, i.naturalHeight]);
  document.body.setAttribute("data-images", JSON.stringify(images));
  console.log("bids-msseg-probe " + images.length);
});
</script>
"""


def render_in_chromium(report: Path, work: Path) -> tuple[list[list], list[str]]:
    """Load ``report`` in headless chromium; return ([src, naturalWidth, naturalHeight] per image, console lines).

    A copy of the report with a small probe script (recording every image's natural size once the
    page has loaded) is written beside it, so relative links resolve exactly as for the report.
    """
    import html as html_lib
    import re
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): the browser check of the report "
                    "did not run")
    probe = report.with_name(".probe_" + report.name)
    probe.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    try:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={work / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
             probe.as_uri()], capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r'data-images="([^"]*)"', done.stdout)
    assert found, f"the probe did not run; stderr: {done.stderr[-3000:]}"
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    return json.loads(html_lib.unescape(found.group(1))), console


def test_report_renders_in_chromium(cohort_dataset: tuple[Path, Path], tmp_path: Path, check_report_fits) -> None:
    bids, out = cohort_dataset
    assert _group(bids, out, tmp_path) == 0
    check_report_fits(out / "group_report.html")  # no table wider than the page at 1024 and 1440 px
    images, console = render_in_chromium(out / "group_report.html", tmp_path)
    assert len(images) == 3 + 2 + 1  # 3 QC mosaics, volume distribution + site box plots, evaluation
    assert all(width > 0 and height > 0 for _, width, height in images), images
    assert any(src.startswith("group_figures/qc/") for src, _, _ in images)
    errors = [line for line in console if "bids-msseg-probe" not in line]
    assert not errors, f"console messages: {errors}"
    assert any("bids-msseg-probe 6" in line for line in console), console  # console logging is captured


def test_qc_mosaic_shows_prediction_and_expert_outline(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    from matplotlib.image import imread

    from bids_msseg.reports.group import qc_mosaic

    bids, out = cohort_dataset
    relpath = RUNS[0][0]
    paths = derivative_paths(out, relpath)
    expert = next((bids / "derivatives" / "manual").rglob("sub-01_ses-1_*_mask.nii.gz"))

    def colours(png: Path) -> tuple[int, int]:
        rgb = imread(str(png))[..., :3]
        red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.5) & (rgb[..., 2] < 0.4)
        yellow = (rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.8) & (rgb[..., 2] < 0.4)  # the expert outline (#f0e442)
        return int(red.sum()), int(yellow.sum())

    plain = qc_mosaic(bids / relpath, paths["mask"], paths["brain"], tmp_path / "plain.png")
    with_expert = qc_mosaic(bids / relpath, paths["mask"], paths["brain"], tmp_path / "expert.png", expert)
    red, outline = colours(plain)
    assert red > 0 and outline == 0
    red, outline = colours(with_expert)
    assert red > 0 and outline > 0


# ------------------------------------------------------- damaged inputs of the group level (issue 18)


def test_corrupt_summary_and_incomplete_outputs_are_not_ok(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = cohort_dataset
    summary = derivative_paths(out, RUNS[0][0])["summary"]
    lines = summary.read_text().splitlines()
    header = lines[0].split("\t")
    values = lines[1].split("\t")
    values[header.index("total_lesion_volume_ml")] = "lots"
    summary.write_text("\n".join([lines[0], "\t".join(values)]) + "\n")
    derivative_paths(out, RUNS[2][0])["report"].unlink()  # a full disk: summary written, report not
    assert _group(bids, out, tmp_path) == 0
    table = _read_tsv(out / "group_lesions.tsv").set_index("source")
    assert table.loc[RUNS[0][0], "status"] == "failed"
    assert "column total_lesion_volume_ml holds 'lots', not a number" in table.loc[RUNS[0][0], "failure_reason"]
    assert table.loc[RUNS[2][0], "status"] == "failed"
    assert "incomplete participant outputs (missing: report)" in table.loc[RUNS[2][0], "failure_reason"]
    assert table.loc[RUNS[3][0], "status"] == "ok"


@pytest.mark.parametrize("kind", ["probabilistic", "4D", "text", "junk", "negative"])
def test_expert_masks_are_validated_per_run(kind: str, cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = cohort_dataset
    target = next((bids / "derivatives/manual").rglob("sub-01_ses-1_label-lesion_mask.nii.gz"))
    img = nib.load(str(target))
    truth = np.asanyarray(img.dataobj).astype(np.float32)
    if kind == "probabilistic":  # a soft mask: 0.9 inside the lesion, 0.1 everywhere else
        nib.save(nib.Nifti1Image(np.where(truth > 0, 0.9, 0.1).astype(np.float32), img.affine), str(target))
    elif kind == "4D":
        nib.save(nib.Nifti1Image(np.stack([truth, truth], axis=-1), img.affine), str(target))
    elif kind == "text":
        target.write_text("this is not an image")
    elif kind == "junk":
        target.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    else:
        nib.save(nib.Nifti1Image(-truth, img.affine), str(target))
    assert _group(bids, out, tmp_path) == 0
    evaluation = _read_tsv(out / "group_evaluation.tsv").set_index("source")
    status = evaluation.loc[RUNS[0][0], "evaluation_status"]
    assert evaluation.loc[RUNS[2][0], "evaluation_status"] == "ok"  # the other run is still scored
    if kind == "probabilistic":
        assert status == "ok"
        assert evaluation.loc[RUNS[0][0], "true_volume_ml"] == pytest.approx(27 * 64 / 1000)
        assert "thresholded at 0.5" in evaluation.loc[RUNS[0][0], "expert_mask_note"]
    else:
        assert status.startswith("unreadable expert mask: "), status


# ------------------------------------------------------------------ lesion location at the group level


def test_location_classes_and_the_lesion_frequency_map(cohort_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    from bids_msseg.anatomy.template import mni152_template

    bids, out = cohort_dataset
    template = mni152_template()
    shared, own = np.zeros(template.image.shape, np.uint8), np.zeros(template.image.shape, np.uint8)
    shared[90:94, 120:124, 100:104] = 1
    own[60:62, 100:102, 90:92] = 1
    _fake_outputs(out, bids, RUNS[0][0], PRED_BOXES[RUNS[0][0]], ["periventricular", "juxtacortical"],
                  nib.Nifti1Image(shared | own, template.affine))
    _fake_outputs(out, bids, RUNS[2][0], PRED_BOXES[RUNS[2][0]], ["infratentorial"],
                  nib.Nifti1Image(shared, template.affine))
    assert _group(bids, out, tmp_path) == 0

    table = _read_tsv(out / "group_lesions.tsv").set_index("source")
    first, second, third = table.loc[RUNS[0][0]], table.loc[RUNS[2][0]], table.loc[RUNS[3][0]]
    assert (first["periventricular_count"], first["juxtacortical_count"], first["mcdonald_regions"]) == (1, 1, 2)
    assert first["periventricular_volume_ml"] == pytest.approx(27 * 64 / 1000)
    assert (second["infratentorial_count"], second["subcortical_count"], second["mcdonald_regions"]) == (1, 0, 1)
    assert pd.isna(third["periventricular_count"]) and pd.isna(third["location_status"])  # made without location

    frequency = nib.load(out / FREQUENCY_MAP)
    np.testing.assert_allclose(frequency.affine, template.affine)
    data = np.asarray(frequency.dataobj)
    assert data[91, 121, 101] == 1.0 and data[60, 100, 90] == 0.5 and data.sum() == pytest.approx(64 + 8 * 0.5)
    sidecar = json.loads((out / FREQUENCY_JSON).read_text())
    assert sidecar["NumberOfRuns"] == 2 and list(sidecar["RunsLeftOut"]) == [RUNS[3][0]]

    html = (out / "group_report.html").read_text()
    assert 'id="location-classes"' in html and "2 of 3 completed runs have lesion location classes" in html
    for figure in ("group_figures/lesion_location.png", "group_figures/lesion_frequency.png"):
        assert figure in html and (out / figure).stat().st_size > 5000
    assert f'href="{FREQUENCY_MAP}"' in html and "share of the 2 runs" in html

    # participant outputs remade without location: the map of an earlier group run goes away
    for relpath in (RUNS[0][0], RUNS[2][0]):
        write_location_derivatives(out, relpath, nib.load(str(bids / relpath)), None, None, None, None)
        _fake_outputs(out, bids, relpath, PRED_BOXES[relpath])
    assert _group(bids, out, tmp_path) == 0
    assert not (out / FREQUENCY_MAP).exists() and not (out / FREQUENCY_JSON).exists()
    assert "No completed run has lesion location classes" in (out / "group_report.html").read_text()


def test_failed_runs_leave_exit_0_and_a_closing_warning(cohort_dataset: tuple[Path, Path], tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26 item 16, decided: the group level exits 0 when runs are marked failed or missing (its own
    outputs are complete; the participant level exited 1 for them), and says so in a closing warning."""
    bids, out = cohort_dataset
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert _group(bids, out, tmp_path) == 0
    assert ("group level: 2 of 5 run(s) failed or missing at the participant level: listed in group_lesions.tsv"
            in caplog.text)
    assert "(exit code 0: the group outputs are complete)" in caplog.text
