"""Pictures read back from their pixels: the frames of their axes and tick marks, lines and markers found by their
colour, and text compared with matplotlib's own drawing of the expected string.

Positions are in pixels: a row counts from the top of the image, a column from its left. matplotlib snaps the
spines, tick marks and grid lines to whole pixels; a point drawn from data lands within a pixel of where the
frame's pixels put it, and the checks below allow a few.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np

DPI = 110  # tapelab's pictures: inches × DPI pixels
DARK = 0.15  # black lines and text; no viridis colour (the contours) is this dark in every channel
EDGE = 0.35  # a marker's black edge, drawn over colour by a line a pixel wide
POSITION_TOLERANCE = 1.5  # pixels: a marker's middle, found from its pixels, from where its data put it
MIN_SIDE = 100  # pixels: the spines of a frame at least; a colour bar is narrower
MAX_GAP = 20  # pixels of a spine that a marker drawn over it (a sweep's ✖) may hide
LABEL_REACH = 10  # pixels above and below its tick that a tick label (10 points) may reach
MAJOR_TICK_REACH = 4  # pixels out from the spine that a major tick mark (3.5 points) reaches, and a minor one (2) not
WHITE, RED, ORANGE = (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (1.0, 0.647, 0.0)
CURVE = (0.122, 0.467, 0.706)  # matplotlib's first colour (C0), loss.png's curve
TEXT_MATCH = 0.2  # at most this far off in any channel: the same text, at the same size (a wrong glyph: 0.6+)
SUBPIXEL_STEPS = 8  # text is drawn at 1/64 pixel; matched at 1/8


def rgb(path: Path) -> np.ndarray:
    """A PNG's pixels: rows from the top, RGB in [0, 1]."""
    return matplotlib.image.imread(path)[..., :3].astype(np.float64)


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) ranges of the True runs of a 1-D array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(flags, int), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def is_colour(pixels: np.ndarray, colour: tuple, tolerance: float) -> np.ndarray:
    """Which pixels have `colour`, each channel within `tolerance`."""
    return (np.abs(pixels - np.asarray(colour)) <= tolerance).all(axis=-1)


@dataclass(frozen=True)
class Frame:
    """An axes' frame: the columns of its left and right spines, the rows of its top and bottom ones."""

    left: int
    right: int
    top: int
    bottom: int

    def column(self, x: float, limits: tuple[float, float]) -> float:
        """The column of `x` on a linear axis from limits[0] (left) to limits[1] (right)."""
        return self.left + (x - limits[0]) / (limits[1] - limits[0]) * (self.right - self.left)

    def row(self, y: float, limits: tuple[float, float]) -> float:
        """The row of `y` on a linear axis from limits[0] (bottom) to limits[1] (top)."""
        return self.bottom - (y - limits[0]) / (limits[1] - limits[0]) * (self.bottom - self.top)

    def at(self, point, xlim, ylim) -> tuple[float, float]:
        """(row, column) of a data point on linear axes of these limits."""
        return self.row(point[1], ylim), self.column(point[0], xlim)

    def y_ticks(self, image: np.ndarray) -> list[float]:
        """The rows of the major tick marks left of the frame, top to bottom."""
        column = image[self.top - 1 : self.bottom + 2, self.left - MAJOR_TICK_REACH].max(axis=1) < DARK
        return [self.top - 1 + (start + stop - 1) / 2 for start, stop in runs(column)]

    def x_ticks(self, image: np.ndarray) -> list[float]:
        """The columns of the major tick marks below the frame, left to right."""
        row = image[self.bottom + MAJOR_TICK_REACH, self.left - 1 : self.right + 2].max(axis=1) < DARK
        return [self.left - 1 + (start + stop - 1) / 2 for start, stop in runs(row)]

    def y_labels(self, image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The y axis's label (the leftmost ink left of the frame) and the label of each major tick, top to bottom
        (the ink between it and the tick marks, about each tick's row)."""
        strip = image[self.top - LABEL_REACH : self.bottom + LABEL_REACH + 1, : self.left]
        (label_start, label_stop), (start, stop), _ticks = ink_groups(strip)
        labels = [
            image[round(row) - LABEL_REACH : round(row) + LABEL_REACH + 1, start:stop] for row in self.y_ticks(image)
        ]
        return strip[:, label_start:label_stop], labels


def straight_lines(dark: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) ranges of a row (or column) of `dark` pixels that are a line at least MIN_SIDE long: dark
    but for gaps of at most MAX_GAP pixels, and over 80% of it."""
    lines: list[tuple[int, int]] = []
    for start, stop in runs(dark):
        if lines and start - lines[-1][1] <= MAX_GAP:
            lines[-1] = (lines[-1][0], stop)
        else:
            lines.append((start, stop))
    return [(start, stop) for start, stop in lines if stop - start >= MIN_SIDE and dark[start:stop].mean() > 0.8]


def frames(image: np.ndarray) -> list[Frame]:
    """The frames of the axes drawn in `image`: black spines at least MIN_SIDE long on four sides, left to right."""
    dark = image.max(axis=2) < DARK
    rows = [(row, *line) for row in range(dark.shape[0]) for line in straight_lines(dark[row])]
    columns = [(column, *line) for column in range(dark.shape[1]) for line in straight_lines(dark[:, column])]
    found = []
    for (top, *across_top), (bottom, *across_bottom) in itertools.combinations(rows, 2):
        for (left, *down_left), (right, *down_right) in itertools.combinations(columns, 2):
            spans = [(across_top, left, right), (across_bottom, left, right), (down_left, top, bottom),
                     (down_right, top, bottom)]  # fmt: skip
            if (
                bottom - top >= MIN_SIDE
                and right - left >= MIN_SIDE
                and all(start <= low and high < stop for (start, stop), low, high in spans)
            ):
                found.append(Frame(left, right, top, bottom))
    return sorted(found, key=lambda frame: frame.left)


def centroid(
    image: np.ndarray, colour: tuple, row: float, column: float, radius: int, tolerance: float = 0.1
) -> tuple[float, float] | None:
    """The mean (row, column) of the pixels of `colour` within `radius` of (row, column), or None if none is."""
    top, left = max(0, round(row) - radius), max(0, round(column) - radius)
    window = is_colour(image[top : round(row) + radius + 1, left : round(column) + radius + 1], colour, tolerance)
    if not window.any():
        return None
    rows, columns = np.nonzero(window)
    return top + rows.mean(), left + columns.mean()


def near(image: np.ndarray, colour: tuple, row: float, column: float, radius: int = 2, tolerance: float = 0.15) -> bool:
    """Whether a pixel within `radius` of (row, column) has `colour`."""
    return centroid(image, colour, row, column, radius, tolerance) is not None


def marker_at(image: np.ndarray, fill: tuple, row: float, column: float, edge: float, tolerance: float = 0.1) -> bool:
    """Whether a round or square marker of `fill` with a black edge `edge` pixels out is centred at (row, column),
    within POSITION_TOLERANCE: the middle of its `fill` inside the edge, and the edge black above, below, left and
    right of that middle."""
    rows, columns = np.mgrid[-round(edge) : round(edge) + 1, -round(edge) : round(edge) + 1]
    inside = np.hypot(rows, columns) < edge - 1
    window = image[round(row) - round(edge) : round(row) + round(edge) + 1,
                   round(column) - round(edge) : round(column) + round(edge) + 1]  # fmt: skip
    filled = is_colour(window, fill, tolerance) & inside
    if window.shape[:2] != inside.shape or filled.sum() < inside.sum() / 2:
        return False
    middle = round(row) + rows[filled].mean(), round(column) + columns[filled].mean()
    if np.hypot(middle[0] - row, middle[1] - column) > POSITION_TOLERANCE:
        return False
    reach = range(round(edge) - 2, round(edge) + 3)
    sides = [[(round(middle[0]) + sign * r, round(middle[1])) for r in reach] for sign in (-1, 1)]
    sides += [[(round(middle[0]), round(middle[1]) + sign * r) for r in reach] for sign in (-1, 1)]
    return all(any(image[point].max() < EDGE for point in side) for side in sides)


def ink(region: np.ndarray) -> np.ndarray:
    """`region` cropped to what is drawn on its white background."""
    inked = (region < 0.999).any(axis=2)
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    return region[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1] if len(rows) else region[:0, :0]


def ink_groups(region: np.ndarray, gap: int = 3) -> list[tuple[int, int]]:
    """The column ranges [start, stop) of `region` with ink, split where `gap` or more blank columns part them."""
    inked = (region < 0.999).any(axis=2).any(axis=0)
    groups: list[tuple[int, int]] = []
    for start, stop in runs(inked):
        if groups and start - groups[-1][1] < gap:
            groups[-1] = (groups[-1][0], stop)
        else:
            groups.append((start, stop))
    return groups


def rendered(text: str, size: float | str, **style) -> np.ndarray:
    """`text` as matplotlib draws it at `size` on white (cropped to its ink)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(40, 2), dpi=DPI)
    figure.text(0.5, 0.5, text, fontsize=size, ha="center", va="center", **style)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return ink(np.asarray(canvas.buffer_rgba())[..., :3] / 255.0)


def shows(region: np.ndarray, text: str, size: float | str = "medium", rotation: float = 0, **style) -> bool:
    """Whether the ink of `region` (on white) is `text` as matplotlib draws it at `size` ("medium", 10 points: tick
    and axis labels; "large", 12: titles): the same pixels, to TEXT_MATCH in every channel, at one of the
    1/SUBPIXEL_STEPS-pixel placements (matplotlib draws glyphs at their fractional place)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = ink(region)
    figure = Figure(dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    label = figure.text(0.5, 0.5, text, fontsize=size, rotation=rotation, ha="center", va="center", **style)
    extent = label.get_window_extent(canvas.get_renderer())
    figure.set_size_inches((extent.width + 20) / DPI, (extent.height + 20) / DPI)
    for dy, dx in itertools.product(np.arange(SUBPIXEL_STEPS) / SUBPIXEL_STEPS, repeat=2):
        label.set_position((0.5 + dx / figure.bbox.width, 0.5 + dy / figure.bbox.height))
        canvas.draw()
        if difference(ink(np.asarray(canvas.buffer_rgba())[..., :3] / 255.0), drawn) <= TEXT_MATCH:
            return True
    return False


def difference(reference: np.ndarray, drawn: np.ndarray) -> float:
    """The largest difference in any channel between two crops of ink on white, laid on each other with their
    corners at most a pixel apart (a faint pixel at an edge may make a crop a pixel larger), at their best."""
    if np.abs(np.subtract(reference.shape, drawn.shape)).max() > 1:
        return 1.0
    height, width = np.maximum(reference.shape[:2], drawn.shape[:2]) + 2
    laid = np.ones((height, width, 3))
    laid[1 : 1 + drawn.shape[0], 1 : 1 + drawn.shape[1]] = drawn
    best = 1.0
    for row, column in itertools.product(range(3), repeat=2):
        if row + reference.shape[0] <= height and column + reference.shape[1] <= width:
            shifted = np.ones((height, width, 3))
            shifted[row : row + reference.shape[0], column : column + reference.shape[1]] = reference
            best = min(best, float(np.abs(shifted - laid).max()))
    return best


def solid(image: np.ndarray, size: int) -> np.ndarray:
    """Which pixels are the middle of a `size` × `size` square of one colour (to 8 bits): a marker's inside, a
    legend's swatch, where a line of matplotlib's usual widths is too thin to be."""
    reach = size // 2
    padded = np.pad(image, ((reach, reach), (reach, reach), (0, 0)), mode="edge")
    height, width = image.shape[:2]
    same = np.ones((height, width), bool)
    for dy, dx in itertools.product(range(size), repeat=2):
        same &= (np.abs(padded[dy : dy + height, dx : dx + width] - image) < 0.5 / 255).all(axis=2)
    return same


def spots(region: np.ndarray, size: int = 3) -> list[tuple[tuple, tuple[float, float]]]:
    """The colourful solid patches of `region` (markers, legend swatches): each one's colour and the mean (row,
    column) of the middles of its `size` × `size` squares, top to bottom."""
    colourful = solid(region, size) & (region.max(axis=2) - region.min(axis=2) > 0.1)
    by_colour: dict[tuple, list[list[tuple[int, int]]]] = {}
    for row, column in zip(*np.nonzero(colourful), strict=True):
        patches = by_colour.setdefault(tuple(np.round(region[row, column] * 255).astype(int).tolist()), [])
        touching = [patch for patch in patches if any(abs(row - r) <= 1 and abs(column - c) <= 1 for r, c in patch)]
        for patch in touching:
            patches.remove(patch)
        patches.append([(row, column)] + [point for patch in touching for point in patch])
    found = [(tuple(np.array(colour) / 255), tuple(np.mean(patch, axis=0))) for colour, patches in by_colour.items()
             for patch in patches]  # fmt: skip
    return sorted(found, key=lambda spot: spot[1])
