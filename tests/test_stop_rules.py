"""stop.grad_tol, stop.loss_tol and stop.patience end a run early with status `converged`."""

from __future__ import annotations

import math

import numpy as np

import test_history

train_xla_or_graph = test_history.train_xla_or_graph  # the fixture: each stop rule with XLA and the plain graph

# Gradient descent on (x − 1)² from x = 0 at lr 0.1: x_t − 1 = −0.8^t, so |f′(x_t)| = 2·0.8^t.
GD_ON_SQUARE = ("optimizer=gd", "lr=0.1", "epochs=1000")


def first_step_without_progress(losses: np.ndarray, loss_tol: float, patience: int) -> int:
    """A reference for the plateau rule, as keras.callbacks.EarlyStopping counts it (min_delta, patience)."""
    best, wait = math.inf, 0
    for step, loss in enumerate(losses):
        if loss < best - loss_tol:
            best, wait = loss, 0
        else:
            wait += 1
            if wait >= patience:
                return step
    raise AssertionError("the reference never stops")


def test_grad_tol_stops_at_the_first_small_gradient(train_xla_or_graph):
    result = train_xla_or_graph(*GD_ON_SQUARE, "stop.grad_tol=0.01")
    expected = math.ceil(math.log(0.01 / 2) / math.log(0.8))  # the first t with 2·0.8^t <= 0.01: 24
    assert result.summary["status"] == "converged"
    assert result.summary["steps"] == expected
    assert result.metrics["step"].tolist() == list(range(expected + 1))  # the converged state is the last row
    assert result.metrics["grad_norm"].iat[-1] <= 0.01 < result.metrics["grad_norm"].iat[-2]


def test_loss_tol_alone_stops_at_the_first_step_with_too_little_progress(train_xla_or_graph):
    result = train_xla_or_graph(*GD_ON_SQUARE, "stop.loss_tol=1e-3", "log.tensorboard=false")
    losses = (0.8 ** np.arange(100)) ** 2  # closed form of f(x_t)
    assert result.summary["status"] == "converged"
    assert result.summary["steps"] == first_step_without_progress(losses, 1e-3, patience=1)


def test_patience_counts_steps_without_progress_like_keras_early_stopping(train_xla_or_graph):
    result = train_xla_or_graph(
        "objective=rosenbrock", "optimizer=adam", "lr=0.01", "stop.loss_tol=1e-4", "stop.patience=20"
    )
    steps = result.summary["steps"]
    losses = result.metrics["loss"].to_numpy(np.float32)
    assert result.summary["status"] == "converged" and 20 <= steps < 1000
    assert first_step_without_progress(losses, np.float32(1e-4), patience=20) == steps


def test_stop_rules_are_off_by_default(train):
    result = train(*GD_ON_SQUARE)
    assert result.summary["status"] == "completed" and result.summary["steps"] == 1000
