"""bids_msseg.preproc.n4: N4 bias-field correction."""

from __future__ import annotations

import numpy as np
import pytest

from tests.preproc.helpers import SHAPE, ZOOMS, synthetic_head


def test_n4_removes_a_synthetic_bias_field(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ants")
    from bids_msseg.preproc import n4
    from bids_msseg.preproc.n4 import n4_correct

    monkeypatch.setattr(n4, "N4_GRID_MM", 8.0)  # N4's cost grows with its voxels; 8 mm keeps this quick

    data = synthetic_head(skull=False, seed=3)
    affine = np.diag([*ZOOMS, 1.0])
    x = np.indices(SHAPE)[0] / SHAPE[0]
    biased = data * (0.7 + 0.6 * x)
    region = (data > 340) & (data < 420)  # white matter: uniform before the bias
    def cv(img: np.ndarray) -> float:
        return float(np.std(img[region]) / np.mean(img[region]))
    corrected = n4_correct(biased, affine, mask=data > 0)
    assert corrected.dtype == np.float32 and corrected.shape == SHAPE
    assert cv(corrected) < 0.6 * cv(biased)
    assert np.all(corrected[data == 0] == 0)
