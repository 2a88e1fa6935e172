"""Checks shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.derivatives import derivative_paths

NIFTI_KEYS = ("mask", "probseg", "dseg", "brain")
#: Outputs of lesion location: written only when the template registration succeeded.
LOCATION_KEYS = ("location", "location_tsv", "location_json", "tpl_mask", "tpl_mask_json", "tpl_probseg",
                 "tpl_probseg_json")


def check_run_outputs(out_dir: Path, bids_dir: Path, relpath: str) -> dict[str, Path]:
    """Every derivative exists; images have the source's shape and affine; table and count agree."""
    paths = derivative_paths(out_dir, relpath)
    missing = [k for k, p in paths.items() if not p.is_file() and k not in LOCATION_KEYS]
    assert not missing, f"{relpath}: missing outputs {missing}"
    status = pd.read_csv(paths["summary"], sep="\t", keep_default_na=False).iloc[0]["location_status"]
    located = [k for k in LOCATION_KEYS if paths[k].is_file()]
    assert located == (list(LOCATION_KEYS) if status == "ok" else []), (relpath, status, located)
    source = nib.load(str(bids_dir / relpath))
    for key in NIFTI_KEYS:
        img = nib.load(str(paths[key]))
        assert img.shape == source.shape[:3], f"{key}: {img.shape} != {source.shape}"
        np.testing.assert_allclose(img.affine, source.affine, atol=1e-5, err_msg=key)
        assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(source.affine)
    mask = np.asanyarray(nib.load(str(paths["mask"])).dataobj)
    dseg = np.asanyarray(nib.load(str(paths["dseg"])).dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask > 0, dseg > 0)
    prob = np.asanyarray(nib.load(str(paths["probseg"])).dataobj)
    assert prob.dtype == np.float32 and prob.min() >= 0.0 and prob.max() <= 1.0
    n_rows = len(paths["dseg_tsv"].read_text().strip().splitlines()) - 1
    assert n_rows == int(dseg.max())
    return paths
