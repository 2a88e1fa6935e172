"""What every report shares (bids_msseg/reports/common.py): colours, readable words, tables, the page width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_msseg.lesions import LOCATION_COLOURS
from bids_msseg.longitudinal.report import COLOURS as CHANGE_COLOURS
from bids_msseg.reports.common import (
    EXPERT_COLOUR,
    environment,
    min_colour_distance,
    plural,
    readable,
    simulate_colour_blindness,
    table_html,
)


def test_location_classes_and_expert_outline_stay_apart_for_colour_blind_readers() -> None:
    """Every pair of location classes and the expert outline differ clearly (CIE76 ΔE) with normal vision
    and with protanopia or deuteranopia (about 1 man in 12 has one of the red-green deficiencies)."""
    colours = [*LOCATION_COLOURS.values(), EXPERT_COLOUR]
    assert min_colour_distance(colours) > 40
    for kind in ("protanopia", "deuteranopia"):
        assert min_colour_distance(colours, kind) > 15, kind
    assert min_colour_distance(list(CHANGE_COLOURS.values())) > 20
    assert EXPERT_COLOUR not in LOCATION_COLOURS.values() and "#2ca02c" not in LOCATION_COLOURS.values()


def test_colour_blindness_simulation() -> None:
    red, green, grey = np.array([1.0, 0, 0]), np.array([0, 0.5, 0]), np.array([0.5, 0.5, 0.5])
    assert np.allclose(simulate_colour_blindness(grey, "deuteranopia"), grey, atol=0.02)  # greys stay grey
    seen = simulate_colour_blindness(np.stack([red, green]), "deuteranopia")
    assert abs(seen[0, 0] - seen[0, 1]) < 0.05 and abs(seen[1, 0] - seen[1, 1]) < 0.05  # red, green: yellowish
    assert np.allclose(simulate_colour_blindness(red, "normal"), red)


def test_readable_keys_and_plurals() -> None:
    assert readable("seed_threshold").startswith("Seed threshold")
    assert readable("some_new_volume_ml") == "Some new volume (mL)" and readable("x_mm3") == "X (mm³)"
    assert [plural(n, "lesion") for n in (0, 1, 2, 1.0, "3", None)] == [
        "0 lesions", "1 lesion", "2 lesions", "1 lesion", "3 lesions", "None lesions"]
    assert plural(float("nan"), "lesion") == "n/a lesions"
    assert environment().from_string("{{ 1 | plural('run') }}, {{ 2 | plural('run') }}").render() == "1 run, 2 runs"


def test_table_puts_key_columns_first_with_readable_headers() -> None:
    frame = pd.DataFrame({"name": ["lesion-001"], "centroid_x_mm": [1.5], "volume_mm3": [12.25],
                          "location": ["periventricular"], "index": [1], "touches": ["a;b"], "odd_key": ["<x>"]})
    html = str(table_html(frame, first=("index", "location", "volume_mm3"), drop=("name",)))
    headers = [h.split(">")[-1] for h in html.split("</th>")[:-1]]
    assert headers == ["Lesion", "Location", "Volume (mm³)", "Centroid x (mm)", "Touches the regions of", "Odd key"]
    assert html.startswith('<div class="table-scroll">') and "lesion-001" not in html
    assert '<td class="num">12.25</td>' in html and "a; b" in html and "&lt;x&gt;" in html


def test_layout_check_fails_on_a_table_wider_than_the_page(tmp_path: Path, check_report_fits) -> None:
    """The browser check used on every report does fail when a table is wider than the page."""
    cells = "".join(f"<td>value_number_{i}</td>" for i in range(30))  # about 3000 px in all
    page = tmp_path / "wide.html"
    page.write_text(f"<!DOCTYPE html><html><head><style>td {{ white-space: nowrap; }}</style></head><body>"
                    f"<table><tr>{cells}</tr></table></body></html>")
    with pytest.raises(AssertionError, match="wider than the page|scrolls sideways"):
        check_report_fits(page)
    scrolled = tmp_path / "scrolled.html"
    scrolled.write_text(page.read_text().replace("<table>", '<div class="table-scroll" style="overflow-x:auto">'
                                                 "<table>").replace("</table>", "</table></div>"))
    check_report_fits(scrolled)  # the same table scrolling inside its own box does not widen the page
