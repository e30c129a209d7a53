"""resume=true: a run continues from its checkpoint, and its history equals an uninterrupted run's."""

from __future__ import annotations

import gc
import json
import logging
import logging.handlers
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import resume_in, run_in
from tapelab.errors import ConfigError

# Adam carries state (moments and the step count): a resume that lost it would change the trajectory.
ADAM_ON_ROSENBROCK = ["objective=rosenbrock", "optimizer=adam", "lr=0.01", "log.plots=false"]


def loss_steps(run_dir: Path) -> list[int]:
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    return [point.step for point in events.Tensors("loss")]


@pytest.mark.parametrize("every", [1, 10])
def test_a_resumed_run_has_the_history_of_an_uninterrupted_one(tmp_path, every):
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_in(whole, *ADAM_ON_ROSENBROCK, "epochs=1500", f"log.every={every}")
    run_in(split, *ADAM_ON_ROSENBROCK, "epochs=600", f"log.every={every}")
    summary = resume_in(split, "epochs=1500")

    expected = pd.read_csv(whole / "metrics.csv")
    pd.testing.assert_frame_equal(pd.read_csv(split / "metrics.csv"), expected, check_exact=True)  # to the bit
    assert summary["status"] == "completed" and summary["steps"] == 1500
    assert summary["final_loss"] == json.loads((whole / "summary.json").read_text())["final_loss"]
    assert loss_steps(split) == expected["step"].tolist()  # TensorBoard: no step twice, none missing


def test_a_run_killed_after_it_converged_ends_converged_when_resumed(tmp_path):
    run_dir = tmp_path / "run"
    ended = run_in(run_dir, "objective=quadratic", "stop.grad_tol=1e-3", "epochs=2000", "log.plots=false")
    assert ended["status"] == "converged" and ended["steps"] < 2000
    metrics = (run_dir / "metrics.csv").read_text()
    # A SIGKILL between the last chunk's checkpoint and the run's end leaves summary.json saying "running".
    (run_dir / "summary.json").write_text(json.dumps({**ended, "status": "running"}))
    resumed = resume_in(run_dir)
    assert (resumed["status"], resumed["steps"], resumed["final_loss"]) == ("converged", ended["steps"],
                                                                             ended["final_loss"])  # fmt: skip
    assert (run_dir / "metrics.csv").read_text() == metrics


def test_resume_keeps_the_runs_own_config(tmp_path):
    run_dir = tmp_path / "run"
    run_in(run_dir, "objective=booth", "optimizer=adam", "lr=0.1", "epochs=50", "log.plots=false")
    summary = resume_in(run_dir, "epochs=80")  # not objective=quadratic, optimizer=sgd, lr=0.01: the defaults
    assert (summary["objective"], summary["optimizer"], summary["lr"], summary["epochs"]) == ("booth", "adam", 0.1, 80)
    assert summary["steps"] == 80


def test_resume_refuses_a_changed_key(tmp_path):
    run_dir = tmp_path / "run"
    run_in(run_dir, *ADAM_ON_ROSENBROCK, "epochs=20")
    with pytest.raises(ConfigError, match="resume: .*only epochs can change; remove lr=0.1"):
        resume_in(run_dir, "lr=0.1", "epochs=40")


def test_resume_refuses_fewer_epochs_than_done(tmp_path):
    run_dir = tmp_path / "run"
    run_in(run_dir, *ADAM_ON_ROSENBROCK, "epochs=20")
    with pytest.raises(ConfigError, match="epochs: must be more than the 20 steps"):
        resume_in(run_dir, "epochs=20")


def test_resume_refuses_a_diverged_run(tmp_path):
    run_dir = tmp_path / "run"
    run_in(run_dir, "lr=10", "epochs=100", "log.plots=false")
    with pytest.raises(ConfigError, match="resume: the run in .* diverged at step 15"):
        resume_in(run_dir, "epochs=200")


def test_resume_refuses_a_directory_without_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="resume: .* holds no checkpoint"):
        resume_in(tmp_path, "epochs=200")


def save_older_checkpoint(checkpoint_dir: Path, steps: int) -> None:
    """Adam on Rosenbrock's two parameters, saved as tapelab saved a run before its one trainer (2026-12-03): the
    step, best loss and plateau counters as scalars, and the Keras optimizer itself rather than its variables."""
    import keras
    import tensorflow as tf

    x = tf.Variable([-1.0, 1.0], name="x")
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build([x])
    scalars = {"step": tf.Variable(steps, dtype=tf.int64), "best_loss": tf.Variable(1.0),
               "plateau_best": tf.Variable(np.inf), "plateau_steps": tf.Variable(0, dtype=tf.int64)}  # fmt: skip
    state = tf.train.Checkpoint(params={"x": x}, optimizer=optimizer, **scalars)
    tf.train.CheckpointManager(state, checkpoint_dir, max_to_keep=1).save(checkpoint_number=steps)


@contextmanager
def tensorflow_warnings() -> Iterator[list[logging.LogRecord]]:
    """The records TensorFlow's Python logger writes (WARNING and up) in the block, and as the block's garbage is
    freed at its end."""
    handler, logger = logging.handlers.BufferingHandler(capacity=10**6), logging.getLogger("tensorflow")
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield handler.buffer
        gc.collect()
    finally:
        logger.removeHandler(handler)


def test_resume_refuses_an_older_tapelabs_checkpoint_in_one_line_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_in(run_dir, *ADAM_ON_ROSENBROCK, "epochs=20")
    shutil.rmtree(run_dir / "checkpoint")
    save_older_checkpoint(run_dir / "checkpoint", 20)
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in run_dir.rglob("*") if path.is_file()}

    with tensorflow_warnings() as warnings:
        with pytest.raises(ConfigError) as refusal:
            resume_in(run_dir, "epochs=40")
        message = str(refusal.value)
        del refusal  # what the command line does once it printed the message
    assert message.startswith(f"resume: the checkpoint in {run_dir} does not fit this run's loop: "), message
    assert "\n" not in message and len(message) < 400
    assert [record.getMessage() for record in warnings] == []  # nothing else on the console
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in run_dir.rglob("*") if path.is_file()} == (
        before
    )


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param([*ADAM_ON_ROSENBROCK, "epochs=300"], id="adam-rosenbrock"),
        pytest.param(["optimizer=gd", "lr=0.01", "epochs=2000", "log.plots=false"], id="gd-quadratic"),
    ],
)
def test_xla_and_the_plain_graph_give_the_same_history(train, overrides):
    xla = train(*overrides, "jit_compile=true")
    graph = train(*overrides, "jit_compile=false")
    assert xla.summary["xla"] is True and graph.summary["xla"] is False
    pd.testing.assert_frame_equal(xla.metrics, graph.metrics, check_exact=True)


def test_xla_and_the_plain_graph_part_by_a_few_ulps_for_nadam_on_rosenbrock(train):
    # Not everywhere the same: XLA has its own pow and may evaluate an expression in another order. Nadam on
    # Rosenbrock: the loss and gradient part from step 20, the parameters from step 231; the README says so.
    overrides = ["objective=rosenbrock", "optimizer=nadam", "lr=0.01", "epochs=1000", "log.plots=false"]
    xla = train(*overrides, "jit_compile=true").metrics
    graph = train(*overrides, "jit_compile=false").metrics
    parameters = ["x[0]", "x[1]"]
    assert int((xla != graph).any(axis=1).idxmax()) == 20
    assert int((xla[parameters] != graph[parameters]).any(axis=1).idxmax()) == 231
    np.testing.assert_array_max_ulp(
        xla[parameters].to_numpy(np.float32), graph[parameters].to_numpy(np.float32), maxulp=16
    )
