"""The participant QC report (bids_msseg/reports/participant.py)."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.lesions import LOCATION_COLOURS, LesionDefinition, binarize, lesion_table
from bids_msseg.preproc.decisions import PreprocDecisions
from bids_msseg.reports.participant import (
    LOCATION_UNKNOWN,
    _decision_rows,
    _lesion_slices,
    location_colours,
    methods_html,
    render_participant_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DECISIONS = {"n4": {"applied": True, "reason": "no <bias> correction recorded"},
             "brain_extraction": {"applied": False, "reason": "already skull-stripped"}}


def synthetic(shape=(30, 36, 24), n_lesions=3, affine=None):
    """A FLAIR-like ellipsoid 'brain' with bright cubic lesions, on a flipped anisotropic grid."""
    affine = np.diag([-1.0, 0.9, 1.4, 1.0]) if affine is None else affine
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = [s / 2 for s in shape]
    brain = sum(((g - c) / (0.4 * s)) ** 2 for g, c, s in zip(grid, centre, shape, strict=True)) < 1
    rng = np.random.default_rng(1)
    flair = brain * 100.0 + rng.normal(0, 3, shape)
    prob = np.zeros(shape, np.float32)
    for i in range(n_lesions):
        x, y, z = (np.array(centre) + [3 * i - 3, 2 * i - 2, 3 * i - 3]).astype(int)
        prob[x:x + 2, y:y + 2, z:z + 2] = 0.9
        flair[x:x + 2, y:y + 2, z:z + 2] += 80
    img = nib.Nifti1Image(flair.astype(np.float32), affine)
    voxel = float(abs(np.linalg.det(affine[:3, :3])))
    _, labels, n = binarize(prob, 0.5, voxel, LesionDefinition(min_size_mm3=1.0))
    return img, labels, n, brain, lesion_table(labels, n, affine, prob)


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]



# ----------------------------------------------------------------------------------------- report


def test_report_is_self_contained_with_figures_and_tables(tmp_path):
    img, labels, n, brain, table = synthetic()
    summary = {"participant_id": "sub-01", "lesion_count": n, "total_lesion_volume_ml": 0.0302,
               "brain_volume_ml": 12.5, "model_id": "msseg-unetplusplus@0123456789ab",
               "preproc_n4_applied": True}
    out = render_participant_report(tmp_path / "sub-01_desc-lesions_report.html", img, labels > 0, brain,
                                    table, summary, DECISIONS)
    html = out.read_text()
    assert n == 3
    assert 'id="lesion-count">3<' in html
    pngs = embedded_pngs(html)
    assert len(pngs) == 5 and all(p.startswith(PNG_MAGIC) and len(p) > 1000 for p in pngs)
    assert not re.search(r'(src|href)="(?!data:|#|https://creativecommons)', html), "no external resources"
    assert "<script" not in html
    for text in ("Total lesion volume (mL)", "0.0302", "Brain volume (mL)", "msseg-unetplusplus@0123456789ab",
                 "already skull-stripped", "Brain mask"):
        assert text in html, text
    # the lesion table: lesion number and volume first, readable headers, no raw key
    assert '<thead><tr><th class="num">Lesion</th><th class="num">Volume (mm³)</th>' in html
    assert "volume_mm3" not in html and "lesion-001" not in html
    assert "no &lt;bias&gt; correction" in html, "decisions must be HTML-escaped"
    assert "preproc_n4_applied" not in html
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"


def test_report_without_lesions(tmp_path):
    img, labels, n, brain, table = synthetic(n_lesions=0)
    assert n == 0 and table.empty
    html = render_participant_report(tmp_path / "r.html", img, labels, brain, table, {"lesion_count": 0},
                                     {}).read_text()
    assert 'id="lesion-count">0<' in html and "No lesions." in html
    assert len(embedded_pngs(html)) == 5  # lesions, 3 orthogonal views, brain mask


def test_report_accepts_numbered_lesions_and_empty_brain_mask(tmp_path):
    img, labels, n, _, table = synthetic()
    html = render_participant_report(tmp_path / "r.html", img, labels, np.zeros(img.shape, bool), table,
                                     {}, DECISIONS).read_text()
    assert f'id="lesion-count">{n}<' in html and len(embedded_pngs(html)) == 5


def test_report_refuses_masks_off_the_grid(tmp_path):
    img, labels, _, brain, table = synthetic()
    with pytest.raises(ValueError, match="shape"):
        render_participant_report(tmp_path / "r.html", img, labels[:-1], brain, table, {}, {})
    assert not (tmp_path / "r.html").exists()


def test_report_is_fast_on_a_1mm_volume(tmp_path):
    shape = (182, 218, 182)
    flair = np.zeros(shape, np.float32)
    flair[30:150, 30:190, 30:150] = 100.0
    labels = np.zeros(shape, np.uint8)
    labels[80:84, 100:104, 90:93] = 1
    labels[100:103, 120:124, 60:62] = 2
    table = pd.DataFrame({"index": [1, 2], "name": ["lesion-001", "lesion-002"], "volume_mm3": [48.0, 24.0]})
    img = nib.Nifti1Image(flair, np.diag([-1.0, 1.0, 1.0, 1.0]))
    start = time.perf_counter()
    brain = flair > 0
    render_participant_report(tmp_path / "r.html", img, labels, brain, table, {"lesion_count": 2}, DECISIONS)
    # The target is < 3 s on two busy cores (~0.7-0.9 s measured); the bound only catches gross regressions.
    assert time.perf_counter() - start < 10


# ---- The participant report as a reader wants it: decisions with reasons, numbered lesions, three views,

PREPROC_DECISIONS = json.loads(PreprocDecisions(
    n4=True, skullstrip=False,
    reasons={"n4": "raw input with skull: bias field expected", "skullstrip": "image looks skull-stripped"},
    evidence={"background_fraction": 0.84, "blob_volume_ml": 1123.4}).to_json())


def _volume(shape=(40, 48, 30)):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    brain = sum(((g - s / 2) / (0.4 * s)) ** 2 for g, s in zip(grid, shape, strict=True)) < 1
    flair = brain * 100.0 + np.random.default_rng(0).normal(0, 3, shape)
    prob = np.zeros(shape, np.float32)
    for i, (x, y, z) in enumerate([(15, 20, 12), (24, 28, 15), (20, 18, 18)]):
        prob[x:x + 3 + i, y:y + 3, z:z + 2] = 0.9
    affine = np.diag([-1.0, 1.0, 1.5, 1.0])
    _, labels, n = binarize(prob, 0.5, 1.5, LesionDefinition(min_size_mm3=1.0))
    table = lesion_table(labels, n, affine, prob)
    return nib.Nifti1Image(flair.astype(np.float32), affine), labels, n, brain, prob, table


def test_decision_rows_read_the_preprocessing_decisions() -> None:
    rows = _decision_rows(PREPROC_DECISIONS)
    steps = [row["step"] for row in rows]
    assert steps == ["N4 bias-field correction", "Brain extraction", "Measurements"]
    assert rows[0]["decision"] == "applied" and rows[0]["reason"] == "raw input with skull: bias field expected"
    assert rows[1]["decision"] == "not applied" and rows[1]["reason"] == "image looks skull-stripped"
    assert "constant background (share of the volume) 0.84" in rows[2]["reason"]
    assert "non-background volume (mL) 1123" in rows[2]["reason"] and "_" not in rows[2]["reason"]
    assert not {"evidence", "reasons", "n4", "skullstrip"} & set(steps)


def test_every_lesion_is_numbered_once_on_a_shown_slice() -> None:
    _, labels, n, brain, _, _ = _volume()
    slices, home = _lesion_slices(labels, brain, 12)
    assert sorted(home) == list(range(1, n + 1))
    assert all(k in slices and (labels[:, :, k] == lesion).any() for lesion, k in home.items())


def test_full_report(tmp_path: Path) -> None:
    img, labels, n, brain, prob, table = _volume()
    expert = labels > 0
    expert[10:12, 10:12, 10:12] = True
    methods = "# Methods (bids_msseg 9)\n\nText with *emphasis* [1].\n\n#### Segmentation\nMore `code`.\n\n" \
              "## References\n\n1. Zhou Z (2018). UNet++.\n2. He K (2016). ResNet."
    out = render_participant_report(
        tmp_path / "r.html", img, labels, brain, table, {"lesion_count": n}, PREPROC_DECISIONS, probability=prob,
        expert_mask=expert, expert_source="sub-01_label-lesion_mask.nii.gz",
        about={"Date": "2026-01-01", "Command line": "bids_msseg in out participant", "torch": "2.13"},
        methods=methods)
    html = out.read_text()
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) == 6  # lesions, 3 views, probability, brain mask
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    for text in ("Axial, coronal and sagittal views", "Lesion probability", "outline of the expert lesion mask",
                 "sub-01_label-lesion_mask.nii.gz", "Command line", "bids_msseg in out participant",
                 "<h4>Segmentation</h4>", "<em>emphasis</em>", "<li>Zhou Z (2018). UNet++.</li>",
                 "raw input with skull"):
        assert text in html, text


def test_methods_html_escapes() -> None:
    assert "&lt;b&gt;" in str(methods_html("a <b> c"))


def test_binary_mask_is_numbered_like_the_table(tmp_path: Path) -> None:
    img, labels, n, brain, _, table = _volume()
    html = render_participant_report(tmp_path / "r.html", img, labels > 0, brain, table, {}, {}).read_text()
    assert f'id="lesion-count">{n}<' in html
    assert isinstance(table, pd.DataFrame) and list(table["index"]) == list(range(1, n + 1))


# ---- lesions coloured by location class

def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


def test_location_colours_follow_the_table_numbers_and_mark_unknown_lesions() -> None:
    table = pd.DataFrame({"index": [2, 1, 3], "volume_mm3": [20.0, 100.0, 5.0],
                          "location": ["juxtacortical", "periventricular", None]})
    lut, legend = location_colours(table, 3)
    assert tuple(lut[0]) == (0, 0, 0, 0)
    assert [_hex(c) for c in lut[1:]] == [LOCATION_COLOURS["periventricular"], LOCATION_COLOURS["juxtacortical"],
                                          LOCATION_UNKNOWN]
    assert [(e["name"], e["count"], e["volume_ml"]) for e in legend] == [
        ("periventricular", 1, 0.1), ("juxtacortical", 1, 0.02), ("n/a", 1, 0.005)]


def test_location_colours_without_a_location_column_are_all_unknown() -> None:
    lut, legend = location_colours(pd.DataFrame({"index": [1, 2], "volume_mm3": [8.0, 4.0]}), 2)
    assert {_hex(c) for c in lut[1:]} == {LOCATION_UNKNOWN}
    assert legend == [{"colour": LOCATION_UNKNOWN, "name": "n/a", "count": 2, "volume_ml": 0.012}]


def _pixels_of(png: bytes, colour: str, tolerance: int = 10) -> int:
    from io import BytesIO

    from matplotlib.image import imread

    rgb = (imread(BytesIO(png))[..., :3] * 255).round()
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) <= tolerance).sum())


def test_report_colours_each_lesion_by_its_class_with_a_legend(tmp_path: Path) -> None:
    img, labels, n, brain, _, table = _volume()
    table["location"] = ["periventricular", "infratentorial", "subcortical"][:n]
    summary = {"lesion_count": n, "periventricular_count": 1, "location_status": "ok", "mcdonald_regions": 2}
    html = render_participant_report(tmp_path / "r.html", img, labels, brain, table, summary, {}).read_text()
    assert 'id="location"' in html and "Lesions are n/a" not in html
    for name in table["location"]:
        assert f'background:{LOCATION_COLOURS[name]}"></span>{name}' in html
    assert "periventricular_count" not in html  # in the location table, not the summary
    assert "McDonald regions involved" in html
    mosaic = embedded_pngs(html)[0]
    # the outlines are drawn in the class's own colour (the fills are blended with the FLAIR)
    assert all(_pixels_of(mosaic, LOCATION_COLOURS[name]) > 0 for name in table["location"])
    assert _pixels_of(mosaic, LOCATION_COLOURS["juxtacortical"]) == 0


def test_report_says_why_locations_are_unknown(tmp_path: Path) -> None:
    img, labels, n, brain, _, table = _volume()
    table["location"] = None
    html = render_participant_report(tmp_path / "r.html", img, labels, brain, table,
                                     {"location_status": "off: --no-location"}, {}).read_text()
    assert "Lesion locations are n/a: off: --no-location." in html
    assert f'background:{LOCATION_UNKNOWN}"></span>n/a' in html


def test_report_fits_the_page_at_1024_and_1440_px(tmp_path: Path, check_report_fits) -> None:
    """Nothing is cut at 1024-1440 px: tables wrap or scroll in their own box with the lesion number,
    location and volume first (headless chromium; skips without it)."""
    img, labels, n, brain, prob, table = _volume()
    table["location"] = ["periventricular", "juxtacortical", "subcortical"][:n]
    table["confluent"] = True
    table["touches"] = "periventricular;juxtacortical;infratentorial"
    for axis in "xyz":  # more columns, as the template-space centroids add
        table[f"template_centroid_{axis}_mm"] = 123.456
    summary = {"participant_id": "sub-01", "source": "sub-01/ses-baseline/anat/" + "sub-01_ses-baseline_acq-"
               + "verylongacquisitionlabel" * 3 + "_FLAIR.nii.gz", "lesion_count": n, "seed_threshold": 0.97}
    html_path = render_participant_report(
        tmp_path / "r.html", img, labels, brain, table, summary, PREPROC_DECISIONS, probability=prob,
        about={"Command line": "bids_msseg " + " ".join(f"/data/some/long/path/{i}" for i in range(40))})
    html = html_path.read_text()
    assert '<thead><tr><th class="num">Lesion</th><th>Location</th><th class="num">Volume (mm³)</th>' in html
    assert "seed_threshold" not in html and "Seed threshold" in html
    check_report_fits(html_path)
