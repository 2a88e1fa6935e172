"""A synthetic pair of visits for the longitudinal tests: a known new lesion, a known enlarging one, a moved head.

The phantom is an analytic head (texture, asymmetric ventricles, lesions as bright spheres) sampled
on a 2 x 2 x 3 mm grid; the follow-up samples the same head after a rigid move, so the true
transform is known. Probability maps stand in for the network: high inside the lesions, plus a
"network-only" lesion at follow-up whose image did not change (the over-segmentation the change
rule must not call new).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_msseg.bids import FlairRun
from bids_msseg.derivatives import derivative_paths
from bids_msseg.lesions import LesionDefinition

SHAPE = (96, 96, 40)
ZOOMS = (2.0, 2.0, 3.0)
DEFINITION = LesionDefinition(connectivity=3, min_size_mm3=5.0)
#: Lesions in head coordinates (mm): name -> (centre, radius at baseline, radius at follow-up).
LESIONS = {
    "stable": ((-20.0, 10.0, 5.0), 5.0, 5.0),
    "new": ((22.0, -15.0, 10.0), 0.0, 4.5),
    "enlarging": ((15.0, 25.0, -5.0), 4.0, 6.5),
}
NETWORK_ONLY = ((-25.0, -25.0, 15.0), 4.0)  # follow-up probability only, no image change


def grid_affine() -> np.ndarray:
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * np.array(ZOOMS)
    return affine


def rigid(rotation_deg: float = 0.0, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 head -> scanner move (rotation about the z axis, then a shift), RAS mm."""
    a = np.deg2rad(rotation_deg)
    move = np.eye(4)
    move[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    move[:3, 3] = shift_mm
    return move


def phantom(visit: int, move: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FLAIR, brain mask, lesion probability and true lesion mask of one visit (0 baseline, 1 follow-up)."""
    affine = grid_affine()
    ijk = np.indices(SHAPE).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    head = (np.linalg.inv(move) @ np.vstack([world, np.ones(world.shape[1])]))[:3]
    x, y, z = (c.reshape(SHAPE) for c in head)
    brain = (x / 70) ** 2 + (y / 85) ** 2 + (z / 50) ** 2 <= 1
    skull = ((x / 78) ** 2 + (y / 93) ** 2 + (z / 58) ** 2 <= 1) & ~brain
    flair = np.where(brain, 1.0 + 0.15 * np.sin(x / 7) * np.cos(y / 9) + 0.1 * np.sin(z / 6 + x / 20), 0.0)
    ventricle = ((x - 8) / 9) ** 2 + ((y + 5) / 22) ** 2 + (z / 14) ** 2 <= 1
    flair[ventricle] = 0.3
    flair[skull] = 1.6
    lesion = np.zeros(SHAPE, bool)
    prob = np.zeros(SHAPE, np.float32)
    for centre, r0, r1 in LESIONS.values():
        r = (r0, r1)[visit]
        if r <= 0:
            continue
        inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= r**2
        lesion |= inside
    flair[lesion] = 1.9
    prob[lesion] = 0.95
    if visit == 1:
        centre, r = NETWORK_ONLY
        prob[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= r**2] = 0.9
    rng = np.random.default_rng(seed + visit)
    flair = (flair + rng.normal(0, 0.02, SHAPE)) * 400
    return np.clip(flair, 0, None).astype(np.float32), brain, prob, lesion


def lesion_at(result_table: pd.DataFrame, centre_world: np.ndarray) -> pd.Series:
    """The table row whose centroid is closest to ``centre_world``."""
    xyz = result_table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)
    return result_table.iloc[int(np.argmin(np.linalg.norm(xyz - centre_world, axis=1)))]


def write_session(bids: Path, out: Path, session: str | None, move: np.ndarray, visit: int,
                   subject: str = "01") -> FlairRun:
    """One segmented visit: the phantom FLAIR in ``bids``, its brain mask and probability in ``out``."""
    flair, brain, prob, _ = phantom(visit, move)
    ses = f"_ses-{session}" if session else ""
    rel = f"sub-{subject}/{f'ses-{session}/' if session else ''}anat/sub-{subject}{ses}_FLAIR.nii.gz"
    (bids / rel).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(flair, grid_affine()), bids / rel)
    paths = derivative_paths(out, rel)
    paths["brain"].parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), grid_affine()), paths["brain"])
    nib.save(nib.Nifti1Image(prob, grid_affine()), paths["probseg"])
    volume_ml = float((prob >= 0.5).sum()) * float(np.prod(ZOOMS)) / 1000.0  # the run's own lesion volume
    paths["summary"].write_text(f"source\ttotal_lesion_volume_ml\n{rel}\t{volume_ml:.4f}\n")
    entities = {"subject": subject} | ({"session": session} if session else {})
    return FlairRun(path=bids / rel, relpath=rel, entities=entities)
