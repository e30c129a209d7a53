"""optimizer=newton: x ← x − lr·H⁻¹∇f with the exact Hessian, inside the compiled training loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tapelab.config import StopConfig
from tapelab.engine.batch import Batch
from tapelab.errors import ConfigError
from tapelab.objectives import Problem
from tapelab.optimizers import Newton

NEWTON = ("optimizer=newton", "log.tensorboard=false")


def newton(train, *overrides: str):
    return train(*NEWTON, *overrides)


def distances(metrics: pd.DataFrame, columns: list[str], minimum) -> np.ndarray:
    """The Euclidean distance of every row's parameters to `minimum`."""
    return np.linalg.norm(metrics[columns].to_numpy(np.float64) - np.asarray(minimum, np.float64), axis=1)


@pytest.mark.parametrize(
    ("a", "b", "c", "init"),
    [
        (1.0, -2.0, 1.0, 0.0),
        (2.0, 3.0, -1.0, 5.0),
        (0.5, -4.0, 7.0, -10.0),
        (10.0, 1.0, 0.0, 0.3),
        (0.01, 1.0, 2.0, 1.0),
    ],
)
def test_one_full_step_lands_on_the_vertex_of_any_quadratic(train, a, b, c, init):
    keys = [f"objective.{key}={value}" for key, value in (("a", a), ("b", b), ("c", c), ("init", init))]
    result = newton(train, "lr=1", "epochs=1", *keys)
    vertex = -b / (2 * a)
    assert result.summary["params"]["x"] == pytest.approx(vertex, rel=1e-6, abs=1e-6)
    assert result.summary["distance_to_min"] == pytest.approx(0.0, abs=1e-6 * max(1.0, abs(vertex)))
    assert result.metrics["lr"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("overrides", "minimum"),
    [
        (["objective=sum_of_squares"], [0.0, 0.0]),
        (["objective=sum_of_squares", "objective.init=[3.0,-1.5,0.25,8.0,-2.0]"], [0.0] * 5),
        (["objective=booth"], [1.0, 3.0]),
        (["objective=booth", "objective.init=[-7.5,4.25]"], [1.0, 3.0]),
    ],
)
def test_one_full_step_lands_on_the_minimum_of_a_quadratic_in_several_elements(train, overrides, minimum):
    result = newton(train, "lr=1", "epochs=1", *overrides)
    assert result.summary["distance_to_min"] == pytest.approx(0.0, abs=1e-6)
    columns = [column for column in result.metrics.columns if column[0] in "xw" and "[" in column]
    np.testing.assert_allclose(result.metrics[columns].iloc[-1], minimum, atol=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["objective.noise=0.5", "objective.n_points=40", "objective.x_range=[-3,5]", "objective.init_w=-4"],
    ],
)
def test_one_full_step_solves_mse_linear_regression(train, overrides):
    result = newton(train, "objective=linear_regression", "objective.loss=mse", "lr=1", "epochs=1", *overrides)
    assert result.summary["distance_to_min"] < 2e-5  # the least-squares (w, b), computed in float64
    assert result.metrics["grad_norm"].iloc[-1] < 1e-4


@pytest.mark.parametrize("objective", ["booth", "sum_of_squares"])
def test_half_steps_halve_the_distance_to_the_minimum_every_step(train, objective):
    # On a quadratic, x_{k+1} − x* = (1 − lr)·(x_k − x*): with lr = 0.5 the distance is d0 / 2^k.
    result = newton(train, f"objective={objective}", "lr=0.5", "epochs=8")
    minimum = [1.0, 3.0] if objective == "booth" else [0.0, 0.0]
    columns = [column for column in result.metrics.columns if column[0] in "xw" and "[" in column]
    measured = distances(result.metrics, columns, minimum)
    expected = measured[0] * 0.5 ** np.arange(9)
    np.testing.assert_allclose(measured, expected, rtol=1e-5)


def reference_newton_on_rosenbrock(start, steps: int) -> np.ndarray:
    """Pure Newton on (1 − x)² + 100(y − x²)² in float64, with the Hessian written out by hand."""
    path = [np.asarray(start, np.float64)]
    for _ in range(steps):
        x, y = path[-1]
        gradient = np.array([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])
        hessian = np.array([[2 - 400 * (y - x**2) + 800 * x**2, -400 * x], [-400 * x, 200.0]])
        path.append(path[-1] - np.linalg.solve(hessian, gradient))
    return np.array(path)


def test_pure_newton_reaches_the_rosenbrock_minimum_from_the_classic_start(train):
    result = newton(train, "objective=rosenbrock", "lr=1", "epochs=10")
    path = result.metrics[["x[0]", "x[1]"]].to_numpy(np.float64)
    # The classic iterates (−1.1753, 1.3807), (0.7631, −3.1750), (0.7634, 0.5828), (1.0000, 0.9440), …; float32
    # follows the float64 reference to about 1e-4.
    np.testing.assert_allclose(path[:6], reference_newton_on_rosenbrock([-1.2, 1.0], 5), rtol=1e-3, atol=1e-4)
    error = distances(result.metrics, ["x[0]", "x[1]"], [1.0, 1.0])
    assert error[4] > 1e-2 and error[5] < 1e-5  # five steps, although the loss rises 300-fold at step 2
    assert np.all(error[6:] == 0.0) and result.metrics["loss"].iloc[6:].eq(0.0).all()
    assert result.summary["status"] == "completed" and result.summary["distance_to_min"] == 0.0


def test_too_many_parameters_are_refused(train):
    init = "objective.init=[" + ",".join(["1.0"] * 101) + "]"
    with pytest.raises(ConfigError, match="optimizer.max_params") as refused:
        newton(train, "objective=sum_of_squares", init, "epochs=1")
    assert "101 trainable elements" in str(refused.value) and "optimizer.max_params=100" in str(refused.value)


def test_max_params_is_a_limit_it_reaches_and_can_raise(train):
    hundred = "objective.init=[" + ",".join(str(float(i)) for i in range(100)) + "]"
    assert newton(train, "objective=sum_of_squares", hundred, "lr=1", "epochs=1").summary["distance_to_min"] < 1e-4
    with pytest.raises(ConfigError, match="3 trainable elements, more than optimizer.max_params=2"):
        newton(train, "objective=sum_of_squares", "objective.init=[1,2,3]", "optimizer.max_params=2", "epochs=1")
    with pytest.raises(ConfigError, match="optimizer.max_params: must be an integer >= 1, got 0"):
        newton(train, "optimizer.max_params=0", "epochs=1")


def run_newton(loss, start: float, steps: int, lr: float = 1.0) -> tuple[pd.DataFrame, bool]:
    """Newton on a one-parameter loss of w, straight through the engine's Batch: the history and whether it diverged."""
    import tensorflow as tf

    problem = Problem({"w": np.float32(start)}, lambda params, constants: loss(tf, params["w"]), repr(loss))
    batch = Batch(problem, Newton(max_params=100), stop=StopConfig(), jit_compile=True)
    batch.load([problem], [Newton(max_params=100)], [lr], log_every=1, stops=[StopConfig()])
    chunks = [chunk for (report,) in batch.chunks(steps) for chunk in report]
    return pd.concat([chunk.history for chunk in chunks], ignore_index=True), chunks[-1].status == "diverged"


def test_a_zero_hessian_gives_no_step():
    # f = 4w: H = 0, so the pseudo-inverse's minimum-norm step is 0 and w stays (no division by zero).
    history, diverged = run_newton(lambda tf, w: 4.0 * w, start=2.0, steps=3)
    assert history["w"].tolist() == [2.0] * 4 and not diverged


def test_a_negative_curvature_sends_pure_newton_to_the_maximum():
    # f = −(w − 3)² + 1: Newton solves for the stationary point, which is the maximum at w = 3.
    history, diverged = run_newton(lambda tf, w: -((w - 3.0) ** 2) + 1.0, start=-1.0, steps=2)
    assert history["w"].tolist() == [-1.0, 3.0, 3.0] and not diverged


def test_a_non_finite_hessian_ends_the_run_as_diverged():
    # f = w^1.5 at 0: f and f′ are 0, f″ = 0.75/√w is infinite, so the step is not finite.
    history, diverged = run_newton(lambda tf, w: tf.pow(w, 1.5), start=0.0, steps=5)
    assert diverged and history["step"].tolist() == [0]  # the start is the last finite state
