"""One traced loop per structure and process: every run that reuses another run's loop equals the same run alone.

A stale optimizer slot, iteration count, step, best loss or stop-rule counter would silently change every
later job of a sweep. Here, for every optimizer, this process runs jobs of one loop structure one after
another, as a sweep does: first one that diverges (with other start values, learning rate and optimizer
values), then one that stops halfway and is resumed, then the same job again straight. Each is compared,
bit for bit, with the same job run alone by `python run.py` in a fresh process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import CONF_DIR, ROOT, compose_config, resume_in, run_in
from test_stop_rules import GD_ON_SQUARE, first_step_without_progress

OPTIMIZERS = sorted(path.stem for path in (CONF_DIR / "optimizer").glob("*.yaml"))
EPOCHS = 40
COMMON = ["objective=rosenbrock", "log.plots=false", "log.tensorboard=false"]
NORMAL_LR = {"newton": "0.5", "adadelta": "1.0"}  # others: 0.0001, which every optimizer survives on Rosenbrock
DIVERGING = ["lr=1e30", "objective.init=[0.5,-0.5]"]  # a huge first step overflows x⁴ for every optimizer


def normal_job(optimizer: str) -> list[str]:
    return [*COMMON, f"optimizer={optimizer}", f"lr={NORMAL_LR.get(optimizer, '0.0001')}", f"epochs={EPOCHS}"]


def diverging_job(optimizer: str) -> list[str]:
    """Same structure as `normal_job`, other values: the start, the learning rate and the optimizer's inputs."""
    schema = OmegaConf.to_object(compose_config(f"optimizer={optimizer}").optimizer)
    halved = [
        f"optimizer.{key}={value * 0.5}"
        for key, value in schema.hyperparameters().items()
        if key in schema.inputs and isinstance(value, float)
    ]
    return [*COMMON, f"optimizer={optimizer}", *DIVERGING, *halved, f"epochs={EPOCHS}"]


def alone(run_dir: Path, overrides: list[str]) -> Path:
    """`python run.py OVERRIDES` in a fresh process: the reference."""
    command = [sys.executable, str(ROOT / "run.py"), *overrides, f"hydra.run.dir={run_dir}"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every optimizer's diverging and normal job, each alone in a fresh process (two at a time)."""
    root = tmp_path_factory.mktemp("alone")
    jobs = {(name, kind): make(name) for name in OPTIMIZERS for kind, make in
            (("diverging", diverging_job), ("normal", normal_job))}  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = {key: pool.submit(alone, root / f"{key[0]}-{key[1]}", overrides) for key, overrides in jobs.items()}
    return {key: future.result() for key, future in done.items()}


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """metrics.csv equal to the bit, and the same status, steps and losses."""
    pd.testing.assert_frame_equal(
        pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(reference / "metrics.csv"), check_exact=True
    )
    ours, theirs = (json.loads((path / "summary.json").read_text()) for path in (run_dir, reference))
    for key in ("status", "steps", "final_loss", "best_loss", "params", "xla"):
        assert ours[key] == theirs[key], key


@pytest.mark.e2e
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_later_jobs_of_a_loop_equal_the_same_jobs_alone(tmp_path, references, optimizer):
    diverged, resumed, straight = tmp_path / "diverged", tmp_path / "resumed", tmp_path / "straight"
    assert run_in(diverged, *diverging_job(optimizer))["status"] == "diverged"
    assert_same_run(diverged, references[optimizer, "diverging"])

    halfway = [override for override in normal_job(optimizer) if not override.startswith("epochs=")]
    run_in(resumed, *halfway, f"epochs={EPOCHS // 2}")
    resume_in(resumed, f"epochs={EPOCHS}")
    run_in(straight, *normal_job(optimizer))
    for run_dir in (resumed, straight):
        assert_same_run(run_dir, references[optimizer, "normal"])
    assert pd.read_csv(straight / "metrics.csv")["step"].tolist() == list(range(EPOCHS + 1))


def test_a_run_with_other_values_reuses_the_traced_loop_and_one_with_another_structure_does_not(train):
    train("objective=booth", "optimizer=adam", "lr=0.1", "epochs=5")
    again = train("objective=booth", "optimizer=adam", "lr=0.3", "objective.init=[2,2]", "optimizer.beta_1=0.5")
    assert again.summary["timings_s"]["trace"] == 0.0 and again.summary["timings_s"]["compile"] == 0.0
    other = train("objective=booth", "optimizer=adam", "optimizer.amsgrad=true", "epochs=5")  # Keras tests it in Python
    assert other.summary["timings_s"]["trace"] > 0.0


def test_the_stop_rules_counters_start_afresh_in_every_run(train):
    plateau = ["objective=rosenbrock", "optimizer=adam", "stop.loss_tol=1e-4", "stop.patience=20"]
    earlier = train(*plateau, "lr=0.1")
    later = train(*plateau, "lr=0.01")
    assert earlier.summary["status"] == later.summary["status"] == "converged"
    losses = later.metrics["loss"].to_numpy(np.float32)
    assert later.summary["steps"] == first_step_without_progress(losses, np.float32(1e-4), patience=20)

    train(*GD_ON_SQUARE, "lr=0.3", "stop.grad_tol=0.01")  # converges at another step, with another best loss
    result = train(*GD_ON_SQUARE, "stop.grad_tol=0.01")
    assert result.summary["steps"] == math.ceil(math.log(0.01 / 2) / math.log(0.8))
    assert result.summary["best_loss"] == result.metrics["loss"].min()
