"""What a user sees on the console: no TensorFlow start-up notices, errors still shown, short job names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tapelab.cli import configure_process, quiet_flag_as_override
from tapelab.config import job_dir_name
from tapelab.console import outcome, sweep_end_line
from tapelab.sweep import planned_jobs, split_sweep_keys

# Lines TensorFlow 2.21 printed here while it loaded, copied from a real run's console.
NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796288834.645330   30923 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796288834.645689   30923 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796288839.760622   30933 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
]
NO_DRIVER_PROBE = (
    "E0000 00:00:1796288842.155494   30933 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)"
)
REAL_ERROR = "E0000 00:00:1796288842.2   30933 op_kernel.cc:1857] OP_REQUIRES failed at example.cc:12 : oops"


def stderr_through_the_filter(lines: list[str]) -> str:
    """What a fresh Python process's stderr shows of `lines`, written by C-level writes inside the filter,
    and of a Python line printed in between."""
    first, rest = (f"{lines[0]}\n").encode(), "".join(f"{line}\n" for line in lines[1:]).encode()
    code = (
        "import os, sys\n"
        "from tapelab.tensorflow_start import stderr_without_notices\n"
        "with stderr_without_notices():\n"
        f"    os.write(2, {first!r})\n"
        "    print('a Python line', file=sys.stderr)\n"
        f"    os.write(2, {rest!r})\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    return finished.stderr


def test_the_filter_drops_the_start_up_notices_and_passes_errors_and_everything_else():
    shown = stderr_through_the_filter([NOTICES[0], REAL_ERROR, *NOTICES[1:], NO_DRIVER_PROBE, "plain text"])
    assert shown.splitlines() == ["a Python line", REAL_ERROR, "plain text"]


def test_the_cuda_probe_error_is_dropped_only_after_the_missing_driver_notice():
    shown = stderr_through_the_filter(["first", NO_DRIVER_PROBE])
    assert shown.splitlines() == ["first", "a Python line", NO_DRIVER_PROBE]


@pytest.mark.parametrize(("level", "notices_shown"), [("1", False), ("0", True)])
def test_importing_tensorflow_shows_its_notices_only_at_log_level_0(level, notices_shown):
    code = "from tapelab.tensorflow_start import import_tensorflow\nimport_tensorflow().constant(1.0)\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level}
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert ("absl::InitializeLog" in finished.stderr) is notices_shown  # printed whatever the level, unfiltered
    if not notices_shown:
        assert finished.stderr == ""


def test_the_command_line_hides_tensorflows_info_lines_but_not_its_warnings_and_errors(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    configure_process()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # 3 would hide errors, 2 warnings
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    configure_process()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's own level stays


def test_quiet_flags_become_the_job_lines_override():
    assert quiet_flag_as_override(["-m", "-q", "lr=0.1,1"]) == [
        "-m",
        "lr=0.1,1",
        "hydra.callbacks.job_lines.quiet=true",
    ]
    assert quiet_flag_as_override(["--quiet", "epochs=3"]) == ["epochs=3", "hydra.callbacks.job_lines.quiet=true"]
    assert quiet_flag_as_override(["lr=0.1"]) == ["lr=0.1"]


def multirun(task: list[str], sweeper: dict | None = None) -> OmegaConf:
    grid = {"_target_": "hydra_plugins.tapelab_sweeper.grid_sweeper.GridSweeper", "params": None}
    return OmegaConf.create({"hydra": {"overrides": {"task": task}, "sweeper": sweeper or grid}})


def test_swept_and_constant_keys_of_a_grid_and_of_an_optuna_search():
    assert split_sweep_keys(multirun(["lr=0.1,1", "epochs=5", "optimizer=sgd,adam", "seed=range(3)"])) == (
        ["lr", "optimizer", "seed"],
        ["epochs"],
    )
    optuna = {"_target_": "OptunaSweeper", "n_trials": 7, "params": {"lr": "interval(0.001, 1)"}}
    assert split_sweep_keys(multirun(["objective=rosenbrock", "epochs=5"], optuna)) == (
        ["lr"],
        ["objective", "epochs"],
    )


def test_planned_jobs_counts_the_grid_and_the_optuna_trials():
    assert planned_jobs(multirun(["lr=0.1,1,10", "epochs=5", "optimizer=sgd,adam", "seed=range(2)"])) == 12
    assert planned_jobs(multirun(["lr=0.1"])) == 1
    optuna = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 7}
    assert planned_jobs(multirun(["epochs=5"], optuna)) == 7
    assert planned_jobs(multirun(["lr=0.1,1"], {"_target_": "somebody.ElsesSweeper"})) is None


def test_a_job_directory_is_its_swept_values_and_number_or_the_number_alone():
    assert job_dir_name("lr=0.1,optimizer=adam", 3) == "lr=0.1,optimizer=adam_3"
    assert job_dir_name("", 0) == "0"


def test_the_sweep_s_last_line_counts_its_jobs_statuses_in_words():
    statuses = ["diverged", "completed", "running", "diverged", "failed", "completed", "incomplete", "converged"]
    assert sweep_end_line(statuses, Path("outputs/multirun/x/sweep.csv")) == (
        "sweep of 8 jobs: 2 completed, 1 converged, 2 diverged, 1 failed, 1 incomplete, 1 running; "
        "outputs/multirun/x/sweep.csv"
    )
    assert sweep_end_line(["completed"], Path("sweep.csv")) == "sweep of 1 job: 1 completed; sweep.csv"


def test_a_run_s_outcome_counts_its_steps_in_words():
    one = {"status": "diverged", "steps": 1, "wall_time_s": 0.5, "final_loss": 2.0}
    assert outcome(one) == "diverged after 1 step in 0.50 s: final loss 2.0"
    assert outcome({**one, "steps": 0}) == "diverged after 0 steps in 0.50 s: final loss 2.0"


def test_a_batched_job_s_outcome_says_it_ran_in_a_batch_of_more_than_one():
    job = {"status": "completed", "steps": 5, "wall_time_s": 0.25, "final_loss": 1.0, "batch": {"group": 0, "size": 3}}
    assert outcome(job) == "completed after 5 steps in 0.25 s (in a batch of 3): final loss 1.0"
    assert outcome({**job, "batch": {"group": 0, "size": 1}}) == "completed after 5 steps in 0.25 s: final loss 1.0"
