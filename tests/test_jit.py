"""jit_compile: auto (XLA where its compile pays off), true or false; and the plain graph's step order."""

from __future__ import annotations

import pytest

from conftest import resume_in, run_in
from tapelab.engine.compiled import XLA_MIN_WORK


def test_auto_runs_a_short_run_in_the_plain_graph_and_a_long_one_with_xla(train):
    short = train("epochs=1000")  # the default experiment: one parameter, no data
    long = train(f"epochs={2 * XLA_MIN_WORK}", "log.every=1000")
    assert short.summary["xla"] is False and long.summary["xla"] is True
    assert short.summary["steps"] == 1000 and long.summary["steps"] == 2 * XLA_MIN_WORK


def test_auto_counts_the_data_a_step_reads(train):
    # 100,000 points make every step as costly as ~20 steps of a small problem: XLA pays off within 1000 steps.
    result = train("objective=linear_regression", "objective.n_points=100000", "epochs=1000", "log.every=100")
    assert result.summary["xla"] is True


@pytest.mark.parametrize("setting", [True, False])
def test_true_and_false_force_the_choice(train, setting):
    assert train(f"jit_compile={str(setting).lower()}", "epochs=3").summary["xla"] is setting


def test_a_resumed_run_keeps_the_loop_it_started_with(tmp_path):
    # auto chose the plain graph for 1000 steps; continuing to many more keeps it, so the rows stay one history.
    run_dir = tmp_path / "run"
    assert run_in(run_dir, "epochs=1000", "log.plots=false")["xla"] is False
    assert resume_in(run_dir, f"epochs={4 * XLA_MIN_WORK}")["xla"] is False


def test_the_plain_graph_reads_a_steps_values_before_its_update_writes_them(train):
    # f = b·a² + 3a at a = 2, b = −1: f = 2, ∂f/∂b = a² = 4, ∂f/∂a = 2ab + 3 = −1. Keras's SGD writes b from a²
    # alone, so only a control edge orders the loss's read of b before that write; Grappler's dependency
    # optimizer used to drop it in about one new plain-graph loop in three. Each run here is a new loop.
    for k in range(1, 11):
        result = train("objective=expression", f"objective.expr=b*a**2 + {k}*a", "objective.init={a: 2, b: -1}",
                       "optimizer=sgd", "epochs=1", "jit_compile=false")  # fmt: skip
        row = result.metrics.iloc[0]
        assert [row["loss"], row["b"], row["a"], row["grad_b"], row["grad_a"]] == [-4 + 2 * k, -1, 2, 4, k - 4]
