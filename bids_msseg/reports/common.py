"""What every HTML report of bids_msseg shares: the stylesheet, the colours, readable tables and words.

Every report (participant, group, longitudinal, cross-site) inlines the one stylesheet
``templates/report.css`` (``{% include "report.css" %}``), so all look alike and each file stays
self-contained. Tables go through :func:`table_html`: key columns first, readable headers (never a
raw key such as ``seed_threshold``), numbers right-aligned, inside a ``div.table-scroll`` that
scrolls horizontally when a table cannot fit (the stylesheet lets cells wrap first).

Colours: the lesion location classes use the colour-blind-safe palette of Okabe & Ito (2008), and
the expert mask's outline is the palette's yellow drawn over a thin black halo, a colour no class
uses, so an outline over a lesion never blends into another class's colour (blue under green read
as cyan with the former palette). :func:`simulate_colour_blindness` lets the tests check that the
colours stay apart for the common colour-vision deficiencies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup, escape

#: The Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO: dict[str, str] = {"orange": "#e69f00", "sky blue": "#56b4e9", "bluish green": "#009e73",
                             "yellow": "#f0e442", "blue": "#0072b2", "vermillion": "#d55e00",
                             "reddish purple": "#cc79a7", "black": "#000000"}
#: Outline of the expert lesion mask in every picture (over a black halo): no location class uses it.
EXPERT_COLOUR = OKABE_ITO["yellow"]
#: Width (points) of the black halo drawn under the expert outline.
EXPERT_HALO = 1.6

#: Readable names of the columns and summary keys the reports show; units in parentheses.
LABELS: dict[str, str] = {
    "participant_id": "Participant", "session_id": "Session", "source": "Source FLAIR",
    "lesion_count": "Lesions", "total_lesion_volume_ml": "Total lesion volume (mL)",
    "brain_volume_ml": "Brain volume (mL)", "model_id": "Model", "threshold": "Probability threshold",
    "seed_threshold": "Seed threshold (hysteresis: each lesion reaches it somewhere)",
    "min_lesion_size_mm3": "Minimum lesion size (mm³)", "connectivity": "Connectivity (neighbours)",
    "confluent_count": "Confluent lesions (touching several classes' regions)",
    "mcdonald_regions": "McDonald regions involved (imaging count, not a diagnosis)",
    "location_status": "Lesion location", "registration_seconds": "Template registration (s)",
    "index": "Lesion", "name": "Name", "location": "Location", "volume_mm3": "Volume (mm³)", "voxels": "Voxels",
    "centroid_x_mm": "Centroid x (mm)", "centroid_y_mm": "Centroid y (mm)", "centroid_z_mm": "Centroid z (mm)",
    "mean_probability": "Mean probability", "max_probability": "Max probability", "confluent": "Confluent",
    "touches": "Touches the regions of",
    # longitudinal
    "change": "Change", "baseline_volume_mm3": "Baseline volume (mm³)", "followup_volume_mm3": "Follow-up volume (mm³)",
    "volume_change_mm3": "Volume change (mm³)", "relative_change": "Relative change",
    "appeared_mm3": "Appeared (mm³)", "disappeared_mm3": "Disappeared (mm³)",
    "mean_intensity_change": "Mean FLAIR change (brain medians)",
    "baseline_max_probability": "Baseline max probability", "followup_max_probability": "Follow-up max probability",
    "baseline_session": "Baseline", "followup_session": "Follow-up", "days_between": "Days between",
    "status": "Status",
}
#: Units of key suffixes, for keys without a label.
NUM = ' class="num"'
_SUFFIX_UNITS = {"_ml": "mL", "_mm3": "mm³", "_mm": "mm", "_seconds": "s", "_s": "s"}


def readable(key: str) -> str:
    """A column or summary key in words: its label (:data:`LABELS`), else the key with spaces and its
    unit in parentheses (``foo_bar_ml`` -> ``Foo bar (mL)``), so no report shows a raw key."""
    if key in LABELS:
        return LABELS[key]
    text, unit = str(key), ""
    for suffix, name in _SUFFIX_UNITS.items():
        if text.endswith(suffix):
            text, unit = text[: -len(suffix)], f" ({name})"
            break
    text = text.replace("_", " ").strip()
    return (text[:1].upper() + text[1:] + unit) if text else str(key)


def plural(count: Any, word: str, words: str | None = None) -> str:
    """``1 lesion``, ``2 lesions``, ``n/a lesions`` (``words``: the plural when it is not ``word + "s"``)."""
    many = words or word + "s"
    try:
        value = float(count)
    except (TypeError, ValueError):
        return f"{count} {many}"
    if math.isnan(value):
        return f"n/a {many}"
    shown = str(int(value)) if value.is_integer() else f"{value:g}"
    return f"{shown} {word if value == 1 else many}"


def fmt(value: Any) -> str:
    """Readable value: yes/no for booleans, n/a for missing, at most 4 significant digits."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(float(value))):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, str):
        return value.replace(";", "; ")  # ';'-separated lists wrap in a table cell
    return str(value)


def environment() -> jinja2.Environment:
    """Jinja environment of the templates in ``bids_msseg/reports/templates`` (the stylesheet included),
    with the ``plural`` filter."""
    templates = resources.files("bids_msseg.reports").joinpath("templates")
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: templates.joinpath(name).read_text(encoding="utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["plural"] = plural
    return env


def table_html(frame: pd.DataFrame, *, first: Sequence[str] = (), drop: Sequence[str] = (),
               labels: Mapping[str, str] | None = None, css_class: str = "", table_id: str = "",
               formatters: Mapping[str, Any] | None = None) -> Markup:
    """``frame`` as an HTML table in a horizontally scrolling box: the ``first`` columns (those present)
    lead, ``drop`` ones are left out, headers are :func:`readable` (or ``labels``), numbers right-aligned
    with at most 4 significant digits (or by ``formatters[column]``), text escaped."""
    names = {**LABELS, **(labels or {})}
    columns = [c for c in first if c in frame.columns]
    columns += [c for c in frame.columns if c not in columns and c not in drop]
    numeric = {c for c in columns
               if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])}
    head = "".join(f'<th{NUM if c in numeric else ""}>{escape(names.get(c) or readable(c))}</th>'
                   for c in columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            text = (formatters or {}).get(c, fmt)(value)
            cells.append(f'<td{NUM if c in numeric else ""}>{escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    attributes = f' class="{escape(css_class)}"' if css_class else ""
    attributes += f' id="{escape(table_id)}"' if table_id else ""
    return Markup(f'<div class="table-scroll"><table{attributes}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
                  + "\n".join(rows) + "\n</tbody></table></div>")


# ------------------------------------------------------------------------------- colour checks

#: Viénot, Brettel & Mollon (1999) simulation matrices on linear RGB.
_CVD = {
    "protanopia": np.array([[0.11238, 0.88762, 0.0], [0.11238, 0.88762, 0.0], [0.00401, -0.00401, 1.0]]),
    "deuteranopia": np.array([[0.29275, 0.70725, 0.0], [0.29275, 0.70725, 0.0], [-0.02234, 0.02234, 1.0]]),
    "tritanopia": np.array([[1.0, 0.14461, -0.14461], [0.0, 0.85924, 0.14076], [0.0, 0.85924, 0.14076]]),
}


def hex_to_rgb(colour: str) -> np.ndarray:
    """``#rrggbb`` as three floats in [0, 1]."""
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", colour.strip())
    if match is None:
        raise ValueError(f"not a #rrggbb colour: {colour!r}")
    return np.array([int(match.group(1)[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])


def simulate_colour_blindness(rgb: np.ndarray, kind: str) -> np.ndarray:
    """How sRGB colours (``[..., 3]`` in [0, 1]) look with ``kind`` (protanopia, deuteranopia,
    tritanopia): the dichromat simulation of Viénot et al. (1999) on linear RGB; ``normal`` returns
    the colours unchanged."""
    rgb = np.clip(np.asarray(rgb, float), 0.0, 1.0)
    if kind == "normal":
        return rgb
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ _CVD[kind].T, 0.0, 1.0)
    return np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB colours."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def min_colour_distance(colours: Sequence[str], kind: str = "normal") -> float:
    """The smallest CIE76 distance (ΔE) between two of ``colours`` as seen with ``kind`` (see
    :func:`simulate_colour_blindness`); about 20 or more reads as clearly different colours."""
    lab = _lab(simulate_colour_blindness(np.stack([hex_to_rgb(c) for c in colours]), kind))
    distances = np.linalg.norm(lab[:, None, :] - lab[None, :, :], axis=-1)
    return float(distances[np.triu_indices(len(colours), 1)].min())


__all__: Sequence[str] = ("EXPERT_COLOUR", "OKABE_ITO", "environment", "fmt", "min_colour_distance", "plural",
                          "readable", "simulate_colour_blindness", "table_html")
