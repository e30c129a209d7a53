"""Row semantics, log.every, chunk boundaries and divergence, checked against closed forms."""

from __future__ import annotations

import time

import numpy as np
import pytest


@pytest.fixture(params=["true", "false"], ids=["xla", "graph"])
def train_xla_or_graph(train, request):
    """`train` with XLA (the default path of long runs) or the plain graph forced, and checked to have run there:
    each behaviour below holds on both, with the same expected numbers."""

    def _train(*overrides):
        result = train(f"jit_compile={request.param}", *overrides)
        assert result.summary["xla"] is (request.param == "true")
        return result

    return _train


def test_columns_are_step_loss_grad_norm_lr_then_parameters_then_gradients(train):
    result = train("objective=linear_regression", "epochs=1")
    assert list(result.metrics.columns) == ["step", "loss", "grad_norm", "lr", "w", "b", "grad_w", "grad_b"]


@pytest.mark.parametrize(
    ("epochs", "every", "steps"), [(10, 3, [0, 3, 6, 9, 10]), (9, 3, [0, 3, 6, 9]), (5, 100, [0, 5]), (1, 1, [0, 1])]
)
def test_log_every_keeps_multiples_and_the_final_step(train_xla_or_graph, epochs, every, steps):
    result = train_xla_or_graph(f"epochs={epochs}", f"log.every={every}")
    assert result.metrics["step"].tolist() == steps
    assert result.summary["steps"] == epochs


def test_log_max_rows_raises_every_and_keeps_the_final_step(train_xla_or_graph):
    # 2500 steps at most 100 rows: every 25th step (ceil(2500 / 100)), and 2500 itself.
    result = train_xla_or_graph("optimizer=gd", "epochs=2500", "log.max_rows=100")
    assert result.metrics["step"].tolist() == list(range(0, 2501, 25))
    assert result.summary["log_every"] == 25


def test_logged_rows_stay_on_the_grid_when_chunks_end_between_grid_points(train_xla_or_graph):
    # The first chunk has 1000 steps, which 7 doesn't divide; later chunks are sized by time.
    result = train_xla_or_graph("optimizer=gd", "lr=0.001", "epochs=5000", "log.every=7")
    assert result.metrics["step"].tolist() == [*range(0, 5000, 7), 5000]


def test_history_is_seamless_across_chunks(train_xla_or_graph):
    # Gradient descent on (x − 1)² from 0: x_t = 1 − (1 − 2·lr)^t. 2500 steps span several chunks.
    result = train_xla_or_graph("optimizer=gd", "lr=0.001", "epochs=2500")
    steps = result.metrics["step"].to_numpy()
    np.testing.assert_array_equal(steps, np.arange(2501))
    np.testing.assert_allclose(result.metrics["x"], 1 - 0.998**steps, rtol=1e-4, atol=1e-6)


def test_best_loss_counts_unlogged_steps(train_xla_or_graph):
    # lr 0.9 overshoots: x_t − 1 = (−0.8)^t, so the loss shrinks at every step, logged or not.
    result = train_xla_or_graph("optimizer=gd", "lr=0.9", "epochs=7", "log.every=5")
    assert result.summary["best_loss"] == pytest.approx(0.64**7, rel=1e-4)
    assert result.summary["final_loss"] == pytest.approx(0.64**7, rel=1e-4)


def test_diverging_run_stops_and_keeps_every_finite_row(train_xla_or_graph):
    # lr 10: x_t − 1 = (−19)^t, so the loss 361^t overflows float32 at t = 16.
    result = train_xla_or_graph("lr=10", "epochs=100")
    assert result.summary["status"] == "diverged"
    assert result.summary["steps"] == 15
    assert result.returned == float("inf")
    steps = result.metrics["step"].to_numpy()
    np.testing.assert_array_equal(steps, np.arange(16))
    np.testing.assert_allclose(result.metrics["x"], 1 - (-19.0) ** steps, rtol=1e-5)
    assert np.isfinite(result.metrics.drop(columns="step").to_numpy()).all()
    assert result.summary["final_loss"] == pytest.approx(361.0**15, rel=1e-4)


def test_diverging_run_logs_its_last_finite_step_even_between_log_points(train_xla_or_graph):
    result = train_xla_or_graph("lr=10", "epochs=100", "log.every=4")
    assert result.metrics["step"].tolist() == [0, 4, 8, 12, 15]
    assert result.summary["steps"] == 15


def test_summary_reports_parameters_hyperparameters_and_distance_to_minimum(train):
    started = time.perf_counter()
    result = train("objective=booth", "optimizer=adam", "lr=0.1", "epochs=2000", "log.every=500")
    outside = time.perf_counter() - started  # the whole call, measured here
    summary = result.summary
    assert summary["status"] == "completed"
    assert summary["params"]["x"] == pytest.approx([1.0, 3.0], abs=1e-3)  # Booth's minimum
    assert summary["distance_to_min"] < 1e-3
    assert (summary["objective"], summary["optimizer"], summary["lr"], summary["epochs"], summary["seed"]) == (
        "booth",
        "adam",
        0.1,
        2000,
        0,
    )
    assert summary["optimizer_params"]["beta_1"] == 0.9
    # Its wall time lies within the call's, so its speed is at least 2000 steps over the call's time.
    assert summary["steps"] == 2000 and 0 < summary["wall_time_s"] <= outside
    assert summary["steps_per_s"] >= 2000 / outside
    assert summary["steps_per_s"] == pytest.approx(summary["steps"] / summary["wall_time_s"])  # README's definition


def test_neuron_can_train_weight_and_input_together(train):
    result = train("objective=neuron", "objective.trainable=[w,x]", "optimizer=gd", "lr=0.01", "epochs=1")
    # ∂/∂w (wx − y)² = 2(wx − y)x = −27 and ∂/∂x = 2(wx − y)w = −4.5 at w = 0.5, x = 3, y = 6.
    assert result.metrics[["grad_w", "grad_x"]].iloc[0].tolist() == [-27.0, -4.5]


def test_regression_noise_and_random_start_come_from_the_seed(train):
    overrides = ["objective=linear_regression", "objective.noise=0.5", "objective.n_points=50", "epochs=1"]
    first, again, other = train(*overrides), train(*overrides), train(*overrides, "seed=1")
    assert first.metrics.equals(again.metrics)
    assert not first.metrics.equals(other.metrics)
    assert 0.0 <= first.metrics["w"].iloc[0] < 1.0 and 0.0 <= first.metrics["b"].iloc[0] < 1.0


def test_regression_with_mse_reaches_the_least_squares_fit(train):
    result = train(
        "objective=linear_regression",
        "objective.noise=0.3",
        "objective.n_points=20",
        "optimizer=gd",
        "lr=0.05",
        "epochs=3000",
        "log.every=1000",
    )
    assert result.summary["distance_to_min"] < 1e-3


@pytest.mark.parametrize(
    ("objective", "minimum"),
    [("rosenbrock", [1.0, 1.0]), ("beale", [3.0, 0.5]), ("booth", [1.0, 3.0]), ("himmelblau", [3.0, 2.0])],
)
def test_benchmark_functions_are_zero_at_their_published_minimum(train, objective, minimum):
    result = train(f"objective={objective}", f"objective.init=[{minimum[0]},{minimum[1]}]", "epochs=1")
    assert result.metrics["loss"].iloc[0] == pytest.approx(0.0, abs=1e-10)
    assert result.metrics["grad_norm"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert result.summary["distance_to_min"] == pytest.approx(0.0, abs=1e-6)


def test_divergence_found_at_the_final_row_keeps_the_rows_before_it(train_xla_or_graph):
    # With lr 10 the loss overflows at t = 16: here that is the final state, after the last update.
    result = train_xla_or_graph("lr=10", "epochs=16")
    assert (result.summary["status"], result.summary["steps"]) == ("diverged", 15)
    assert result.metrics["step"].tolist() == list(range(16))


def test_slow_divergence_across_chunks_keeps_a_seamless_history(train_xla_or_graph):
    # lr 1.02: x_t − 1 = −(−1.04)^t, so x² overflows float32 (x ≈ 1.8e19) near t = 1131, in the second chunk.
    result = train_xla_or_graph("optimizer=gd", "lr=1.02", "epochs=5000", "log.every=1")
    steps = result.summary["steps"]
    assert result.summary["status"] == "diverged" and 1125 <= steps <= 1135
    np.testing.assert_array_equal(result.metrics["step"], np.arange(steps + 1))
    np.testing.assert_allclose(result.metrics["loss"].iloc[-1], 1.04 ** (2 * steps), rtol=1e-3)


def test_task_returns_the_final_loss_as_a_float(train):
    result = train("epochs=5")
    assert type(result.returned) is float and result.returned == result.summary["final_loss"]


def test_tensorboard_and_graph_logging_can_be_switched_off(train):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    quiet = train("epochs=3", "log.tensorboard=false")
    assert not list(quiet.dir.glob("events.out.tfevents.*"))
    assert len(quiet.metrics) == 4
    no_graph = train("epochs=3", "log.graph=false")
    events = EventAccumulator(str(no_graph.dir))
    events.Reload()
    assert "loss" in events.Tags()["tensors"] and not events.Tags()["graph"]
