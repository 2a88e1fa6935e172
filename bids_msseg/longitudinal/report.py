"""The per-subject longitudinal report: each follow-up beside its baseline, the change overlaid.

One self-contained HTML file (figures embedded as PNG), written atomically; the axial slices shown
are those with the most new and enlarging lesion voxels (else the most lesion voxels).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bids_msseg.io import write_text_atomic
from bids_msseg.longitudinal.change import CHANGE_LABELS, POSITIVE_LABELS

if TYPE_CHECKING:
    from bids_msseg.longitudinal.pipeline import PairResult, Visit3D

#: Colours of the change labels in the figures (stable, new, enlarging, shrinking, disappearing).
COLOURS = {1: (1.0, 1.0, 0.0), 2: (1.0, 0.1, 0.1), 3: (1.0, 0.55, 0.0), 4: (0.3, 0.6, 1.0), 5: (0.1, 0.3, 1.0)}


def pick_slices(change_map: np.ndarray, n: int = 3) -> list[int]:
    """Axial (third-axis) slices with the most new/enlarging voxels, else the most lesion voxels."""
    positive = np.isin(change_map, POSITIVE_LABELS).sum(axis=(0, 1))
    score = positive if positive.any() else (change_map > 0).sum(axis=(0, 1))
    if not score.any():
        return [change_map.shape[2] // 2]
    order = [int(k) for k in np.argsort(-score, kind="stable") if score[k] > 0]
    return sorted(order[:n])


def _rgba(change: np.ndarray) -> np.ndarray:
    rgba = np.zeros(change.shape + (4,), np.float32)
    for value, colour in COLOURS.items():
        rgba[change == value] = (*colour, 0.75)
    return rgba


def pair_figure(baseline: np.ndarray, followup: np.ndarray, change: np.ndarray, slices: Sequence[int]) -> bytes:
    """PNG of rows (one per slice): baseline, follow-up, follow-up with the change overlaid."""
    import matplotlib  # lazy: matplotlib is heavy and only the reports need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as above

    vmax = float(np.percentile(baseline[baseline > 0], 99.5)) if np.any(baseline > 0) else 1.0
    fig, axes = plt.subplots(len(slices), 3, figsize=(9, 3 * len(slices)), squeeze=False)
    for row, k in enumerate(slices):
        for col, (title, image) in enumerate((("baseline", baseline), ("follow-up (registered)", followup),
                                              ("change", followup))):
            ax = axes[row, col]
            ax.imshow(np.rot90(image[:, :, k]), cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            if col == 2:
                ax.imshow(np.rot90(_rgba(change[:, :, k])), interpolation="nearest")
            ax.set_title(f"{title}, slice {k}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def render_subject_report(path: Path, subject: str, baseline: Visit3D, pairs: Sequence[PairResult]) -> Path:
    """Write the subject's longitudinal report to ``path``."""
    legend = " ".join(
        f'<span style="background:rgb({",".join(str(int(255 * c)) for c in COLOURS[v])});padding:0 6px">'
        f"{html.escape(name)}</span>" for v, name in CHANGE_LABELS.items())
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sub-{html.escape(subject)} longitudinal"
             "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style></head><body>",
             f"<h1>sub-{html.escape(subject)}: lesion change between sessions</h1>",
             f"<p>Change classes: {legend}</p>"]
    for pair in pairs:
        title = f"ses-{pair.followup.session} vs baseline ses-{pair.baseline.session}"
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if pair.change is None or pair.followup_on_baseline is None:
            parts.append(f"<p><b>Not compared:</b> {html.escape(pair.status)}</p>")
            continue
        c, reg = pair.change, pair.registration
        counts = ", ".join(f"{c.count(name)} {name}" for name in ("new", "enlarging", "shrinking", "disappearing",
                                                                 "stable"))
        parts.append(f"<p>{counts}; total lesion volume {c.volume_mm3('baseline_volume_mm3') / 1000:.2f} -> "
                     f"{c.volume_mm3('followup_volume_mm3') / 1000:.2f} mL"
                     + (f"; registration {reg.transform}, brain Dice {reg.brain_dice:.3f}, intensity correlation "
                        f"{reg.correlation:.3f}" if reg is not None else "") + "</p>")
        png = pair_figure(baseline.flair, pair.followup_on_baseline, c.change_map, pick_slices(c.change_map))
        parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
        changed = c.table[c.table["change"] != "stable"]
        if len(changed):
            parts.append(changed.to_html(index=False, border=0))
    parts.append("</body></html>")
    return write_text_atomic(Path(path), "\n".join(parts) + "\n")
