"""Pictures, drawn with matplotlib's object API (`Figure`, no pyplot): no display, no global state.

The figure basics, the loss axis and the contour of a run's pictures; a sweep's picture is `sweep_plots`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.atomic import replacing

DPI = 110
MAX_WAITING_PNGS = 4  # pictures drawn and not yet written, each a copy of its canvas (~1.6 MB)
MAX_DECADES_WITH_MINOR_TICKS = 2  # a log axis over more decades reads well from its decades alone
MAX_SYMLOG_TICKS = 10  # a symmetric log axis labels every second decade (or third…) past this many
MIN_EXIT_ARROW = 0.12  # of the frame: the shortest arrow that shows where a diverged path went
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # the spacing of float32 numbers relative to their size, 2⁻²³
ROUNDING_STEPS = 10  # float32 steps of the loss near its reference value that a loss axis shows linearly
SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
TITLE_FITS = 4  # times a title too wide is measured and made smaller, at most
# A run's pictures are drawn for every job of a sweep, so they skip what costs most and shows least: the
# layout and the titles' height are fixed rather than computed from every label's extent, log axes are
# labelled 10⁻³ in plain text rather than with mathtext, and get few minor ticks (each label is drawn text).
RUN_MARGINS = {"left": 0.12, "right": 0.96, "bottom": 0.11, "top": 0.93}


def new_figure(width: float, height: float, columns: int = 1, margins: dict[str, float] | None = None) -> tuple:
    """A figure of `width` × `height` inches with `columns` axes side by side: (figure, axes array).

    With `margins` (fractions of the figure, as `Figure.subplots_adjust` takes them) the layout is fixed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)  # its canvas, which measures text (`fitted_title`)
    if margins:
        figure.subplots_adjust(**margins)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def save(figure: Any, path: Path) -> None:
    """Draw `figure` and write it as a PNG (`write_png`), before returning."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    write_png(np.asarray(canvas.buffer_rgba()), path)


def write_png(pixels: np.ndarray, path: Path) -> None:
    """Write an RGBA image (rows of pixels) as a PNG in one step (fast zlib level: a third larger, a run's
    pictures a fifth quicker)."""
    from PIL import Image

    with replacing(path) as temporary:
        Image.fromarray(pixels, "RGBA").save(temporary, format="png", dpi=(DPI, DPI), compress_level=1)


class PngWriter:
    """Writes PNG files in a thread of its own. PIL's encoder and zlib run without the GIL, so a run's
    pictures are written while the next ones are drawn (matplotlib's drawing holds it). At most
    MAX_WAITING_PNGS pictures wait to be written; `wait(files)` returns once those files are written, or
    raises the first of their errors (each file's error is its own)."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tapelab-png")
        self._files: dict[Path, Future] = {}  # handed over, and not yet waited for
        self._lock = threading.Lock()

    def write(self, canvas: Any, path: Path) -> None:
        """Write what the Agg `canvas` shows now as the PNG `path` (it may be drawn again at once)."""
        with self._lock:
            pending = [future for future in self._files.values() if not future.done()]
        if len(pending) >= MAX_WAITING_PNGS:
            futures.wait(pending, return_when=futures.FIRST_COMPLETED)
        future = self._thread.submit(write_png, np.array(canvas.buffer_rgba()), path)
        with self._lock:
            self._files[path] = future  # a later picture of the same file replaces it (written after it)

    def wait(self, files: Iterable[Path]) -> None:
        with self._lock:
            handed = [self._files.pop(path) for path in files if path in self._files]
        for error in [future.exception() for future in handed]:
            if error is not None:
                raise error


@functools.cache
def png_writer() -> PngWriter:
    """The process's PNG writer, for the pictures of runs."""
    return PngWriter()


def pngs_written(files: Iterable[Path]) -> None:
    """Wait until these pictures, handed to the PNG writer, are written; raise the first of their errors."""
    png_writer().wait(files)


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


def fit_limits(axis: Any, values: np.ndarray) -> None:
    """Set the y limits to the range of `values` and a 5% margin, measured along the axis's own scale."""
    scale = axis.yaxis.get_transform()
    low, high = scale.transform(np.array([[values.min()], [values.max()]]))[:, 0]
    margin = 0.05 * (high - low) or 0.5
    axis.set_ylim(*scale.inverted().transform(np.array([[low - margin], [high + margin]]))[:, 0])


def finite_values(values: Any) -> np.ndarray:
    """The finite ones of `values`, as float64."""
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def loss_shift(losses: pd.Series, minimum: float | None = None) -> float:
    """What `loss_axis` subtracts from `losses`: the objective's known minimum value f* (`minimum`), else
    their lowest value if it is negative, else 0."""
    if minimum is not None:
        return minimum
    values = finite_values(losses)
    return float(min(0.0, values.min())) if len(values) else 0.0


def rounding_floor(shift: float) -> float:
    """The power of ten at or above ROUNDING_STEPS float32 steps at `shift` (0 for 0): where a loss drawn as
    loss − `shift` is within float32's rounding of the loss, e.g. 10⁻⁵ at −1.03."""
    if shift == 0:
        return 0.0
    return float(10.0 ** np.ceil(np.log10(ROUNDING_STEPS * FLOAT32_EPS * abs(shift))))


def loss_axis(axis: Any, drawn: pd.Series, shift: float, name: str = "loss", reference: str = "lowest") -> None:
    """Put the y axis of `axis`, which shows `drawn` = loss − `shift` (see `loss_shift`), on a log scale
    fitted to `drawn`; `reference` names the shift in the label ("f*" or "lowest").

    While every value drawn is above the shift's float32 rounding (`rounding_floor`; above 0 for a shift of
    0), a plain log axis. Otherwise a symmetric log axis, linear below that floor, so that the float32 steps
    of a loss that settled at its reference draw as a flat line, not as jumps across decades; for a shift of
    0, linear below a decade under the smallest nonzero value. The label names the shift and the floor.
    """
    from matplotlib import ticker

    values = finite_values(drawn)
    shown = f"{shift:.6g}".replace("-", "−")
    label = f"{name} − {reference} ({shown})" if shift else name
    floor = rounding_floor(shift)
    if not len(values):
        axis.set_ylabel(label)
    elif (values > floor).all():
        axis.set_yscale("log", nonpositive="mask")
        log_ticks(axis.yaxis, values.min(), values.max())
        axis.set_ylabel(label)
    else:
        nonzero = np.abs(values[values != 0])
        below = 10.0 ** (np.floor(np.log10(nonzero.min())) - 1) if len(nonzero) else 1.0
        linear = max(floor, below)
        axis.set_yscale("symlog", linthresh=linear)
        axis.yaxis.get_major_locator().set_params(numticks=MAX_SYMLOG_TICKS)
        axis.yaxis.set_major_formatter(ticker.FuncFormatter(decade_label))
        axis.yaxis.set_minor_locator(ticker.NullLocator())
        axis.set_ylabel(f"{label}, linear below {decade_label(linear)}")
    if len(values):
        fit_limits(axis, values)


def step_axis(axis: Any) -> None:
    """Label the x axis "step", with ticks on whole steps only."""
    from matplotlib import ticker

    axis.xaxis.set_major_locator(ticker.MaxNLocator("auto", steps=[1, 2, 2.5, 5, 10], integer=True))  # as AutoLocator
    axis.set_xlabel("step")


def loss_figure(history: pd.DataFrame, title: str = "loss", minimum: float | None = None) -> Any:
    """The loss against the step on a log axis, less the objective's minimum value `minimum` where it is known
    (see `loss_axis`), under `title`.

    An empty `history` (a run whose start was not finite logs no row) gives an empty frame, without ticks.
    """
    figure, axis, line = loss_frame()
    draw_loss(axis, line, history, title, minimum)
    return figure


def loss_frame() -> tuple[Any, Any, Any]:
    """An empty loss figure: the figure, its axes and the loss curve, with no data."""
    figure, (axis,) = new_figure(6.4, 4.2, margins=RUN_MARGINS)
    (line,) = axis.plot([], [], linewidth=1.3)
    axis.grid(True, which="major", alpha=0.3)
    return figure, axis, line


def draw_loss(axis: Any, line: Any, history: pd.DataFrame, title: str, minimum: float | None) -> None:
    """Show `history`'s loss on `axis` (from `loss_frame`, new or drawn before) as `line`, under `title`."""
    shift = loss_shift(history["loss"], minimum)
    drawn = history["loss"] - shift
    axis.set_autoscale_on(True)
    axis.set_yscale("linear")
    line.set_data(history["step"], drawn)
    axis.relim()
    axis.autoscale_view()
    loss_axis(axis, drawn, shift, reference="lowest" if minimum is None else "f*")
    step_axis(axis)
    if history.empty:
        axis.set(xticks=[], yticks=[])
    fitted_title(axis, title)


def fitted_title(axis: Any, title: str) -> None:
    """Set `title` over `axis` at a given height (not placed by measuring the tick labels), in a smaller font
    if it would run off the figure (it is centred over the axes)."""
    text = axis.set_title(title, y=1.0, fontsize="large")
    figure = axis.get_figure()
    centre = (axis.bbox.x0 + axis.bbox.x1) / 2
    room = 2 * min(centre, figure.bbox.width - centre) * 0.98
    for _ in range(TITLE_FITS):  # a text's width is not quite in proportion to its size: measured again
        width = text.get_window_extent(figure.canvas.get_renderer()).width
        if width <= room:
            break
        text.set_fontsize(text.get_fontsize() * room / width)


class LossPicture:
    """loss.png's figure, made once per process and drawn again for each run: a new figure costs about a
    third of the picture's time."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.figure, self.axis, self.line = loss_frame()
        self.canvas = FigureCanvasAgg(self.figure)
        self.lock = threading.Lock()

    def save(self, history: pd.DataFrame, title: str, minimum: float | None, path: Path) -> None:
        """Draw loss.png for `history` (see `loss_figure`), and have the PNG writer write it to `path`."""
        with self.lock:
            draw_loss(self.axis, self.line, history, title, minimum)
            self.canvas.draw()
            png_writer().write(self.canvas, path)


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


def diverged_box(path: np.ndarray, minima: list[np.ndarray], domain: np.ndarray | None) -> np.ndarray:
    """The region to draw for a diverged run: the domain (grown to hold the start and minima) or the box
    around the path and the minima, whichever is smaller, so the blow-up does not hide both.

    The path is finite: metrics.csv logs no row with a non-finite value.
    """
    around_path = contour_box(path, minima, None)
    if domain is None:
        return around_path
    around_domain = contour_box(path[:1], minima, domain)
    return min(around_domain, around_path, key=lambda box: np.prod(box[:, 1] - box[:, 0]))


def exit_arrow(path: np.ndarray, box: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Where the finite `path` leaves `box` for good, or None if it ends inside: (the index of its last point
    inside, and an arrow from that point to the box's edge, toward the next point: its tail and its tip).

    The arrow is at least MIN_EXIT_ARROW of the box long (its tail moved back if need be).
    """
    low, size = box[:, 0], box[:, 1] - box[:, 0]
    scaled = (path - low) / size  # the box as [0, 1]²: lengths read alike on both axes
    inside = np.flatnonzero(np.all((scaled >= 0) & (scaled <= 1), axis=1))
    if not len(inside) or inside[-1] == len(path) - 1:
        return None
    tail = scaled[inside[-1]]
    step = scaled[inside[-1] + 1] - tail
    heading = step / np.linalg.norm(step)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_edge = np.where(heading > 0, (1 - tail) / heading, np.where(heading < 0, -tail / heading, np.inf))
    tip = tail + to_edge.min() * heading
    if np.linalg.norm(tip - tail) < MIN_EXIT_ARROW:
        tail = np.clip(tip - MIN_EXIT_ARROW * heading, 0, 1)
    return int(inside[-1]), low + tail * size, low + tip * size


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
    share it. One picture at a time is drawn (a lock), as a figure is not safe to draw from two threads. The
    PNG writer writes the files (`pngs_written(files)` waits for them).
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

    def save_path(self, path: np.ndarray, file: Path, title: str, diverged: bool = False) -> list[Any]:
        """The optimizer's path (one (x, y) row per logged step), its start and its end, under `title`; returns
        those artists.

        A diverged run's path is drawn until it leaves the frame for good, and goes on as an arrow labelled
        "diverged" (if it ends inside the frame, its last point is marked instead).
        """

        def artists(axis: Any) -> list[Any]:
            leaving = exit_arrow(path, np.array([axis.get_xlim(), axis.get_ylim()])) if diverged else None
            shown = path if leaving is None else path[: leaving[0] + 1]  # not the jumps of the blow-up
            drawn = [
                *axis.plot(shown[:, 0], shown[:, 1], "-", color="white", linewidth=1.4, label="path"),
                *axis.plot(*path[0], "o", color="white", markeredgecolor="black", markersize=8, label="start"),
            ]
            if not diverged:
                return [*drawn, *axis.plot(*path[-1], "s", color="orange", markeredgecolor="black", markersize=8,
                                           label="end")]  # fmt: skip
            if leaving is None:
                return [*drawn, *axis.plot(*path[-1], "X", color="red", markeredgecolor="black", markersize=10,
                                           label="diverged after this point")]  # fmt: skip
            _, tail, tip = leaving
            right, down = tip - tail > 0, tip - tail < 0  # the label sits behind the arrow's tail
            arrow = axis.annotate(
                "diverged", xy=tip, xytext=tail, color="red", fontweight="bold", annotation_clip=False,
                ha="right" if right[0] else "left", va="bottom" if down[1] else "top",
                arrowprops={"arrowstyle": "-|>", "color": "red", "linewidth": 2, "mutation_scale": 18,
                            "shrinkA": 0, "relpos": (float(right[0]), float(not down[1]))},
            )  # fmt: skip
            return [*drawn, arrow]

        return self._save(title, file, artists)

    def save_starts(self, starts: np.ndarray, ends: np.ndarray, file: Path, title: str) -> list[Any]:
        """Each start (a row of `starts`) joined to where it ended, under `title`; returns the lines drawn."""
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

        return self._save(title, file, lines)

    def _save(self, title: str, file: Path, draw: Any) -> list[Any]:
        """Restore the contour, draw `draw(axis)`'s lines, the legend and `title` on it, and have the PNG writer
        write it."""
        with self.lock:
            self.canvas.restore_region(self.background)
            lines = draw(self.axis)
            labelled = [line for line in [*self.minima, *lines] if line.get_label()[:1] not in ("", "_")]
            legend = self.axis.legend(handles=labelled, fontsize="small", loc="best")
            fitted_title(self.axis, title)
            for artist in (*lines, legend, self.axis.title):
                self.axis.draw_artist(artist)
            png_writer().write(self.canvas, file)
            for artist in (*lines, legend):
                artist.remove()
            self.axis.set_title("")
        return lines
