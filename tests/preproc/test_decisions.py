"""bids_msseg.preproc.decisions: N4 and brain extraction decided from the image and its sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bids_msseg.preproc.decisions import (
    PreprocDecisions,
    decide_preprocessing,
    measure_background,
)
from bids_msseg.preproc.orient import load_flair, to_ras
from tests.preproc.helpers import ZOOMS, shared_file, synthetic_head

# --- decisions ---------------------------------------------------------------------------------

def test_stripped_image_gets_no_n4_and_no_extraction() -> None:
    decisions = decide_preprocessing(synthetic_head(skull=False), ZOOMS, {})
    assert (decisions.n4, decisions.skullstrip) == (False, False)
    assert "skull-stripped" in decisions.reasons["skullstrip"]
    assert 900 < decisions.evidence["blob_volume_ml"] < 1700


@pytest.mark.parametrize("noisy", [False, True], ids=["zero-background", "noisy-background"])
def test_head_with_skull_gets_n4_and_extraction(noisy: bool) -> None:
    decisions = decide_preprocessing(synthetic_head(skull=True, noisy_background=noisy), ZOOMS, {})
    assert (decisions.n4, decisions.skullstrip) == (True, True)
    assert "skull" in decisions.reasons["skullstrip"]


def test_partial_coverage_head_is_still_raw() -> None:
    """Few slices of a head make a small blob: the cross-section test must still see a head."""
    head = np.pad(synthetic_head(skull=True)[:, :, 14:24], ((10, 10), (10, 10), (0, 0)))  # wide FOV
    evidence = measure_background(head, ZOOMS)
    assert evidence["largest_blob_fraction"] > 0.99  # one piece
    assert evidence["background_fraction"] > 0.5  # zero background, like the clinical scans
    assert evidence["blob_volume_ml"] < 2200  # the volume alone would not tell
    assert decide_preprocessing(head, ZOOMS, {}).skullstrip


@pytest.mark.parametrize(
    "transform",
    [lambda d: d + 100.0, lambda d: np.where(d > 0, (d - 400.0) / 50.0, 0.0)],
    ids=["constant-offset-background", "z-scored"],
)
def test_stripped_with_non_zero_or_negative_values(transform) -> None:
    data = transform(synthetic_head(skull=False)).astype(np.float32)
    assert not decide_preprocessing(data, ZOOMS, {}).skullstrip


def test_sidecar_hints_and_forcing() -> None:
    head = synthetic_head(skull=True)
    stripped = synthetic_head(skull=False)
    d = decide_preprocessing(head, ZOOMS, {"SkullStripped": True})
    assert (d.n4, d.skullstrip) == (False, False)
    assert d.reasons["skullstrip"] == "sidecar SkullStripped=true"
    d = decide_preprocessing(head, ZOOMS, {"BiasCorrected": "yes"})
    assert (d.n4, d.skullstrip) == (False, True)
    d = decide_preprocessing(stripped, ZOOMS, {"SkullStripped": "false", "BiasFieldCorrected": False})
    assert (d.n4, d.skullstrip) == (True, True)
    d = decide_preprocessing(stripped, ZOOMS, {"SkullStripped": "maybe"})  # ignored
    assert (d.n4, d.skullstrip) == (False, False)
    d = decide_preprocessing(stripped, ZOOMS, {"SkullStripped": True}, force_n4=True)
    assert (d.n4, d.skullstrip) == (True, False)
    assert "forced on" in d.reasons["n4"]
    d = decide_preprocessing(head, ZOOMS, {}, force_skullstrip=False)
    assert (d.n4, d.skullstrip) == (True, False)  # N4 still follows the image (raw)
    d = decide_preprocessing(head, ZOOMS, {}, force_n4=False, force_skullstrip=True)
    assert (d.n4, d.skullstrip) == (False, True)
    parsed = json.loads(d.to_json())
    assert parsed["n4"] is False and parsed["skullstrip"] is True
    assert set(parsed["reasons"]) == {"n4", "skullstrip"}
    with pytest.raises(AttributeError):
        d.n4 = True  # type: ignore[misc]
    assert isinstance(d, PreprocDecisions)


# --- real data ---------------------------------------------------------------------------------

@pytest.mark.realdata
def test_real_decisions_stripped_and_raw() -> None:
    stripped = to_ras(load_flair(shared_file("3d-mr-ms", "patient26", "patient26_FLAIR_mni.nii.gz")))
    d = decide_preprocessing(np.asarray(stripped.dataobj), stripped.header.get_zooms()[:3], {})
    assert (d.n4, d.skullstrip) == (False, False), d.reasons
    raw = to_ras(load_flair(shared_file("raw-flair", "py_synthsr_FLAIR.nii.gz")))
    d = decide_preprocessing(np.asarray(raw.dataobj), raw.header.get_zooms()[:3], {})
    assert (d.n4, d.skullstrip) == (True, True), d.reasons
