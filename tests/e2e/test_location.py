"""Lesions placed at known places in template anatomy are classified correctly through the participant CLI.

The FLAIR is drawn from the shipped template labels (FLAIR-like contrast: dark CSF, grey brighter
than white), on a 2 mm grid shifted and rotated away from the template, with four bright blobs:
touching a lateral ventricle, in the cortex, in the pons, in deep white matter. The network is
replaced by a stub that finds the blobs (nipype's Linear plugin runs the nodes in this process),
so the test checks anatomy, registration, classification and outputs, not the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_msseg.anatomy.template import REGIONS, mni152_template
from bids_msseg.cli.run import main
from bids_msseg.derivatives import derivative_paths
from bids_msseg.frequency import FREQUENCY_JSON, FREQUENCY_MAP
from tests.e2e.helpers import LOCATION_KEYS

INTENSITY = {0: 0.0, REGIONS["lateral_ventricles"]: 0.12, REGIONS["cortex"]: 0.62, REGIONS["white_matter"]: 0.45,
             REGIONS["deep_grey"]: 0.55, REGIONS["infratentorial"]: 0.5, REGIONS["csf"]: 0.15}
BLOB_MM = 3.5


def _pick(labels: np.ndarray, zooms: float, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Blob centres (voxel indices of the 2 mm template grid) for each class."""
    wm = labels == REGIONS["white_matter"]
    d_vent = ndimage.distance_transform_edt(labels != REGIONS["lateral_ventricles"], sampling=zooms)
    d_ctx = ndimage.distance_transform_edt(labels != REGIONS["cortex"], sampling=zooms)
    ijk = np.indices(labels.shape)
    xyz = np.einsum("ij,j...->i...", affine[:3, :3], ijk) + affine[:3, 3][:, None, None, None]
    x, y, z = xyz

    def best(candidates: np.ndarray, score: np.ndarray) -> np.ndarray:
        idx = np.argwhere(candidates)
        return idx[np.argmin(score[candidates])]

    return {
        "periventricular": best(wm & (d_vent <= 3) & (z > 15) & (x > 0) & (d_ctx > 8), np.abs(y)),
        "juxtacortical": best(wm & (d_ctx <= 2) & (d_vent > 25) & (z > 30) & (x < 0), np.abs(y + 20)),
        "infratentorial": best(labels == REGIONS["infratentorial"], (x ** 2 + (y + 28) ** 2 + (z + 32) ** 2)),
        "subcortical": best(wm & (d_vent > 12) & (d_ctx > 9), (x - 25) ** 2 + y ** 2 + (z - 25) ** 2),
    }


def _misplacement() -> np.ndarray:
    """The scan is placed 6 mm and 6 degrees away from the template: registration has work to do."""
    angle = np.deg2rad(6.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0, 0], [np.sin(angle), np.cos(angle), 0, 0],
                    [0, 0, 1, 0], [0, 0, 0, 1]])
    shift = np.eye(4)
    shift[:3, 3] = (6.0, -4.0, 3.0)
    return shift @ rot


@pytest.fixture(scope="module")
def located_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    template = mni152_template()
    labels1 = template.labels
    labels = labels1[::2, ::2, ::2]
    affine = template.affine.copy()
    affine[:3, :3] *= 2
    image = np.vectorize(INTENSITY.get, otypes=[np.float32])(labels)
    image = ndimage.gaussian_filter(image, 0.6)
    centres = _pick(labels, 2.0, affine)
    ijk = np.indices(labels.shape)
    for centre in centres.values():
        inside = ((ijk - centre[:, None, None, None]) ** 2).sum(0) * 4.0 <= BLOB_MM ** 2
        image[inside] = 1.0
    image[labels == 0] = 0.0
    moved = _misplacement() @ affine
    world = {name: moved[:3, :3] @ c + moved[:3, 3] for name, c in centres.items()}
    root = tmp_path_factory.mktemp("located") / "bids"
    anat = root / "sub-loc" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "located", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    img = nib.Nifti1Image((image * 1000).astype(np.int16), moved)
    img.set_qform(moved, 1)
    img.set_sform(moved, 1)
    nib.save(img, anat / "sub-loc_FLAIR.nii.gz")
    (anat / "sub-loc_FLAIR.json").write_text(json.dumps({"MRAcquisitionType": "3D"}))
    return root, world


def _bright_blobs(data, brain_mask, zooms, bundle, device, **kwargs):
    """Stands in for the network: the blobs are the brightest voxels."""
    return (np.asarray(data) >= 0.85 * float(np.max(data))).astype(np.float32) * np.asarray(brain_mask, bool)


def _participant(root: Path, out: Path, work: Path, bundle: Path, *extra: str) -> list[str]:
    return [str(root), str(out), "participant", "-w", str(work), "--nipype-plugin", "Linear", "--model", str(bundle),
            "--n4", "off", "--skullstrip", "off", "--random-seed", "1", "--skip-bids-validation", *extra]


def test_known_lesion_locations_through_the_cli(located_dataset, tmp_path: Path, tiny_bundle: Path,
                                                monkeypatch: pytest.MonkeyPatch, run_validator) -> None:
    import bids_msseg.segment

    monkeypatch.setattr(bids_msseg.segment, "segment_volume", _bright_blobs)
    root, world = located_dataset
    out = tmp_path / "out"
    assert main(_participant(root, out, tmp_path / "work", tiny_bundle)) == 0
    paths = derivative_paths(out, "sub-loc/anat/sub-loc_FLAIR.nii.gz")
    table = pd.read_csv(paths["dseg_tsv"], sep="\t")
    assert len(table) == 4, table
    centroids = table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    to_template = np.linalg.inv(_misplacement())
    for name, position in world.items():
        row = table.iloc[int(np.argmin(np.linalg.norm(centroids - position, axis=1)))]
        assert row["location"] == name, (name, row.to_dict())
        # the template-space centroid is where the blob was drawn in the template (issue 25)
        in_template = to_template[:3, :3] @ position + to_template[:3, 3]
        mapped = row[["centroid_x_template_mm", "centroid_y_template_mm", "centroid_z_template_mm"]].to_numpy(float)
        assert np.linalg.norm(mapped - in_template) < 4.0, (name, mapped, in_template)

    summary = pd.read_csv(paths["summary"], sep="\t").iloc[0]
    for name in world:
        assert summary[f"{name}_count"] == 1
    assert summary["mcdonald_regions"] == 3 and summary["location_status"] == "ok"
    location = nib.load(paths["location"])
    assert location.shape == nib.load(root / "sub-loc/anat/sub-loc_FLAIR.nii.gz").shape
    assert set(np.unique(np.asarray(location.dataobj))) == {0, 1, 2, 3, 4}
    tpl = nib.load(paths["tpl_mask"])
    assert tpl.shape == mni152_template().image.shape and np.asarray(tpl.dataobj).sum() > 0
    assert pd.read_csv(paths["location_tsv"], sep="\t")["name"].tolist() == list(world)

    issues = [i for i in run_validator(out) if i.get("severity") == "error"]
    assert not issues, issues


def test_no_location_then_location_then_the_group_level(located_dataset, tmp_path: Path, tiny_bundle: Path,
                                                        monkeypatch: pytest.MonkeyPatch, run_validator) -> None:
    """--no-location: n/a columns, no location files, validator clean; run again without it: the run is
    recomputed (not skipped as complete) and located; the group level then maps the lesion frequency."""
    import bids_msseg.segment

    monkeypatch.setattr(bids_msseg.segment, "segment_volume", _bright_blobs)
    root, _ = located_dataset
    out, work = tmp_path / "out", tmp_path / "work"
    assert main(_participant(root, out, work, tiny_bundle, "--no-location")) == 0
    paths = derivative_paths(out, "sub-loc/anat/sub-loc_FLAIR.nii.gz")
    assert not [key for key in LOCATION_KEYS if paths[key].exists()]
    table = pd.read_csv(paths["dseg_tsv"], sep="\t", keep_default_na=False)
    assert len(table) == 4 and set(table["location"]) == set(table["confluent"]) == {"n/a"}
    summary = pd.read_csv(paths["summary"], sep="\t", keep_default_na=False).iloc[0]
    assert summary["location_status"] == "off: --no-location"
    assert summary["periventricular_count"] == summary["mcdonald_regions"] == "n/a"
    assert "Lesion locations are n/a: off: --no-location." in paths["report"].read_text()
    issues = [i for i in run_validator(out) if i.get("severity") == "error"]
    assert not issues, issues

    assert main(_participant(root, out, work, tiny_bundle)) == 0  # location on: recomputed, not skipped
    summary = pd.read_csv(paths["summary"], sep="\t").iloc[0]
    assert summary["location_status"] == "ok" and summary["mcdonald_regions"] == 3
    assert all(paths[key].is_file() for key in LOCATION_KEYS)

    assert main([str(root), str(out), "group", "-w", str(work), "--skip-bids-validation"]) == 0
    cohort = pd.read_csv(out / "group_lesions.tsv", sep="\t").iloc[0]
    assert cohort["periventricular_count"] == cohort["infratentorial_count"] == 1
    frequency = nib.load(out / FREQUENCY_MAP)
    mask = np.asarray(nib.load(paths["tpl_mask"]).dataobj)
    np.testing.assert_array_equal(np.asarray(frequency.dataobj), mask.astype(np.float32))  # one run: share 0 or 1
    assert json.loads((out / FREQUENCY_JSON).read_text())["NumberOfRuns"] == 1
    html = (out / "group_report.html").read_text()
    assert "group_figures/lesion_frequency.png" in html and 'id="location-classes"' in html
    issues = [i for i in run_validator(out) if i.get("severity") == "error"]
    assert not issues, issues  # the location files of the run and the group's map

    assert main(_participant(root, out, work, tiny_bundle, "--no-location")) == 0  # and off again
    assert not [key for key in LOCATION_KEYS if paths[key].exists()]
