"""End to end: Ctrl-C and SIGTERM stop a run cleanly, `resume=true` continues it, a re-launched sweep goes on."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

# About 0.5 ms a step (a mean over 10,000 points): a thousand steps take long enough to interrupt.
SLOW_RUN = ["objective=linear_regression", "objective.n_points=10000", "log.plots=false"]
ADAM = ["optimizer=adam", "lr=0.05"]  # Adam's moments must survive the checkpoint


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def interrupt_after_first_checkpoint(process: subprocess.Popen, run_dir: Path, signal_number: int) -> float:
    """Send `signal_number` once `run_dir` holds a complete checkpoint (TensorFlow writes the `checkpoint` file
    that names it last); return the seconds until the process exited.

    `run_dir` may be a glob pattern of job directories below a sweep directory.
    """
    deadline = time.monotonic() + 120
    while not list(run_dir.parent.glob(f"{run_dir.name}/checkpoint/checkpoint")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signal_number)
    process.wait(timeout=60)
    return time.monotonic() - sent


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize(("signal_number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_within_seconds_and_keeps_everything(tmp_path, signal_number, exit_code):
    process = start(*SLOW_RUN, *ADAM, "epochs=1000000", f"hydra.run.dir={tmp_path}")
    waited = interrupt_after_first_checkpoint(process, tmp_path, signal_number)
    stdout, stderr = process.communicate()
    assert process.returncode == exit_code and "Traceback" not in stderr
    # The line of a single run, which says nothing of sweeps.
    line = f"interrupted by {signal.Signals(signal_number).name} after \\d+ steps; continue with resume=true "
    assert re.search(line + re.escape(f"hydra.run.dir={tmp_path}") + "$", stdout, re.MULTILINE), stdout
    assert waited < 20  # a guard against a hang, not a timing: on an idle machine the answer takes about a second
    summary = summary_of(tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert summary["status"] == "interrupted" and 0 < summary["steps"] < 1000000
    assert summary["log_every"] == 100  # log.max_rows=10000 over 10^6 steps
    assert metrics["step"].tolist() == list(range(0, summary["steps"], 100))  # every row before the stop, once
    assert (tmp_path / "checkpoint" / f"ckpt-{summary['steps']}.index").exists()


@pytest.mark.parametrize("first_save_complete", [True, False])
def test_resume_continues_a_killed_run_to_the_history_of_an_uninterrupted_one(tmp_path, first_save_complete):
    # SIGKILL gives no chance to save: the last chunk's checkpoint and `running` summary must be enough.
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = start(*SLOW_RUN, *ADAM, "epochs=8000", "log.every=10", f"hydra.run.dir={killed}")
    interrupt_after_first_checkpoint(process, killed, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL and summary_of(killed)["status"] == "running"
    if not first_save_complete:  # killed after the checkpoint's files and before the file that names them
        (killed / "checkpoint" / "checkpoint").unlink(missing_ok=True)
    saved_config = (killed / ".hydra" / "config.yaml").read_bytes()

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "resume=true", f"hydra.run.dir={killed}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    subprocess.run([sys.executable, str(ROOT / "run.py"), *SLOW_RUN, *ADAM, "epochs=8000", "log.every=10",
                    f"hydra.run.dir={whole}"], check=True, capture_output=True, timeout=300)  # fmt: skip

    pd.testing.assert_frame_equal(
        pd.read_csv(killed / "metrics.csv"), pd.read_csv(whole / "metrics.csv"), check_exact=True
    )  # to the bit
    assert summary_of(killed)["status"] == "completed" and summary_of(killed)["steps"] == 8000
    assert (killed / ".hydra" / "config.yaml").read_bytes() == saved_config  # the original stays
    assert list((killed / ".hydra").glob("resumed_at_*/overrides.yaml"))


def test_a_relaunched_sweep_skips_finished_jobs_and_continues_the_interrupted_one(tmp_path):
    sweep = ["-m", *SLOW_RUN, "optimizer=gd", "lr=10,0.05,0.02", "epochs=8000", "log.every=100"]
    sweep.append(f"hydra.sweep.dir={tmp_path}")
    process = start(*sweep)
    interrupt_after_first_checkpoint(process, tmp_path / "*lr=0.05*_1", signal.SIGINT)  # job 0 diverges at once
    assert process.returncode == 130
    (diverged,), (interrupted,) = tmp_path.glob("*lr=10*_0"), tmp_path.glob("*lr=0.05*_1")
    assert summary_of(diverged)["status"] == "diverged" and summary_of(interrupted)["status"] == "interrupted"
    untouched = {path: path.stat().st_mtime_ns for path in diverged.rglob("*") if path.is_file()}

    relaunched = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *sweep], capture_output=True, text=True, timeout=600
    )
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    # The finished job's files are as they were; the first job's directory also gets the sweep's HParams
    # experiment when the re-launch writes the report the interrupted launch didn't.
    experiment = diverged / "events.out.tfevents.experiment"
    assert {path: path.stat().st_mtime_ns for path in diverged.rglob("*") if path.is_file() and path != experiment} == (
        untouched
    )
    assert experiment.is_file()
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table["status"].tolist() == ["diverged", "completed", "completed"]
    assert pd.read_csv(interrupted / "metrics.csv")["step"].tolist() == list(range(0, 8001, 100))

    # Each job equals the same job alone in a fresh process, although in the sweep's processes it reused the
    # loop of a diverged job (the first launch) or of an interrupted and resumed one (the re-launch).
    for job_dir, lr in ((diverged, "10"), (interrupted, "0.05"), (next(tmp_path.glob("*lr=0.02*_2")), "0.02")):
        alone = tmp_path.parent / f"alone_{lr}"
        single = [override for override in sweep[1:] if not override.startswith(("lr=", "hydra.sweep.dir="))]
        subprocess.run([sys.executable, str(ROOT / "run.py"), *single, f"lr={lr}", f"hydra.run.dir={alone}"],
                       check=True, capture_output=True, timeout=300)  # fmt: skip
        pd.testing.assert_frame_equal(
            pd.read_csv(job_dir / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )
        assert summary_of(job_dir)["final_loss"] == summary_of(alone)["final_loss"]
