"""The Ljubljana longitudinal transforms on the real data: read as ITK does (common -> raw FLAIR, LPS),
both studies of a patient line up on the common grid; read the other way round they do not.

Skips when ../shared/data is absent (it is never copied into the repository).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_msseg.longitudinal.registration import read_itk_affine, resample, vox2vox
from tests.helpers import SHARED_DATA

DATA = SHARED_DATA
LONGITUDINAL = DATA / "longitudinal"

pytestmark = pytest.mark.skipif(not (LONGITUDINAL / "patient01_gt.nii.gz").is_file(),
                                reason=f"the Ljubljana longitudinal data is not in {LONGITUDINAL}")


def _on_common(patient: str, study: int, common: nib.Nifti1Image, invert: bool) -> np.ndarray:
    raw = nib.load(DATA / f"raw-flair/ljubljana-longitudinal_patient{patient}_study{study}_FLAIR.nii.gz")
    matrix = read_itk_affine(LONGITUDINAL / f"patient{patient}_study{study}_FLAIR_to_common_space.txt")
    if invert:
        matrix = np.linalg.inv(matrix)
    return resample(np.asarray(raw.dataobj, np.float32), vox2vox(common.affine, raw.affine, matrix), common.shape)


@pytest.mark.parametrize("patient", ["01", "03", "12"])
def test_both_studies_line_up_on_the_common_grid(patient: str):
    common = nib.load(LONGITUDINAL / f"patient{patient}_brainmask.nii.gz")
    brain = np.asarray(common.dataobj) > 0
    r = {}
    for invert in (False, True):
        one, two = (_on_common(patient, s, common, invert) for s in (1, 2))
        r[invert] = np.corrcoef(one[brain], two[brain])[0, 1]
    # measured: 0.94 (01), 0.72 (03: another scanner and resolution at study 1), 0.96 (12); inverted <= 0
    assert r[False] > 0.65
    assert r[True] < 0.2 < r[False] - 0.5
    # the change mask lies inside the brain mask on the same grid
    truth = np.asarray(nib.load(LONGITUDINAL / f"patient{patient}_gt.nii.gz").dataobj) > 0
    assert truth.any() and (truth & brain).sum() / truth.sum() > 0.95
