"""dtype=float64: runs, multi-start, resume and batched sweeps in double precision, beside float32 in one process."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import compose_config, resume_in, run_in
from tapelab.batching import group_key
from tapelab.config import to_experiment
from tapelab.errors import ConfigError

GD_ON_ROSENBROCK = ["objective=rosenbrock", "optimizer=gd", "lr=0.001", "epochs=200", "log.plots=false"]


def rosenbrock_descent(start: list[float], lr: float, steps: int, dtype: type) -> np.ndarray:
    """x ← x − lr·∇f for f = (1 − x)² + 100·(y − x²)², from the closed-form gradient, in NumPy's `dtype`."""
    x, y = (dtype(value) for value in start)
    path = [(x, y)]
    for _ in range(steps):
        gx = dtype(-2) * (dtype(1) - x) - dtype(400) * x * (y - x * x)
        gy = dtype(200) * (y - x * x)
        x, y = x - dtype(lr) * gx, y - dtype(lr) * gy
        path.append((x, y))
    return np.array(path, np.float64)


def test_a_float64_run_follows_the_double_precision_path_and_writes_its_digits(train):
    float64 = train(*GD_ON_ROSENBROCK, "dtype=float64")
    float32 = train(*GD_ON_ROSENBROCK)
    reference = rosenbrock_descent([-1.2, 1.0], 0.001, 200, np.float64)

    path64 = float64.metrics[["x[0]", "x[1]"]].to_numpy()
    assert path64[0].tolist() == [-1.2, 1.0]  # the config's values in float64, not float32(-1.2) widened
    # TensorFlow's gradient may round a product differently from the formula here: a few ulps over 200 steps.
    np.testing.assert_allclose(path64, reference, rtol=1e-13, atol=0)
    # float32 is ~1e-7 away: what metrics.csv would show if it cut float64 digits, or the run were float32.
    path32 = float32.metrics[["x[0]", "x[1]"]].to_numpy()
    assert np.abs(path32 - reference).max() > 1e-8
    assert float64.summary["dtype"] == "float64" and float32.summary["dtype"] == "float32"
    assert float64.summary["params"]["x"] == path64[-1].tolist()  # summary.json keeps float64's shortest digits
    assert float64.summary["final_loss"] == float64.metrics["loss"].iloc[-1]


def test_tensorboard_shows_a_float64_run_s_scalars_rounded_to_float32(train):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    run = train(*GD_ON_ROSENBROCK, "dtype=float64", "epochs=5", "log.tensorboard=true")
    events = EventAccumulator(str(run.dir), size_guidance={"tensors": 0})
    events.Reload()
    shown = [tensor_util.make_ndarray(event.tensor_proto) for event in events.Tensors("loss")]
    assert [value.dtype for value in shown] == [np.float32] * 6  # README: the scalar plugin stores float32
    assert [float(value) for value in shown] == [float(np.float32(loss)) for loss in run.metrics["loss"]]
    assert not np.array_equal(run.metrics["loss"], run.metrics["loss"].astype(np.float32))


def test_float32_and_float64_runs_share_a_process_each_exact_to_its_own(train):
    first32 = train(*GD_ON_ROSENBROCK, "jit_compile=true")
    first64 = train(*GD_ON_ROSENBROCK, "jit_compile=true", "dtype=float64")
    again32 = train(*GD_ON_ROSENBROCK, "jit_compile=true")  # the pool's float32 loop, not the float64 one
    again64 = train(*GD_ON_ROSENBROCK, "jit_compile=true", "dtype=float64")
    pd.testing.assert_frame_equal(again32.metrics, first32.metrics, check_exact=True)
    pd.testing.assert_frame_equal(again64.metrics, first64.metrics, check_exact=True)
    assert not np.array_equal(first32.metrics["x[0]"], first64.metrics["x[0]"])


def test_the_batched_launcher_batches_float32_and_float64_jobs_apart():
    float32 = group_key(compose_config(*GD_ON_ROSENBROCK))
    float64 = group_key(compose_config(*GD_ON_ROSENBROCK, "dtype=float64"))
    assert float32 == group_key(compose_config(*GD_ON_ROSENBROCK, "lr=0.002")) and float32 != float64


def test_a_resumed_float64_run_has_the_history_of_an_uninterrupted_one(tmp_path):
    adam = ["objective=rosenbrock", "optimizer=adam", "lr=0.01", "dtype=float64", "log.plots=false"]
    run_in(tmp_path / "whole", *adam, "epochs=900")
    run_in(tmp_path / "split", *adam, "epochs=400")
    summary = resume_in(tmp_path / "split", "epochs=900")
    whole = pd.read_csv(tmp_path / "whole" / "metrics.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "split" / "metrics.csv"), whole, check_exact=True)
    assert summary["dtype"] == "float64" and summary["steps"] == 900


def test_float64_starts_are_numpy_s_double_draws_and_float32_starts_round_them(train):
    starts = ["objective=himmelblau", "optimizer=adam", "lr=0.05", "epochs=5", "objective.starts=6", "seed=4"]
    float64, float32 = train(*starts, "dtype=float64"), train(*starts)
    box = np.array([[-5.0, 5.0], [-5.0, 5.0]])  # conf/objective/himmelblau.yaml's domain
    draws = np.random.default_rng([4, 6]).uniform(box[:, 0], box[:, 1], size=(6, 2))  # README: the starts' draw
    table64 = pd.read_csv(float64.dir / "starts.csv")[["start_x[0]", "start_x[1]"]].to_numpy()
    table32 = pd.read_csv(float32.dir / "starts.csv")[["start_x[0]", "start_x[1]"]].to_numpy()
    assert np.array_equal(table64, draws)
    assert np.array_equal(table32.astype(np.float32), draws.astype(np.float32))  # float32's shortest digits


def test_a_float64_learning_rate_is_the_double_itself(train):
    run = train(*GD_ON_ROSENBROCK, "dtype=float64", "lr=0.001", "epochs=2")
    assert run.metrics["lr"].tolist() == [0.001] * 3  # float32 would hold 0.0010000000474974513
    tiny = train(*GD_ON_ROSENBROCK, "dtype=float64", "lr=1e-300", "epochs=2")  # below float32's smallest number
    assert json.loads((tiny.dir / "summary.json").read_text())["lr"] == 1e-300


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dtype=float16"], "dtype: must be float32 or float64, got 'float16'"),
        (["lr=1e-50"], "lr: must be a finite number > 0 (in float32, so 1e-45 to 3.4e38), got 1e-50"),
    ],
)
def test_a_dtype_or_lr_it_cannot_hold_is_refused(overrides, message):
    with pytest.raises(ConfigError) as refused:
        to_experiment(compose_config(*overrides))
    assert str(refused.value) == message
