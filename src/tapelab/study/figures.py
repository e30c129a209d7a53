"""A study's figures, from plain DataFrames: runtime ECDFs, performance profiles, learning-rate sensitivity and
convergence at the chosen rates; saved as SVG and PNG, or inlined as SVG in an HTML page.

Drawn with matplotlib's object API (`Figure`, no pyplot): no display, and matplotlib's settings changed only while
a figure is written as SVG (its id salt, and text as paths). Every figure has a title, labelled axes, a legend under
it, and draws each optimizer in its `Style` (`styles`), the same in every figure. A figure is laid out once, when
built (constrained layout), and then drawn as it is by each file written from it.

- Steps run from 0 (the start point) to the budget: a step axis is symmetric-log, linear on [0, 1] and logarithmic
  above, so step 0 has its place at the left edge and every step from 1 on is on a log scale.
- Gaps are drawn on log axes. A gap of exactly 0 (the optimizer reached f* to the last bit) is drawn on a floor a
  decade below the smallest positive gap of its panel: a hatched band whose tick reads "gap 0".
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.atomic import replacing
from tapelab.plots import decade_label
from tapelab.study.selection import OVERALL

# Paul Tol's "muted" qualitative scheme (personal.sron.nl/~pault, "Colour schemes"; tol_colors.py): nine colours
# that readers with any of the common colour-vision deficiencies tell apart, the most of Tol's schemes for lines.
# Okabe–Ito's eight include black (the reference row's here) and a yellow faint on white: six to use.
# In Tol's order, but his two lightest (sand and cyan), the faintest as thin lines on white, last, so that a study
# of up to seven optimizers doesn't need them. tol_colors.py gives the scheme black too: the reference row's.
PALETTE = ("#CC6677", "#332288", "#117733", "#882255", "#44AA99", "#999933", "#AA4499", "#DDCC77", "#88CCEE")
LINESTYLES = ("-", "--", "-.", ":")  # the 1st to 9th optimizer solid, the 10th to 18th dashed, …
MARKERS = ("o", "s", "^", "v", "D", "P", "<", ">", "p", "h", "d", "8")  # not * (a chosen rate) nor x (diverged)

WIDTH = 10.0  # inches: 960 CSS pixels on a page; PNG_DPI makes the PNG 1920 pixels wide, a full-HD slide's width
PANEL_HEIGHT = 2.4  # inches per row of small multiples
MAX_PANEL_WIDTH = 4.0  # inches: a figure of one or two panels is narrower than WIDTH
LEGEND_ENTRY_WIDTH = 2.2  # inches: a legend has a column per this much of the figure's width, at most 5
LEGEND_HEIGHT = 1.1  # inches under the panels for the legend
MAX_COLUMNS = 5
PNG_DPI = 192
SVG_SALT = "tapelab"  # matplotlib's SVG ids are hashes salted with this: the same figure gives the same file
BAND_ALPHA = 0.18
MARKER_SPACING = 0.15  # of the axes' diagonal: a curve's markers, this far apart (each curve's start is offset)
MARKER_SIZE = 4.5
CHOSEN_SIZE = 11  # points: the star at a chosen rate
LINE_WIDTH = 1.4
MARGIN, MIN_MARGIN = 0.05, 0.2  # of a gap axis's span, in decades at least, above and below the data
FLOOR_LABEL = "gap 0"
FLOOR_HALF_WIDTH = 0.4  # decades: the floor's band reaches this far above and below it
MAX_DECADES = 300  # a gap axis spans 10⁻³⁰⁰ to 10³⁰⁰ at most (float64 ends near 10³⁰⁸)
MAX_GAP_TICKS = 6  # decades labelled on a gap axis at most (every second, third… decade past this many)
DIVERGED_ROOM = 0.25  # of a sensitivity panel's height, at its top: a row of × per optimizer that diverged
STEP_LINEAR_SCALE = 0.6  # decades of width that [0, 1] takes on a step axis
TAU_MIN_MAX = 4.0  # a profile's τ axis reaches at least this far (AlgoPerf's score integrates ρ over [1, 4])

ECDF_COLUMNS = ("optimizer", "problem_group", "step", "share", "low", "high")
PROFILE_COLUMNS = ("optimizer", "tau", "rho")
SENSITIVITY_COLUMNS = ("problem", "optimizer", "lr", "median", "low", "high", "diverged", "chosen")
CONVERGENCE_COLUMNS = ("problem", "optimizer", "step", "median_gap", "low", "high")


@dataclass(frozen=True)
class Style:
    """How one optimizer is drawn in every figure: a colour (hex), a line style and a marker."""

    colour: str
    linestyle: str
    marker: str

    def line(self) -> dict[str, Any]:
        """Its keywords for `Axes.plot` and `Line2D`."""
        return {"color": self.colour, "linestyle": self.linestyle, "marker": self.marker,
                "markersize": MARKER_SIZE, "linewidth": LINE_WIDTH}  # fmt: skip


REFERENCE_STYLE = Style("#000000", ":", "X")  # the reference row's: no optimizer is black


def styles(optimizers: Sequence[str], reference_row: str | None = None) -> dict[str, Style]:
    """A style per optimizer, in the given order (the legends' order), and the reference row's last.

    The k-th optimizer (from 0, the reference row not counted) gets PALETTE[k mod 9] (Paul Tol's "muted" scheme,
    colour-blind safe: see PALETTE) and LINESTYLES[k div 9 mod 4], so up to 36 optimizers differ in (colour, line
    style); and MARKERS[k mod 12], so up to 12 also differ in marker, for print in grey. The reference row (e.g.
    "adam at Keras's default lr") is black, dotted, marked X (REFERENCE_STYLE).
    """
    names = list(optimizers)
    if len(set(names)) < len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"styles: optimizers named more than once: {', '.join(repeated)}")
    drawn = [name for name in names if name != reference_row]
    found = {}
    for k, name in enumerate(drawn):
        linestyle = LINESTYLES[k // len(PALETTE) % len(LINESTYLES)]
        found[name] = Style(PALETTE[k % len(PALETTE)], linestyle, MARKERS[k % len(MARKERS)])
    if reference_row is not None:
        found[reference_row] = REFERENCE_STYLE
    return found


def ecdf_figure(bands: pd.DataFrame, styles: Mapping[str, Style], title: str | None = None) -> Any:
    """Runtime ECDFs: per problem group, and over all problems (the group whose name starts with "all problems",
    drawn first), the share of (problem, target, seed) solved against the steps, as a step function with its
    bootstrap band shaded.

    `bands`: optimizer, problem_group, step, share, low, high (the band's bounds).
    """
    check_columns(bands, ECDF_COLUMNS, "ecdf_figure")
    named = list(dict.fromkeys(bands["problem_group"]))
    groups = [group for group in named if str(group).startswith(OVERALL)]
    groups += [group for group in named if not str(group).startswith(OVERALL)]
    order = drawing_order(bands, styles, "ecdf_figure")
    figure, axes = small_multiples(len(groups), title or "Runtime ECDFs at the chosen learning rates",
                                   "steps (updates)", "share of (problem, target, seed) solved")  # fmt: skip
    for axis, group in zip(axes, groups, strict=True):
        for index, optimizer, curve in curves(bands[bands["problem_group"] == group], order, "step"):
            style = styles[optimizer]
            axis.fill_between(curve["step"], curve["low"], curve["high"], step="post", color=style.colour,
                              alpha=BAND_ALPHA, linewidth=0)  # fmt: skip
            axis.plot(curve["step"], curve["share"], drawstyle="steps-post", markevery=marker_spacing(index, order),
                      **style.line())  # fmt: skip
        step_axis(axis, bands["step"].max())
        share_axis(axis)
        axis.set_title(str(group), fontsize="medium")
    add_legend(figure, styles, order, band="bootstrap 95% band")
    return laid_out(figure)


def profile_figure(profile: pd.DataFrame, styles: Mapping[str, Style], title: str | None = None) -> Any:
    """Dolan–Moré performance profiles (`tapelab.study.measures.performance_profile`): per optimizer, ρ(τ), the
    share of problems solved within τ times the best runtime on the problem, as a step function of τ from 1 to the
    largest τ given (at least 4).

    `profile`: optimizer, tau, rho.
    """
    check_columns(profile, PROFILE_COLUMNS, "profile_figure")
    order = drawing_order(profile, styles, "profile_figure")
    figure = new_figure(WIDTH * 0.7, 4.2 + LEGEND_HEIGHT, title or "Performance profiles on the primary target")
    axis = figure.subplots()
    for index, optimizer, curve in curves(profile, order, "tau"):
        axis.plot(curve["tau"], curve["rho"], drawstyle="steps-post", markevery=marker_spacing(index, order),
                  **styles[optimizer].line())  # fmt: skip
    axis.set_xlim(1.0, max(TAU_MIN_MAX, float(profile["tau"].max())))
    share_axis(axis)
    axis.grid(True, alpha=0.3)
    axis.set_xlabel("τ (runtime ÷ the best runtime on the problem)")
    axis.set_ylabel("ρ(τ): share of problems within τ")
    add_legend(figure, styles, order)
    return laid_out(figure)


def sensitivity_figure(sensitivity: pd.DataFrame, styles: Mapping[str, Style], title: str | None = None) -> Any:
    """Learning-rate sensitivity: per problem, the final gap against the learning rate for each optimizer (the
    median over the tuning seeds as a line, their min–max range shaded), the chosen rate starred, and a × in the
    panel's top strip at each rate where a tuning seed diverged (a row per optimizer, in the legend's order).

    `sensitivity`: problem, optimizer, lr, median, low, high (log10 of the final gap: -inf for a gap of 0, drawn
    on the floor; NaN where the runs diverged, left out), diverged, chosen (bools).
    """
    check_columns(sensitivity, SENSITIVITY_COLUMNS, "sensitivity_figure")
    problems = list(dict.fromkeys(sensitivity["problem"]))
    order = drawing_order(sensitivity, styles, "sensitivity_figure")
    figure, axes = small_multiples(len(problems), title or "Learning-rate sensitivity over the tuning seeds",
                                   "learning rate", "gap f − f* at the budget")  # fmt: skip
    gaps = sensitivity.assign(**{column: 10.0 ** sensitivity[column].astype(np.float64)
                                 for column in ("median", "low", "high")})  # fmt: skip
    floored = False
    for axis, problem in zip(axes, problems, strict=True):
        rows = gaps[gaps["problem"] == problem]
        floor = gap_axis(axis, rows[["median", "low", "high"]].to_numpy(), top_room=DIVERGED_ROOM)
        floored |= floor is not None
        for index, optimizer, curve in curves(rows, order, "lr"):
            style = styles[optimizer]
            median, low, high = (on_floor(curve[column], floor) for column in ("median", "low", "high"))
            axis.fill_between(curve["lr"], low, high, color=style.colour, alpha=BAND_ALPHA, linewidth=0)
            axis.plot(curve["lr"], median, **{**style.line(), "marker": "none"})
            chosen = curve["chosen"].to_numpy(bool)
            axis.plot(curve["lr"][chosen], median[chosen], linestyle="none", marker="*", markersize=CHOSEN_SIZE,
                      color=style.colour, markeredgecolor="black", markeredgewidth=0.8, zorder=4)  # fmt: skip
            diverged = curve["lr"][curve["diverged"].to_numpy(bool)]
            row = 1.0 - DIVERGED_ROOM * (index + 0.5) / len(order)
            axis.plot(diverged, np.full(len(diverged), row), linestyle="none", marker="x", markersize=5,
                      markeredgewidth=1.5, color=style.colour, transform=axis.get_xaxis_transform(),
                      zorder=4)  # fmt: skip
        lr_axis(axis, rows["lr"])
        axis.plot([0, 1], [1.0 - DIVERGED_ROOM] * 2, color="0.8", linewidth=0.8, transform=axis.transAxes)
        axis.text(0.02, 1.0 - DIVERGED_ROOM / 2, "diverged", transform=axis.transAxes, color="0.4",
                  fontsize="x-small", va="center")  # fmt: skip
        axis.set_title(str(problem), fontsize="medium")
    extra = [marker_key("*", "chosen rate (median)", markersize=CHOSEN_SIZE, markeredgecolor="black"),
             marker_key("x", "a tuning seed diverged", markeredgewidth=1.5)]  # fmt: skip
    add_legend(figure, styles, order, band="min–max over the tuning seeds", floor=floored, extra=extra)
    return laid_out(figure)


def convergence_figure(gap_bands: pd.DataFrame, styles: Mapping[str, Style], title: str | None = None) -> Any:
    """Convergence at the chosen rates: per problem, the median gap over the evaluation seeds against the steps,
    log-log, with its bootstrap band shaded; a gap of 0 is drawn on the panel's floor.

    `gap_bands`: problem, optimizer, step, median_gap, low, high.
    """
    check_columns(gap_bands, CONVERGENCE_COLUMNS, "convergence_figure")
    problems = list(dict.fromkeys(gap_bands["problem"]))
    order = drawing_order(gap_bands, styles, "convergence_figure")
    figure, axes = small_multiples(len(problems), title or "Convergence at the chosen learning rates",
                                   "steps (updates)", "median gap f − f* (best so far)")  # fmt: skip
    floored = False
    for axis, problem in zip(axes, problems, strict=True):
        rows = gap_bands[gap_bands["problem"] == problem]
        floor = gap_axis(axis, rows[["median_gap", "low", "high"]].to_numpy(np.float64))
        floored |= floor is not None
        for index, optimizer, curve in curves(rows, order, "step"):
            style = styles[optimizer]
            median, low, high = (on_floor(curve[column], floor) for column in ("median_gap", "low", "high"))
            axis.fill_between(curve["step"], low, high, color=style.colour, alpha=BAND_ALPHA, linewidth=0)
            axis.plot(curve["step"], median, markevery=marker_spacing(index, order), **style.line())
        step_axis(axis, rows["step"].max())
        axis.set_title(str(problem), fontsize="medium")
    add_legend(figure, styles, order, band="bootstrap 95% band", floor=floored)
    return laid_out(figure)


def save(figure: Any, directory: str | Path, name: str) -> dict[str, Path]:
    """Write `figure` as NAME.svg and NAME.png (PNG_DPI, for slides) in `directory`: {"svg": path, "png": path}.

    Both are drawn before either is written, and each file is written whole or not at all: a figure that fails to
    draw leaves the files already there as they were.
    """
    images = {"svg": svg_text(figure).encode(), "png": png_bytes(figure)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for suffix, data in images.items():
        paths[suffix] = directory / f"{name}.{suffix}"
        with replacing(paths[suffix]) as temporary:
            temporary.write_bytes(data)
    return paths


def inline_svg(figure: Any) -> str:
    """`figure` as an <svg> element to put inline in an HTML page.

    No XML prolog, doctype or metadata; text as paths (no font to load) and no external reference: the only URL
    is the SVG namespace (`href`, not `xlink:href`). Every id, and every reference to one, starts with a prefix
    drawn from the figure's content, so that figures sharing a page don't clash (matplotlib names glyphs and
    groups alike in every figure). A <title> holds the figure's label (its title) for screen readers.
    """
    text = svg_text(figure, metadata={"Creator": None, "Format": None, "Type": None})
    text = text[text.index("<svg") :]
    text = text.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "").replace("xlink:href=", "href=")
    prefix = "f" + hashlib.sha256(text.encode()).hexdigest()[:10] + "-"
    text = re.sub(r'(\bid="|\bhref="#|url\(#)', lambda found: found.group(1) + prefix, text)
    opened = text.index(">") + 1  # the end of the <svg ...> tag
    return f"{text[:opened]}\n <title>{escape(figure.get_label() or 'figure')}</title>{text[opened:]}"


def svg_text(figure: Any, metadata: Mapping[str, Any] | None = None) -> str:
    """`figure` as an SVG file's text, the same for the same figure: fixed hash salt, no date."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, **(metadata or {})})
    return buffer.getvalue()


def png_bytes(figure: Any) -> bytes:
    """`figure` as a PNG file's bytes, at PNG_DPI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


def check_columns(table: pd.DataFrame, columns: Sequence[str], caller: str) -> None:
    """Raise ValueError naming the columns `table` lacks, or saying it has no row."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{caller}: the table lacks columns {', '.join(missing)} (it needs {', '.join(columns)})")
    if table.empty:
        raise ValueError(f"{caller}: the table has no row to draw")


def drawing_order(table: pd.DataFrame, styles: Mapping[str, Style], caller: str) -> list[str]:
    """The optimizers of `table` in the order of `styles`; ValueError for one without a style."""
    present = set(table["optimizer"])
    unstyled = sorted(map(str, present - set(styles)))
    if unstyled:
        raise ValueError(f"{caller}: no style for optimizer {', '.join(unstyled)}: give styles() every optimizer")
    return [name for name in styles if name in present]


def new_figure(width: float, height: float, title: str) -> Any:
    """An empty figure with constrained layout, `title` as its title and its label."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    figure.suptitle(title, fontsize="x-large")
    figure.set_label(title)
    return figure


def laid_out(figure: Any) -> Any:
    """`figure` with its constrained layout computed once and kept, and no layout engine left: each file written
    from it is then drawn once (with an engine, even a placeholder, `savefig` draws the figure twice), without the
    layout, which measures every tick label."""
    import matplotlib

    figure.get_layout_engine().execute(figure)
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        figure.set_layout_engine(None)
    return figure


def small_multiples(count: int, title: str, xlabel: str, ylabel: str) -> tuple[Any, list[Any]]:
    """A figure of `count` panels, at most MAX_COLUMNS a row, filled row by row, `xlabel` under each panel with none
    below it and `ylabel` once on the left: (figure, its axes)."""
    rows = max(1, math.ceil(count / MAX_COLUMNS))
    columns = max(1, math.ceil(count / rows))
    width = min(WIDTH, columns * MAX_PANEL_WIDTH + 1.0)
    figure = new_figure(width, rows * PANEL_HEIGHT + LEGEND_HEIGHT + 0.5, title)
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for unused in axes[count:]:
        unused.remove()
    for axis in axes[max(0, count - columns) : count]:
        axis.set_xlabel(xlabel)
    figure.supylabel(ylabel)
    return figure, axes[:count]


def curves(rows: pd.DataFrame, order: Sequence[str], by: str) -> list[tuple[int, str, pd.DataFrame]]:
    """(its index in `order`, the optimizer, its rows sorted by `by`) for each optimizer of `order` in `rows`."""
    found = dict(tuple(rows.groupby("optimizer", sort=False)))
    return [(index, name, found[name].sort_values(by)) for index, name in enumerate(order) if name in found]


def marker_spacing(index: int, order: Sequence[str]) -> tuple[float, float]:
    """`markevery` for the `index`-th curve: markers MARKER_SPACING apart, each curve's shifted so they don't pile
    up where the curves meet."""
    return (MARKER_SPACING * index / max(1, len(order)), MARKER_SPACING)


def step_axis(axis: Any, last_step: float) -> None:
    """A step x axis from 0 to `last_step`: symmetric-log, linear on [0, 1] (step 0 is the start), log above."""
    from matplotlib import ticker

    axis.set_xscale("symlog", linthresh=1.0, linscale=STEP_LINEAR_SCALE)
    axis.set_xlim(0, max(1.0, float(last_step)))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_locator(ticker.NullLocator())
    axis.tick_params(axis="x", labelsize="small")  # 0, 1, 10, 100, 1000 side by side in a narrow panel
    axis.grid(True, which="major", alpha=0.3)


def share_axis(axis: Any) -> None:
    """A y axis of shares, [0, 1] with a little room so that 0 and 1 stay off the frame."""
    axis.set_ylim(-0.03, 1.03)
    axis.set_yticks([0, 0.25, 0.5, 0.75, 1])
    axis.set_yticklabels(["0", "0.25", "0.5", "0.75", "1"])
    axis.grid(True, axis="y", alpha=0.3)


def lr_axis(axis: Any, rates: pd.Series) -> None:
    """A log learning-rate x axis spanning `rates`, its decades labelled (10⁻³), at most MAX_GAP_TICKS of them."""
    from matplotlib import ticker

    axis.set_xscale("log")
    low, high = float(rates.min()), float(rates.max())
    axis.set_xlim(low / 10**0.2, high * 10**0.2)
    exponents = decades(math.floor(math.log10(low)), math.ceil(math.log10(high)))
    axis.xaxis.set_major_locator(ticker.FixedLocator([10.0**exponent for exponent in exponents]))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(decade_label))
    axis.xaxis.set_minor_locator(ticker.NullLocator())
    axis.grid(True, which="major", alpha=0.3)


def decades(low: int, high: int, start: int | None = None) -> list[int]:
    """Exponents from `low` to `high`, every one or every few so that at most MAX_GAP_TICKS remain, counted from
    `start` (default `high`, so the top decade is labelled)."""
    stride = max(1, math.ceil((high - low + 1) / MAX_GAP_TICKS))
    anchor = high if start is None else start
    return [exponent for exponent in range(low, high + 1) if (exponent - anchor) % stride == 0]


def gap_axis(axis: Any, values: np.ndarray, top_room: float = 0.0) -> float | None:
    """Put `axis`'s y axis on a log scale for these gaps (NaN and inf left out), with the top `top_room` of its
    height left free. A gap of 0 gets a floor a decade below the smallest positive gap (its decade's), drawn as a
    hatched band whose tick reads "gap 0": returns the floor, or None when no gap is 0."""
    from matplotlib import ticker

    gaps = np.asarray(values, np.float64)
    gaps = gaps[np.isfinite(gaps)]
    positive = gaps[gaps > 0]
    axis.set_yscale("log")
    axis.yaxis.set_minor_locator(ticker.NullLocator())
    axis.grid(True, axis="y", which="major", alpha=0.3)
    if not len(gaps):
        return None
    logs = np.clip(np.log10(positive), -MAX_DECADES, MAX_DECADES) if len(positive) else np.zeros(1)
    low_exponent, high_exponent = math.floor(logs.min()), math.ceil(logs.max())
    floor = 10.0 ** (low_exponent - 1) if (gaps == 0).any() else None
    margin = max(MIN_MARGIN, MARGIN * (logs.max() - logs.min()))
    bottom = low_exponent - 1 - FLOOR_HALF_WIDTH if floor else logs.min() - margin
    top = logs.max() + margin
    top = min(top + (top - bottom) * top_room / (1.0 - top_room), MAX_DECADES + 7)
    axis.set_ylim(10.0**bottom, 10.0**top)
    exponents = decades(low_exponent, high_exponent, start=low_exponent - 1)
    ticks = [10.0**exponent for exponent in exponents if bottom <= exponent <= top]
    if floor is not None:
        ticks.insert(0, floor)
        axis.axhspan(10.0**bottom, floor * 10**FLOOR_HALF_WIDTH, facecolor="none", edgecolor="0.6", hatch="////",
                     linewidth=0, zorder=0)  # fmt: skip
    axis.yaxis.set_major_locator(ticker.FixedLocator(ticks))
    axis.yaxis.set_major_formatter(
        ticker.FuncFormatter(lambda value, _: FLOOR_LABEL if value == floor else decade_label(value))
    )
    return floor


def on_floor(gaps: pd.Series, floor: float | None) -> np.ndarray:
    """Gaps to draw: 0 on the floor, inf left out (NaN)."""
    values = gaps.to_numpy(np.float64).copy()
    values[np.isinf(values)] = np.nan
    if floor is not None:
        values[values == 0] = floor
    return values


def marker_key(marker: str, label: str, **style: Any) -> Any:
    """A legend entry for a mark drawn in every optimizer's colour: the mark in grey."""
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="none", marker=marker, color="0.45", label=label, **style)


def add_legend(figure: Any, styles: Mapping[str, Style], order: Sequence[str], band: str | None = None,
               floor: bool = False, extra: Sequence[Any] = ()) -> None:  # fmt: skip
    """The figure's legend under its panels: a line per optimizer of `order`, then what the shading, the floor
    and the `extra` marks mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], label=name, **styles[name].line()) for name in order]
    if band:
        handles.append(Patch(facecolor="0.45", alpha=BAND_ALPHA * 2, label=band))
    if floor:
        handles.append(Patch(facecolor="none", edgecolor="0.6", hatch="////", label="gap exactly 0"))
    handles.extend(extra)
    columns = max(1, min(len(handles), 5, int(figure.get_figwidth() / LEGEND_ENTRY_WIDTH)))
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, frameon=False)
