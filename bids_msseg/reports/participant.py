"""The participant-level QC report: one self-contained HTML page per FLAIR run.

The page shows what a reader needs to trust (or reject) the numbers: a summary (lesion count,
total lesion volume, brain volume, model, preprocessing decisions and their reasons), an axial
mosaic of the FLAIR with the lesions overlaid, an axial mosaic with the brain-mask contour (to
check brain extraction, on which normalization depends), and the per-lesion table. Figures are
PNGs embedded as base64 ``data:`` URIs, so the file can be mailed or archived on its own.

Each mosaic is one image built with numpy (slices tiled into a single array) and drawn with a
single ``imshow``, which keeps a 182x218x182 volume well under a second of plotting. Slices are
shown in RAS+ orientation, neurological convention (the participant's left on the left).
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import nibabel as nib
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from bids_msseg import __version__
from bids_msseg.io import write_text_atomic

LOGGER = logging.getLogger(__name__)

TEMPLATE = "participant.html.j2"
#: Axial slices per mosaic and tiles per mosaic row.
N_SLICES = 12
COLUMNS = 6
#: Width of a mosaic figure in inches at DPI dots per inch.
FIGURE_WIDTH = 12.0
DPI = 90
LESION_RGBA = (1.0, 0.2, 0.05, 0.8)
BRAIN_CONTOUR = "#35d0ff"
#: Summary keys shown with a readable label; other keys are shown as they are.
SUMMARY_LABELS = {
    "participant_id": "Participant",
    "session_id": "Session",
    "source": "Source FLAIR",
    "lesion_count": "Lesion count",
    "total_lesion_volume_ml": "Total lesion volume (mL)",
    "brain_volume_ml": "Brain volume (mL)",
    "model_id": "Model",
    "threshold": "Probability threshold",
    "min_lesion_size_mm3": "Minimum lesion size (mm³)",
    "connectivity": "Connectivity (neighbours)",
}


def _to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder/flip voxel axes to the closest RAS+ orientation (a view, no resampling)."""
    return nib.orientations.apply_orientation(np.asarray(array), nib.orientations.io_orientation(affine))


def _ras_zooms(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel sizes along the RAS+ axes of ``_to_ras``."""
    ornt = nib.orientations.io_orientation(img.affine)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    ras = np.empty(3)
    ras[ornt[:, 0].astype(int)] = zooms
    return float(ras[0]), float(ras[1]), float(ras[2])


def _pick_slices(mask: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` axial indices spread evenly over the slices where ``mask`` has voxels."""
    present = np.flatnonzero(mask.any(axis=(0, 1)))
    if present.size == 0:
        present = np.arange(mask.shape[2])
    if present.size <= n:
        return present.tolist()
    picks = np.linspace(0, present.size - 1, n + 2)[1:-1]
    return sorted({int(present[int(round(p))]) for p in picks})


def _bounding_box(mask: np.ndarray, margin: int = 3) -> tuple[slice, slice]:
    """In-plane (x, y) crop around ``mask`` plus a margin; the full plane when it is empty."""
    if not mask.any():
        return slice(None), slice(None)
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    return (slice(max(xs[0] - margin, 0), xs[-1] + margin + 1),
            slice(max(ys[0] - margin, 0), ys[-1] + margin + 1))


def _tile(volume: np.ndarray, slices: Sequence[int], box: tuple[slice, slice], columns: int) -> np.ndarray:
    """Tile axial slices into one 2D array: rows are y (anterior up), columns are x (right to the right)."""
    tiles = [np.flipud(volume[box[0], box[1], k].T) for k in slices]
    height, width = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    mosaic = np.zeros((rows * height, min(columns, len(tiles)) * width), dtype=tiles[0].dtype)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        mosaic[r * height:(r + 1) * height, c * width:(c + 1) * width] = tile
    return mosaic


def _png_data_uri(fig: Figure) -> str:
    """Render a figure to PNG and return it as a ``data:`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor=fig.get_facecolor())
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _mosaic_figure(
    flair: np.ndarray,
    slices: Sequence[int],
    box: tuple[slice, slice],
    zooms: tuple[float, float, float],
    window: tuple[float, float],
    *,
    lesions: np.ndarray | None = None,
    contour: np.ndarray | None = None,
) -> str:
    """One mosaic (FLAIR in grey, optional lesions in colour, optional contour) as a PNG data URI."""
    background = _tile(flair, slices, box, COLUMNS)
    aspect = zooms[1] / zooms[0]
    tile_h = background.shape[0] // math.ceil(len(slices) / COLUMNS)
    tile_w = background.shape[1] // min(COLUMNS, len(slices))
    height = FIGURE_WIDTH * background.shape[0] * aspect / background.shape[1]
    fig = Figure(figsize=(FIGURE_WIDTH, height), facecolor="black")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(background, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
              interpolation="nearest")
    if lesions is not None:
        colour = _lesion_overlay(_tile(lesions, slices, box, COLUMNS))
        ax.imshow(colour, aspect=aspect, interpolation="nearest")
    if contour is not None:
        outline = _tile(contour.astype(np.float32), slices, box, COLUMNS)
        if 0 < outline.max():
            ax.contour(outline, levels=[0.5], colors=BRAIN_CONTOUR, linewidths=0.8)
    for i, k in enumerate(slices):
        r, c = divmod(i, COLUMNS)
        ax.text(c * tile_w + 2, r * tile_h + 2, f"z={k}", color="yellow", fontsize=7, va="top")
    ax.text(2, tile_h - 2, "L", color="white", fontsize=9, va="bottom", ha="left")
    ax.text(tile_w - 2, tile_h - 2, "R", color="white", fontsize=9, va="bottom", ha="right")
    ax.set_xlim(-0.5, background.shape[1] - 0.5)
    ax.set_ylim(background.shape[0] - 0.5, -0.5)
    return _png_data_uri(fig)


def _lesion_overlay(lesions: np.ndarray) -> np.ndarray:
    """RGBA image of a 2D lesion mosaic: lesion voxels (any value > 0) in one bright colour."""
    rgba = np.zeros(lesions.shape + (4,), dtype=np.float32)
    rgba[np.asarray(lesions) > 0] = LESION_RGBA
    return rgba


def _decision_rows(decisions: Mapping[str, Any]) -> list[dict[str, str]]:
    """Rows of (step, decision, reason) from a decisions mapping, nested or flat."""
    rows = []
    for step, value in decisions.items():
        if isinstance(value, Mapping):
            reason = str(value.get("reason", ""))
            decision = "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items() if k != "reason")
        else:
            decision, reason = _fmt(value), ""
        rows.append({"step": str(step).replace("_", " "), "decision": decision, "reason": reason})
    return rows


def _fmt(value: Any) -> str:
    """Readable value: yes/no for booleans, n/a for missing, at most 4 significant decimals."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _environment() -> jinja2.Environment:
    """Jinja environment reading templates shipped in ``bids_msseg/reports/templates``."""
    templates = resources.files("bids_msseg.reports").joinpath("templates")
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: templates.joinpath(name).read_text(encoding="utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def render_participant_report(
    out_path: Path,
    flair_img: nib.Nifti1Image,
    lesion_mask: np.ndarray,
    brain_mask: np.ndarray,
    table: pd.DataFrame,
    summary: Mapping[str, Any],
    decisions: Mapping[str, Any],
) -> Path:
    """Write the self-contained QC report of one run to ``out_path`` (atomically); return it.

    ``lesion_mask`` (binary, or the numbered lesions: any value > 0 is shown) and ``brain_mask``
    are on ``flair_img``'s grid; ``table`` is the per-lesion table; ``summary`` is the run's
    summary row (``lesion_count``, ``total_lesion_volume_ml``, ``brain_volume_ml``, ``model_id``,
    ...; ``preproc_*`` columns are left to the decisions section); ``decisions`` are the
    preprocessing decisions with their reasons.
    """
    out_path = Path(out_path)
    shape = tuple(flair_img.shape[:3])
    for name, array in (("lesion_mask", lesion_mask), ("brain_mask", brain_mask)):
        if tuple(np.shape(array)) != shape:
            raise ValueError(f"{name} has shape {np.shape(array)}, the FLAIR {shape}")

    flair = _to_ras(np.asarray(flair_img.dataobj, dtype=np.float32).reshape(shape), flair_img.affine)
    lesions = _to_ras(lesion_mask, flair_img.affine)
    brain = _to_ras(np.asarray(brain_mask, bool), flair_img.affine)
    zooms = _ras_zooms(flair_img)

    reference = brain if brain.any() else flair > 0
    values = flair[reference] if reference.any() else flair.ravel()
    low, high = np.percentile(values, (0.5, 99.5)) if values.size else (0.0, 1.0)
    window = (float(low), float(high) if high > low else float(low) + 1.0)
    box = _bounding_box(reference)

    has_lesions = bool(np.any(lesions > 0))
    lesion_slices = _pick_slices(lesions > 0 if has_lesions else reference, N_SLICES)
    brain_slices = _pick_slices(reference, N_SLICES)
    lesion_png = _mosaic_figure(flair, lesion_slices, box, zooms, window, lesions=lesions)
    brain_png = _mosaic_figure(flair, brain_slices, box, zooms, window, contour=brain)

    count = summary.get("lesion_count", len(table))
    summary_rows = [(SUMMARY_LABELS.get(k, k), _fmt(v)) for k, v in summary.items()
                    if not str(k).startswith("preproc_")]
    lesion_table_html = Markup(table.to_html(
        index=False, border=0, classes="lesions", na_rep="n/a", float_format=lambda v: f"{v:.4g}"
    )) if len(table) else ""
    title = str(summary.get("source") or out_path.name)
    html = _environment().get_template(TEMPLATE).render(
        title=title,
        lesion_count=count,
        summary_rows=summary_rows,
        decision_rows=_decision_rows(decisions),
        lesion_png=lesion_png,
        lesion_caption="slices containing lesions" if has_lesions else "no lesions; slices through the brain",
        brain_png=brain_png,
        lesion_table=lesion_table_html,
        version=_version(),
    )
    write_text_atomic(out_path, html)
    LOGGER.info("report written to %s", out_path)
    return out_path


def _version() -> str:
    return __version__
