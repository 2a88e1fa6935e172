"""Rebuild the shipped location labels of the MNI152 2009a template from nilearn's tissue maps.

    python scripts/build_anatomy_labels.py [--check]

Writes ``bids_msseg/data/templates/tpl-MNI152NLin2009aSym_res-1_desc-location_dseg.nii.gz``
(see :mod:`bids_msseg.anatomy.template` for the rules); ``--check`` only compares.
"""

from __future__ import annotations

import argparse
import sys

import nibabel as nib
import numpy as np

from bids_msseg.anatomy.template import TEMPLATE_LABELS, build_from_nilearn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the shipped file, write nothing")
    args = p.parse_args(argv)
    img = build_from_nilearn()
    if args.check:
        same = np.array_equal(np.asarray(nib.load(TEMPLATE_LABELS).dataobj), np.asarray(img.dataobj))
        print("identical" if same else "differs")
        return 0 if same else 1
    TEMPLATE_LABELS.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, TEMPLATE_LABELS)
    counts = np.bincount(np.asarray(img.dataobj).ravel())
    print(TEMPLATE_LABELS, {i: int(c) for i, c in enumerate(counts)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
