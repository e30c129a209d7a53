"""Each run's pictures: loss.png, trajectory.png for two parameters, the same as TensorBoard images; and sweep.png.

The pictures are checked by what their pixels show (`pixels`): where the frame of each axes lies, where the ticks,
lines and markers lie against it, and which text is drawn, matched against matplotlib drawing the expected string.
"""

from __future__ import annotations

import itertools

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tapelab
from conftest import Run, compose_config
from pixels import (
    CURVE,
    DPI,
    ORANGE,
    RED,
    WHITE,
    centroid,
    frames,
    ink,
    is_colour,
    marker_at,
    near,
    rendered,
    rgb,
    runs,
    shows,
    spots,
)
from tapelab.plots import ContourPicture, contour_box, diverged_box, exit_arrow, loss_figure, pngs_written, save
from tapelab.runs import train_config
from tapelab.sweep_plots import plot_sweep, sweep_figure

ROSENBROCK_DOMAIN = [[-2.0, 2.0], [-1.0, 3.0]]  # conf/objective/rosenbrock.yaml
HIMMELBLAU_DOMAIN = [[-5.0, 5.0], [-5.0, 5.0]]  # conf/objective/himmelblau.yaml
HIMMELBLAU_MINIMA = [[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]]
SIX_HUMP_CAMEL_MINIMUM = -1.031628  # published f* of six_hump_camel
SIX_HUMP_CAMEL_FLOAT32_MINIMUM = -1.0316285  # float32's value of the function at its minima in the config
SIX_HUMP_CAMEL_START = 1.2333333  # f(1, −1), its default start: 4 − 2.1 + 1/3 − 1 − 4 + 4
LOSS_PNG_SIZE = (round(4.2 * DPI), round(6.4 * DPI))  # rows, columns: 6.4 × 4.2 inches
CONTOUR_PNG_SIZE = (round(5.4 * DPI), round(6.4 * DPI))
ROUND_EDGE = 6.1  # pixels from the middle of a start or end marker (8 points wide) to its edge
MARKER_REACH = 12  # pixels from a marker's middle that it may cover: a star is 14 points wide
POSITION = 2.0  # pixels: a point drawn from data lies this close to where the frame puts it


def image_summaries(run_dir) -> dict[str, np.ndarray]:
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    images = {}
    for tag in events.Tags()["tensors"]:
        if tag.startswith("plots/"):
            (point,) = events.Tensors(tag)
            width, height, encoded = tf.make_ndarray(point.tensor_proto)
            images[tag] = tf.io.decode_png(encoded, channels=4).numpy()
            assert images[tag].shape[:2] == (int(height), int(width))
    return images


def pixels(path) -> np.ndarray:
    return matplotlib.image.imread(path)


def drawn(figure):
    """The figure's first axis after a draw, as the PNG shows it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    return figure.axes[0]


def run_into(run_dir, *overrides: str) -> Run:
    """`python run.py <overrides>` in-process into `run_dir`, with its pictures and without TensorBoard."""
    return Run(run_dir, train_config(compose_config("log.tensorboard=false", *overrides), run_dir))


def titled(image: np.ndarray, title: str) -> bool:
    """Whether the picture's title is `title`, at its full size (12 points) and centred over its frame.

    The title is read above the frame, between its spines if it fits there: beside them, a tick label at the frame's
    top corner may reach as high as the title's lowest pixels."""
    frame = frames(image)[0]
    fits = rendered(title, "large").shape[1] < frame.right - frame.left - 2
    first = frame.left + 1 if fits else 0
    drawn_title = image[: frame.top - 1, first : frame.right if fits else image.shape[1]]
    columns = first + np.flatnonzero((drawn_title < 0.999).any(axis=2).any(axis=0))
    centred = abs((columns[0] + columns[-1]) / 2 - (frame.left + frame.right) / 2) <= POSITION
    return centred and shows(drawn_title, title, "large")


def curve_columns(image: np.ndarray, frame) -> tuple[int, int]:
    """The first and last columns of loss.png's curve: its first and last steps (±1.5 pixels: the line's cap)."""
    columns = np.flatnonzero(is_colour(image[frame.top + 1 : frame.bottom, frame.left + 1 : frame.right], CURVE,
                                       0.25).any(axis=0))  # fmt: skip
    return frame.left + 1 + columns[0], frame.left + 1 + columns[-1]


def loss_rows(decades: list[float], zero: float | None = None):
    """The row of a loss value on loss.png's axis, from the rows of its decade ticks (`decades`: 10⁰, 10⁻¹, … top to
    bottom) and of its 0 tick (a symmetric log axis: linear from 0 to the lowest decade)."""
    spacing = float(np.diff(decades).mean())

    def row(value: float) -> float:
        floor = len(decades) - 1  # the lowest decade, 10^-floor below the top one
        if zero is not None and value < 10.0**-floor:
            return zero + value / 10.0**-floor * (decades[-1] - zero)
        return decades[0] - np.log10(value) * spacing

    return row


def path_drawn(image: np.ndarray, frame, xlim, ylim, path: np.ndarray, markers=()) -> bool:
    """Whether the white line through the points of `path` is drawn, every 3 pixels of it but where it runs under
    the marker of a point of `markers` (within MARKER_REACH pixels of it)."""
    covered = [frame.at(point, xlim, ylim) for point in markers]
    for start, end in zip(path[:-1], path[1:], strict=True):
        (row0, column0), (row1, column1) = frame.at(start, xlim, ylim), frame.at(end, xlim, ylim)
        for t in np.linspace(0, 1, max(2, int(np.hypot(row1 - row0, column1 - column0) / 3))):
            row, column = row0 + t * (row1 - row0), column0 + t * (column1 - column0)
            if all(np.hypot(row - r, column - c) > MARKER_REACH for r, c in covered) and not near(
                image, WHITE, row, column, radius=1, tolerance=0.1
            ):
                return False
    return True


# loss.png


def test_loss_png_draws_the_loss_on_a_log_axis_with_ticks_on_whole_steps(train):
    # Gradient descent on (x − 1)² from 0 multiplies x − 1 by 1 − 2·lr at each step: at lr = (1 − 10^−½)/2 the loss
    # falls tenfold a step, from 10⁰ to 10⁻⁴ at step 4.
    result = train("optimizer=gd", "lr=0.3418861", "epochs=4", "log.plots=true", "log.tensorboard=false")
    np.testing.assert_allclose(result.metrics["loss"], 10.0 ** -np.arange(5), rtol=2e-4)
    image = rgb(result.dir / "loss.png")
    assert image.shape[:2] == LOSS_PNG_SIZE
    (frame,) = frames(image)
    rows, columns = frame.y_ticks(image), frame.x_ticks(image)
    assert len(columns) == 5  # steps 0 to 4, and no tick between two steps
    assert len(rows) == 5 and np.ptp(np.diff(rows)) <= 1  # decades, evenly spaced
    for row, column in zip(rows, columns, strict=True):
        assert near(image, CURVE, row, column)  # 10⁻ˢᵗᵉᵖ at each step: a log axis, and ticks on the steps
    label, tick_labels = frame.y_labels(image)
    assert shows(label, "loss", rotation=90)  # the loss itself: f* = 0
    assert all(map(shows, tick_labels, ["10⁰", "10⁻¹", "10⁻²", "10⁻³", "10⁻⁴"]))


def test_a_loss_that_reaches_exactly_zero_stays_on_a_log_axis_with_a_linear_stretch_below_its_floor(train):
    # Gradient descent at lr 0.5 on (x − 1)² from 0 lands on x = 1 in one step: the loss is 1, then exactly 0.
    result = train("optimizer=gd", "lr=0.5", "epochs=20", "log.plots=true", "log.tensorboard=false")
    assert result.metrics["loss"].tolist() == [1.0] + [0.0] * 20
    image = rgb(result.dir / "loss.png")
    (frame,) = frames(image)
    label, tick_labels = frame.y_labels(image)
    assert shows(label, "loss, linear below 10⁻¹", rotation=90)  # a decade below the smallest loss, 1
    assert len(tick_labels) == 3 and all(map(shows, tick_labels, ["10⁰", "10⁻¹", "0"]))
    one, _floor, zero = frame.y_ticks(image)
    first, last = curve_columns(image, frame)
    step = (last - first) / 20
    assert all(abs((column - first) / step - round((column - first) / step)) < 0.1 for column in frame.x_ticks(image))
    assert near(image, CURVE, one, first)  # the loss 1 at step 0
    curve = is_colour(image[frame.top + 1 : frame.bottom, round(first + step) + 3 : last + 1], CURVE, 0.25)
    assert np.abs(frame.top + 1 + np.nonzero(curve)[0] - zero).max() <= POSITION  # then 0, on the 0 tick


def test_a_loss_that_settles_at_a_negative_minimum_is_drawn_above_f_star_without_rounding_spikes(train):
    # Gradient descent with a small step lowers the loss at every step until float32 rounds it: from (1, −1) it
    # settles at the minimum f* = −1.0316, where its float32 loss steps between f* and f* + 2⁻²³.
    result = train("objective=six_hump_camel", "optimizer=gd", "lr=0.05", "epochs=300", "log.plots=true",
                   "log.tensorboard=false")  # fmt: skip
    assert result.summary["loss_at_min"] == SIX_HUMP_CAMEL_FLOAT32_MINIMUM == result.metrics["loss"].min()
    assert (np.diff(result.metrics["loss"]) > 0).any()  # rounding steps up here and there, once the loss settled
    image = rgb(result.dir / "loss.png")
    (frame,) = frames(image)
    label, tick_labels = frame.y_labels(image)
    assert shows(label, "loss − f* (−1.03163), linear below 10⁻⁵", rotation=90)  # 10 float32 steps at −1.03: 1.2e-6
    names = ["10⁰", "10⁻¹", "10⁻²", "10⁻³", "10⁻⁴", "10⁻⁵", "0"]
    assert len(tick_labels) == len(names) and all(map(shows, tick_labels, names))
    *decades, zero = frame.y_ticks(image)
    assert np.ptp(np.diff(decades)) <= 1
    row = loss_rows(decades, zero)
    first, last = curve_columns(image, frame)
    gaps = result.metrics["loss"] - SIX_HUMP_CAMEL_FLOAT32_MINIMUM  # loss − f*, from f(1, −1) − f* down to 0
    assert gaps.iloc[0] == pytest.approx(SIX_HUMP_CAMEL_START - SIX_HUMP_CAMEL_MINIMUM, abs=1e-5)
    for step, gap in zip(result.metrics["step"], gaps, strict=True):
        assert near(image, CURVE, row(gap), first + step / 300 * (last - first), radius=3), step
    # Once settled, a flat line on 0: float32's rounding steps don't jump across decades.
    settled = is_colour(image[frame.top + 1 : frame.bottom, round(first + 50 / 300 * (last - first)) : last], CURVE,
                        0.25)  # fmt: skip
    assert np.abs(frame.top + 1 + np.nonzero(settled)[0] - zero).max() <= POSITION


def test_a_negative_loss_is_drawn_above_its_lowest_value_on_a_log_axis(train):
    run = train("objective=six_hump_camel", "optimizer=adam", "lr=0.05", "epochs=300")
    lowest = run.metrics["loss"].min()
    assert lowest == pytest.approx(SIX_HUMP_CAMEL_MINIMUM, abs=1e-6)
    axis = drawn(loss_figure(run.metrics))
    assert axis.get_yscale() == "symlog"
    assert axis.get_ylabel() == "loss − lowest (−1.03163), linear below 10⁻⁵"  # 10 float32 steps at −1.03: 1.2e-6
    line = axis.get_lines()[0].get_ydata()
    np.testing.assert_allclose(line, run.metrics["loss"] - lowest)
    assert line.min() == 0 and line[0] == pytest.approx(1.2333 - SIX_HUMP_CAMEL_MINIMUM, abs=1e-3)  # f(1, −1)
    assert axis.get_ylim()[0] < 0 < line.max() < axis.get_ylim()[1]


@pytest.mark.parametrize(
    ("losses", "minor_labels"),
    [
        ([25.0, 1.1], {"2", "5", "20"}),  # 1.4 decades: 1-2-5
        ([900.0, 0.01], set()),  # 5 decades: the decades alone
        ([4.0, 1.5], {"2", "3", "4"}),  # within a decade: matplotlib's own minor labels
    ],
)
def test_log_loss_axis_labels_minor_ticks_by_the_decades_it_spans(losses, minor_labels):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = loss_figure(pd.DataFrame({"step": [0, 1], "loss": losses}))
    FigureCanvasAgg(figure).draw()
    axis = figure.axes[0].yaxis
    low, high = axis.get_view_interval()
    visible = {tick.label1.get_text() for tick in axis.get_minor_ticks() if low <= tick.get_loc() <= high}
    assert visible - {""} == minor_labels


def test_a_run_that_diverged_at_its_start_plots_an_empty_loss_figure_that_says_step_0(train):
    # log(x) at x = −1 is NaN: the start is not finite, so metrics.csv holds no row, and the run draws no picture.
    result = train("objective=expression", "objective.expr='log(x)'", "objective.init={x: -1.0}", "log.plots=true")
    assert (result.summary["status"], result.summary["steps"], len(result.metrics)) == ("diverged", 0, 0)
    assert not list(result.dir.glob("*.png"))
    axis = drawn(tapelab.load(result.dir).plot())
    assert axis.get_title() == "expression · sgd · lr 0.01 — run1, diverged at step 0"
    assert [line.get_xydata().size for line in axis.get_lines()] == [0]
    assert (list(axis.get_xticks()), list(axis.get_yticks())) == ([], [])


# The pictures' titles


@pytest.fixture(scope="module")
def himmelblau_job(tmp_path_factory) -> Run:
    """A run in a sweep's job directory, which Hydra names after the swept values: Adam on Himmelblau's function,
    40 steps from (0, 0) toward the minimum (3, 2)."""
    job_dir = tmp_path_factory.mktemp("sweep") / "lr=0.05,optimizer=adam_1"
    return run_into(job_dir, "objective=himmelblau", "optimizer=adam", "lr=0.05", "epochs=40")


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory) -> Run:
    """SGD on Rosenbrock's function at lr 0.01: it leaves the domain at its second step, and diverges at step 4."""
    return run_into(tmp_path_factory.mktemp("diverged") / "run1", "objective=rosenbrock", "optimizer=sgd", "lr=0.01",
                    "epochs=200")  # fmt: skip


def test_a_runs_pictures_are_titled_with_its_objective_optimizer_learning_rate_and_job(himmelblau_job):
    title = "himmelblau · adam · lr 0.05 — lr=0.05,optimizer=adam_1"
    assert titled(rgb(himmelblau_job.dir / "loss.png"), title)
    assert titled(rgb(himmelblau_job.dir / "trajectory.png"), title)


def test_a_diverged_runs_pictures_say_the_step_it_diverged_at(diverged_run):
    assert (diverged_run.summary["status"], diverged_run.summary["steps"]) == ("diverged", 4)
    title = "rosenbrock · sgd · lr 0.01 — run1, diverged at step 4"
    assert titled(rgb(diverged_run.dir / "loss.png"), title)
    assert titled(rgb(diverged_run.dir / "trajectory.png"), title)


def test_a_title_too_wide_for_the_picture_is_drawn_smaller(tmp_path):
    job = "lr=0.001,optimizer.weight_decay=0.004,optimizer.momentum=0.9,stop.grad_tol=0.001,stop.patience=50_12"
    train_config(compose_config("optimizer=sgd", "lr=0.001", "epochs=5", "log.tensorboard=false"), tmp_path / job)
    title = f"quadratic · sgd · lr 0.001 — {job}"
    image = rgb(tmp_path / job / "loss.png")
    (frame,) = frames(image)
    full_size = rendered(title, "large")  # 12 points
    assert full_size.shape[1] > image.shape[1]  # would not fit
    columns = np.flatnonzero((image[: frame.top - 1] < 0.999).any(axis=2).any(axis=0))
    assert 0 < columns[0] and columns[-1] < image.shape[1] - 1  # all of it within the picture
    assert abs((columns[0] + columns[-1]) / 2 - (frame.left + frame.right) / 2) <= POSITION  # centred over the axes
    assert ink(image[: frame.top - 1]).shape[0] < full_size.shape[0]  # in a smaller font


def test_run_plot_is_the_figure_loss_png_shows(himmelblau_job, tmp_path):
    save(tapelab.load(himmelblau_job.dir).plot(), tmp_path / "loss.png")
    np.testing.assert_array_equal(pixels(tmp_path / "loss.png"), pixels(himmelblau_job.dir / "loss.png"))


# trajectory.png


def test_trajectory_png_draws_the_path_start_end_and_starred_minima_over_the_domain(himmelblau_job):
    image = rgb(himmelblau_job.dir / "trajectory.png")
    assert image.shape[:2] == CONTOUR_PNG_SIZE
    (frame,) = frames(image)  # the colour bar's is too narrow to count
    path = himmelblau_job.metrics[["x[0]", "x[1]"]].to_numpy(np.float64)
    assert np.abs(path).max() < 5  # within the domain: the frame is the domain
    xlim, ylim = HIMMELBLAU_DOMAIN
    for minimum in HIMMELBLAU_MINIMA:
        star = centroid(image, RED, *frame.at(minimum, xlim, ylim), radius=12)
        assert star is not None and np.hypot(*np.subtract(star, frame.at(minimum, xlim, ylim))) <= POSITION
    assert marker_at(image, WHITE, *frame.at([0.0, 0.0], xlim, ylim), ROUND_EDGE)  # the start
    end = himmelblau_job.summary["params"]["x"]
    assert np.hypot(*np.subtract(end, [3.0, 2.0])) > 0.5  # not there yet, after 40 steps
    assert marker_at(image, ORANGE, *frame.at(end, xlim, ylim), ROUND_EDGE)  # the end
    assert path_drawn(image, frame, xlim, ylim, path, markers=[path[0], path[-1]])


def test_a_contour_picture_draws_an_end_on_a_minimum_over_its_star(tmp_path):
    grid_x, grid_y = np.meshgrid(np.linspace(-1, 2, 5), np.linspace(-1, 4, 5))
    path = np.array([[0.0, 0.0], [0.5, 1.5], [1.0, 3.0]])
    minima = [np.array([1.0, 3.0]), np.array([-0.5, 2.0])]
    picture = ContourPicture(grid_x, grid_y, grid_x**2 + grid_y**2 + 1, minima, ("x[0]", "x[1]"))
    picture.save_path(path, tmp_path / "trajectory.png", "a path")
    pngs_written([tmp_path / "trajectory.png"])
    image = rgb(tmp_path / "trajectory.png")
    assert image.shape[:2] == CONTOUR_PNG_SIZE
    (frame,) = frames(image)
    xlim, ylim = (-1, 2), (-1, 4)  # the contour's grid
    assert path_drawn(image, frame, xlim, ylim, path, markers=[path[0], *minima])
    assert marker_at(image, WHITE, *frame.at(path[0], xlim, ylim), ROUND_EDGE)
    assert marker_at(image, ORANGE, *frame.at(path[-1], xlim, ylim), ROUND_EDGE)  # over the star
    star = centroid(image, RED, *frame.at(minima[1], xlim, ylim), radius=12)
    assert star is not None and np.hypot(*np.subtract(star, frame.at(minima[1], xlim, ylim))) <= POSITION
    row, column = (round(value) for value in frame.at(minima[0], xlim, ylim))  # the end's: its star is under it
    assert (image[row - 11 : row - 7, column].max(axis=1) < 0.35).any()  # but for its top point, above the square


def test_a_reused_contour_draws_each_path_on_the_bare_contour(tmp_path):
    # The second picture over the same contour must not show the first one's path.
    grid_x, grid_y = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    picture = ContourPicture(grid_x, grid_y, grid_x**2 + grid_y**2 + 1, [], ("x", "y"))
    here, there = np.array([[-0.8, -0.8], [-0.7, -0.7]]), np.array([[0.6, 0.6], [0.7, 0.7]])
    picture.save_path(here, tmp_path / "first.png", "here")
    picture.save_path(there, tmp_path / "second.png", "there")
    fresh = ContourPicture(grid_x, grid_y, grid_x**2 + grid_y**2 + 1, [], ("x", "y"))
    fresh.save_path(there, tmp_path / "alone.png", "there")
    pngs_written([tmp_path / name for name in ("first.png", "second.png", "alone.png")])
    first, second, alone = (rgb(tmp_path / name) for name in ("first.png", "second.png", "alone.png"))
    (frame,) = frames(second)
    limits = (-1, 1)
    middle_here, middle_there = (frame.at(path.mean(axis=0), limits, limits) for path in (here, there))
    assert near(first, WHITE, *middle_here, radius=1, tolerance=0.1)
    assert near(second, WHITE, *middle_there, radius=1, tolerance=0.1)
    assert not near(second, WHITE, *middle_here, radius=3, tolerance=0.1)  # the bare contour there
    np.testing.assert_array_equal(second, alone)  # what a contour drawn for it alone shows


def test_a_diverged_run_is_framed_on_the_domain_and_leaves_it_with_a_red_arrow(diverged_run):
    path = diverged_run.metrics[["x[0]", "x[1]"]].to_numpy(np.float64)
    np.testing.assert_allclose(path[-1], [2.5374406e8, 318132.06], rtol=1e-6)  # the seed's blow-up
    np.testing.assert_allclose(path[1], [0.95600003, 1.88], rtol=1e-6)  # one step: the last point inside
    image = rgb(diverged_run.dir / "trajectory.png")
    (frame,) = frames(image)
    xlim, ylim = ROSENBROCK_DOMAIN
    # The start and the minimum (1, 1) where the domain puts them: the blow-up does not set the frame.
    assert marker_at(image, WHITE, *frame.at(path[0], xlim, ylim), ROUND_EDGE)
    star = centroid(image, RED, *frame.at([1.0, 1.0], xlim, ylim), radius=12)
    assert star is not None and np.hypot(*np.subtract(star, frame.at([1.0, 1.0], xlim, ylim))) <= POSITION
    assert path_drawn(image, frame, xlim, ylim, path[:2], markers=path[:1])
    # From there a red arrow toward the next point, (4.65, −0.05), through the right edge where that line meets it.
    heading = (path[2] - path[1]) / np.linalg.norm(path[2] - path[1])
    edge = path[1] + (xlim[1] - path[1][0]) / heading[0] * heading
    (tail_row, tail_column), (tip_row, tip_column) = frame.at(path[1], xlim, ylim), frame.at(edge, xlim, ylim)
    for t in np.linspace(0.1, 0.8, 8):  # the shaft, clear of the label and the head
        assert near(image, RED, tail_row + t * (tip_row - tail_row), tail_column + t * (tip_column - tail_column),
                    radius=1, tolerance=0.2)  # fmt: skip
    assert near(image, RED, tip_row, frame.right - 4, radius=3, tolerance=0.2)  # its head, at the edge
    assert not near(image, RED, tip_row, frame.right + 8, radius=3, tolerance=0.3)  # and no further
    # Its label "diverged", red and bold, behind the tail: above it and to its left, as the arrow goes right and down.
    label = is_colour(image[round(tail_row) - 30 : round(tail_row), round(tail_column) - 100 : round(tail_column)],
                      RED, 0.3)  # fmt: skip
    reference = is_colour(rendered("diverged", "medium", color="red", fontweight="bold"), RED, 0.3)
    for drawn_extent, reference_extent in zip(np.nonzero(label), np.nonzero(reference), strict=True):
        assert abs(np.ptp(drawn_extent) - np.ptp(reference_extent)) <= POSITION  # its height, then its width
    assert not is_colour(image, ORANGE, 0.1).any()  # no end marker, in the frame or the legend


def test_a_diverged_path_that_blew_up_nearby_is_framed_around_the_path_and_marks_its_last_point(train):
    # log(x) + y² under gradient descent: x falls by lr/x a step, 1 → 0.9 → 0.79 → 0.66 → 0.51 → 0.32, then below 0,
    # where log(x) is NaN. The domain, [−10, 10]², is far larger than the box around that path.
    result = train("objective=expression", "objective.expr='log(x) + y**2'", "objective.init={x: 1.0, y: 1.0}",
                   "objective.domain=[[-10.0,10.0],[-10.0,10.0]]", "optimizer=gd", "lr=0.1", "epochs=50",
                   "log.plots=true", "log.tensorboard=false")  # fmt: skip
    assert (result.summary["status"], result.summary["steps"]) == ("diverged", 5)
    path = result.metrics[["x", "y"]].to_numpy(np.float64)
    image = rgb(result.dir / "trajectory.png")
    (frame,) = frames(image)
    # The box around the path, grown by half a unit (or a fifth of the span) on each side.
    (xlim, ylim) = [(low - 0.5, high + 0.5) for low, high in zip(path.min(axis=0), path.max(axis=0), strict=True)]
    assert marker_at(image, WHITE, *frame.at(path[0], xlim, ylim), ROUND_EDGE)
    assert path_drawn(image, frame, xlim, ylim, path, markers=[path[0], path[-1]])
    cross = centroid(image, RED, *frame.at(path[-1], xlim, ylim), radius=8)  # "diverged after this point"
    assert cross is not None and np.hypot(*np.subtract(cross, frame.at(path[-1], xlim, ylim))) <= POSITION


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([[0.2, 0.5], [0.5, 0.5], [3.0, 0.5]], (1, [0.5, 0.5], [1.0, 0.5])),  # out through the right edge
        ([[0.5, 0.5], [0.5, 0.25], [0.5, -9.0], [0.5, 0.5], [0.5, -2.0]], (3, [0.5, 0.5], [0.5, 0.0])),  # for good
        ([[0.5, 0.5], [0.95, 0.5], [2.0, 0.5]], (1, [0.88, 0.5], [1.0, 0.5])),  # too short: moved back
        ([[0.5, 0.5], [0.9, 0.9]], None),  # ends inside
    ],
)
def test_exit_arrow_runs_from_the_last_point_inside_to_the_edge_toward_the_next(path, expected):
    leaving = exit_arrow(np.array(path), np.array([[0.0, 1.0], [0.0, 1.0]]))
    if expected is None:
        assert leaving is None
    else:
        index, tail, tip = leaving
        assert index == expected[0]
        np.testing.assert_allclose(tail, expected[1])
        np.testing.assert_allclose(tip, expected[2])


def test_the_frame_of_a_diverged_run_is_the_smaller_of_its_domain_and_the_box_around_its_path():
    start, minimum = np.array([[0.0, 0.0]]), [np.array([0.0, 0.0])]
    nearby = np.vstack([start, [[0.5, 1.0], [2.0, 3.0]]])
    domain = np.array([[-10.0, 10.0], [-10.0, 10.0]])
    np.testing.assert_allclose(diverged_box(nearby, minimum, domain), [[-0.5, 2.5], [-0.6, 3.6]])  # 20% margin, ≥ 0.5
    far = np.vstack([start, [[0.5, 1.0], [2e8, 3e5]]])
    np.testing.assert_array_equal(diverged_box(far, minimum, domain), domain)
    assert contour_box(far, minimum, domain)[0, 1] == 2e8  # what a run that did not diverge would be framed on


# What a run writes


def test_two_parameter_run_writes_both_pictures_and_the_same_images_to_tensorboard(train):
    result = train("objective=booth", "optimizer=adam", "lr=0.1", "epochs=40", "log.plots=true")
    images = image_summaries(result.dir)
    assert set(images) == {"plots/loss", "plots/trajectory"}
    for name in ("loss", "trajectory"):
        on_disk = np.round(matplotlib.image.imread(result.dir / f"{name}.png") * 255).astype(np.uint8)
        np.testing.assert_array_equal(images[f"plots/{name}"], on_disk)


def test_one_parameter_run_has_a_loss_picture_and_no_trajectory(train):
    result = train("epochs=5", "log.plots=true")
    assert set(image_summaries(result.dir)) == {"plots/loss"}
    assert not (result.dir / "trajectory.png").exists()
    assert rgb(result.dir / "loss.png").shape[:2] == LOSS_PNG_SIZE


def test_log_plots_false_draws_nothing(train):
    result = train("objective=booth", "epochs=5", "log.plots=false")
    assert not list(result.dir.glob("*.png"))
    assert image_summaries(result.dir) == {}


def test_gap_to_min_is_the_final_loss_above_the_minimum_value(train):
    # a·x² + b·x + c with a = 1, b = −2, c = 5 has its minimum f* = c − b²/4a = 4 at x = 1.
    result = train("objective.c=5", "optimizer=gd", "lr=0.1", "epochs=10")
    x = result.summary["params"]["x"]
    assert result.summary["gap_to_min"] == pytest.approx((x - 1) ** 2, abs=1e-6)
    assert result.summary["gap_to_min"] == pytest.approx(result.summary["final_loss"] - 4.0, abs=1e-6)
    assert result.summary["loss_at_min"] == 4.0


# sweep.png


def sweep_of(
    optimizers: list[str], lrs: list[float], diverged: set = frozenset(), steps: int = 30, spread: float = 1.0
) -> tuple:
    """A sweep table and its (step, loss) curves: the loss falls to lr·spreadᵏ for the k-th optimizer, as
    (lr·spreadᵏ)^(step/steps); a diverged job's explodes from 1 and ends at step 4."""
    rows, curves = [], {}
    jobs = [(k, optimizer, lr) for k, optimizer in enumerate(optimizers) for lr in lrs]
    for job, (k, optimizer, lr) in enumerate(jobs):
        blown = (optimizer, lr) in diverged
        length = 4 if blown else steps
        final = lr * spread**k
        loss = 10.0 ** (np.arange(length + 1) * 8.0) if blown else final ** (np.arange(steps + 1) / steps)
        curves[job] = pd.DataFrame({"step": np.arange(length + 1), "loss": loss})
        rows.append({"job": job, "optimizer": optimizer, "lr": lr, "status": "diverged" if blown else "completed",
                     "final_loss": loss[-1], "steps": length})  # fmt: skip
    table = pd.DataFrame(rows)
    table["steps"] = table["steps"].astype("Int64")
    return table, curves, ["optimizer", "lr"] if len(optimizers) > 1 else ["lr"]


def colourfulness(pixels: np.ndarray) -> np.ndarray:
    """How far from grey each pixel is: white, black, the grid and the text are 0."""
    return pixels.max(axis=-1) - pixels.min(axis=-1)


def job_marks(image: np.ndarray, frame) -> list[tuple[tuple, tuple[float, float]]]:
    """The colourful solid patches of a sweep.png panel, its top edge included (`spots`), in pixels of `image`."""
    found = spots(image[frame.top - 12 : frame.bottom, frame.left : frame.right])
    return [(colour, (frame.top - 12 + row, frame.left + column)) for colour, (row, column) in found]


@pytest.mark.parametrize(
    ("lrs", "diverged", "scale"),
    [
        ([1e-4, 1e-3, 1e-2], set(), "log"),
        ([1e-4, 1e-3, 1e-2], {("sgd", 1e-2)}, "log"),  # a diverged job's lr counts too
        ([0.001, 0.003, 0.03], set(), "log"),  # 1.5 decades
        ([0.002, 0.005, 0.01], set(), "linear"),  # less than a decade
    ],
)
def test_final_loss_axis_is_logarithmic_when_the_swept_key_spans_more_than_a_decade(tmp_path, lrs, diverged, scale):
    plot_sweep(*sweep_of(["sgd"], lrs, diverged), tmp_path / "sweep.png")
    image = rgb(tmp_path / "sweep.png")
    _, lr_panel = frames(image)
    columns = sorted(column for _, (_, column) in job_marks(image, lr_panel))  # each job's point, or its ✖
    assert len(columns) == 3
    spread = np.log10(lrs) if scale == "log" else np.array(lrs)  # where the axis puts the values, to scale
    assert (columns[2] - columns[1]) / (columns[1] - columns[0]) == pytest.approx(
        (spread[2] - spread[1]) / (spread[1] - spread[0]), abs=0.02
    )


def test_sweep_legend_shows_each_curve_in_its_own_colour():
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    table, curves, keys = sweep_of(["sgd", "adam", "rmsprop"], [1e-4, 1e-3, 1e-2], {("sgd", 1e-2)})
    figure = sweep_figure(table, curves, keys)
    axis = figure.axes[0]
    curve_colours = {int(line.get_gid().split()[1]): to_rgba(line.get_color()) for line in axis.get_lines()
                     if line.get_gid()}  # fmt: skip
    legend = axis.get_legend()
    swatches = [to_rgba(line.get_color()) for line in legend.findobj(Line2D) if line.get_color() != "none"]
    job = {(row.optimizer, row.lr): row.job for row in table.itertuples()}
    in_legend_order = [job[optimizer, lr] for optimizer in ("adam", "rmsprop", "sgd") for lr in (1e-4, 1e-3, 1e-2)]
    assert swatches == [curve_colours[number] for number in in_legend_order]
    assert len(set(swatches)) == 9
    assert [text.get_text() for text in legend.get_texts()] == [
        "optimizer=adam",
        "optimizer=rmsprop",
        "optimizer=sgd (✖ diverged: lr=0.01)",
        "light → dark: lr 0.0001 → 0.01",
    ]


def test_sweep_legend_of_one_swept_key_has_a_job_per_entry_in_its_curve_colour():
    from matplotlib.colors import to_rgba

    table, curves, keys = sweep_of(["sgd"], [1e-4, 1e-3, 1e-2], {("sgd", 1e-2)})
    axis = sweep_figure(table, curves, keys).axes[0]
    legend = axis.get_legend()
    curve_colours = [to_rgba(line.get_color()) for line in axis.get_lines() if line.get_gid()]
    assert [to_rgba(handle.get_color()) for handle in legend.legend_handles] == curve_colours
    assert [text.get_text() for text in legend.get_texts()] == ["lr=0.0001", "lr=0.001",
                                                                "lr=0.01, diverged at step 4"]  # fmt: skip


def test_a_diverged_job_is_marked_on_the_top_edge_of_both_panels():
    table, curves, keys = sweep_of(["sgd", "adam"], [1e-4, 1e-3, 1e-2], {("sgd", 1e-2)}, steps=4)
    curves_axis, final_axis = drawn(sweep_figure(table, curves, keys)).figure.axes
    (blown,) = table.loc[table["status"] == "diverged", "job"]
    (curve,) = [line for line in curves_axis.get_lines() if line.get_gid() == f"job {blown}"]
    assert curve.get_linestyle() == "-"
    for axis, x in ((curves_axis, 4), (final_axis, 1e-2)):
        (mark,) = [line for line in axis.get_lines() if line.get_marker() == "X"]
        np.testing.assert_array_equal(mark.get_xydata(), [[x, 1.0]])  # y in axes units: the top edge
        assert mark.get_transform() == axis.get_xaxis_transform() and not mark.get_clip_on()
        assert mark.get_color() == curve.get_color()
    assert curves_axis.get_title() == "loss of 6 runs, 1 diverged (✖ on the top edge)"
    assert curves_axis.get_ylim()[1] < 2  # the limits follow the jobs that did not diverge: losses up to 1
    low, high = curves_axis.get_xlim()
    assert all(tick == int(tick) for tick in curves_axis.get_xticks() if low <= tick <= high)


def momentum_sweep_of(lrs: list[float], diverged: set = frozenset()) -> tuple:
    """`sweep_of`'s sweep with numeric keys only: momentum 0 (the sgd jobs) and 0.9 (the adam jobs) × lr."""
    table, curves, _ = sweep_of(["sgd", "adam"], lrs, diverged)
    table = table.rename(columns={"optimizer": "momentum"}).replace({"momentum": {"sgd": 0.0, "adam": 0.9}})
    return table.astype({"momentum": float}), curves, ["momentum", "lr"]


def job_colours(axis) -> dict[str, tuple]:
    """The colour of each artist of `axis` named after a job ("job 3"), by that name."""
    from matplotlib.colors import to_rgba

    return {line.get_gid(): to_rgba(line.get_color()) for line in axis.get_lines() if line.get_gid()}


@pytest.mark.parametrize(
    "sweep",
    [
        momentum_sweep_of([1e-4, 1e-3, 1e-2], {("sgd", 1e-2), ("adam", 1e-2)}),  # a colour per job
        sweep_of(["sgd", "adam", "rmsprop"], [1e-4, 1e-3, 1e-2], {("sgd", 1e-2)}),  # a colour map per optimizer
    ],
    ids=["numeric keys", "optimizer × lr"],
)
def test_each_job_of_the_final_loss_panels_has_its_curves_colour(sweep):
    table = sweep[0]
    curves_axis, *final_axes = sweep_figure(*sweep).axes
    curve_colours = job_colours(curves_axis)
    assert len(set(curve_colours.values())) == len(table)
    for axis in final_axes:
        assert job_colours(axis) == curve_colours  # each job once: its point, or its ✖ if it diverged
        marks = [line.get_gid() for line in axis.get_lines() if line.get_marker() == "X"]
        assert marks == [f"job {job}" for job in table.loc[table["status"] == "diverged", "job"]]


def test_a_final_loss_line_of_one_optimizer_has_its_darkest_curves_colour():
    from matplotlib.colors import to_rgba

    table, curves, keys = sweep_of(["sgd", "adam", "rmsprop"], [1e-4, 1e-3, 1e-2], {("sgd", 1e-2)})
    curves_axis, final_axis = sweep_figure(table, curves, keys).axes
    curve_colours = job_colours(curves_axis)
    legend = final_axis.get_legend()
    swatches = [to_rgba(handle.get_color()) for handle in legend.legend_handles]
    entries = dict(zip([text.get_text() for text in legend.get_texts()], swatches, strict=True))
    darkest = {row.optimizer: curve_colours[f"job {row.job}"] for row in table.itertuples() if row.lr == 1e-2}
    assert entries == darkest  # sgd's too, though its lr = 0.01 job diverged: the colour of its ✖
    lines = {line.get_label(): to_rgba(line.get_color()) for line in final_axis.get_lines()
             if not line.get_label().startswith("_")}  # fmt: skip
    assert lines == darkest


def test_final_loss_lines_across_jobs_of_their_own_colours_are_grey_and_dashed_apart():
    table, curves, keys = momentum_sweep_of([1e-4, 1e-3, 1e-2], {("sgd", 1e-2), ("adam", 1e-2)})
    figure = sweep_figure(table, curves, keys)
    for axis, groups in zip(figure.axes[1:], (3, 2), strict=True):  # a line per lr, then per momentum
        lines = [line for line in axis.get_lines() if not line.get_label().startswith("_")]
        assert {line.get_color() for line in lines} == {"grey"}
        assert len({line.get_linestyle() for line in lines}) == len(lines) == groups


def test_sweep_png_marks_a_diverged_job_on_the_top_edge_of_both_panels_at_its_step_and_value(tmp_path):
    table, curves, keys = sweep_of(["sgd"], [1e-4, 1e-3, 1e-2], {("sgd", 1e-2)})  # lr 0.01 diverged at step 4 of 30
    plot_sweep(table, curves, keys, tmp_path / "sweep.png")
    image = rgb(tmp_path / "sweep.png")
    assert image.shape[:2] == (round(4.8 * DPI), round((7 + 4.5) * DPI))  # the loss, and lr: its one numeric key
    loss_panel, lr_panel = frames(image)
    # The final loss against lr: the two jobs that ended, at lr 10⁻⁴ and 10⁻³, and a ✖ on the top edge.
    (cross, (cross_row, cross_column)), *points = job_marks(image, lr_panel)
    assert cross_row == pytest.approx(lr_panel.top, abs=POSITION)
    (first_column, first_colour), (second_column, second_colour) = sorted((mark[1], colour) for colour, mark in points)
    assert len({cross, first_colour, second_colour}) == 3  # each job its own colour
    assert cross_column == pytest.approx(2 * second_column - first_column, abs=POSITION)  # a decade on: a log axis
    # The loss curves: the first job's runs from step 0 to step 30, and the ✖ is on the top edge at step 4.
    inside = image[loss_panel.top + 1 : loss_panel.bottom, loss_panel.left + 1 : loss_panel.right]
    columns = loss_panel.left + 1 + np.flatnonzero(is_colour(inside, first_colour, 0.25).any(axis=0))
    ticks = loss_panel.x_ticks(image)  # 0, 5, …, 30: the first and last where the curve begins and ends
    assert len(ticks) == 7 and abs(ticks[0] - columns[0]) <= 5 and abs(ticks[-1] - columns[-1]) <= POSITION
    (mark, (mark_row, mark_column)), *swatches = job_marks(image, loss_panel)
    assert mark == cross and all(row > loss_panel.top + 10 for _, (row, _) in swatches)  # one ✖, and the legend
    assert mark_row == pytest.approx(loss_panel.top, abs=POSITION)
    assert mark_column == pytest.approx(ticks[0] + 4 / 30 * (ticks[-1] - ticks[0]), abs=POSITION)
    # Its curve leaves the top of the frame at step 0 in the ✖'s colour: its loss is 10⁸ at step 1.
    assert near(image, cross, loss_panel.top + 4, ticks[0], radius=2, tolerance=0.25)


def test_sweep_png_gives_each_optimizer_a_colour_family_light_to_dark_with_lr_and_the_legend_its_shades(tmp_path):
    import colorsys

    optimizers, lrs = ["adam", "rmsprop", "sgd"], [1e-4, 1e-3, 1e-2]
    table, curves, keys = sweep_of(optimizers, lrs, spread=1e-3)  # adam ends at lr, rmsprop at lr·10⁻³, sgd lr·10⁻⁶
    plot_sweep(table, curves, keys, tmp_path / "sweep.png")
    image = rgb(tmp_path / "sweep.png")
    loss_panel, lr_panel = frames(image)
    # Each job's final loss: in lr's three columns, left to right, and in each the optimizers top to bottom.
    marks = sorted(job_marks(image, lr_panel), key=lambda mark: mark[1][1])
    assert len(marks) == 9
    colours = {}
    for index, lr in enumerate(lrs):
        in_column = sorted(marks[3 * index : 3 * index + 3], key=lambda mark: mark[1][0])
        assert np.ptp([column for _, (_, column) in in_column]) <= 1
        colours.update({(optimizer, lr): colour for optimizer, (colour, _) in zip(optimizers, in_column, strict=True)})
    hue = {job: colorsys.rgb_to_hsv(*colour)[0] for job, colour in colours.items()}
    for optimizer in optimizers:
        assert np.ptp([hue[optimizer, lr] for lr in lrs]) < 0.1  # one hue
        luminance = [0.2126 * red + 0.7152 * green + 0.0722 * blue for red, green, blue in
                     (colours[optimizer, lr] for lr in lrs)]  # fmt: skip
        assert luminance == sorted(luminance, reverse=True)  # light to dark as lr grows
    darkest = [hue[optimizer, lrs[-1]] for optimizer in optimizers]
    assert min(min(abs(a - b), 1 - abs(a - b)) for a, b in itertools.combinations(darkest, 2)) > 0.15  # three hues
    # The legend shows those very shades: solid swatches, in the loss panel where the curves are thin lines.
    assert {colour for colour, _ in job_marks(image, loss_panel)} == set(colours.values())
    # Each curve ends, at step 30, in its job's colour: the final losses, a decade apart, top to bottom.
    inside = image[loss_panel.top + 1 : loss_panel.bottom, loss_panel.left + 1 : loss_panel.right]
    column = loss_panel.left + 1 + np.flatnonzero((colourfulness(inside) > 0.2).any(axis=0))[-1] - 2
    ends = runs(colourfulness(image[:, column]) > 0.2)
    assert len(ends) == 9
    by_final_loss = sorted(colours, key=lambda job: -job[1] * 1e-3 ** optimizers.index(job[0]))
    for (start, stop), job in zip(ends, by_final_loss, strict=True):
        pixel = image[start + np.argmax(colourfulness(image[start:stop, column])), column]  # the line's middle
        assert min(colours.values(), key=lambda colour: np.abs(np.subtract(colour, pixel)).sum()) == colours[job]


def test_sweep_png_draws_negative_losses_above_the_jobs_lowest(tmp_path):
    # One job's loss falls from −1 toward −2 as −2 + 10^(−step/12), to −2 + 10^−2.5; the other's straight to −2.
    steps = np.arange(31)
    curves = {0: pd.DataFrame({"step": steps, "loss": -2 + 10.0 ** (-steps / 12)}),
              1: pd.DataFrame({"step": steps, "loss": -2 * steps / 30})}  # fmt: skip
    table = pd.DataFrame({"job": [0, 1], "lr": [0.1, 0.2], "status": "completed", "steps": 30,
                          "final_loss": [curves[job]["loss"].iat[-1] for job in (0, 1)]})  # fmt: skip
    plot_sweep(table, curves, ["lr"], tmp_path / "sweep.png")
    image = rgb(tmp_path / "sweep.png")
    loss_panel, _ = frames(image)
    # Drawn less −2: the first job ends at 10^−2.5, the second at 0. Linear below a decade under 10^−2.5, the
    # smallest value above 0 (above float32's rounding floor at 2, 10⁻⁵).
    label, tick_labels = loss_panel.y_labels(image)
    assert shows(label, "loss − lowest (−2), linear below 10⁻⁴", rotation=90)
    names = ["10⁰", "10⁻¹", "10⁻²", "10⁻³", "10⁻⁴", "0"]
    assert len(tick_labels) == len(names) and all(map(shows, tick_labels, names))
    rows = dict(zip(names, loss_panel.y_ticks(image), strict=True))
    end = loss_panel.x_ticks(image)[-1]  # step 30
    (first_colour, _), (second_colour, _) = job_marks(image, loss_panel)  # the legend's swatches, top to bottom
    assert near(image, first_colour, (rows["10⁻²"] + rows["10⁻³"]) / 2, end - 1, radius=2, tolerance=0.25)
    assert near(image, second_colour, rows["0"], end - 1, radius=2, tolerance=0.25)


def test_the_png_writer_writes_what_the_canvas_showed_when_handed_over_and_each_file_has_its_own_error(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tapelab.plots import MAX_WAITING_PNGS, new_figure, png_writer

    figure, (axis,) = new_figure(3, 2)
    canvas = FigureCanvasAgg(figure)
    line = axis.plot([0, 1], [0, 1], linewidth=4, color="red")[0]
    canvas.draw()
    first = np.array(canvas.buffer_rgba())
    lost = tmp_path / "no such directory" / "lost.png"
    png_writer().write(canvas, lost)
    png_writer().write(canvas, tmp_path / "first.png")
    line.set_color("blue")  # drawn again at once: the writer holds its own copy of the first picture
    canvas.draw()
    others = [tmp_path / f"other_{n}.png" for n in range(2 * MAX_WAITING_PNGS)]  # more than may wait
    for other in others:
        png_writer().write(canvas, other)
    pngs_written([tmp_path / "first.png", *others])  # the lost file's error is not theirs
    assert np.array_equal(np.round(pixels(tmp_path / "first.png") * 255).astype(np.uint8), first)
    assert not np.array_equal(pixels(others[-1]), pixels(tmp_path / "first.png"))
    with pytest.raises(FileNotFoundError):
        pngs_written([lost])
    pngs_written([lost])  # reported once
