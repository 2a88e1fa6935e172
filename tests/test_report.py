"""The participant QC report (bids_msseg/reports) and the methods boilerplate (bids_msseg/boilerplate/)."""

from __future__ import annotations

import base64
import re
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.boilerplate import (
    DEFAULT_CONTEXT,
    cited_keys,
    load_references,
    render_boilerplate,
    write_citation,
)
from bids_msseg.lesions import LesionDefinition, binarize, lesion_table
from bids_msseg.reports.participant import render_participant_report

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
                 "already skull-stripped", "lesion-001", "lesion-003", "Brain mask"):
        assert text in html, text
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


# ------------------------------------------------------------------------------------ boilerplate


ALL_ON = {"n4": True, "brain_extraction": True, "brain_extraction_method": "template registration",
          "brain_extraction_citations": ["avants2008syn"], "training_data": "3D-MR-MS",
          "training_citations": ["lesjak2018mrms"], "software": {"nipype": "1.11", "antspyx": "0.6"},
          "n_runs": 4, "n_subjects": 2}


def test_every_cited_key_is_in_the_bib():
    references = load_references()
    for context in (ALL_ON, {"n4": False, "brain_extraction": False, "normalization": "linear"}, {}):
        keys = cited_keys(render_boilerplate(context))
        assert keys and set(keys) <= set(references)
    expected = {"badea2024generalizable", "zhou2018unetpp", "he2016resnet", "tustison2010n4",
                "avants2008syn", "gorgolewski2016bids", "gorgolewski2017bidsapps", "gorgolewski2011nipype",
                "yarkoni2019pybids", "nyul1999standardizing", "lesjak2018mrms", "iakubovskii2019smp",
                "paszke2019pytorch", "iglesias2011robex", "fonov2011unbiased", "holmes1998colin"}
    assert expected == set(references)
    assert expected - {"iglesias2011robex", "fonov2011unbiased", "holmes1998colin"} == set(
        cited_keys(render_boilerplate(ALL_ON)))
    assert references["lesjak2018mrms"]["doi"] == "10.1007/s12021-017-9348-7"


def test_boilerplate_describes_the_run():
    text = render_boilerplate({**ALL_ON, "model_id": "msseg-unetplusplus@abc", "threshold": 0.35,
                               "min_lesion_size_mm3": 3.0, "connectivity": 1, "version": "9.9"})
    for fragment in ("bids_msseg* 9.9", "msseg-unetplusplus@abc", "0.35", "3.0 mm³", "6-connected", "N4",
                     "quantile normalization", "UNet++", "ResNet-18", "224 x 224",
                     "4 FLAIR images of 2 participants", "*Nipype* 1.11",
                     "template registration [@avants2008syn]", "3D-MR-MS [@lesjak2018mrms]"):
        assert fragment in text, fragment
    plain = render_boilerplate({"n4": False, "brain_extraction": False, "normalization": "linear"})
    assert "N4" not in plain and "tustison2010n4" not in plain and "avants2008syn" not in plain
    assert "scaled linearly" in plain and "already skull-stripped" in plain
    auto = render_boilerplate({})
    assert auto.count("only where needed") == 1 and DEFAULT_CONTEXT["n4"] == "auto"  # said once (issue 14)


def test_write_citation_numbers_citations_and_lists_references(tmp_path):
    target = write_citation(tmp_path / "logs", ALL_ON)
    assert target == tmp_path / "logs" / "CITATION.md"
    text = target.read_text()
    body, references = text.split("## References")
    assert "[@" not in text and re.search(r"\[\d+(, \d+)*\]", body)
    entries = re.findall(r"^(\d+)\. (.+)$", references, flags=re.M)
    assert [int(i) for i, _ in entries] == list(range(1, 14))
    joined = references.replace("\n", " ")
    assert "Badea L, Popa M (2024)" in joined and "Nyúl LG" in joined and "Lesjak Ž" in joined
    assert "doi:[10.1109/TMI.2010.2046908](https://doi.org/10.1109/TMI.2010.2046908)" in joined
    assert "{" not in references and "\\" not in references
    bib = (tmp_path / "logs" / "CITATION.bib").read_text()
    assert set(load_references(bib)) == set(cited_keys(render_boilerplate(ALL_ON)))


def test_bib_parser_handles_nested_braces_quotes_and_numbers():
    entries = load_references('@article{k1, title = {A {Nested} Title}, author = "Doe, Jane and others",\n'
                              ' year = 2001, pages = {1--2}}\n@misc{k2,title={x}}')
    assert entries["k1"]["title"] == "A {Nested} Title" and entries["k1"]["year"] == "2001"
    assert entries["k1"]["author"] == "Doe, Jane and others" and entries["k2"]["type"] == "misc"
