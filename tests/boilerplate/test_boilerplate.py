"""The methods text names every method with its reference, once (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

from bids_msseg.boilerplate import render_boilerplate, training_citations
from bids_msseg.model.bundle import DEFAULT_BUNDLE, read_card
from bids_msseg.settings import Options, SegmentationSettings


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
