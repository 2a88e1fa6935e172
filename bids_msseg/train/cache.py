"""The preprocessing cache of the training: each FLAIR preprocessed once, with its mask on the same grid.

Each FLAIR is preprocessed exactly as the participant level does
(:func:`~bids_msseg.preproc.preprocess_flair`, honouring ``--n4``/``--skullstrip``) and its expert
mask brought to the same RAS+ grid; the results are cached as ``<cache_dir>/<scan key>.npz`` and
reused while the FLAIR, the mask and the settings are unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_msseg.errors import InputError
from bids_msseg.io import atomic_path
from bids_msseg.normalize import brain_quantiles
from bids_msseg.preproc import preprocess_flair
from bids_msseg.settings import force_flag
from bids_msseg.train.split import TrainingScan

LOGGER = logging.getLogger(__name__)


def load_mask_on_grid(mask_path: Path, ras: nib.Nifti1Image) -> np.ndarray:
    """The expert mask as a boolean array on the RAS+ grid of the preprocessed FLAIR ``ras``.

    The mask must be on the FLAIR's own voxel grid (same shape and affine, any orientation):
    it is reoriented, never resampled. Voxels >= 0.5 are lesion (0/1, 0/255 and probabilistic
    masks alike). Raises :class:`InputError` otherwise.
    """
    try:
        img = nib.load(str(mask_path))
    except Exception as err:  # nibabel raises many types for unreadable files
        raise InputError(f"{mask_path}: cannot be read as NIfTI ({err})") from err
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise InputError(f"{mask_path}: a lesion mask must be 3D, got shape {img.shape}")
    canonical = nib.as_closest_canonical(img)
    if canonical.shape != ras.shape[:3] or not np.allclose(canonical.affine, ras.affine, atol=1e-3, rtol=0):
        raise InputError(f"{mask_path}: not on its FLAIR's voxel grid (mask shape {img.shape}, FLAIR shape "
                         f"{ras.shape[:3]}, or different affines); masks must be drawn on the FLAIR itself")
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    return np.nan_to_num(data) >= 0.5


def _file_stamp(path: Path) -> list:
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def preprocess_scan(scan: TrainingScan, cache_dir: Path, n4: str, skullstrip: str,
                    force_contrast: bool = False, random_seed: int | None = None) -> Path:
    """Preprocess one FLAIR and its mask into ``cache_dir/<key>.npz`` (reused when still valid).

    The cache holds the corrected image, brain mask, lesion mask (and normal-hyperintensity mask) on the
    RAS+ grid, the voxel
    sizes and the brain quantiles (for the reference); it is valid while the FLAIR, the mask and
    the ``--n4``/``--skullstrip`` settings are unchanged. ``force_contrast`` (``--force-contrast``)
    uses an image the FLAIR-likeness screen refuses, as the participant level does; ``random_seed``
    (``--random-seed``) seeds the brain extraction's registration, so the cache repeats as a run does.
    """
    target = Path(cache_dir) / f"{scan.key}.npz"
    stamp = {"flair": _file_stamp(scan.run.path), "mask": _file_stamp(scan.mask), "n4": n4,
             "skullstrip": skullstrip, "random_seed": random_seed}
    if scan.normal is not None:  # only then: the caches of scans without one stay valid
        stamp["normal"] = _file_stamp(scan.normal)
    if target.is_file():
        with np.load(target, allow_pickle=False) as z:
            if json.loads(str(z["meta"])).get("stamp") == json.loads(json.dumps(stamp)):
                return target
    result = preprocess_flair(scan.run.path, sidecar=dict(scan.run.metadata) or None,
                              force_n4=force_flag(n4), force_skullstrip=force_flag(skullstrip),
                              force_contrast=force_contrast, random_seed=random_seed)
    lesion = load_mask_on_grid(scan.mask, result.ras)
    normal = load_mask_on_grid(scan.normal, result.ras) & ~lesion if scan.normal is not None else None
    brain = np.asarray(result.brain_mask, bool)
    n_lesion = int(lesion.sum())
    outside = int((lesion & ~brain).sum())
    if n_lesion and outside > 0.05 * n_lesion:
        LOGGER.warning("%s: %d of %d lesion voxels lie outside the brain mask (they are not trained on)",
                       scan.run.name, outside, n_lesion)
    meta = {"stamp": stamp, "decisions": json.loads(result.decisions.to_json())}
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, corrected=result.corrected.astype(np.float32), brain=brain.astype(np.uint8),
                     lesion=lesion.astype(np.uint8), zooms=np.asarray(result.zooms, np.float64),
                     quantiles=brain_quantiles(result.corrected, brain), meta=np.array(json.dumps(meta)),
                     **({"normal": normal.astype(np.uint8)} if normal is not None else {}))
    LOGGER.info("%s: preprocessed (%d lesion voxels)", scan.run.name, n_lesion)
    return target


def load_preprocessed(path: Path) -> dict[str, np.ndarray]:
    """A cached scan's arrays; ``normal`` (the normal-hyperintensity mask) only where the scan has one."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in ("corrected", "brain", "lesion", "zooms", "quantiles", "normal") if k in z}


def preprocess_scans(scans: Sequence[TrainingScan], cache_dir: Path, n4: str, skullstrip: str,
                     force_contrast: bool = False, random_seed: int | None = None) -> dict[str, Path]:
    """:func:`preprocess_scan` for every scan; the cache file by scan key. Failures are reported together."""
    cache: dict[str, Path] = {}
    failures: list[str] = []
    for scan in scans:
        try:
            cache[scan.key] = preprocess_scan(scan, cache_dir, n4, skullstrip, force_contrast, random_seed)
        except InputError as err:
            failures.append(f"{scan.run.relpath}: {err}")
            LOGGER.error("%s", err)
    if failures:
        raise InputError(f"{len(failures)} training scan(s) could not be used (exclude them with "
                         f"--participant-label or --bids-filter-file, or fix them):\n  " + "\n  ".join(failures))
    return cache
