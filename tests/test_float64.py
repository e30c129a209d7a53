"""dtype=float64 through the objectives, the optimizers and the engine: every optimizer against Keras's own float64
run, gd and newton against their closed forms, and every objective's start values, constants and loss in float64."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import CONF_DIR, compose_config
from tapelab.config import Experiment, StopConfig, to_experiment
from tapelab.engine.batch import Batch
from tapelab.optimizers import KerasOptimizer
from tapelab.runs import checked_problem

STEPS = 300
ROSENBROCK_START = [-1.2, 1.0]  # conf/objective/rosenbrock.yaml's init, with a = 1 and b = 100
# Learning rates that keep each optimizer finite on Rosenbrock for 300 steps (sgd at 0.01 diverges). At 0.01
# RMSprop bounces across the valley, which turns the plain graph's last-bit rounding into 4e-7 by step 300.
ROSENBROCK_LRS = {"gd": 0.001, "sgd": 0.001, "rmsprop": 0.001, "adadelta": 1.0, "newton": 0.5}  # the others: 0.01
COUPLED = ("lamb", "newton")  # a norm or a Hessian over a whole variable: trained alone, not as a batch's members
OPTIMIZERS = sorted(path.stem for path in (CONF_DIR / "optimizer").glob("*.yaml"))
OBJECTIVES = sorted(path.stem for path in (CONF_DIR / "objective").glob("*.yaml"))


def batch_of(dtype: str, lrs: list[float], *overrides: str, jit_compile: bool = False) -> tuple[Batch, Experiment]:
    """A batch of `dtype` with a member per learning rate, of the composed run's problem and optimizer, loaded."""
    experiment = to_experiment(compose_config(*overrides))
    problem, _ = checked_problem(experiment)
    members, stop = len(lrs), StopConfig()
    batch = Batch(problem, experiment.optimizer, stop, jit_compile, members, dtype=dtype)
    batch.load([problem] * members, [experiment.optimizer] * members, lrs, 1, [stop] * members)
    return batch, experiment


def histories(batch: Batch, steps: int) -> list[pd.DataFrame]:
    """Each member's history over `steps` updates (rows 0..steps)."""
    calls = list(batch.chunks(steps))
    return [pd.concat([chunk.history for call in calls for chunk in call[member]]) for member in range(batch.members)]


@contextlib.contextmanager
def keras_float64() -> Iterator[None]:
    """Keras's own float64 mode while the block runs: its learning-rate variable is float64 (of floatx) then."""
    before = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(before)


def rosenbrock(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def reference_path(step, x) -> np.ndarray:
    """x at steps 0..STEPS, calling `step`, a plain update of x, as a tf.function once a step."""
    step, points = tf.function(step), [x.numpy()]
    for _ in range(STEPS):
        step()
        points.append(x.numpy())
    return np.array(points)


def keras_path(name: str, keys: dict, numeric: tuple[str, ...], lr: float) -> np.ndarray:
    """The path of Keras's optimizer `name` (gd: SGD, the same update) on Rosenbrock, in a plain float64 loop.

    The `numeric` keys, which Keras computes with, are float64 tensors: Keras's `ops.cast(self.beta_2, dtype)`
    takes a Python float through a float32 tensor (tf.cast), so that Adam's bias correction would use
    0.9990000128746033 for 0.999. Keras tests the other keys in Python (`momentum > 0`): they stay Python floats."""
    keys = {key: tf.constant(value, tf.float64) if key in numeric and value is not None else value
            for key, value in keys.items()}  # fmt: skip
    with keras_float64():
        x = tf.Variable(ROSENBROCK_START, dtype=tf.float64)
        optimizer = getattr(keras.optimizers, name)(learning_rate=lr, **keys)

        def step():
            with tf.GradientTape() as tape:
                loss = rosenbrock(x)
            optimizer.apply_gradients([(tape.gradient(loss, x), x)])

        return reference_path(step, x)


def newton_path(lr: float) -> np.ndarray:
    """x ← x − lr·H⁻¹∇f on Rosenbrock in float64, with H from nested tapes and a linear solve."""
    x = tf.Variable(ROSENBROCK_START, dtype=tf.float64)

    def step():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = rosenbrock(x)
            gradient = inner.gradient(loss, x)
        hessian = outer.jacobian(gradient, x)
        x.assign_sub(lr * tf.linalg.solve(hessian, gradient[:, None])[:, 0])

    return reference_path(step, x)


@pytest.mark.parametrize(("name", "jit_compile"), [*((name, False) for name in OPTIMIZERS), ("adam", True)])
def test_every_optimizer_follows_keras_s_own_float64_run_on_rosenbrock(name, jit_compile):
    lr = ROSENBROCK_LRS.get(name, 0.01)
    lrs = [lr] if name in COUPLED else [lr, lr / 2]  # two members of a batch, each with its own learning rate
    batch, experiment = batch_of("float64", lrs, "objective=rosenbrock", f"optimizer={name}", jit_compile=jit_compile)
    paths = [history[["x[0]", "x[1]"]].to_numpy() for history in histories(batch, STEPS)]
    update = batch.update
    assert update.lr.dtype == tf.float64
    assert all(variable.dtype == tf.float64 for variable in update.hyperparameters.values())
    for variable in update.state():  # the slots (and Nadam's product of momenta) float64, the step count int64
        assert variable.dtype == (tf.int64 if "iteration" in variable.name else tf.float64), variable.name
    for member_lr, path in zip(lrs, paths, strict=True):
        if name == "newton":
            expected = newton_path(member_lr)
        elif isinstance(experiment.optimizer, KerasOptimizer):
            optimizer = experiment.optimizer
            expected = keras_path(optimizer.keras_class, optimizer.hyperparameters(), optimizer.inputs, member_lr)
        else:  # gd: x ← x − lr·∇f, Keras's SGD without momentum
            expected = keras_path("SGD", {}, (), member_lr)
        assert np.isfinite(expected).all() and len(path) == STEPS + 1
        # 1e-9 relative over the whole path, and exact where both are 0 (Lion's signed steps land on 0).
        np.testing.assert_allclose(path, expected, rtol=1e-9, atol=0)


def test_a_float64_run_s_learning_rate_and_hyperparameters_are_exactly_the_configured_ones():
    # Held in float32, lr 0.001 would be 1.0000000474974513e-3, β₂ 0.999 0.9990000128746033.
    batch, _ = batch_of("float64", [0.001], "objective=rosenbrock", "optimizer=adam", "optimizer.beta_2=0.999")
    (history,) = histories(batch, 3)
    assert history["lr"].tolist() == [0.001] * 4
    assert batch.update.optimizer.learning_rate.numpy() == 0.001
    assert batch.update.hyperparameters["beta_2"].numpy() == 0.999
    assert batch.update.hyperparameters["epsilon"].numpy() == 1e-7


@pytest.mark.parametrize("jit_compile", [False, True])
def test_float64_gradient_descent_halves_the_start_exactly_at_each_step(jit_compile):
    # f = Σ wᵢ², lr 1/4: w ← w − ¼·2w = w/2, which binary floating point computes exactly, so w_t = w₀·2⁻ᵗ bit for
    # bit (2⁻³⁰⁰·0.1 is far above float64's smallest normal). w₀ = 0.1 in float64, not float32(0.1) widened.
    start = np.array([0.1, -0.3])
    batch, _ = batch_of("float64", [0.25], "objective=sum_of_squares", "objective.init=[0.1,-0.3]", "optimizer=gd",
                        jit_compile=jit_compile)  # fmt: skip
    (history,) = histories(batch, STEPS)
    expected = start * 0.5 ** np.arange(STEPS + 1)[:, None]
    assert np.array_equal(history[["w[0]", "w[1]"]].to_numpy(), expected)
    assert np.array_equal(history["loss"].to_numpy(), (expected**2).sum(axis=1))


@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_float64_newton_follows_its_closed_form_on_an_ill_conditioned_quadratic(lr):
    # f = 10⁴(u − 1)² + 10⁻⁴(v + 2)²: curvatures 2·10⁴ and 2·10⁻⁴, a condition number of 10⁸, which float64 resolves
    # (float32's would not: 2·10⁻⁴ is below 10·n·ε₃₂·σ_max ≈ 0.05). x_t = x* + (1 − lr)ᵗ(x₀ − x*); lr 1 lands on x*.
    expr = "1e4*(u - 1)**2 + 1e-4*(v + 2)**2"
    batch, _ = batch_of("float64", [lr], "objective=expression", f"objective.expr='{expr}'",
                        "objective.init={u: 0.1, v: 0.3}", "optimizer=newton")  # fmt: skip
    (history,) = histories(batch, 20)
    start, minimum = np.array([0.1, 0.3]), np.array([1.0, -2.0])
    expected = minimum + (1 - lr) ** np.arange(21)[:, None] * (start - minimum)
    path = history[["u", "v"]].to_numpy()
    assert path[0].tolist() == [0.1, 0.3]
    # Each step rounds g, H, H⁻¹g and the update: within 4 ulps of 2, the coordinates' size (1 ulp is seen).
    np.testing.assert_allclose(path, expected, rtol=0, atol=4 * np.spacing(2.0))


# Per objective: overrides that start it (and set a constant) at values float32 can't hold, and the flat start.
STARTS = {
    **{name: (["objective.init=[0.1,-0.3]"], [0.1, -0.3]) for name in OBJECTIVES},
    "expression": (["objective.expr='0.1*w**2 + 2*0.3*w*c'", "objective.init={w: 0.1, c: 0.7}",
                    "objective.constants=[c]"], [0.1]),
    "linear_regression": (["objective.init_w=0.1", "objective.init_b=-0.3", "objective.loss=huber",
                           "objective.huber_delta=0.3", "objective.noise=0.1"], [0.1, -0.3]),
    "neuron": (["objective.w=0.1", "objective.x=-0.3", "objective.y=0.7", "objective.trainable=[w,x]"], [0.1, -0.3]),
    "polynomial": (["objective.init=0.1", "objective.coeffs=[0.7,0.3,0,1]"], [0.1]),
    "python": (["objective.function=user_objectives.neuron_and_vector", "objective.init={a: 0.1, v: [-0.3, 0.7]}"],
               [0.1, -0.3, 0.7]),
    "quadratic": (["objective.init=0.1", "objective.b=0.3"], [0.1]),
    "tanh": (["objective.init=0.1"], [0.1]),
}  # fmt: skip


def loss_graph_dtypes(problem, dtype) -> set[str]:
    """The floating dtypes of every tensor in the graph of the problem's loss at parameters of `dtype`."""
    specs = {name: tf.TensorSpec(np.shape(value), dtype) for name, value in problem.start.items()}
    graph = tf.function(problem.value).get_concrete_function(specs).graph
    return {tensor.dtype.name for op in graph.get_operations() for tensor in op.outputs if tensor.dtype.is_floating}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_starts_computes_and_trains_in_float64(name):
    overrides, start = STARTS[name]
    batch, experiment = batch_of("float64", [0.001], f"objective={name}", *overrides, "optimizer=gd")
    (history,) = histories(batch, 3)
    problem, _ = checked_problem(experiment)
    params = history[batch.param_columns].to_numpy()
    assert params[0].tolist() == start  # the config's values, not float32's nearest ones
    assert np.isfinite(history.drop(columns="step").to_numpy()).all() and not np.array_equal(params[0], params[3])
    assert history["loss"].dtype == np.float64
    assert all(variable.dtype == tf.float64 for variable in (*batch.layout.params.values(),
                                                              *batch.layout.constants.values()))  # fmt: skip
    # No float32 tensor anywhere in the loss's graph (a constant, a datum, a cast), and float32 stays float32.
    assert loss_graph_dtypes(problem, tf.float64) == {"float64"}
    assert loss_graph_dtypes(problem, tf.float32) == {"float32"}


def test_the_known_minima_are_the_configured_values_in_float64():
    problem, _ = checked_problem(to_experiment(compose_config("objective=rosenbrock", "objective.a=0.1")))
    assert [point.tolist() for point in problem.minima] == [[0.1, 0.1**2]]
    problem, _ = checked_problem(to_experiment(compose_config("objective=quadratic", "objective.b=0.3")))
    assert [point.tolist() for point in problem.minima] == [[-0.3 / 2]]


def test_regression_data_are_the_same_float32_points_in_either_dtype_and_f_star_their_float64_fit():
    overrides = ("objective=linear_regression", "objective.n_points=7", "objective.noise=0.3")
    batch, experiment = batch_of("float64", [0.01], *overrides)
    problem, _ = checked_problem(experiment)
    x, y = (problem.constants[name] for name in ("x", "y"))
    assert x.dtype == y.dtype == np.float32  # what a float32 run reads, and a float64 one widened exactly:
    constants = batch.layout.constants
    assert np.array_equal(constants["x"].numpy(), x) and np.array_equal(constants["y"].numpy(), y)
    noise = 0.3 * np.random.default_rng(0).standard_normal(7)  # seed 0's first draws
    np.testing.assert_allclose(x, np.linspace(-1.0, 4.0, 7), rtol=0, atol=4e-7)  # x_range's default
    np.testing.assert_allclose(y, 2.0 * np.linspace(-1.0, 4.0, 7) - 1.0 + noise, rtol=0, atol=2e-6)
    # f* is the least-squares fit of those float32 points, solved in float64: the normal equations' solution.
    design = np.stack([x, np.ones(7)], axis=1).astype(np.float64)
    (fit,) = problem.minima
    assert fit.dtype == np.float64
    np.testing.assert_allclose(fit, np.linalg.solve(design.T @ design, design.T @ y.astype(np.float64)), rtol=1e-13)
