"""Run preprocess_flair on the raw FLAIRs of ../shared/data and draw the brain masks for checking.

Usage: python scripts/check_brain_extraction.py OUT_DIR [--data DIR]

For every ``raw-flair/*_FLAIR.nii.gz`` and the skull-stripped 3D-MR-MS patient 26, logs one table
row (decisions, brain-mask volume, seconds per step) and writes ``OUT_DIR/<name>.png``: the
bias-corrected FLAIR in three orthogonal views through the mask's centre plus six axial slices,
with the brain mask's outline in red. Look at every picture.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger("check_brain_extraction")
REPO = Path(__file__).resolve().parents[1]


def overlay_png(result, title: str, out: Path) -> None:
    """Save the FLAIR with the brain mask outline (red): 3 orthogonal views and 6 axial slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, mask, (zx, zy, zz) = result.corrected, result.brain_mask, result.zooms
    vmax = float(np.percentile(data[data > 0], 99.5)) if np.any(data > 0) else 1.0
    if mask.any():
        centre = [int(round(c)) for c in np.argwhere(mask).mean(axis=0)]
        zs = np.nonzero(mask.any(axis=(0, 1)))[0]
        axial = np.linspace(zs.min(), zs.max(), 8)[1:-1].round().astype(int)
    else:
        centre = [s // 2 for s in data.shape]
        axial = np.linspace(0, data.shape[2] - 1, 8)[1:-1].round().astype(int)
    views = [
        ("sagittal", data[centre[0]].T, mask[centre[0]].T, zz / zy),
        ("coronal", data[:, centre[1]].T, mask[:, centre[1]].T, zz / zx),
        ("axial", data[:, :, centre[2]].T, mask[:, :, centre[2]].T, zy / zx),
    ] + [(f"axial k={k}", data[:, :, k].T, mask[:, :, k].T, zy / zx) for k in axial]
    fig, axes = plt.subplots(3, 3, figsize=(12, 12))
    for ax, (name, img, msk, aspect) in zip(axes.flat, views, strict=True):
        ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
        if msk.any():
            ax.contour(msk.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=60)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder for the overlay PNGs (outside the repository)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (default: ../shared/data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MPLCONFIGDIR", str(args.out_dir / ".mplconfig"))
    sys.path.insert(0, str(REPO))
    from bids_msseg.errors import InputError
    from bids_msseg.preproc import preprocess_flair

    files = sorted((args.data / "raw-flair").glob("*_FLAIR.nii.gz"))
    files.append(args.data / "3d-mr-ms" / "patient26" / "patient26_FLAIR_mni.nii.gz")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        name = path.name.removesuffix(".nii.gz")
        start = time.perf_counter()
        try:
            result = preprocess_flair(path)
        except InputError as err:
            LOGGER.error("%s: %s", name, err)
            rows.append((name, "FAILED", float("nan"), {}, time.perf_counter() - start))
            continue
        total = time.perf_counter() - start
        dec = f"N4={'y' if result.decisions.n4 else 'n'} BET={'y' if result.decisions.skullstrip else 'n'}"
        rows.append((name, dec, result.brain_volume_ml, result.timings, total))
        title = f"{name}  {dec}  brain {result.brain_volume_ml:.0f} mL"
        overlay_png(result, title, args.out_dir / f"{name}.png")
    header = (f"{'file':<48} {'decisions':<12} {'brain mL':>8} {'load':>5} {'dec':>5} {'n4':>6} "
              f"{'brain':>6} {'total':>6}")
    lines = [header, "-" * len(header)]
    for name, dec, vol, t, total in rows:
        lines.append(f"{name:<48} {dec:<12} {vol:8.0f} {t.get('load', 0):5.1f} {t.get('decide', 0):5.1f} "
                     f"{t.get('n4', 0):6.1f} {t.get('brain', 0):6.1f} {total:6.1f}")
    LOGGER.info("brain extraction check:\n%s", "\n".join(lines))
    return 0 if all(r[1] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
