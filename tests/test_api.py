"""The Python API: `tapelab.run` trains in-process as the command line does; `load` reads a run back."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import initialize_config_dir

import tapelab
from conftest import CONF_DIR, ROOT
from tapelab.interrupts import Interrupted
from test_cli import ONE_LINE_MISTAKES

SEED_000 = ["objective.a=1", "objective.b=1", "objective.c=-1", "objective.init=3", "optimizer=gd", "lr=0.1"]


def test_two_runs_in_one_process_write_what_the_command_line_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = tapelab.run()  # seed 002: SGD on x² − 2x + 1 from 0
    descent = tapelab.run(*SEED_000, "epochs=29", run_dir=tmp_path / "seed000")

    assert default.dir.parent.parent == tmp_path / "outputs"  # outputs/<date>/<time>/, as `python run.py`
    assert default.summary["params"] == {"x": 0.99999857}
    assert "x=0.99999857" in (default.dir / "tapelab.log").read_text()
    assert sorted(path.name for path in (default.dir / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    # Gradient descent on x² + x − 1 at lr 0.1: x_t = −0.5 + 3.5·0.8^t.
    assert descent.dir == tmp_path / "seed000"
    np.testing.assert_allclose(descent.history["x"], -0.5 + 3.5 * 0.8 ** np.arange(30), rtol=1e-6)
    assert descent.summary["status"] == "completed" and descent.summary["steps"] == 29


def test_load_reads_a_finished_run_and_plot_draws_its_loss(tmp_path):
    made = tapelab.run("epochs=50", "log.plots=false", run_dir=tmp_path / "run")
    loaded = tapelab.load(tmp_path / "run")
    assert loaded.dir == made.dir == tmp_path / "run"
    assert loaded.summary == json.loads((tmp_path / "run" / "summary.json").read_text())
    pd.testing.assert_frame_equal(loaded.history, pd.read_csv(tmp_path / "run" / "metrics.csv"), check_exact=True)
    # What it holds: SGD at lr 0.01 on (x − 1)² from 0, x_t = 1 − 0.98^t, and the loss (x − 1)² = 0.98^(2t).
    np.testing.assert_allclose(loaded.history["x"], 1 - 0.98 ** np.arange(51), rtol=1e-6)
    assert (loaded.summary["status"], loaded.summary["steps"], loaded.summary["lr"]) == ("completed", 50, 0.01)
    assert loaded.summary["final_loss"] == pytest.approx(0.98**100, rel=1e-4)
    (line,) = loaded.plot().axes[0].get_lines()
    assert np.array_equal(line.get_ydata(), loaded.history["loss"])
    with pytest.raises(FileNotFoundError, match="holds no run"):
        tapelab.load(tmp_path)


def test_plot_of_a_diverged_run_says_where_it_diverged(tmp_path):
    # SGD at lr 0.01 from Rosenbrock's (-1.2, 1): the iterates reach 2.5e8 by step 4 and overflow at step 5.
    diverged = tapelab.run("objective=rosenbrock", "epochs=50", "log.plots=false", run_dir=tmp_path / "run")
    assert (diverged.summary["status"], diverged.summary["steps"]) == ("diverged", 4)
    assert diverged.plot().axes[0].get_title() == "rosenbrock · sgd · lr 0.01 — run, diverged at step 4"


@pytest.mark.parametrize("override", list(ONE_LINE_MISTAKES))
def test_a_config_mistake_raises_config_error_with_the_command_lines_line(tmp_path, override):
    with pytest.raises(tapelab.ConfigError) as raised:
        tapelab.run(override, run_dir=tmp_path / "run")
    assert str(raised.value) == ONE_LINE_MISTAKES[override]  # test_cli.py: the command line's whole line
    assert list(tmp_path.iterdir()) == []  # the run directory was not made


REFUSED = [
    (["lr=-1"], "lr: must be a finite number > 0"),
    (["objective=booth", "objective.init=[1]"], "objective.init: needs exactly 2 values, got 1"),
    (["objective.starts=3"], "objective.domain: objective.starts > 1 needs a search box"),
    (
        ["objective=himmelblau", "objective.starts=3", "optimizer=newton"],
        "objective.starts: needs an elementwise optimizer",
    ),
    (
        ["objective=sum_of_squares", "objective.init=[" + ",".join(["1.0"] * 101) + "]", "optimizer=newton"],
        "optimizer.max_params: the objective has 101 trainable elements",
    ),
    (["optimizer.momentum=2"], "optimizer.momentum: must be a float between 0 and 1"),
    (
        ["objective=python", "objective.function=user_objectives.vector_loss", "objective.init={w: [1.0, 2.0]}"],
        "objective.function: user_objectives.vector_loss must return a floating-point scalar loss",
    ),
    (["+epoch=10"], "epoch: not a key of the config"),
]


def test_a_refused_run_writes_nothing_and_the_next_run_gets_the_name_it_would_have_had(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for overrides, message in REFUSED:
        with pytest.raises(tapelab.ConfigError, match=re.escape(message)):
            tapelab.run(*overrides)
        assert list(tmp_path.iterdir()) == [], overrides
    yearly = "hydra.run.dir=outputs/${now:%Y}"  # named after the time, like the default, but the same all year
    with pytest.raises(tapelab.ConfigError):
        tapelab.run("lr=-1", yearly)
    assert list(tmp_path.iterdir()) == []
    run = tapelab.run("epochs=2", "log.plots=false", yearly)
    assert run.dir == tmp_path / "outputs" / time.strftime("%Y")  # not `<year>_1`


TOP_LEVEL_KEYS = "objective, optimizer, lr, epochs, seed, jit_compile, dtype, resume, stop, log, study"


def test_plus_adds_a_key_only_where_the_config_is_open_to_new_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused = {
        "+epoch=10": f"epoch: not a key of the config (did you mean epochs?); the top level has {TOP_LEVEL_KEYS}",
        "++epoch=10": f"epoch: not a key of the config (did you mean epochs?); the top level has {TOP_LEVEL_KEYS}",
        "+objective.nope=1": "objective.nope: not a key of the config; objective has starts, domain, a, b, c, init",
        "+optimizer.nesterof=true": "optimizer.nesterof: not a key of the config (did you mean nesterov?); optimizer "
        "has weight_decay, clipnorm, clipvalue, global_clipnorm, momentum, nesterov",
        "+log.plot=false": "log.plot: not a key of the config (did you mean plots?); log has every, max_rows, "
        "tensorboard, graph, plots",
        "+stop.patient=3": "stop.patient: not a key of the config (did you mean patience?); stop has grad_tol, "
        "loss_tol, patience",
    }
    for override, line in refused.items():
        with pytest.raises(tapelab.ConfigError) as raised:
            tapelab.run(override, "epochs=2")
        assert str(raised.value) == line
    assert list(tmp_path.iterdir()) == []

    # Open on purpose: an expression's and a Python objective's init, Hydra's own keys, a user's config group.
    # One SGD step at lr 0.01: on 4w + w³ from w = 2, w − 0.01·(4 + 3w²) = 1.84; on Σ (wᵢ − tᵢ)² from 0, 0.02·t.
    expression = tapelab.run("objective=expression", "+objective.init.w=2", "+hydra.job.env_set.TAPELAB_K=1",
                             "epochs=1", "log.plots=false")  # fmt: skip
    np.testing.assert_allclose(expression.history["w"], [2.0, 1.84], rtol=1e-6)
    python = tapelab.run("objective=python", "objective.function=user_objectives.shifted_bowl",
                         "+objective.init.w=[0.0, 0.0]", "epochs=1", "log.plots=false")  # fmt: skip
    np.testing.assert_allclose(python.history[["w[0]", "w[1]"]].iloc[-1], [0.02, -0.04], rtol=1e-6)
    (tmp_path / "configs" / "speed").mkdir(parents=True)
    (tmp_path / "configs" / "speed" / "fast.yaml").write_text("# @package _global_\nlr: 0.1\n")
    fast = tapelab.run(f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "+speed=fast", "epochs=3",
                       "log.plots=false")  # fmt: skip
    np.testing.assert_allclose(fast.history["x"], 1 - 0.8 ** np.arange(4), rtol=1e-6)  # (x − 1)² at lr 0.1


def test_a_directory_that_holds_a_run_is_refused_and_left_as_it_was(tmp_path):
    tapelab.run("epochs=5", "log.plots=false", run_dir=tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(tapelab.ConfigError, match="hydra.run.dir: .* already holds a run"):
        tapelab.run("epochs=5", run_dir=tmp_path)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(
    ("first", "again", "message"),
    [
        (["epochs=20"], ["lr=0.5"], "resume: continues .* only epochs can change; remove lr=0.5"),
        (["epochs=20"], ["epochs=10"], "epochs: must be more than the 20 steps"),
        (["epochs=100", "lr=10"], ["epochs=200"], "resume: the run in .* diverged at step 15"),
    ],
    ids=["changed-key", "fewer-epochs", "diverged"],
)
def test_a_refused_resume_writes_nothing_into_the_run(tmp_path, first, again, message):
    tapelab.run(*first, "log.plots=false", run_dir=tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(tapelab.ConfigError, match=message):
        tapelab.run("resume=true", *again, run_dir=tmp_path)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in (tmp_path / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]


def test_a_resume_of_a_directory_that_holds_no_run_is_refused_and_creates_nothing(tmp_path):
    missing = tmp_path / "outputs" / "typo"
    with pytest.raises(tapelab.ConfigError, match=r"resume: .*typo holds no checkpoint of a run to continue"):
        tapelab.run("resume=true", "epochs=10", run_dir=missing)
    assert list(tmp_path.iterdir()) == []


def test_a_resume_whose_config_does_not_compose_is_refused_and_writes_nothing(tmp_path):
    user_dir = tmp_path / "configs"
    shutil.copytree(ROOT / "tests" / "user_configs", user_dir)
    run_dir = tmp_path / "run"
    tapelab.run(f"hydra.searchpath=[file://{user_dir}]", "objective=my_quad", "epochs=5", run_dir=run_dir)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    with pytest.raises(tapelab.ConfigError, match=r"resume: the saved config of .* does not compose: objective: no "
                       r"option 'my_quad'.*give the same --config-dir"):  # fmt: skip
        tapelab.run("resume=true", "epochs=10", run_dir=run_dir)
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
    resumed = tapelab.run(f"hydra.searchpath=[file://{user_dir}]", "resume=true", "epochs=10", run_dir=run_dir)
    np.testing.assert_allclose(resumed.history["x"], 3 * (1 - 0.98 ** np.arange(11)), rtol=1e-6)


@pytest.mark.e2e
def test_a_refused_resume_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    tapelab.run("epochs=20", "log.plots=false", run_dir=tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    finished = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "resume=true", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 2
    assert finished.stderr.strip() == (
        f"Error in config: epochs: the run in {tmp_path} completed its 20 steps; continue it with epochs=N > 20"
    )
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_sweeps_are_refused_and_runs_from_two_threads_take_turns(tmp_path):
    with pytest.raises(tapelab.ConfigError, match="hydra.mode: tapelab.run trains one run; sweeps run from"):
        tapelab.run("hydra.mode=MULTIRUN", "lr=0.1,0.2")
    with pytest.raises(tapelab.ConfigError, match="-m: is a command-line flag; tapelab.run takes KEY=VALUE"):
        tapelab.run("-m", "lr=0.1,0.2")
    runs: dict[int, tapelab.Run] = {}

    def train(lr: float, number: int) -> None:
        runs[number] = tapelab.run(f"lr={lr}", "epochs=30", "log.plots=false", run_dir=tmp_path / f"run{number}")

    threads = [threading.Thread(target=train, args=(lr, number)) for number, lr in enumerate((0.1, 0.2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, lr in enumerate((0.1, 0.2)):  # SGD on (x − 1)² from 0: x_t = 1 − (1 − 2·lr)^t
        assert runs[number].dir == tmp_path / f"run{number}"
        np.testing.assert_allclose(runs[number].history["x"], 1 - (1 - 2 * lr) ** np.arange(31), rtol=1e-5)


def test_a_callers_hydra_stays_initialized_and_user_configs_come_from_the_search_path(tmp_path):
    user_dir = tmp_path / "configs"
    shutil.copytree(ROOT / "tests" / "user_configs", user_dir)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run = tapelab.run(f"hydra.searchpath=[file://{user_dir}]", "objective=my_quad", "epochs=10",
                          run_dir=tmp_path / "run")  # fmt: skip
        from hydra.core.global_hydra import GlobalHydra

        assert GlobalHydra.instance().is_initialized()
    # SGD at lr 0.01 on (x − 3)² from 0: x_t = 3·(1 − 0.98^t).
    np.testing.assert_allclose(run.history["x"], 3 * (1 - 0.98 ** np.arange(11)), rtol=1e-6)


SIDE_EFFECTS = """
import logging, os, sys, warnings
import matplotlib

def snapshot():
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    return {
        "environ": dict(os.environ),
        "loggers": {logger.name: (logger.level, list(logger.filters), list(logger.handlers)) for logger in loggers},
        "warnings": list(warnings.filters),
        "backend": dict.__getitem__(matplotlib.rcParams, "backend"),
    }

before = snapshot()
import tapelab, tapelab.api, tapelab.cli
after = snapshot()
assert after["environ"] == before["environ"], set(after["environ"].items()) ^ set(before["environ"].items())
for name, state in before["loggers"].items():
    assert after["loggers"][name] == state, name
assert not any(filters for _, filters, _ in after["loggers"].values()), after["loggers"]
assert after["warnings"] == before["warnings"]
assert after["backend"] == before["backend"]
assert "tensorflow" not in sys.modules

tapelab.run("epochs=3", "jit_compile=true", run_dir=sys.argv[1])  # XLA and pictures too
assert "tensorflow" in sys.modules
assert os.environ.get("XLA_FLAGS") == before["environ"].get("XLA_FLAGS")
tapelab_filters = [type(f).__module__ for logger in logging.Logger.manager.loggerDict.values()
                   if isinstance(logger, logging.Logger) for f in logger.filters if "tapelab" in type(f).__module__]
assert not tapelab_filters, tapelab_filters
assert logging.getLogger("tapelab").level == logging.NOTSET
assert dict.__getitem__(matplotlib.rcParams, "backend") == before["backend"]
print("unchanged")
"""


@pytest.mark.e2e
def test_import_changes_nothing_in_the_process_and_a_run_restores_what_it_set(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
    finished = subprocess.run(
        [sys.executable, "-c", SIDE_EFFECTS, str(tmp_path / "run")], capture_output=True, text=True, env=env
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.strip() == "unchanged"
    assert (tmp_path / "run" / "loss.png").exists() and json.loads((tmp_path / "run" / "summary.json").read_text())[
        "xla"
    ]


def test_resume_through_the_api_continues_a_run_to_the_bit(tmp_path):
    tapelab.run("epochs=20", "log.plots=false", run_dir=tmp_path / "split")
    split = tapelab.run("resume=true", "epochs=40", run_dir=tmp_path / "split")
    whole = tapelab.run("epochs=40", "log.plots=false", run_dir=tmp_path / "whole")
    pd.testing.assert_frame_equal(split.history, whole.history, check_exact=True)
    assert (tmp_path / "split" / ".hydra" / "resumed_at_20" / "overrides.yaml").exists()


# Plain graph, every row kept: about 0.1 ms a step, so 20,000 steps leave time to interrupt.
SLOW = ["objective=linear_regression", "objective.n_points=2000", "log.plots=false", "log.max_rows=null",
        "jit_compile=false"]  # fmt: skip


def interrupt_once_past(run_dir: Path, step: int) -> None:
    """Send this process SIGINT once the run in `run_dir` has saved a checkpoint beyond `step`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        checkpoints = [int(path.stem.split("-")[1]) for path in (run_dir / "checkpoint").glob("ckpt-*.index")]
        summary = run_dir / "summary.json"
        if checkpoints and max(checkpoints) > step and json.loads(summary.read_text())["status"] == "running":
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.005)


@pytest.mark.timeout(300)  # a signal test: a lost SIGINT would hang it
def test_a_run_extended_and_interrupted_again_continues_to_its_extended_epochs(tmp_path, capfd):
    run_dir = tmp_path / "run"
    tapelab.run(*SLOW, "epochs=100", run_dir=run_dir)
    interrupter = threading.Thread(target=interrupt_once_past, args=(run_dir, 100))
    interrupter.start()
    with pytest.raises(Interrupted, match="interrupted by SIGINT"):
        tapelab.run("resume=true", "epochs=20000", run_dir=run_dir)
    interrupter.join()
    assert "Error executing job" not in capfd.readouterr().err  # Hydra's report of a failed job stays out
    interrupted = tapelab.load(run_dir).summary
    assert interrupted["status"] == "interrupted" and 100 < interrupted["steps"] < 20000

    resumed = tapelab.run("resume=true", run_dir=run_dir)  # no epochs: those of its last launch
    assert (resumed.summary["status"], resumed.summary["steps"]) == ("completed", 20000)
    straight = tapelab.run(*SLOW, "epochs=20000", run_dir=tmp_path / "straight")
    pd.testing.assert_frame_equal(resumed.history, straight.history, check_exact=True)


def test_an_environment_variable_that_names_the_run_s_directory_passes_the_checks_made_before_it_exists(tmp_path):
    run = tapelab.run("epochs=5", "log.plots=false", "+hydra.job.env_set.RUN_DIR=${hydra:runtime.output_dir}",
                      run_dir=tmp_path / "run")  # fmt: skip
    assert run.summary["status"] == "completed"
    assert "RUN_DIR: ${hydra:runtime.output_dir}" in (tmp_path / "run" / ".hydra" / "hydra.yaml").read_text()
