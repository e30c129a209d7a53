"""objective.starts=N: one batch in one graph, equal to N separate runs for elementwise optimizers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from composed import derived
from conftest import Run, compose_config, resume_in, run_in
from pixels import ORANGE, RED, WHITE, centroid, frames, marker_at, rgb
from tapelab.errors import ConfigError
from tapelab.runs import train_config
from tensorboard_client import time_series_groups, time_series_tags

HIMMELBLAU = ["objective=himmelblau", "optimizer=adam", "lr=0.05", "epochs=300", "seed=3", "jit_compile=true"]
HIMMELBLAU_DOMAIN = [[-5.0, 5.0], [-5.0, 5.0]]  # conf/objective/himmelblau.yaml
HIMMELBLAU_MINIMA = [[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]]
# (x − 1)² overflows float32 beyond |x| ≈ 1.8e19, so some of 16 starts drawn from ±4e19 are infinite at once; the
# others converge on the gradient at steps of their own (the further out, the later: 218 to 223), or run out of
# steps first.
SPREAD_STARTS = ["objective=quadratic", "optimizer=sgd", "lr=0.1", "stop.grad_tol=1e-2", "jit_compile=true",
                 "objective.starts=16", "objective.domain=[[-4e19,4e19]]"]  # fmt: skip


@pytest.fixture
def trained(tmp_path) -> Callable[..., Run]:
    """`python run.py <overrides> <values>` in-process into a fresh directory (with log.plots=false unless
    `overrides` set it): the config of `overrides` is composed once, and `values` set on it (`composed.derived`)."""
    numbers = itertools.count()

    def _trained(overrides: Sequence[str], *values: str) -> Run:
        if not any(override.startswith("log.plots=") for override in overrides):
            overrides = ("log.plots=false", *overrides)
        run_dir = tmp_path / f"derived{next(numbers)}"
        return Run(run_dir, train_config(derived(overrides, *values), run_dir))

    return _trained


def from_point(start) -> str:
    """The override that starts a run at `start`, a float32 number or an array of the parameters' elements, each
    written in its shortest text."""
    return f"objective.init={start}" if np.ndim(start) == 0 else f"objective.init=[{','.join(map(str, start))}]"


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Run:
    run_dir = tmp_path_factory.mktemp("batch")
    returned = train_config(compose_config(*HIMMELBLAU, "objective.starts=4", "log.plots=true"), run_dir)
    return Run(run_dir, returned)


@pytest.fixture(scope="module")
def spread_starts(tmp_path_factory) -> Run:
    """16 starts of SGD on (x − 1)² for 222 steps, some diverged at once, others converged at steps of their own."""
    run_dir = tmp_path_factory.mktemp("spread") / "run"
    run_in(run_dir, *SPREAD_STARTS, "epochs=222")
    return Run(run_dir, None)


def test_a_batch_of_starts_equals_separate_runs_from_the_same_points(batch, trained):
    starts = pd.read_csv(batch.dir / "starts.csv")
    assert starts.columns.tolist() == [
        "start", "start_x[0]", "start_x[1]", "end_x[0]", "end_x[1]", "final_loss", "status", "steps"
    ]  # fmt: skip
    assert starts["status"].tolist() == ["completed"] * 4 and starts["steps"].tolist() == [300] * 4
    alone = lambda start: trained([*HIMMELBLAU, "log.tensorboard=false"], from_point(start))  # noqa: E731
    assert_batch_equals_runs_alone(starts, alone)


def test_starts_are_drawn_from_the_domain_by_seed(batch, train):
    starts = pd.read_csv(batch.dir / "starts.csv")
    assert starts[["start_x[0]", "start_x[1]"]].abs().to_numpy().max() <= 5  # himmelblau's domain: [-5, 5]²
    again = train(*HIMMELBLAU, "objective.starts=4", "log.tensorboard=false", "epochs=1")
    pd.testing.assert_frame_equal(
        pd.read_csv(again.dir / "starts.csv").filter(like="start_"), starts.filter(like="start_"), check_exact=True
    )


def test_history_has_the_best_mean_and_worst_loss_and_the_summary_the_best_start(batch):
    starts = pd.read_csv(batch.dir / "starts.csv")
    last = batch.metrics.iloc[-1]
    assert batch.metrics.columns.tolist() == ["step", "loss", "grad_norm", "lr", "loss_mean", "loss_worst"]
    np.testing.assert_allclose(
        [last["loss"], last["loss_mean"], last["loss_worst"]],
        [starts["final_loss"].min(), starts["final_loss"].mean(), starts["final_loss"].max()],
        rtol=1e-5,
        atol=1e-9,
    )
    best = starts.loc[starts["final_loss"].idxmin()]
    assert batch.summary["best_start"] == int(best["start"])
    assert batch.summary["params"]["x"] == pytest.approx([best["end_x[0]"], best["end_x[1]"]])
    events = EventAccumulator(str(batch.dir), size_guidance={"tensors": 0})
    events.Reload()
    for column, tag in [("loss", "loss"), ("loss_mean", "loss/mean"), ("loss_worst", "loss/worst")]:
        points = events.Tensors(tag)
        assert [point.step for point in points] == batch.metrics["step"].tolist()
        np.testing.assert_array_equal([tensor_util.make_ndarray(point.tensor_proto) for point in points],
                                      batch.metrics[column].to_numpy(np.float32))  # fmt: skip
    groups = time_series_groups(time_series_tags(batch.dir))  # Time Series' groups; it opens the first two
    assert list(groups)[:2] == ["loss", "lr"]
    assert groups["loss"] == ["loss", "loss/grad_norm", "loss/mean", "loss/worst"]


def test_starts_png_joins_each_start_to_its_end_over_the_contour_and_tensorboard_shows_it(batch):
    import tensorflow as tf

    assert not (batch.dir / "trajectory.png").exists()
    image = rgb(batch.dir / "starts.png")
    (frame,) = frames(image)
    xlim, ylim = HIMMELBLAU_DOMAIN  # the starts, the ends and the minima lie in it: the frame
    starts = pd.read_csv(batch.dir / "starts.csv")
    for _, row in starts.iterrows():
        start, end = row[["start_x[0]", "start_x[1]"]].to_numpy(float), row[["end_x[0]", "end_x[1]"]].to_numpy(float)
        assert marker_at(image, WHITE, *frame.at(start, xlim, ylim), edge=3.8)  # 5 points wide
        assert marker_at(image, ORANGE, *frame.at(end, xlim, ylim), edge=3.8)
        (row0, column0), (row1, column1) = frame.at(start, xlim, ylim), frame.at(end, xlim, ylim)
        middle = image[round((row0 + row1) / 2) - 1 : round((row0 + row1) / 2) + 2,
                       round((column0 + column1) / 2) - 1 : round((column0 + column1) / 2) + 2]  # fmt: skip
        assert middle.min(axis=2).max() > 0.45  # the light line between: no viridis colour is this pale
    for minimum in HIMMELBLAU_MINIMA:  # each start ended on one: its star around the end
        assert centroid(image, RED, *frame.at(minimum, xlim, ylim), radius=12) is not None
    events = EventAccumulator(str(batch.dir), size_guidance={"tensors": 0})
    events.Reload()
    (point,) = events.Tensors("plots/starts")
    shown = tf.io.decode_png(tf.make_ndarray(point.tensor_proto)[2], channels=4).numpy()
    np.testing.assert_array_equal(shown[..., :3], np.round(image * 255).astype(np.uint8))


def float32(values) -> np.ndarray:
    return np.asarray(values, np.float64).astype(np.float32)


def assert_batch_equals_runs_alone(starts: pd.DataFrame, alone, end_ulps: int = 0, loss_ulps: int = 0) -> None:
    """Each start of starts.csv, run alone by `alone(start)` from the same float32 point, ends at the very same
    float32 point with the very same final loss, or within the ulps given."""
    for _, row in starts.iterrows():
        start = float32(row.filter(like="start_").to_numpy())
        run = alone(start)
        columns = [name.removeprefix("start_") for name in row.filter(like="start_").index]
        np.testing.assert_array_equal(float32(run.metrics[columns].iloc[0].to_numpy()), start)  # the same start
        ends = np.concatenate([np.ravel(values) for values in run.summary["params"].values()])
        pairs = [
            (float32(row.filter(like="end_").to_numpy()), float32(ends), end_ulps),
            (float32([row["final_loss"]]), float32([run.summary["final_loss"]]), loss_ulps),
        ]
        for batch_values, alone_values, ulps in pairs:
            if ulps:
                np.testing.assert_array_max_ulp(batch_values, alone_values, maxulp=ulps)
            else:
                np.testing.assert_array_equal(batch_values, alone_values)


# Every elementwise optimizer, at a learning rate that takes Rosenbrock's starts somewhere without diverging.
ELEMENTWISE_LR = {
    "gd": "0.0002", "sgd": "0.0002", "adam": "0.05", "adamw": "0.05", "adamax": "0.05", "nadam": "0.05",
    "adagrad": "0.5", "adadelta": "1.0", "rmsprop": "0.01", "ftrl": "0.5", "lion": "0.01",
}  # fmt: skip
# TensorFlow's CPU Pow kernel (the plain graph's `x**2`, and Keras Ftrl's pow(accumulator, -learning_rate_power))
# rounds a tensor of 8 or more float32s (Eigen's vectorised path) unlike a smaller one: a start alone, or 4
# starts of one element each, but not 8 starts, nor Ftrl's [4, 2] accumulators. So those batches are a few ulps
# off the runs alone; the README states these bounds (ends, final loss), measured at 300 steps.
POW_ROUNDING_ULPS = {"ftrl": (5, 213), "adam": (17, 39)}


def rosenbrock_from_starts(optimizer: str, jit: str) -> list[str]:
    return ["objective=rosenbrock", f"optimizer={optimizer}", f"lr={ELEMENTWISE_LR[optimizer]}", "epochs=300",
            "seed=3", f"jit_compile={jit}", "log.every=100", "log.tensorboard=false"]  # fmt: skip


@pytest.mark.parametrize(
    ("jit", "starts"),
    [("true", 8), ("false", 4)],  # XLA: also where the plain graph's Pow vectorises; the plain graph: only below that
    ids=["xla", "graph"],
)
@pytest.mark.parametrize("optimizer", list(ELEMENTWISE_LR))
def test_every_elementwise_optimizer_makes_a_batch_exactly_separate_runs(trained, optimizer, jit, starts):
    ulps = POW_ROUNDING_ULPS["ftrl"] if (optimizer, jit) == ("ftrl", "false") else (0, 0)
    overrides = rosenbrock_from_starts(optimizer, jit)
    batch = trained(overrides, f"objective.starts={starts}")
    assert batch.summary["status"] == "completed" and batch.summary["xla"] is (jit == "true")
    alone = lambda start: trained(overrides, from_point(start))  # noqa: E731
    assert_batch_equals_runs_alone(pd.read_csv(batch.dir / "starts.csv"), alone, *ulps)


def test_eight_starts_on_the_plain_graph_are_separate_runs_within_a_few_ulps(trained):
    overrides = rosenbrock_from_starts("adam", "false")
    batch = trained(overrides, "objective.starts=8")
    alone = lambda start: trained(overrides, from_point(start))  # noqa: E731
    assert_batch_equals_runs_alone(pd.read_csv(batch.dir / "starts.csv"), alone, *POW_ROUNDING_ULPS["adam"])


# Under XLA, the end of a batch whose loss sums over a vector parameter (tf.reduce_sum inside tf.vectorized_map)
# was once evaluated from the parameters as they were when the compiled call began (TensorFlow 2.21).
@pytest.mark.parametrize("jit", ["true", "false"], ids=["xla", "graph"])
def test_a_batch_over_a_summing_objective_reports_the_loss_at_its_ends(trained, jit):
    overrides = ["objective=styblinski_tang", "optimizer=adam", "lr=0.01", "epochs=50", "seed=3",
                 f"jit_compile={jit}", "log.tensorboard=false"]  # fmt: skip
    batch = trained(overrides, "objective.starts=4")
    starts = pd.read_csv(batch.dir / "starts.csv")
    for _, row in starts.iterrows():
        by_itself = trained(overrides, from_point(float32(row.filter(like="start_").to_numpy())))
        if jit == "true":  # exactly separate runs (the plain graph's x**4 of [4, 2] rounds otherwise, see above)
            assert float32(row["final_loss"]) == float32(by_itself.summary["final_loss"])
        else:
            assert row["final_loss"] == pytest.approx(by_itself.summary["final_loss"], rel=1e-6)
    assert batch.summary["final_loss"] == starts["final_loss"].min()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer=newton"], "objective.starts: needs an elementwise optimizer, .* newton's Hessian"),
        (["objective=quadratic"], "objective.domain: objective.starts > 1 needs a search box"),
        (["objective=quadratic", "objective.domain=[[0.0,1.0],[0.0,1.0]]"], "needs one .low, high. pair or 1"),
    ],
)
def test_multistart_refuses_what_would_not_be_independent_runs(train, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train("objective=himmelblau", "objective.starts=3", *overrides)


def test_starts_must_be_at_least_one(train):
    with pytest.raises(ConfigError, match="objective.starts: must be an integer from 1 to 1000000, got 0"):
        train("objective.starts=0")


def test_a_one_value_domain_covers_every_element(train):
    result = train("objective=sum_of_squares", "objective.starts=5", "objective.domain=[[-1.0,1.0]]", "epochs=50")
    starts = pd.read_csv(result.dir / "starts.csv")
    assert len(starts) == 5 and starts.filter(like="start_").abs().to_numpy().max() <= 1


def test_each_start_stops_at_its_own_step_as_it_does_alone(spread_starts, trained):
    result = spread_starts
    overrides = [*SPREAD_STARTS[:5], "epochs=222", "log.tensorboard=false"]  # one start, by itself
    starts = pd.read_csv(result.dir / "starts.csv")
    assert set(starts["status"]) == {"diverged", "converged", "completed"}
    assert len(set(starts.loc[starts["status"] == "converged", "steps"])) > 1
    assert result.summary["status"] == "completed" and result.summary["steps"] == 222
    assert result.summary["starts"] == starts["status"].value_counts().to_dict()
    for _, row in starts.iterrows():
        by_itself = trained(overrides, from_point(float32(row["start_x"])))
        assert (by_itself.summary["status"], by_itself.summary["steps"]) == (row["status"], row["steps"])
        if row["status"] != "diverged":
            assert float32(row["end_x"]) == float32(by_itself.summary["params"]["x"])
            assert float32(row["final_loss"]) == float32(by_itself.summary["final_loss"])
    finite = starts[np.isfinite(starts["final_loss"])]
    assert result.summary["best_start"] == int(finite.loc[finite["final_loss"].idxmin(), "start"])
    assert result.summary["final_loss"] == float32(finite["final_loss"].min())
    assert result.summary["best_loss"] == result.summary["final_loss"]  # SGD on a quadratic only goes down
    # The pooled history leaves the diverged starts out: its worst loss is finite from the first row on.
    assert np.isfinite(result.metrics[["loss", "loss_mean", "loss_worst"]].to_numpy()).all()


def test_a_resumed_batch_of_starts_equals_a_straight_one_and_its_stopped_starts_stay_stopped(spread_starts, tmp_path):
    # At step 220 one start has converged (218), one converges (220), and many diverged.
    whole, split = spread_starts.dir, tmp_path / "split"
    run_in(split, *SPREAD_STARTS, "epochs=220")
    summary = resume_in(split, "epochs=222")
    for name in ("starts.csv", "metrics.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(split / name), pd.read_csv(whole / name), check_exact=True)
    assert summary["steps"] == 222 and summary["starts"] == json.loads((whole / "summary.json").read_text())["starts"]


def test_a_batch_whose_every_start_blows_up_is_diverged(train):
    result = train("objective=quadratic", "objective.starts=3", "objective.domain=[[1e20,1e21]]", "epochs=10")
    starts = pd.read_csv(result.dir / "starts.csv")
    assert starts["status"].tolist() == ["diverged"] * 3 and starts["steps"].tolist() == [0] * 3
    assert result.summary["status"] == "diverged" and result.summary["best_start"] is None
