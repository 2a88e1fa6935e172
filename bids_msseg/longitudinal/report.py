"""The per-subject longitudinal report: each follow-up beside its baseline, the change overlaid.

One self-contained HTML file (figures embedded as PNG), written atomically, styled by the reports'
one stylesheet (:mod:`bids_msseg.reports.common`). Per follow-up: the counts per change class, both
pairs of volumes, labelled (each run's own, as in its report, and the paired comparison's on the
baseline grid, which the change classes describe; docs/longitudinal.md), the registration, a
figure and the table of the lesions that changed (lesion number, change and volumes first). The
figure shows, in RAS+ orientation (neurological convention, L on the left) and cropped to the
brain, the axial slices with the most new and enlarging lesion voxels (else the most lesion
voxels): baseline, follow-up registered onto it, and the follow-up with the change overlaid.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from bids_msseg import __version__
from bids_msseg.io import write_text_atomic
from bids_msseg.longitudinal.change import CHANGE_CLASSES, CHANGE_LABELS, CHANGE_NAMES, POSITIVE_LABELS
from bids_msseg.reports.common import OKABE_ITO, environment, plural, table_html

if TYPE_CHECKING:
    from bids_msseg.longitudinal.pipeline import PairResult, Visit3D

TEMPLATE = "longitudinal.html.j2"
#: Colours of the change labels (Okabe & Ito's colour-blind-safe palette), keyed by change-map value.
COLOURS: dict[int, str] = {1: OKABE_ITO["sky blue"], 2: OKABE_ITO["vermillion"], 3: OKABE_ITO["orange"],
                           4: OKABE_ITO["bluish green"], 5: OKABE_ITO["blue"], 6: OKABE_ITO["reddish purple"]}
#: Axial slices shown per pair, and the pixels across one row of the figure (three panels).
N_SLICES = 3
FIGURE_PIXELS = 1200
DPI = 100
#: Columns of the lesion TSV left out of the report's table (the TSV has them).
CENTROID_COLUMNS = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
#: Key columns of the changed-lesion table, shown first.
KEY_COLUMNS = ("index", "change", "baseline_volume_mm3", "followup_volume_mm3", "volume_change_mm3",
               "relative_change")


def pick_slices(change_map: np.ndarray, n: int = N_SLICES) -> list[int]:
    """Axial (third-axis) slices with the most new/enlarging voxels, else the most lesion voxels."""
    positive = np.isin(change_map, POSITIVE_LABELS).sum(axis=(0, 1))
    score = positive if positive.any() else (change_map > 0).sum(axis=(0, 1))
    if not score.any():
        return [change_map.shape[2] // 2]
    order = [int(k) for k in np.argsort(-score, kind="stable") if score[k] > 0]
    return sorted(order[:n])


def _rgba(change: np.ndarray) -> np.ndarray:
    from matplotlib.colors import to_rgb  # lazy: matplotlib, only while drawing a report

    rgba = np.zeros(change.shape + (4,), np.float32)
    for value, colour in COLOURS.items():
        rgba[change == value] = (*to_rgb(colour), 0.7)
    return rgba


def pair_figure(baseline: np.ndarray, followup: np.ndarray, change: np.ndarray, affine: np.ndarray,
                brain: np.ndarray | None = None, n: int = N_SLICES) -> bytes:
    """PNG with one row per axial slice: baseline, follow-up (registered), follow-up with the change.

    All arrays are on the baseline grid whose ``affine`` is given; they are shown in RAS+ (L on the
    left, anterior up), cropped to ``brain`` (or to the non-zero baseline), with the voxel aspect.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib, only while drawing a report

    from bids_msseg.reports.participant import _bounding_box, _ras_zooms, _to_ras  # lazy: imports matplotlib

    base, follow, labels = (_to_ras(np.asarray(a), affine) for a in (baseline, followup, change))
    region = _to_ras(np.asarray(brain, bool), affine) if brain is not None else base > 0
    zooms = _ras_zooms(nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), affine))
    slices = pick_slices(labels, n)
    box = _bounding_box(region if region.any() else np.ones(base.shape, bool))
    inside = base[region] if region.any() else base[base > 0]
    vmax = float(np.percentile(inside, 99.5)) if inside.size else 1.0
    aspect = zooms[1] / zooms[0]

    def cut(volume: np.ndarray, k: int) -> np.ndarray:
        return np.flipud(volume[box[0], box[1], k].T)

    height, width = cut(base, slices[0]).shape[:2]
    panel = FIGURE_PIXELS / 3 / DPI
    fig = Figure(figsize=(3 * panel, len(slices) * panel * height * aspect / max(width, 1)), facecolor="black")
    for row, k in enumerate(slices):
        for col, (title, image) in enumerate((("baseline", base), ("follow-up, registered", follow),
                                              ("change", follow))):
            ax = fig.add_axes((col / 3, 1 - (row + 1) / len(slices), 1 / 3, 1 / len(slices)))
            ax.set_axis_off()
            ax.imshow(cut(image, k), cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
            if col == 2:
                ax.imshow(_rgba(cut(labels, k)), aspect=aspect, interpolation="nearest")
            ax.text(3, 3, f"{title}, z={k}", color="white", fontsize=9, va="top")
            if col == 0:
                ax.text(3, height - 3, "L", color="white", fontsize=9, va="bottom")
                ax.text(width - 3, height - 3, "R", color="white", fontsize=9, va="bottom", ha="right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="black")
    return buffer.getvalue()


def _ml(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.2f} mL"


def _pair_rows(pair: PairResult, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The pair's key-value table: counts, both pairs of volumes (labelled), registration."""
    change, registration = pair.change, pair.registration
    assert change is not None
    rows = [("Change", ", ".join(plural(change.count(name), f"{CHANGE_NAMES[name]} lesion")
                                 for name in CHANGE_CLASSES))]
    rows.append(("Total lesion volume, each run on its own (as in its report)",
                 f"{_ml(summary.get('baseline_volume_ml'))} at baseline, {_ml(summary.get('followup_volume_ml'))} "
                 f"at follow-up"))
    rows.append(("Lesion volume in the paired comparison (baseline grid)",
                 f"{_ml(change.volume_mm3('baseline_volume_mm3') / 1000)} at baseline, "
                 f"{_ml(change.volume_mm3('followup_volume_mm3') / 1000)} at follow-up: change "
                 f"{change.volume_mm3('volume_change_mm3') / 1000:+.2f} mL"))
    if registration is not None:
        rows.append(("Registration", f"{registration.transform} (ANTs), brain Dice {registration.brain_dice:.3f}, "
                                     f"FLAIR correlation {registration.correlation:.3f}"))
    return rows


def render_subject_report(path: Path, subject: str, baseline: Visit3D, pairs: Sequence[PairResult],
                          summaries: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Write the subject's longitudinal report to ``path``; ``summaries`` are the summary rows of the
    pairs (in order; they give each run's own total lesion volume)."""
    sections = []
    for i, pair in enumerate(pairs):
        section: dict[str, Any] = {"title": f"ses-{pair.followup.session} against baseline ses-{pair.baseline.session}",
                                   "status": pair.status, "compared": False}
        if pair.change is not None and pair.followup_on_baseline is not None:
            change = pair.change
            png = pair_figure(baseline.flair, pair.followup_on_baseline, change.change_map, baseline.image.affine,
                              baseline.brain)
            changed = change.table[change.table["change"] != "stable"].drop(columns=CENTROID_COLUMNS)
            changed["change"] = changed["change"].map(lambda c: CHANGE_NAMES.get(c, c))
            section.update(
                compared=True, rows=_pair_rows(pair, summaries[i] if i < len(summaries) else {}),
                figure="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                changed=table_html(changed, first=KEY_COLUMNS, css_class="changes") if len(changed) else "",
                n_stable=change.count("stable"))
        sections.append(section)
    legend = [{"colour": COLOURS[value], "name": CHANGE_NAMES[name]} for value, name in CHANGE_LABELS.items()]
    html = environment().get_template(TEMPLATE).render(subject=subject, legend=legend, sections=sections,
                                                       version=__version__)
    return write_text_atomic(Path(path), html)
