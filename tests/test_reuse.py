"""One traced loop per structure and process: every run that reuses another run's loop equals the same run alone.

A stale optimizer slot, iteration count, step, best loss or stop-rule counter would silently change every
later job of a sweep. Here, for every optimizer, this process runs jobs of one loop structure one after
another, as a sweep does: first one that diverges (with other start values, learning rate and optimizer
values), then one that stops halfway and is resumed, then the same job again straight. The first traces and
compiles the loop, the later ones trace and compile nothing, and each is compared, bit for bit, with the same
job traced afresh: the first loop of its structure in a fresh process. Two fresh processes hold those
references, one for the diverging jobs and one for the normal ones; the optimizers' loops differ, so every
job there is the first of its structure, which its trace time shows.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose_config, no_idle_trainers, resume_in, run_in
from fresh_process import FreshProcess
from tapelab.runs import train_config
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


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Every optimizer's diverging and normal job, each traced afresh in one of two fresh processes (one per kind:
    a diverging and a normal job of one optimizer share a loop), started now and collected when a test needs them."""
    root = tmp_path_factory.mktemp("alone")
    processes = {
        kind: FreshProcess(root / kind, {name: make(name) for name in OPTIMIZERS})
        for kind, make in (("normal", normal_job), ("diverging", diverging_job))  # the second composes 13 configs first
    }
    yield processes
    for process in processes.values():
        process.stop()


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    """An empty pool of traced loops for this test (the process's own comes back after it)."""
    with no_idle_trainers():
        yield


def traced_and_compiled(run_dir: Path) -> tuple[float, float]:
    """The seconds the run (all its sessions) spent tracing and compiling its loop: 0 for a reused loop."""
    timings = json.loads((run_dir / "summary.json").read_text())["timings_s"]
    return timings["trace"], timings["compile"]


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
def test_later_jobs_of_a_loop_reuse_it_and_equal_the_same_jobs_alone(tmp_path, references, fresh_pool, optimizer):
    diverged, resumed, straight = tmp_path / "diverged", tmp_path / "resumed", tmp_path / "straight"
    assert run_in(diverged, *diverging_job(optimizer))["status"] == "diverged"
    trace, compile_ = traced_and_compiled(diverged)
    assert trace > 0 and compile_ > 0  # the first job of the structure

    halfway = [override for override in normal_job(optimizer) if not override.startswith("epochs=")]
    run_in(resumed, *halfway, f"epochs={EPOCHS // 2}")
    assert traced_and_compiled(resumed) == (0, 0)
    resume_in(resumed, f"epochs={EPOCHS}")
    run_in(straight, *normal_job(optimizer))
    assert traced_and_compiled(resumed) == traced_and_compiled(straight) == (0, 0)  # resumed: both its sessions

    assert_same_run(diverged, references["diverging"].runs()[optimizer])
    for run_dir in (resumed, straight):
        assert_same_run(run_dir, references["normal"].runs()[optimizer])
    assert pd.read_csv(straight / "metrics.csv")["step"].tolist() == list(range(EPOCHS + 1))


def test_a_run_with_other_values_reuses_the_traced_loop_and_one_with_another_structure_does_not(train, fresh_pool):
    assert train("objective=booth", "optimizer=adam", "lr=0.1", "epochs=5").summary["timings_s"]["trace"] > 0.0
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


def test_a_process_keeps_the_loops_of_its_16_most_recently_used_structures(tmp_path):
    # 17 structures, each formula a loop of its own (an expression's formula is its structure) that no other test
    # uses. Composed once, each run gets its formula set in a copy of the config: the runs cost their trace only.
    config = compose_config("objective=expression", "optimizer=gd", "epochs=1", "jit_compile=false",
                            "log.tensorboard=false", "log.plots=false")  # fmt: skip
    runs = 0

    def traced(k: int) -> float:
        nonlocal runs
        runs += 1
        formula = copy.deepcopy(config)
        formula.objective.expr = f"x**2 - {k}.125*x"
        train_config(formula, tmp_path / str(runs))
        return json.loads((tmp_path / str(runs) / "summary.json").read_text())["timings_s"]["trace"]

    assert all(traced(k) > 0 for k in range(17))
    assert traced(1) == 0  # the 16th most recently used is kept
    assert traced(0) > 0  # the 17th was dropped: it traces again
