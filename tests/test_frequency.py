"""The cohort lesion-frequency map (bids_msseg/frequency.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_msseg.derivatives import derivative_paths
from bids_msseg.frequency import FREQUENCY_JSON, FREQUENCY_MAP, cohort_frequency, lesion_frequency, write_frequency_map

SHAPE = (6, 5, 4)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def test_lesion_frequency_is_the_share_of_masks_per_voxel() -> None:
    a, b, c, d = (np.zeros(SHAPE, np.uint8) for _ in range(4))
    a[0, 0, 0] = b[0, 0, 0] = c[0, 0, 0] = 1  # three of four
    a[1, 1, 1] = 1  # one of four
    d[2, 2, 2] = 7  # any non-zero value is a lesion
    frequency, n = lesion_frequency(iter([a, b, c, d]))
    assert n == 4 and frequency.dtype == np.float32 and frequency.shape == SHAPE
    assert frequency[0, 0, 0] == 0.75 and frequency[1, 1, 1] == 0.25 and frequency[2, 2, 2] == 0.25
    assert frequency.sum() == pytest.approx(1.25)


def test_lesion_frequency_of_nothing_and_of_mixed_grids() -> None:
    frequency, n = lesion_frequency([])
    assert n == 0 and frequency.size == 0
    with pytest.raises(ValueError, match="shape"):
        lesion_frequency([np.zeros(SHAPE), np.zeros((2, 2, 2))])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), str(path))


def test_cohort_frequency_reads_the_runs_template_masks(tmp_path: Path) -> None:
    sources = [f"sub-0{i}/anat/sub-0{i}_FLAIR.nii.gz" for i in range(1, 6)]
    cohort = pd.DataFrame({"source": sources, "status": ["ok", "ok", "ok", "ok", "failed"],
                           "location_status": ["ok", "ok", "off: --no-location", "ok", None]})
    first, second = np.zeros(SHAPE), np.zeros(SHAPE)
    first[1:3, 1:3, 1:3] = 1
    second[2:4, 2:4, 2:4] = 1
    _save(derivative_paths(tmp_path, sources[0])["tpl_mask"], first)
    _save(derivative_paths(tmp_path, sources[1])["tpl_mask"], second)
    _save(derivative_paths(tmp_path, sources[3])["tpl_mask"], second, AFFINE * 2)  # another grid
    _save(derivative_paths(tmp_path, sources[4])["tpl_mask"], first)  # a failed run: never read

    result = cohort_frequency(cohort, tmp_path)
    assert result is not None and result.runs == sources[:2] and result.n_runs == 2
    assert result.frequency[2, 2, 2] == 1.0 and result.frequency[1, 1, 1] == 0.5 and result.frequency[3, 3, 3] == 0.5
    assert result.frequency.sum() == pytest.approx(8.0)  # (8 + 8 voxels) / 2 runs
    assert set(result.left_out) == {sources[2], sources[3]}
    assert "off: --no-location" in result.left_out[sources[2]] and "another grid" in result.left_out[sources[3]]
    np.testing.assert_array_equal(result.affine, AFFINE)

    path = write_frequency_map(tmp_path, result)
    assert path == tmp_path / FREQUENCY_MAP
    img = nib.load(path)
    assert img.get_data_dtype() == np.float32 and int(img.header["sform_code"]) == 4
    np.testing.assert_array_equal(np.asarray(img.dataobj), result.frequency)
    sidecar = json.loads((tmp_path / FREQUENCY_JSON).read_text())
    assert sidecar["NumberOfRuns"] == 2 and sidecar["NumberOfSubjects"] == 2
    assert sidecar["Sources"][0] == "bids::" + derivative_paths(Path("."), sources[0])["tpl_mask"].as_posix()
    assert set(sidecar["RunsLeftOut"]) == {sources[2], sources[3]}


def test_cohort_frequency_without_template_masks_is_none(tmp_path: Path) -> None:
    cohort = pd.DataFrame({"source": ["sub-01/anat/sub-01_FLAIR.nii.gz"], "status": ["ok"],
                           "location_status": ["failed: the template covers only 12% of the brain mask"]})
    assert cohort_frequency(cohort, tmp_path) is None
