"""The participant-level QC report: one self-contained HTML page per FLAIR run.

The page shows what a reader needs to trust (or reject) the numbers: a summary (lesion count,
total lesion volume, brain volume, model, preprocessing decisions and their reasons), the lesions
per location class, an axial mosaic of the FLAIR with the lesions overlaid in the colour of their
location class (:func:`location_colours`), three views through the largest lesion cropped to the
head, an axial mosaic with the brain-mask contour (to check brain extraction, on which
normalization depends), and the per-lesion table (lesion number, location and volume first).
Figures are PNGs embedded as base64 ``data:`` URIs, so the file can be mailed or archived on its
own; the page uses the reports' one stylesheet and shared helpers (:mod:`bids_msseg.reports.common`).

Each mosaic is one image built with numpy (slices tiled into a single array) and drawn with a
single ``imshow``, which keeps a 182x218x182 volume well under a second of plotting. Slices are
shown in RAS+ orientation, neurological convention (the participant's left on the left).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from markupsafe import Markup, escape
from matplotlib.figure import Figure
from scipy import ndimage

from bids_msseg import __version__
from bids_msseg.io import write_text_atomic
from bids_msseg.lesions import LOCATION_CLASSES, LOCATION_COLOURS
from bids_msseg.reports.common import EXPERT_COLOUR, EXPERT_HALO, OKABE_ITO, environment, fmt, readable, table_html

LOGGER = logging.getLogger(__name__)

TEMPLATE = "participant.html.j2"
#: Axial slices per mosaic and tiles per mosaic row (three a row: each slice about a third of the page).
N_SLICES = 12
COLUMNS = 3
#: Width of a mosaic figure in inches at DPI dots per inch.
FIGURE_WIDTH = 12.0
DPI = 90
LESION_RGBA = (1.0, 0.2, 0.05, 0.8)
BRAIN_CONTOUR = "#35d0ff"
#: Summary keys with a label of their own in the summary table; the others are made readable
#: (:func:`bids_msseg.reports.common.readable`), never shown raw.
SUMMARY_LABELS = {"lesion_count": "Lesion count"}
#: Key columns of the lesion table, shown first.
LESION_KEY_COLUMNS = ("index", "location", "volume_mm3")
#: Colour of lesions whose location class is unknown (location off or failed, or an unnumbered mask).
LOCATION_UNKNOWN = OKABE_ITO["orange"]
#: Colour of the slice labels (z=...) and orientation letters in the pictures.
LABEL_COLOUR = "white"
#: Summary keys shown in the location section rather than in the summary table.
CLASS_KEYS = frozenset(f"{name}_{what}" for name in LOCATION_CLASSES for what in ("count", "volume_ml"))


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
        ax.text(c * tile_w + 2, r * tile_h + 2, f"z={k}", color=LABEL_COLOUR, fontsize=7, va="top")
    ax.text(2, tile_h - 2, "L", color="white", fontsize=9, va="bottom", ha="left")
    ax.text(tile_w - 2, tile_h - 2, "R", color="white", fontsize=9, va="bottom", ha="right")
    ax.set_xlim(-0.5, background.shape[1] - 0.5)
    ax.set_ylim(background.shape[0] - 0.5, -0.5)
    return _png_data_uri(fig)


def _lesion_overlay(lesions: np.ndarray, lut: np.ndarray | None = None) -> np.ndarray:
    """RGBA image of a 2D lesion mosaic: lesion voxels (any value > 0) in one bright colour, or with
    ``lut`` (one RGBA row per lesion number, row 0 transparent) each lesion in its own colour."""
    if lut is not None:
        return lut[np.asarray(lesions, np.int64)]
    rgba = np.zeros(lesions.shape + (4,), dtype=np.float32)
    rgba[np.asarray(lesions) > 0] = LESION_RGBA
    return rgba


def location_colours(table: pd.DataFrame, n_labels: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The colour of each lesion by its location class, and the legend.

    Returns an RGBA lookup table indexed by lesion number (``table``'s ``index``, 1..``n_labels``; row
    0 transparent) and one legend entry per class present (colour, name, lesion count, volume in
    mL), with an ``n/a`` entry for lesions without a class (location off or failed).
    """
    from matplotlib.colors import to_rgba  # lazy: matplotlib, only while drawing a report

    classes = np.full(n_labels + 1, "n/a", dtype=object)
    volumes = np.full(n_labels + 1, np.nan)
    numbers = table["index"].to_numpy(int) if "index" in table.columns else np.arange(1, len(table) + 1)
    known = (numbers >= 1) & (numbers <= n_labels)
    if "location" in table.columns:
        classes[numbers[known]] = [c if c in LOCATION_CLASSES else "n/a" for c in table["location"][known]]
    if "volume_mm3" in table.columns:
        volumes[numbers[known]] = table["volume_mm3"].to_numpy(float)[known]
    colours = {**LOCATION_COLOURS, "n/a": LOCATION_UNKNOWN}
    lut = np.array([(0.0, 0.0, 0.0, 0.0)] + [to_rgba(colours[c]) for c in classes[1:]], np.float32)
    legend = []
    for name in [*LOCATION_CLASSES, "n/a"]:
        chosen = classes[1:] == name
        if chosen.any():
            volume = volumes[1:][chosen]
            legend.append({"colour": colours[name], "name": name, "count": int(chosen.sum()),
                           "volume_ml": None if np.isnan(volume).any() else round(float(volume.sum()) / 1000.0, 4)})
    return lut, legend


#: How the preprocessing measurements are named in the report (others: :func:`readable`).
EVIDENCE_LABELS = {"background_fraction": "constant background (share of the volume)",
                   "blob_volume_ml": "non-background volume (mL)",
                   "blob_max_axial_cm2": "widest axial section (cm²)",
                   "largest_blob_fraction": "share of the non-background in one piece"}
#: How the preprocessing steps are named in the report.
STEP_NAMES = {"n4": "N4 bias-field correction", "skullstrip": "Brain extraction",
              "brain_extraction": "Brain extraction"}


def _decision_rows(decisions: Mapping[str, Any]) -> list[dict[str, str]]:
    """Rows of (step, decision, reason) from the preprocessing decisions.

    Two shapes are read: that of :class:`bids_msseg.preproc.decisions.PreprocDecisions`
    (``{"n4": bool, "skullstrip": bool, "reasons": {step: text}, "evidence": {...}}``) and a mapping
    of step to ``{"applied": bool, "reason": text}``. The evidence becomes the last row.
    """
    reasons = decisions.get("reasons") if isinstance(decisions.get("reasons"), Mapping) else {}
    rows = []
    for step, value in decisions.items():
        if step in ("reasons", "evidence"):
            continue
        if isinstance(value, Mapping):
            reason = str(value.get("reason", ""))
            applied = value.get("applied")
            decision = ("applied" if applied else "not applied") if isinstance(applied, bool) else "; ".join(
                f"{k}: {_fmt(v)}" for k, v in value.items() if k != "reason")
        else:
            decision = ("applied" if value else "not applied") if isinstance(value, bool) else _fmt(value)
            reason = str(reasons.get(step, ""))
        rows.append({"step": STEP_NAMES.get(str(step), str(step).replace("_", " ")), "decision": decision,
                     "reason": reason})
    evidence = decisions.get("evidence")
    if isinstance(evidence, Mapping) and evidence:
        rows.append({"step": "Measurements", "decision": "",
                     "reason": "; ".join(f"{EVIDENCE_LABELS.get(str(k)) or readable(str(k)).lower()} {_fmt(v)}"
                                         for k, v in evidence.items())})
    return rows


_fmt = fmt  # the names the group report imports
_environment = environment

LESION_EDGE = "#ff3b14"
#: Pixels across a mosaic (each voxel gets at least one pixel: full resolution) and across one
#: orthogonal view.
MOSAIC_PIXELS = 1100
VIEW_PIXELS = 480


def _scaled_figure(height: int, width: int, aspect: float, target: int) -> tuple[Figure, Any]:
    """A figure drawing a ``height`` x ``width`` array at ``target`` pixels across, at least one
    pixel per voxel (never downsampled), rows stretched by ``aspect``."""
    scale = max(1.0, target / max(width, 1))
    fig = Figure(figsize=(width * scale / DPI, max(height * aspect * scale, 1) / DPI), facecolor="black")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    return fig, ax


def _draw(ax: Any, background: np.ndarray, window: tuple[float, float], aspect: float, *,
          labels: np.ndarray | None = None, probability: np.ndarray | None = None,
          expert: np.ndarray | None = None, contour: np.ndarray | None = None, lut: np.ndarray | None = None) -> None:
    """The FLAIR in grey with the optional layers: lesions filled and outlined (in their location
    class's colour with ``lut``, see :func:`location_colours`), probability as a heat map, the expert
    mask's outline, the brain-mask outline."""
    ax.imshow(background, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
    if probability is not None:
        shown = np.ma.masked_less(probability, 0.05)
        ax.imshow(shown, cmap="hot", vmin=0.0, vmax=1.0, alpha=0.75, aspect=aspect, interpolation="nearest")
    if labels is not None and np.any(labels > 0):
        ax.imshow(_lesion_overlay(labels, lut), aspect=aspect, interpolation="nearest", alpha=0.55)
        if lut is None:
            ax.contour((labels > 0).astype(np.float32), levels=[0.5], colors=LESION_EDGE, linewidths=0.7)
        else:  # one outline per colour
            shown = lut[np.asarray(labels, np.int64)]
            for colour in np.unique(lut[np.unique(labels[labels > 0])], axis=0):
                inside = np.all(shown == colour, axis=-1).astype(np.float32)
                ax.contour(inside, levels=[0.5], colors=[tuple(colour[:3])], linewidths=0.8)
    if expert is not None and np.any(expert):
        draw_expert_outline(ax, expert)
    if contour is not None and np.any(contour):
        ax.contour(contour.astype(np.float32), levels=[0.5], colors=BRAIN_CONTOUR, linewidths=0.8)
    ax.set_xlim(-0.5, background.shape[1] - 0.5)
    ax.set_ylim(background.shape[0] - 0.5, -0.5)


def draw_expert_outline(ax: Any, expert: np.ndarray, linewidth: float = 1.2) -> None:
    """The expert mask's outline on ``ax``: :data:`~bids_msseg.reports.common.EXPERT_COLOUR` over a thin
    black halo, so it reads over bright lesions and dark tissue alike and never mixes with a fill."""
    from matplotlib import patheffects  # lazy: matplotlib, only while drawing a report

    lines = ax.contour(np.asarray(expert, np.float32), levels=[0.5], colors=EXPERT_COLOUR, linewidths=linewidth)
    lines.set_path_effects([patheffects.Stroke(linewidth=linewidth + EXPERT_HALO, foreground="black"),
                            patheffects.Normal()])


def _lesion_slices(labels: np.ndarray, reference: np.ndarray, n: int) -> tuple[list[int], dict[int, int]]:
    """Axial slices that show as many lesions as possible, and the slice each lesion is numbered on.

    Each lesion is numbered once, on the slice where it is largest; up to ``n`` slices are picked
    greedily by the number of lesions they would number, then filled evenly through the lesions.
    """
    ids = [int(i) for i in np.unique(labels) if i > 0]
    if not ids:
        return _pick_slices(reference, n), {}
    areas = np.stack([np.bincount(labels[:, :, k].ravel(), minlength=max(ids) + 1) for k in range(labels.shape[2])])
    best = {i: int(np.argmax(areas[:, i])) for i in ids}
    by_slice: dict[int, list[int]] = {}
    for lesion, k in best.items():
        by_slice.setdefault(k, []).append(lesion)
    chosen = sorted(by_slice, key=lambda k: (-len(by_slice[k]), k))[:n]
    if len(chosen) < n:
        extra = [k for k in _pick_slices(labels > 0, n) if k not in chosen]
        chosen += extra[: n - len(chosen)]
    chosen = sorted(chosen)
    # lesions whose best slice was not chosen are numbered on the chosen slice where they are largest
    home = {}
    for lesion in ids:
        present = [k for k in chosen if areas[k, lesion] > 0]
        if present:
            home[lesion] = max(present, key=lambda k: areas[k, lesion])
    return chosen, home


def _lesion_mosaic(flair: np.ndarray, labels: np.ndarray, slices: Sequence[int], home: Mapping[int, int],
                   box: tuple[slice, slice], zooms: tuple[float, float, float], window: tuple[float, float], *,
                   expert: np.ndarray | None = None, probability: np.ndarray | None = None,
                   contour: np.ndarray | None = None, numbers: bool = True, lut: np.ndarray | None = None) -> str:
    """An axial mosaic at full resolution with the given layers; lesion numbers as in the table."""
    columns = min(COLUMNS, len(slices))
    background = _tile(flair, slices, box, columns)
    rows = math.ceil(len(slices) / columns)
    tile_h, tile_w = background.shape[0] // rows, background.shape[1] // columns
    aspect = zooms[1] / zooms[0]
    fig, ax = _scaled_figure(*background.shape, aspect, MOSAIC_PIXELS)
    _draw(ax, background, window, aspect,
          labels=_tile(labels, slices, box, columns) if probability is None else None,
          probability=_tile(probability, slices, box, columns) if probability is not None else None,
          expert=_tile(expert, slices, box, columns) if expert is not None else None,
          contour=_tile(contour, slices, box, columns) if contour is not None else None, lut=lut)
    position = {k: i for i, k in enumerate(slices)}
    for i, k in enumerate(slices):
        r, c = divmod(i, columns)
        ax.text(c * tile_w + 2, r * tile_h + 2, f"z={k}", color=LABEL_COLOUR, fontsize=7, va="top")
    if numbers:
        for lesion, k in home.items():
            r, c = divmod(position[k], columns)
            xs, ys = np.nonzero(labels[box[0], box[1], k] == lesion)
            if xs.size == 0:
                continue
            col = c * tile_w + float(xs.mean())
            row = r * tile_h + (tile_h - 1 - float(ys.mean()))
            ax.text(col + 3, row - 3, str(lesion), color="white", fontsize=7, fontweight="bold", ha="left",
                    va="bottom", bbox={"boxstyle": "round,pad=0.1", "fc": "black", "alpha": 0.6, "lw": 0})
    ax.text(2, tile_h - 2, "L", color="white", fontsize=9, va="bottom", ha="left")
    ax.text(tile_w - 2, tile_h - 2, "R", color="white", fontsize=9, va="bottom", ha="right")
    return _png_data_uri(fig)


def head_box(head: np.ndarray, zooms: Sequence[float], margin_mm: float = 4.0) -> tuple[slice, slice, slice]:
    """The bounding box of ``head`` (a mask) on all three axes plus ``margin_mm``; the whole volume when
    it is empty. The three views are cut from it, so they show the head rather than the black field of
    view around it."""
    if not np.any(head):
        return slice(None), slice(None), slice(None)
    box = []
    for axis in range(3):
        present = np.flatnonzero(np.any(head, axis=tuple(a for a in range(3) if a != axis)))
        margin = int(math.ceil(margin_mm / max(float(zooms[axis]), 1e-3)))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, head.shape[axis])))
    return box[0], box[1], box[2]


def _orthogonal_views(flair: np.ndarray, labels: np.ndarray, centre: Sequence[int],
                      zooms: tuple[float, float, float], window: tuple[float, float], *,
                      expert: np.ndarray | None = None, lut: np.ndarray | None = None,
                      head: np.ndarray | None = None) -> list[tuple[str, str]]:
    """Axial, coronal and sagittal slices through ``centre`` (RAS+ voxel indices) as PNG data URIs,
    cropped to :func:`head_box` of ``head`` (a mask; default: the whole volume)."""
    box = head_box(head, zooms) if head is not None else (slice(None),) * 3
    flair, labels = flair[box], labels[box]
    expert = expert[box] if expert is not None else None
    i, j, k = (int(c) - (b.start or 0) for c, b in zip(centre, box, strict=True))
    i, j, k = (min(max(v, 0), n - 1) for v, n in zip((i, j, k), flair.shape, strict=True))
    views = [
        ("axial", f"z={k + (box[2].start or 0)}", lambda v: np.flipud(v[:, :, k].T), zooms[1] / zooms[0], ("L", "R")),
        ("coronal", f"y={j + (box[1].start or 0)}", lambda v: np.flipud(v[:, j, :].T), zooms[2] / zooms[0],
         ("L", "R")),
        ("sagittal", f"x={i + (box[0].start or 0)}", lambda v: np.flipud(v[i, :, :].T), zooms[2] / zooms[1],
         ("P", "A")),
    ]
    out = []
    for name, where, cut, aspect, (left, right) in views:
        background = cut(flair)
        fig, ax = _scaled_figure(*background.shape, aspect, VIEW_PIXELS)
        _draw(ax, background, window, aspect, labels=cut(labels),
              expert=cut(expert) if expert is not None else None, lut=lut)
        ax.text(2, 2, f"{name} {where}", color=LABEL_COLOUR, fontsize=8, va="top")  # index in the full volume
        ax.text(2, background.shape[0] - 2, left, color="white", fontsize=9, va="bottom", ha="left")
        ax.text(background.shape[1] - 2, background.shape[0] - 2, right, color="white", fontsize=9, va="bottom",
                ha="right")
        out.append((name, _png_data_uri(fig)))
    return out


def head_mask(flair: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The head: the largest piece of the voxels brighter than a tenth of the brain's median, plus the
    brain (the brain alone for a skull-stripped FLAIR), so the views keep skull and scalp, not the air."""
    inside = flair[brain] if brain.any() else flair[flair > 0]
    if inside.size == 0:
        return np.ones(flair.shape, bool)
    head = (flair > 0.1 * float(np.median(inside))) | brain
    parts, n = ndimage.label(head)
    if n > 1:  # noise specks in the air would stretch the box to the whole field of view
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        head = (parts == int(np.argmax(sizes))) | brain
    return head


def _view_centre(labels: np.ndarray, reference: np.ndarray) -> tuple[int, int, int]:
    """The centre of the largest lesion, else of the brain (RAS+ voxel indices)."""
    if np.any(labels > 0):
        sizes = np.bincount(labels.ravel().astype(np.int64))
        sizes[0] = 0
        target = labels == int(np.argmax(sizes))
    else:
        target = reference if reference.any() else np.ones(labels.shape, bool)
    return tuple(int(round(c)) for c in ndimage.center_of_mass(target))  # type: ignore[return-value]


_MD_CODE = re.compile(r"`([^`]+)`")
_MD_EMPH = re.compile(r"\*([^*]+)\*")
_MD_ITEM = re.compile(r"^\d+\. ")
_MD_LINK = re.compile(r"\[([^\]]+)\]\((https?://\S+?)\)(?=[\s.,;]|$)")  # DOIs may hold parentheses


def _inline(text: str) -> str:
    text = str(escape(" ".join(text.split())))
    text = _MD_LINK.sub(r'<a href="\2">\1</a>', text)
    text = _MD_CODE.sub(r"<code>\1</code>", text)
    return _MD_EMPH.sub(r"<em>\1</em>", text)


def methods_html(markdown: str) -> Markup:
    """The methods text (``logs/CITATION.md``) as HTML: headings, paragraphs, numbered references."""
    blocks = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = [line for line in block.splitlines() if line.strip()]
        heading = re.match(r"^(#{1,6}) (.*)$", lines[0]) if lines else None
        if heading:
            level = max(3, min(6, len(heading.group(1))))  # below the report's own h2
            blocks.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            lines = lines[1:]
        if lines and all(_MD_ITEM.match(line) for line in lines):
            items = "".join(f"<li>{_inline(_MD_ITEM.sub('', line))}</li>" for line in lines)
            blocks.append(f"<ol>{items}</ol>")
        elif lines:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return Markup("\n".join(blocks))


def render_participant_report(
    out_path: Path,
    flair_img: nib.Nifti1Image,
    lesion_mask: np.ndarray,
    brain_mask: np.ndarray,
    table: pd.DataFrame,
    summary: Mapping[str, Any],
    decisions: Mapping[str, Any],
    *,
    probability: np.ndarray | None = None,
    expert_mask: np.ndarray | None = None,
    expert_source: str = "",
    about: Mapping[str, Any] | None = None,
    methods: str = "",
) -> Path:
    """Write the self-contained report of one run to ``out_path`` (atomically); return it.

    ``lesion_mask`` (the numbered lesions, whose numbers the lesion table's ``index`` gives, or a
    binary mask) and ``brain_mask`` are on ``flair_img``'s grid; ``table`` is the per-lesion table;
    ``summary`` is the run's summary row (``preproc_*`` columns are left to the decisions section);
    ``decisions`` are the preprocessing decisions with their reasons. Optional: the lesion
    ``probability`` map, an ``expert_mask`` on the same grid (drawn as an outline; ``expert_source``
    names it), ``about`` (date, command line, software and model versions: shown as a table) and
    the ``methods`` text in markdown.
    """
    out_path = Path(out_path)
    shape = tuple(flair_img.shape[:3])
    for name, array in (("lesion_mask", lesion_mask), ("brain_mask", brain_mask), ("probability", probability),
                        ("expert_mask", expert_mask)):
        if array is not None and tuple(np.shape(array)) != shape:
            raise ValueError(f"{name} has shape {np.shape(array)}, the FLAIR {shape}")

    flair = _to_ras(np.asarray(flair_img.dataobj, dtype=np.float32).reshape(shape), flair_img.affine)
    labels = np.asarray(_to_ras(lesion_mask, flair_img.affine))
    classified = table
    if labels.dtype == bool or labels.max(initial=0) <= 1:
        labels, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))
        if n > 1:  # numbered here in scan order, not as the table: its classes cannot be matched to lesions
            classified = table.drop(columns=["location"], errors="ignore")
    labels = labels.astype(np.int32)
    brain = _to_ras(np.asarray(brain_mask, bool), flair_img.affine)
    prob = _to_ras(np.asarray(probability, np.float32), flair_img.affine) if probability is not None else None
    expert = _to_ras(np.asarray(expert_mask) > 0, flair_img.affine) if expert_mask is not None else None
    zooms = _ras_zooms(flair_img)

    reference = brain if brain.any() else flair > 0
    values = flair[reference] if reference.any() else flair.ravel()
    low, high = np.percentile(values, (0.5, 99.5)) if values.size else (0.0, 1.0)
    window = (float(low), float(high) if high > low else float(low) + 1.0)
    box = _bounding_box(reference)

    has_lesions = bool(np.any(labels > 0))
    lut, legend = location_colours(classified, int(labels.max(initial=0)))
    lesion_slices, home = _lesion_slices(labels, reference, N_SLICES)
    lesion_png = _lesion_mosaic(flair, labels, lesion_slices, home, box, zooms, window, expert=expert, lut=lut)
    probability_png = (_lesion_mosaic(flair, labels, lesion_slices, home, box, zooms, window, probability=prob,
                                      numbers=False) if prob is not None else "")
    brain_slices = _pick_slices(reference, N_SLICES)
    brain_png = _mosaic_figure(flair, brain_slices, box, zooms, window, contour=brain)
    views = _orthogonal_views(flair, labels, _view_centre(labels, reference), zooms, window, expert=expert,
                              lut=lut, head=head_mask(flair, reference))

    count = summary.get("lesion_count", len(table))
    summary_rows = [(SUMMARY_LABELS.get(k) or readable(str(k)), fmt(v)) for k, v in summary.items()
                    if not str(k).startswith("preproc_") and k not in CLASS_KEYS]
    lesion_table_html = table_html(table, first=LESION_KEY_COLUMNS, drop=("name",), css_class="lesions",
                                   table_id="lesions") if len(table) else ""
    title = str(summary.get("source") or out_path.name)
    html = _environment().get_template(TEMPLATE).render(
        title=title,
        lesion_count=count,
        summary_rows=summary_rows,
        decision_rows=_decision_rows(decisions),
        lesion_png=lesion_png,
        lesion_caption=("axial slices showing the most lesions; each lesion is numbered once, on the slice where it "
                        "is largest, with its number in the lesion table" if has_lesions
                        else "no lesions; slices through the brain"),
        has_expert=expert is not None,
        expert_colour=EXPERT_COLOUR,
        legend=[{**entry, "volume_ml": _fmt(entry["volume_ml"])} for entry in legend],
        location_status=_fmt(summary.get("location_status")),
        expert_source=expert_source,
        views=views,
        probability_png=probability_png,
        brain_png=brain_png,
        lesion_table=lesion_table_html,
        about_rows=[(str(k), _fmt(v)) for k, v in (about or {}).items()],
        methods=methods_html(methods) if methods else "",
        version=_version(),
    )
    write_text_atomic(out_path, html)
    LOGGER.info("report written to %s", out_path)
    return out_path


def _version() -> str:
    return __version__
