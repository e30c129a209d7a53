"""Each run's pictures: loss.png, trajectory.png for two parameters, the same as TensorBoard images."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tapelab
from conftest import compose_config
from tapelab.config import to_experiment
from tapelab.pictures import contour_picture, picture_title, thinned
from tapelab.plots import (
    RUN_MARGINS,
    ContourPicture,
    contour_box,
    diverged_box,
    exit_arrow,
    loss_figure,
    new_figure,
    pngs_written,
    save,
)
from tapelab.runner import run
from tapelab.sweep_plots import sweep_figure

ROSENBROCK_DOMAIN = [[-2.0, 2.0], [-1.0, 3.0]]  # conf/objective/rosenbrock.yaml
SIX_HUMP_CAMEL_MINIMUM = -1.031628  # published f* of six_hump_camel
SIX_HUMP_CAMEL_FLOAT32_MINIMUM = -1.0316285  # float32's value of the function at its minima in the config


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


def problem_of(*overrides: str):
    experiment = to_experiment(compose_config(*overrides))
    return experiment.objective.build(experiment.seed)


def pixels(path) -> np.ndarray:
    return matplotlib.image.imread(path)


def drawn(figure):
    """The figure's first axis after a draw, as the PNG shows it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    return figure.axes[0]


def test_a_positive_loss_is_on_a_plain_log_axis():
    axis = drawn(loss_figure(pd.DataFrame({"step": [0, 1, 2], "loss": [4.0, 1.0, 0.25]})))
    assert (axis.get_yscale(), axis.get_ylabel()) == ("log", "loss")
    np.testing.assert_array_equal(axis.get_lines()[0].get_ydata(), [4.0, 1.0, 0.25])


def test_a_loss_that_reaches_exactly_zero_stays_on_a_log_axis_with_a_linear_stretch_below_its_floor(train):
    # Gradient descent at lr 0.5 on (x − 1)² from 0 lands on x = 1 in one step: the loss is 1, then exactly 0.
    run = train("optimizer=gd", "lr=0.5", "epochs=20")
    assert run.metrics["loss"].tolist() == [1.0] + [0.0] * 20
    axis = drawn(loss_figure(run.metrics))
    assert axis.get_yscale() == "symlog"
    assert axis.yaxis.get_transform().linthresh == pytest.approx(0.1)  # a decade below the smallest loss, 1
    assert axis.get_ylabel() == "loss, linear below 10⁻¹"
    np.testing.assert_array_equal(axis.get_lines()[0].get_ydata(), run.metrics["loss"])
    low, high = axis.get_ylim()
    assert low < 0 < 0.1 < 1 < high
    labels = {tick.get_text() for tick in axis.get_yticklabels() if low <= tick.get_position()[1] <= high}
    assert labels == {"0", "10⁻¹", "10⁰"}  # the decade labels, without mathtext


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


def test_a_loss_that_settles_at_a_negative_minimum_is_drawn_above_f_star_without_rounding_spikes(train):
    # Gradient descent with a small step lowers the loss at every step until float32 rounds it: from (1, −1) it
    # settles at the minimum f* = −1.0316, where its float32 loss steps between f* and f* + 2⁻²³.
    run = train("objective=six_hump_camel", "optimizer=gd", "lr=0.05", "epochs=300")
    axis = drawn(tapelab.load(run.dir).plot())  # as loss.png draws it
    line = axis.get_lines()[0]
    steps, gaps = line.get_xdata(), line.get_ydata()
    assert (np.diff(gaps) > 0).any()  # rounding steps up here and there, once the loss has settled
    # In the picture, an increase is at most a hair: float32 rounding does not jump across decades.
    heights = axis.transData.transform(np.column_stack([steps, gaps]))[:, 1]
    bottom, top = axis.transData.transform([[0, limit] for limit in axis.get_ylim()])[:, 1]
    assert np.diff(heights).max() < 0.01 * (top - bottom)
    np.testing.assert_allclose(gaps, run.metrics["loss"] - SIX_HUMP_CAMEL_MINIMUM, atol=1e-6)  # loss − f*
    assert gaps.min() == 0 and gaps[0] == pytest.approx(1.2333 - SIX_HUMP_CAMEL_MINIMUM, abs=1e-3)  # f(1, −1) − f*
    assert axis.get_ylabel() == "loss − f* (−1.03163), linear below 10⁻⁵"  # 10 float32 steps at −1.03: 1.2e-6
    assert run.summary["loss_at_min"] == SIX_HUMP_CAMEL_FLOAT32_MINIMUM == run.metrics["loss"].min()


def test_a_runs_pictures_are_titled_with_its_objective_optimizer_learning_rate_and_job(tmp_path):
    job_dir = tmp_path / "lr=0.01,optimizer=adam_1"  # a sweep's job directory: Hydra names it after the swept values
    run(compose_config("objective=rosenbrock", "optimizer=adam", "lr=0.01", "epochs=50", "log.tensorboard=false"),
        job_dir)  # fmt: skip
    title = "rosenbrock · adam · lr 0.01 — lr=0.01,optimizer=adam_1"
    figure = tapelab.load(job_dir).plot()
    assert figure.axes[0].get_title() == title
    save(figure, tmp_path / "loss.png")
    np.testing.assert_array_equal(pixels(tmp_path / "loss.png"), pixels(job_dir / "loss.png"))
    # loss.png's strip above the axes shows the title as matplotlib draws that text alone over axes of the same
    # place; trajectory.png is the contour and path drawn under that title.
    plain, (axis,) = new_figure(6.4, 4.2, margins=RUN_MARGINS)
    axis.set_title(title, y=1.0)
    save(plain, tmp_path / "title.png")
    frame = axis.get_window_extent()  # in pixels from the bottom left; an image's rows run from the top
    strip = slice(0, int(plain.bbox.height - frame.y1) - 2), slice(int(frame.x0) + 2, int(frame.x1) - 2)
    np.testing.assert_array_equal(pixels(tmp_path / "title.png")[strip], pixels(job_dir / "loss.png")[strip])
    path = thinned(tapelab.load(job_dir).history)[["x[0]", "x[1]"]].to_numpy(np.float64)
    problem = problem_of("objective=rosenbrock")
    box = contour_box(path, list(problem.minima), np.array(ROSENBROCK_DOMAIN))
    contour_picture(problem, box).save_path(path, tmp_path / "trajectory.png", title)
    pngs_written([tmp_path / "trajectory.png"])
    np.testing.assert_array_equal(pixels(tmp_path / "trajectory.png"), pixels(job_dir / "trajectory.png"))


def test_a_short_run_has_a_tick_on_whole_steps_only():
    axis = drawn(loss_figure(pd.DataFrame({"step": [0, 1, 2, 3, 4], "loss": [5.0, 4.0, 3.0, 2.0, 1.0]})))
    low, high = axis.get_xlim()
    ticks = [tick for tick in axis.get_xticks() if low <= tick <= high]
    assert ticks == [0, 1, 2, 3, 4]


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


def test_trajectory_picture_draws_path_start_end_and_every_minimum(tmp_path):
    grid_x, grid_y = np.meshgrid(np.linspace(-1, 2, 5), np.linspace(-1, 4, 5))
    path = np.array([[0.0, 0.0], [0.5, 1.5], [1.0, 3.0]])
    minima = [np.array([1.0, 3.0]), np.array([-0.5, 2.0])]
    picture = ContourPicture(grid_x, grid_y, grid_x**2 + grid_y**2 + 1, minima, ("x[0]", "x[1]"))
    drawn = picture.save_path(path, tmp_path / "trajectory.png", "a path")
    pngs_written([tmp_path / "trajectory.png"])
    lines = {line.get_label(): line.get_xydata() for line in [*drawn, *picture.minima]}
    np.testing.assert_array_equal(lines["path"], path)
    np.testing.assert_array_equal(lines["start"], [[0.0, 0.0]])
    np.testing.assert_array_equal(lines["end"], [[1.0, 3.0]])
    np.testing.assert_array_equal(lines["global minima"], np.array(minima))
    assert picture.axis.get_xlabel() == "x[0]"
    assert matplotlib.image.imread(tmp_path / "trajectory.png").shape[:2] == (round(5.4 * 110), round(6.4 * 110))


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
    second, alone = (matplotlib.image.imread(tmp_path / name) for name in ("second.png", "alone.png"))
    np.testing.assert_array_equal(second, alone)


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
    assert matplotlib.image.imread(result.dir / "loss.png").shape[:2] == (round(4.2 * 110), round(6.4 * 110))


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


def test_a_diverged_run_is_framed_on_the_domain_and_leaves_it_with_an_arrow(train, tmp_path):
    result = train("objective=rosenbrock", "optimizer=sgd", "lr=0.01", "epochs=200", "log.plots=true")
    assert (result.summary["status"], result.summary["steps"]) == ("diverged", 4)
    history = thinned(result.metrics)
    path = history[["x[0]", "x[1]"]].to_numpy(np.float64)
    np.testing.assert_allclose(path[-1], [2.5374406e8, 318132.06], rtol=1e-6)  # the seed's blow-up
    problem = problem_of("objective=rosenbrock")
    assert contour_box(path, list(problem.minima), np.array(ROSENBROCK_DOMAIN))[0, 1] > 1e8  # yesterday's frame
    np.testing.assert_array_equal(diverged_box(path, list(problem.minima), np.array(ROSENBROCK_DOMAIN)),
                                  ROSENBROCK_DOMAIN)  # fmt: skip

    picture = contour_picture(problem, np.array(ROSENBROCK_DOMAIN))
    title = picture_title(result.summary, result.dir)
    assert title == "rosenbrock · sgd · lr 0.01 — run1, diverged at step 4"
    artists = picture.save_path(path, tmp_path / "trajectory.png", title, diverged=True)
    pngs_written([tmp_path / "trajectory.png"])
    np.testing.assert_array_equal(pixels(tmp_path / "trajectory.png"), pixels(result.dir / "trajectory.png"))
    assert (picture.axis.get_xscale(), picture.axis.get_yscale()) == ("linear", "linear")
    assert [list(picture.axis.get_xlim()), list(picture.axis.get_ylim())] == ROSENBROCK_DOMAIN
    labels = {artist.get_label() for artist in artists}
    assert labels == {"path", "start", ""} and "end" not in labels
    (arrow,) = [artist for artist in artists if artist.get_label() == ""]
    assert arrow.get_text() == "diverged"
    np.testing.assert_allclose(arrow.xyann, path[1])  # x = (0.956, 1.88) after one step, the last inside
    heading = (path[2] - path[1]) / np.linalg.norm(path[2] - path[1])
    tip = np.array(arrow.xy)
    assert tip[0] == pytest.approx(2.0)  # on the right edge, where the path heads for (4.65, −0.05)
    np.testing.assert_allclose((tip - path[1]) / np.linalg.norm(tip - path[1]), heading)
    (line,) = [artist for artist in artists if artist.get_label() == "path"]
    np.testing.assert_array_equal(line.get_xydata(), path[:2])  # not the jumps outside the frame

    loss = tapelab.load(result.dir).plot()
    assert loss.axes[0].get_title() == title
    save(loss, tmp_path / "loss.png")
    np.testing.assert_array_equal(pixels(tmp_path / "loss.png"), pixels(result.dir / "loss.png"))


def test_a_run_that_did_not_diverge_keeps_the_frame_around_its_path_and_the_domain(train, tmp_path):
    result = train("objective=himmelblau", "optimizer=adam", "lr=0.05", "epochs=40", "log.plots=true")
    assert result.summary["status"] == "completed"
    path = thinned(result.metrics)[["x[0]", "x[1]"]].to_numpy(np.float64)
    problem = problem_of("objective=himmelblau")
    box = contour_box(path, list(problem.minima), np.array([[-5.0, 5.0], [-5.0, 5.0]]))  # its domain holds the path
    title = picture_title(result.summary, result.dir)
    lines = contour_picture(problem, box).save_path(path, tmp_path / "trajectory.png", title)
    pngs_written([tmp_path / "trajectory.png"])
    np.testing.assert_array_equal(pixels(tmp_path / "trajectory.png"), pixels(result.dir / "trajectory.png"))
    assert [line.get_label() for line in lines] == ["path", "start", "end"]


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


def test_a_diverged_path_that_blew_up_nearby_is_framed_around_the_path_not_the_domain():
    path = np.array([[0.0, 0.0], [0.5, 1.0], [2.0, 3.0]])
    box = diverged_box(path, [np.array([0.0, 0.0])], np.array([[-10.0, 10.0], [-10.0, 10.0]]))
    np.testing.assert_allclose(box, [[-0.5, 2.5], [-0.6, 3.6]])  # a margin of 20% of the span, at least 0.5


def test_a_run_that_diverged_at_its_start_has_an_empty_loss_figure_that_says_step_0(train):
    # log(x) at x = −1 is NaN: the start is not finite, so metrics.csv holds no row.
    result = train("objective=expression", "objective.expr='log(x)'", "objective.init={x: -1.0}")
    assert (result.summary["status"], result.summary["steps"], len(result.metrics)) == ("diverged", 0, 0)
    assert thinned(result.metrics).empty
    axis = drawn(tapelab.load(result.dir).plot())
    assert axis.get_title() == "expression · sgd · lr 0.01 — run1, diverged at step 0"
    assert [line.get_xydata().size for line in axis.get_lines()] == [0]
    assert (list(axis.get_xticks()), list(axis.get_yticks())) == ([], [])


def sweep_of(optimizers: list[str], lrs: list[float], diverged: set = frozenset(), steps: int = 30) -> tuple:
    """A sweep table and its (step, loss) curves: the loss falls as lr^(step/steps); a diverged job's explodes."""
    rows, curves = [], {}
    for job, (optimizer, lr) in enumerate((optimizer, lr) for optimizer in optimizers for lr in lrs):
        blown = (optimizer, lr) in diverged
        length = 4 if blown else steps
        loss = 10.0 ** (np.arange(length + 1) * 8.0) if blown else lr ** (np.arange(steps + 1) / steps)
        curves[job] = pd.DataFrame({"step": np.arange(length + 1), "loss": loss})
        rows.append({"job": job, "optimizer": optimizer, "lr": lr, "status": "diverged" if blown else "completed",
                     "final_loss": loss[-1], "steps": length})  # fmt: skip
    table = pd.DataFrame(rows)
    table["steps"] = table["steps"].astype("Int64")
    return table, curves, ["optimizer", "lr"] if len(optimizers) > 1 else ["lr"]


@pytest.mark.parametrize(
    ("lrs", "diverged", "scale"),
    [
        ([1e-4, 1e-3, 1e-2], set(), "log"),
        ([1e-4, 1e-3, 1e-2], {("sgd", 1e-2)}, "log"),  # a diverged job's lr counts too
        ([0.001, 0.003, 0.03], set(), "log"),  # 1.5 decades
        ([0.002, 0.005, 0.01], set(), "linear"),  # less than a decade
    ],
)
def test_final_loss_axis_is_logarithmic_when_the_swept_key_spans_more_than_a_decade(lrs, diverged, scale):
    figure = sweep_figure(*sweep_of(["sgd"], lrs, diverged))
    assert figure.axes[1].get_xscale() == scale


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
