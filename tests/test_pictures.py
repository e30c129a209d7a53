"""Each run's pictures: loss.png, trajectory.png for two parameters, the same as TensorBoard images."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tapelab.plots import ContourPicture, loss_figure


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


@pytest.mark.parametrize(
    ("losses", "scale"), [([4.0, 1.0, 0.25], "log"), ([4.0, 1.0, 0.0], "linear"), ([1.0, -1.0, -1.25], "linear")]
)
def test_loss_axis_is_logarithmic_only_while_the_loss_stays_positive(losses, scale):
    figure = loss_figure(pd.DataFrame({"step": [0, 1, 2], "loss": losses}))
    assert figure.axes[0].get_yscale() == scale


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
    drawn = picture.save_path(path, tmp_path / "trajectory.png")
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
    picture.save_path(here, tmp_path / "first.png")
    picture.save_path(there, tmp_path / "second.png")
    fresh = ContourPicture(grid_x, grid_y, grid_x**2 + grid_y**2 + 1, [], ("x", "y"))
    fresh.save_path(there, tmp_path / "alone.png")
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
