"""The methods boilerplate and its references (bids_msseg/boilerplate/)."""

from __future__ import annotations

import re
from pathlib import Path

from bids_msseg.boilerplate import (
    DEFAULT_CONTEXT,
    cited_keys,
    decision_counts,
    load_references,
    render_boilerplate,
    training_citations,
    write_citation,
)
from bids_msseg.longitudinal.change import ChangeRule
from bids_msseg.model.bundle import DEFAULT_BUNDLE, read_card
from bids_msseg.settings import Options, SegmentationSettings

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
                "paszke2019pytorch", "iglesias2011robex", "fonov2011unbiased", "holmes1998colin",
                "guarnera2025mslesseg", "winkler2012flair", "carass2017isbi", "bashiribawil_ms3seg"}
    assert expected == set(references)
    training_only = {"fonov2011unbiased", "holmes1998colin", "guarnera2025mslesseg", "winkler2012flair",
                     "carass2017isbi", "bashiribawil_ms3seg"}
    assert expected - {"iglesias2011robex"} - training_only == set(
        cited_keys(render_boilerplate(ALL_ON)))
    assert references["lesjak2018mrms"]["doi"] == "10.1007/s12021-017-9348-7"
    # a fine-tuned model's data names every data set it learned from, and each is cited
    data = ("25 FLAIR scan(s) with expert lesion masks from 3D-MR-MS, MSLesSeg, ISBI-2015 and MS3SEG, fine-tuned "
            "from m@1 (trained on synthetic FLAIR from MNI152 2009 / Colin27 anatomy)")
    assert set(training_citations(data)) == {"lesjak2018mrms", "guarnera2025mslesseg", "carass2017isbi",
                                             "bashiribawil_ms3seg", "fonov2011unbiased", "holmes1998colin"}


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


# ---- The methods text names every method with its reference, once (issue 14).

def _default_context() -> dict:
    options = Options(Path("/in"), Path("/out"), "participant")
    card = read_card(DEFAULT_BUNDLE)
    return SegmentationSettings.resolve(options, card).citation_context(options, card)


def test_training_data_come_from_the_bundle() -> None:
    context = _default_context()
    card = read_card(DEFAULT_BUNDLE)
    assert context["training_data"] == card.training["data"]
    text = render_boilerplate(context)
    assert "was trained on" in text and "(see docs" not in text
    if "3D-MR-MS" in card.training["data"]:
        assert "@lesjak2018mrms" in text


def test_training_citations_follow_the_description() -> None:
    assert training_citations("synthetic FLAIR from MNI152 2009 / Colin27 with 3D-MR-MS masks") == [
        "lesjak2018mrms", "fonov2011unbiased", "holmes1998colin"]
    assert training_citations("my own scans") == []


def test_brain_extraction_and_precision_are_described() -> None:
    text = render_boilerplate(_default_context())
    assert "ROBEX" in text and "@iglesias2011robex" in text and "@avants2008syn" in text
    assert "auto arithmetic" not in text and "bfloat16" in text
    fp32 = render_boilerplate({**_default_context(), "precision": "fp32"})
    assert "32-bit floating point" in fp32 and "bfloat16" not in fp32


def test_no_sentence_twice() -> None:
    for context in (_default_context(), {"n4": True, "brain_extraction": "auto"}, {"n4": "auto"}):
        text = " ".join(render_boilerplate(context).split())
        sentences = [s for s in re.split(r"(?<=[.;])\s+", text) if len(s) > 30]
        repeated = {s for s in sentences if sentences.count(s) > 1}
        assert not repeated, repeated
        assert text.count("only where needed") <= 1


def test_location_paragraph_follows_the_switch() -> None:
    """The lesion-location step is described, with its template and registration cited, only when it ran."""
    on, off = render_boilerplate({"location": True}), render_boilerplate({"location": False})
    assert "#### Lesion location" in on and "periventricular" in on and "not a\ndiagnosis" in on
    assert "fonov2011unbiased" in cited_keys(on) and "avants2008syn" in cited_keys(on)
    assert "Lesion location" not in off and "fonov2011unbiased" not in cited_keys(off)


def test_decision_counts_need_every_run() -> None:
    assert decision_counts([{"n4": True, "skullstrip": False}, {"n4": True, "skullstrip": True}]) == {
        "n4_count": 2, "brain_extraction_count": 1}
    assert decision_counts([{"n4": True, "skullstrip": False}, {}]) is None
    assert decision_counts([]) == {"n4_count": 0, "brain_extraction_count": 0}


def test_counted_steps_are_described_with_their_numbers_and_only_if_they_ran() -> None:
    none = render_boilerplate({"n_runs": 3, "n4_count": 0, "brain_extraction_count": 0})
    assert "all 3 images were taken as already bias-corrected" in none
    assert "tustison2010n4" not in cited_keys(none) and "iglesias2011robex" not in cited_keys(none)
    assert "only where needed" not in none
    some = render_boilerplate({"n_runs": 3, "n4_count": 3, "brain_extraction_count": 1})
    assert "In all 3 images, intensity non-uniformity was corrected with N4" in some
    assert "From 1 of the 3 images, the brain was extracted" in some and "the other 2 looked" in some
    assert {"tustison2010n4", "iglesias2011robex"} <= set(cited_keys(some))
    forced = render_boilerplate({"n_runs": 3, "n4": True, "n4_count": 3, "brain_extraction_count": 0})
    assert "in every image" in forced and "Brain extraction was decided for each image" in forced


def test_longitudinal_paragraph_only_when_sessions_were_compared() -> None:
    """The longitudinal step is described, with its numbers and citations, only when it compared sessions."""
    rule = ChangeRule()
    on = render_boilerplate({"longitudinal_pairs": 2, "longitudinal_subjects": 1, "rule": rule.sidecar()})
    off = render_boilerplate({})
    assert "#### Longitudinal change" in on and "Longitudinal" not in off
    flat = " ".join(on.split())
    assert "For the 1 participant with FLAIR images at two or more sessions" in flat and "2 pairs of images" in flat
    assert f"probability below {rule.absent_probability} throughout" in flat and "not seen at follow-up" in flat
    assert "tustison2010n4" in cited_keys(on) and "avants2008syn" in cited_keys(on)


def test_the_thick_slice_seed_is_described_when_it_differs() -> None:
    context = {**_default_context(), "threshold": 0.6, "seed_threshold": 0.97}
    text = " ".join(render_boilerplate({**context, "seed_threshold_thick": 0.9}).split())
    assert "reached 0.97 in at least one voxel (hysteresis thresholding), or 0.9 on images with a voxel side" in text
    for same in (None, 0.97):
        assert "voxel side of 2 mm" not in render_boilerplate({**context, "seed_threshold_thick": same})
