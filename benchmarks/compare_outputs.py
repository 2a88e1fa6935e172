#!/usr/bin/env python
"""Compare the participant outputs of two runs (e.g. main's and a branch's) file by file.

    python benchmarks/compare_outputs.py BEFORE_DIR AFTER_DIR

For every NIfTI under ``BEFORE_DIR`` (an output folder, or a ``bench_participant.py`` work folder
holding ``case*/out``): whether its voxel data are identical in ``AFTER_DIR``, else the largest
absolute difference, and for lesion masks (``_mask.nii.gz`` with ``label-lesion``) the Dice
coefficient. TSV files are compared as text (identical or the number of differing lines). Sidecars
(JSON) and reports hold times and paths, so they are not compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def compare(before: Path, after: Path) -> list[str]:
    """One line per compared file."""
    lines = []
    for old in sorted(before.rglob("*")):
        rel = old.relative_to(before)
        new = after / rel
        if "work" in rel.parts or "logs" in rel.parts or not old.is_file():
            continue
        if old.name.endswith((".nii", ".nii.gz")):
            if not new.exists():
                lines.append(f"MISSING  {rel}")
                continue
            a, b = np.asanyarray(nib.load(old).dataobj), np.asanyarray(nib.load(new).dataobj)
            if a.shape == b.shape and np.array_equal(a, b):
                verdict = "identical"
            elif a.shape != b.shape:
                verdict = f"shape {a.shape} vs {b.shape}"
            else:
                verdict = f"max |diff| {float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))):.3g}"
            if "label-lesion_mask" in old.name:
                verdict += f", Dice {dice(a, b):.4f} ({int((a > 0).sum())} / {int((b > 0).sum())} voxels)"
            lines.append(f"{verdict:<40} {rel}")
        elif old.suffix == ".tsv":
            if not new.exists():
                lines.append(f"MISSING  {rel}")
                continue
            x, y = old.read_text().splitlines(), new.read_text().splitlines()
            differing = sum(1 for p, q in zip(x, y, strict=False) if p != q) + abs(len(x) - len(y))
            lines.append(f"{'identical' if not differing else f'{differing} line(s) differ':<40} {rel}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args()
    lines = compare(args.before, args.after)
    print("\n".join(lines) if lines else "nothing to compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
