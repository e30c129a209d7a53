"""Pictures, drawn with matplotlib's object API (`Figure`, no pyplot): no display, no global state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.atomic import replacing

DPI = 110
MAX_LEGEND_ENTRIES = 12
MAX_DECADES_WITH_MINOR_TICKS = 2  # a log axis over more decades reads well from its decades alone
SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
# A run's pictures are drawn for every job of a sweep, so they skip what costs most and shows least: the
# layout and the titles' height are fixed rather than computed from every label's extent, log axes are
# labelled 10⁻³ in plain text rather than with mathtext, and get few minor ticks (each label is drawn text).
RUN_MARGINS = {"left": 0.12, "right": 0.96, "bottom": 0.11, "top": 0.93}


def new_figure(width: float, height: float, columns: int = 1, margins: dict[str, float] | None = None) -> tuple:
    """A figure of `width` × `height` inches with `columns` axes side by side: (figure, axes array).

    With `margins` (fractions of the figure, as `Figure.subplots_adjust` takes them) the layout is fixed.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    if margins:
        figure.subplots_adjust(**margins)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def save(figure: Any, path: Path) -> None:
    """Write `figure` as a PNG in one step (fast zlib level: a third larger, a run's pictures a fifth quicker)."""
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png", pil_kwargs={"compress_level": 1})


def decade_label(value: float, position: int | None = None) -> str:
    """A log-axis tick label: 10⁻³ for a power of ten, the number itself otherwise."""
    exponent = np.log10(value) if value > 0 else np.nan
    if np.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9:
        return "10" + str(int(round(exponent))).translate(SUPERSCRIPTS)
    return f"{value:g}"


def log_ticks(axis: Any, low: float, high: float) -> None:
    """Label a logarithmic `axis` (a matplotlib Axis) spanning about [`low`, `high`] without mathtext.

    Within a decade (or an unknown span) the minor ticks are those matplotlib chooses; over one to
    MAX_DECADES_WITH_MINOR_TICKS decades, 2 and 5 of each decade (1-2-5); over more, only the decades.
    """
    from matplotlib import ticker

    decade_labels = ticker.FuncFormatter(decade_label)
    axis.set_major_formatter(decade_labels)
    decades = np.log10(high / low) if low > 0 else 0.0
    if decades < 1:
        axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    elif decades <= MAX_DECADES_WITH_MINOR_TICKS:
        axis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(decade_labels)
    else:
        axis.set_minor_locator(ticker.NullLocator())


def loss_figure(history: pd.DataFrame) -> Any:
    """The loss against the step; on a log axis when the loss stays positive."""
    figure, (axis,) = new_figure(6.4, 4.2, margins=RUN_MARGINS)
    axis.plot(history["step"], history["loss"], linewidth=1.3)
    if (history["loss"] > 0).all():
        axis.set_yscale("log")
        log_ticks(axis.yaxis, history["loss"].min(), history["loss"].max())
    axis.set(xlabel="step", ylabel="loss")
    axis.set_title("loss", y=1.0)  # a given height: not placed by measuring the tick labels
    axis.grid(True, which="major", alpha=0.3)
    return figure


def contour_box(path: np.ndarray, minima: list[np.ndarray], domain: np.ndarray | None) -> np.ndarray:
    """The region to draw: the objective's domain, or the path and minima with a margin, grown to hold the path."""
    points = np.vstack([path, *[np.atleast_2d(point) for point in minima]])
    low, high = points.min(axis=0), points.max(axis=0)
    if domain is not None:
        low, high = np.minimum(low, domain[:, 0]), np.maximum(high, domain[:, 1])
    else:
        margin = np.maximum(0.2 * (high - low), 0.5)
        low, high = low - margin, high + margin
    return np.stack([low, high], axis=1)


def contour_axes(grid_x: np.ndarray, grid_y: np.ndarray, values: np.ndarray) -> tuple:
    """A figure with a filled contour of the objective (`values` on the `grid_x` × `grid_y` mesh) and its
    colour bar; returns (figure, axis)."""
    from matplotlib import ticker
    from matplotlib.colors import LogNorm

    figure, (axis,) = new_figure(6.4, 5.4, margins={**RUN_MARGINS, "right": 0.98})
    finite = values[np.isfinite(values)]
    positive = finite.size and finite.min() > 0
    if positive and finite.max() / finite.min() > 100:
        levels = np.geomspace(finite.min(), finite.max(), 30)
        contour = axis.contourf(grid_x, grid_y, values, levels=levels, norm=LogNorm(), cmap="viridis")
        colorbar = figure.colorbar(contour, ax=axis, label="loss (log scale)", ticks=ticker.LogLocator())
        log_ticks(colorbar.ax.yaxis, finite.min(), finite.max())
    else:
        contour = axis.contourf(grid_x, grid_y, values, levels=30, cmap="viridis")
        figure.colorbar(contour, ax=axis, label="loss")
    return figure, axis


class ContourPicture:
    """The filled contour of an objective over a region, with its colour bar and starred minima, rendered once.

    Each picture restores that rendering and draws only its own lines, legend and title on top (matplotlib's
    blitting), a small part of the cost of drawing the contour again: the jobs of a sweep over one objective
    share it. One picture at a time is drawn (a lock), as a figure is not safe to draw from two threads.
    """

    def __init__(
        self, grid_x: np.ndarray, grid_y: np.ndarray, values: np.ndarray, minima: list[np.ndarray], labels: tuple
    ) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.figure, self.axis = contour_axes(grid_x, grid_y, values)
        self.minima = []
        if minima:  # under the lines drawn later, so that an end point on a minimum stays visible
            stars = np.array(minima)
            self.minima = self.axis.plot(stars[:, 0], stars[:, 1], "*", color="red", markeredgecolor="black",
                                         markersize=14, linestyle="none", label="global minima")  # fmt: skip
        self.axis.set(xlabel=labels[0], ylabel=labels[1])
        self.axis.set_autoscale_on(False)  # the lines drawn on it later must not move the axes
        self.canvas = FigureCanvasAgg(self.figure)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.lock = threading.Lock()

    def save_path(self, path: np.ndarray, file: Path) -> list[Any]:
        """The optimizer's path (one (x, y) row per logged step), its start and its end; returns those lines."""
        return self._save(
            "path over the objective",
            file,
            lambda axis: [
                *axis.plot(path[:, 0], path[:, 1], "-", color="white", linewidth=1.4, label="path"),
                *axis.plot(*path[0], "o", color="white", markeredgecolor="black", markersize=8, label="start"),
                *axis.plot(*path[-1], "s", color="orange", markeredgecolor="black", markersize=8, label="end"),
            ],
        )

    def save_starts(self, starts: np.ndarray, ends: np.ndarray, file: Path) -> list[Any]:
        """Each start (a row of `starts`) joined to where it ended; returns the lines drawn."""
        segments = np.stack([starts, ends], axis=1)  # (start, end) pairs: one line each, NaN ends drawn as nothing

        def lines(axis: Any) -> list[Any]:
            joins = axis.plot(segments[:, :, 0].T, segments[:, :, 1].T, "-", color="white", linewidth=0.6, alpha=0.6)
            return [
                *joins,
                *axis.plot(starts[:, 0], starts[:, 1], "o", color="white", markeredgecolor="black", markersize=5,
                           linestyle="none", label=f"{len(starts)} starts"),
                *axis.plot(ends[:, 0], ends[:, 1], "s", color="orange", markeredgecolor="black", markersize=5,
                           linestyle="none", label="ends"),
            ]  # fmt: skip

        return self._save("starts and ends over the objective", file, lines)

    def _save(self, title: str, file: Path, draw: Any) -> list[Any]:
        """Restore the contour, draw `draw(axis)`'s lines, the legend and `title` on it, and write a PNG."""
        from PIL import Image

        with self.lock:
            self.canvas.restore_region(self.background)
            lines = draw(self.axis)
            labelled = [line for line in [*self.minima, *lines] if not line.get_label().startswith("_")]
            legend = self.axis.legend(handles=labelled, fontsize="small", loc="best")
            self.axis.set_title(title, y=1.0)
            for artist in (*lines, legend, self.axis.title):
                self.axis.draw_artist(artist)
            width, height = self.canvas.get_width_height()
            image = Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
            with replacing(file) as temporary:
                image.save(temporary, format="png", dpi=(DPI, DPI), compress_level=1)
            for artist in (*lines, legend):
                artist.remove()
            self.axis.set_title("")
        return lines


def numeric_swept_keys(table: pd.DataFrame, keys: list[str]) -> list[str]:
    """The swept keys whose values are numbers and differ between jobs."""
    return [
        key
        for key in keys
        if pd.api.types.is_numeric_dtype(table[key])
        and not pd.api.types.is_bool_dtype(table[key])
        and table[key].nunique() > 1
    ]


def loss_scale(losses: pd.Series) -> str:
    """Log scale when no loss is negative (exact zeros are left out), linear otherwise."""
    return "log" if len(losses) and (losses >= 0).all() else "linear"


def curve_styles(table: pd.DataFrame, varying: list[str], numeric: list[str]) -> tuple[dict[int, Any], list[Any]]:
    """A colour per job, and legend handles.

    With a non-numeric swept key (e.g. the optimizer), each of its values gets a colour map, and the
    numeric keys (e.g. lr) go from light to dark within it; otherwise each job has its own colour.
    """
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    groups_by = [key for key in varying if key not in numeric]
    if not groups_by or not numeric:
        colors = {job: f"C{i % 10}" for i, job in enumerate(table["job"])}
        labels = [
            ", ".join(f"{key}={row[key]}" for key in varying) or f"job {row['job']}" for _, row in table.iterrows()
        ]
        handles = [
            Line2D([], [], color=colors[job], label=label) for job, label in zip(table["job"], labels, strict=True)
        ]
        return colors, handles if len(handles) <= MAX_LEGEND_ENTRIES else []
    maps = ["Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd"]
    colors, handles = {}, []
    for index, (label, group) in enumerate(table.groupby(groups_by, sort=True)):
        cmap = colormaps[maps[index % len(maps)]]
        ordered = group.sort_values(numeric)
        shades = [0.4 + 0.55 * i / max(1, len(ordered) - 1) for i in range(len(ordered))]
        colors.update({job: cmap(shade) for job, shade in zip(ordered["job"], shades, strict=True)})
        text = ", ".join(f"{key}={value}" for key, value in zip(groups_by, label, strict=True))
        handles.append(Line2D([], [], color=cmap(0.75), label=text))
    handles.append(Line2D([], [], color="none", label=f"darker: larger {', '.join(numeric)}"))
    return colors, handles


def plot_sweep(table: pd.DataFrame, curves: dict[int, pd.DataFrame], keys: list[str], path: Path) -> None:
    """Loss curves of all jobs on one log axis, and the final loss against each numeric swept key.

    `curves` maps a job number to its (step, loss) history. Diverged jobs are drawn dashed in the
    curves, outside the y range of the others, and left out of the final-loss panels.
    """
    varying = [key for key in keys if table[key].nunique() > 1]
    numeric = numeric_swept_keys(table, varying)
    figure, axes = new_figure(7 + 4.5 * len(numeric), 4.8, columns=1 + len(numeric))
    draw_curves(axes[0], table, curves, varying, numeric)
    finished = table[table["status"].isin(["completed", "converged"])]
    for axis, key in zip(axes[1:], numeric, strict=True):
        draw_final_loss(axis, finished, key, [other for other in varying if other != key], len(table))
    figure.tight_layout()
    save(figure, path)


def draw_curves(
    axis, table: pd.DataFrame, curves: dict[int, pd.DataFrame], varying: list[str], numeric: list[str]
) -> None:
    """The loss of every job against the step; y limits follow the jobs that did not diverge."""
    colors, handles = curve_styles(table, varying, numeric)
    status = dict(zip(table["job"], table["status"], strict=True))
    for job, history in curves.items():
        style = "--" if status.get(job) == "diverged" else "-"
        axis.plot(history["step"], history["loss"], style, color=colors.get(job), linewidth=1.2)
    kept = [history["loss"] for job, history in curves.items() if status.get(job) != "diverged"]
    losses = pd.concat(kept) if kept else pd.Series(dtype=float)
    if loss_scale(losses) == "log":
        axis.set_yscale("log", nonpositive="mask")
        losses = losses[losses > 0]
        if len(losses):
            axis.set_ylim(losses.min() / 2, losses.max() * 2)
            log_ticks(axis.yaxis, losses.min() / 2, losses.max() * 2)
    elif len(losses):
        margin = 0.05 * (losses.max() - losses.min()) or 1.0
        axis.set_ylim(losses.min() - margin, losses.max() + margin)
    axis.set(xlabel="step", ylabel="loss", title=f"loss of {len(curves)} runs (dashed: diverged)")
    if handles:
        axis.legend(handles=handles, fontsize="x-small")
    axis.grid(True, which="major", alpha=0.3)


def draw_final_loss(axis, finished: pd.DataFrame, key: str, group_keys: list[str], jobs: int) -> None:
    """The final loss against `key`, a line per combination of the other swept keys."""
    groups = finished.groupby(group_keys, dropna=False) if group_keys else [((), finished)]
    for label, group in groups:
        ordered = group.sort_values(key)
        axis.plot(ordered[key], ordered["final_loss"], marker="o", label=", ".join(map(str, label)) or None)
    values = finished[key].dropna()
    if len(values) and (values > 0).all() and values.max() / values.min() >= 100:
        axis.set_xscale("log")
        log_ticks(axis.xaxis, values.min(), values.max())
    if loss_scale(finished["final_loss"]) == "log":
        axis.set_yscale("log", nonpositive="mask")
        positive = finished["final_loss"][finished["final_loss"] > 0]
        if len(positive):
            log_ticks(axis.yaxis, positive.min(), positive.max())
    left_out = jobs - len(finished)
    note = f"\n({left_out} diverged or failed, not shown)" if left_out else ""
    axis.set(xlabel=key, ylabel="final loss", title=f"final loss against {key}{note}")
    if group_keys and len(groups) <= MAX_LEGEND_ENTRIES:
        axis.legend(fontsize="x-small", title=", ".join(group_keys), title_fontsize="x-small")
    axis.grid(True, which="major", alpha=0.3)
