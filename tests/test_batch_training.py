"""A batch of runs in one compiled loop: each member writes what the same run alone writes, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import compose_config
from tapelab.batch_run import train_batch
from tapelab.config import to_experiment
from tapelab.runner import train

# Every elementwise optimizer, with learning rates from far too small to far too large for Rosenbrock, and stop
# rules: in one batch, members complete, converge (on the gradient or a plateau) and diverge at steps of their own.
SMALL = ["0.00002", "0.0002", "0.001", "0.003", "0.01", "0.1", "1", "10"]
MEDIUM = ["0.0001", "0.001", "0.003", "0.01", "0.03", "0.1", "0.5", "1"]
LARGE = ["0.01", "0.1", "1", "3", "10", "30", "100", "1000"]
LEARNING_RATES = {
    "gd": SMALL, "sgd": SMALL, "adam": MEDIUM, "adamw": MEDIUM, "adamax": MEDIUM, "nadam": MEDIUM,
    "adagrad": LARGE, "adadelta": LARGE, "rmsprop": MEDIUM, "ftrl": LARGE, "lion": MEDIUM,
}  # fmt: skip
STOP_RULES = ["stop.grad_tol=0.01", "stop.loss_tol=1e-4", "stop.patience=20"]


def run_both(tmp_path: Path, optimizer: str, jit: str, lrs: list[str], *extra: str) -> list[tuple[Path, Path]]:
    """The runs at `lrs` (with `extra` overrides, one string per member) as one batch and each alone; their
    directories, in pairs."""
    experiments = [
        to_experiment(
            compose_config(
                "objective=rosenbrock",
                f"optimizer={optimizer}",
                f"lr={lr}",
                "epochs=300",
                f"jit_compile={jit}",
                "log.plots=false",
                *STOP_RULES,
                *more.split(),
            )
        )  # fmt: skip
        for lr, more in zip(lrs, extra or [""] * len(lrs), strict=True)
    ]
    batch = [tmp_path / "batch" / str(number) for number in range(len(lrs))]
    alone = [tmp_path / "alone" / str(number) for number in range(len(lrs))]
    returned = train_batch(experiments, batch, lrs)
    assert returned == [
        train(experiment, run_dir, trial=lr) for experiment, run_dir, lr in zip(experiments, alone, lrs, strict=True)
    ]
    return list(zip(batch, alone, strict=True))


def summary_of(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {key: value for key, value in summary.items() if key not in ("wall_time_s", "steps_per_s", "timings_s")}


@pytest.mark.parametrize("optimizer", list(LEARNING_RATES))
def test_each_member_of_a_batch_equals_its_run_alone(tmp_path, optimizer):
    pairs = run_both(tmp_path, optimizer, "true", LEARNING_RATES[optimizer])
    statuses = set()
    for batch, alone in pairs:
        pd.testing.assert_frame_equal(
            pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )
        assert summary_of(batch) == summary_of(alone)
        assert pd.read_csv(batch / "metrics.csv")["step"].iat[-1] == summary_of(batch)["steps"]
        statuses.add(summary_of(batch)["status"])
    assert len(statuses) >= 2  # the members did not all end alike


def test_members_stop_at_steps_of_their_own(tmp_path):
    # The members differ in their stop rules' thresholds too.
    tolerances = ["stop.loss_tol=0.2", "stop.loss_tol=0.1", "stop.loss_tol=0.05", "", ""]  # patience 20
    pairs = run_both(tmp_path, "sgd", "true", ["0.001", "0.001", "0.001", "0.001", "0.1"], *tolerances)
    ends = [(summary_of(batch)["status"], summary_of(batch)["steps"]) for batch, _ in pairs]
    assert {status for status, _ in ends} == {"completed", "converged", "diverged"}
    assert len({steps for _, steps in ends}) == 3  # diverged at 2, converged at 22, completed at 300
    for batch, alone in pairs:
        pd.testing.assert_frame_equal(
            pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )


@pytest.mark.parametrize("optimizer", ["gd", "adam", "rmsprop"])
def test_a_small_batch_on_the_plain_graph_equals_its_runs_alone(tmp_path, optimizer):
    # Below 8 floats a tensor: TensorFlow's CPU Pow kernel rounds larger tensors unlike small ones (test_multistart).
    for batch, alone in run_both(tmp_path, optimizer, "false", LEARNING_RATES[optimizer][2:5]):
        pd.testing.assert_frame_equal(
            pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )


def test_a_member_resumes_alone_as_its_run_alone_does(tmp_path):
    lrs = ["0.001", "0.01", "0.05"]
    pairs = run_both(tmp_path, "adam", "true", lrs)
    for (batch, alone), lr in zip(pairs, lrs, strict=True):
        longer = to_experiment(compose_config("objective=rosenbrock", "optimizer=adam", f"lr={lr}", "epochs=500",
                                              "jit_compile=true", "log.plots=false", *STOP_RULES))  # fmt: skip
        if summary_of(batch)["status"] != "completed":
            continue
        for run_dir in (batch, alone):
            train(longer, run_dir, resume=True, trial=lr)
        pd.testing.assert_frame_equal(
            pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )
        assert summary_of(batch)["steps"] == summary_of(alone)["steps"] > 300
