"""The participant report as a reader wants it: decisions with reasons, numbered lesions, three views,
the probability map, the expert outline, provenance and methods (issue 14)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.lesions import LesionDefinition, binarize, lesion_table
from bids_msseg.preproc.decisions import PreprocDecisions
from bids_msseg.reports.participant import _decision_rows, _lesion_slices, methods_html, render_participant_report

DECISIONS = json.loads(PreprocDecisions(
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
    rows = _decision_rows(DECISIONS)
    steps = [row["step"] for row in rows]
    assert steps == ["N4 bias-field correction", "Brain extraction", "Measurements"]
    assert rows[0]["decision"] == "applied" and rows[0]["reason"] == "raw input with skull: bias field expected"
    assert rows[1]["decision"] == "not applied" and rows[1]["reason"] == "image looks skull-stripped"
    assert "background fraction 0.84" in rows[2]["reason"]
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
        tmp_path / "r.html", img, labels, brain, table, {"lesion_count": n}, DECISIONS, probability=prob,
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
