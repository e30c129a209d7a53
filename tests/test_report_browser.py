"""The quick study's report.html as a person opens it: in headless Chromium with its network off, driven over the
DevTools protocol (scripts/devtools.py). Every figure is drawn, nothing is fetched, nothing fails in the console, and
the leaderboard sorts when its headers are clicked."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

import tapelab
from conftest import chromium_or_skip
from devtools import Chromium, DevToolsError
from tapelab.study.report import write_report

pytestmark = pytest.mark.e2e

FIGURES = {"ecdf", "profile", "sensitivity", "convergence"}  # the page's figures, at least
MIN_PATHS = 10  # <path> elements of a drawn chart's SVG, outside <defs>: an axes' frame alone has 5
MIN_COLOURED = 0.001  # of a chart's pixels, in colour (the optimizers' lines): matplotlib's frame and text are grey
COLOURED = 0.2  # a pixel is in colour where its channels differ by this much

CHARTS = """[...document.querySelectorAll("figure.chart")].map(figure => {
    const svg = figure.querySelector(":scope > svg"), box = svg && svg.getBoundingClientRect();
    const paths = svg ? [...svg.querySelectorAll("path")].filter(path => !path.closest("defs")) : [];
    return {id: figure.id, svg: !!svg, width: box ? box.width : 0, height: box ? box.height : 0,
            paths: paths.filter(path => (path.getAttribute("d") || "").trim()).length};
})"""


def leaderboard_column(index: int) -> str:
    """JS: the leaderboard's body rows, each as its text and the data-value of its cell in column `index`."""
    return f"""[...document.querySelector("#leaderboard").tBodies].flatMap(body => [...body.rows]).map(row => {{
        const cell = row.cells[{index}];
        return {{text: row.innerText, value: cell && cell.hasAttribute("data-value") ? cell.dataset.value : null}};
    }})"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable, looked for before the study runs."""
    return chromium_or_skip()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The quick study's report.html, built from its tables."""
    study = tapelab.run_study("study=quick", run_dir=tmp_path_factory.mktemp("quick"))
    return write_report(study.dir)


@pytest.fixture(scope="module")
def page(chromium: str, report: Path) -> Iterator[Chromium]:
    """report.html open in headless Chromium, with the network off."""
    with Chromium(chromium, offline=True) as browser:
        browser.open(report.as_uri())
        yield browser


def coloured_share(png: bytes) -> tuple[float, int]:
    """The share of a PNG's pixels in colour, and how many distinct colours it has."""
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return float((spread > COLOURED).mean()), len(np.unique(pixels.reshape(-1, 3), axis=0))


def test_the_page_opens_offline_with_no_request_and_no_error(page: Chromium) -> None:
    assert page.js("document.readyState") == "complete"
    assert page.requests == [], "the page asked for URLs over the network"
    assert page.errors == [], "the page logged errors or threw"


def test_the_page_shows_the_ecdf_profile_sensitivity_and_convergence_figures(page: Chromium) -> None:
    names = {chart["id"].removeprefix("fig-") for chart in page.js(CHARTS)}
    assert FIGURES <= names


def test_every_chart_is_an_inline_svg_drawn_in_colour(page: Chromium) -> None:
    charts = page.js(CHARTS)
    assert charts
    for chart in charts:
        assert chart["svg"], f"{chart['id']} holds no inline <svg>"
        assert chart["width"] > 0 and chart["height"] > 0, f"{chart['id']}'s svg takes no space: {chart}"
        assert chart["paths"] >= MIN_PATHS, f"{chart['id']}'s svg draws {chart['paths']} paths"
        share, colours = coloured_share(page.screenshot(f"#{chart['id']} > svg"))
        assert colours > 1, f"{chart['id']} is one colour in the browser"
        assert share >= MIN_COLOURED, f"{chart['id']} has {share:.2%} of its pixels in colour"
    assert page.errors == []


def test_clicking_a_numeric_header_sorts_the_leaderboard_up_then_down(page: Chromium) -> None:
    headers = page.js("""[...document.querySelectorAll("#leaderboard th")].map(
        th => ({index: th.cellIndex, sort: th.dataset.sort, text: th.innerText}))""")
    numeric = [header for header in headers if header.get("sort") == "number"]
    assert numeric, f"the leaderboard has no th[data-sort=number]: {headers}"
    for header in numeric:
        before = page.js(leaderboard_column(header["index"]))
        values = [float(row["value"]) for row in before if row["value"] is not None]
        assert len(values) >= 2, f"column {header['text']!r} has fewer than two data-value cells"
        ordered = sorted(value for value in values if not math.isnan(value))
        selector = f"#leaderboard th:nth-child({header['index'] + 1})"
        for direction, expected in [("ascending", ordered), ("descending", ordered[::-1])]:
            page.click(selector)
            after = page.js(leaderboard_column(header["index"]))
            shown = [float(row["value"]) for row in after if row["value"] is not None]
            assert [value for value in shown if not math.isnan(value)] == expected, (
                f"column {header['text']!r} after a click, {direction}: {shown}"
            )
            assert sorted(row["text"] for row in after) == sorted(row["text"] for row in before), (
                "the rows changed, not only their order"
            )
    assert page.errors == []


def test_the_driver_sees_a_request_a_console_error_and_an_exception(chromium: str, tmp_path: Path) -> None:
    """The checks above can fail: the same driver on a page that fetches an image and logs an error."""
    html = tmp_path / "bad.html"
    html.write_text(
        '<img src="http://example.invalid/x.png"><script>console.error("bad", 1);'
        "setTimeout(() => { throw new Error('late'); });</script>"
    )
    with Chromium(chromium, offline=True) as browser:
        browser.open(html.as_uri())
        assert browser.js("new Promise(done => setTimeout(() => done(6 * 7), 50))") == 42
        with pytest.raises(DevToolsError, match="no element"):
            browser.click("#missing")
    assert browser.requests == ["http://example.invalid/x.png"]
    assert "console.error: bad 1" in browser.errors
    assert any(error.startswith("uncaught: Error: late") for error in browser.errors)
    assert any("ERR_INTERNET_DISCONNECTED" in error for error in browser.errors), json.dumps(browser.errors)
