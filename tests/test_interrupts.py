"""End to end: Ctrl-C and SIGTERM stop a run cleanly, a second Ctrl-C at once, `resume=true` continues a run, a
re-launched sweep goes on; a progress bar shows on a terminal only.

The runs that these tests stop are compared with the same jobs run straight through, each traced afresh as the
first loop of its structure in a fresh process (three processes, started in the background when first needed).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from fresh_process import FreshProcess
from tapelab.record import RunRecord

pytestmark = pytest.mark.e2e

# About 0.5 ms a step (a mean over 10,000 points): a thousand steps take long enough to interrupt.
SLOW_RUN = ["objective=linear_regression", "objective.n_points=10000", "log.plots=false"]
ADAM = ["optimizer=adam", "lr=0.05"]  # Adam's moments must survive the checkpoint
KILLED_RUN = [*SLOW_RUN, *ADAM, "epochs=8000", "log.every=10"]
SWEEP_JOB = [*SLOW_RUN, "optimizer=gd", "epochs=8000", "log.every=100"]  # swept over lr
SWEEP_LRS = ("10", "0.05", "0.02")
PROGRESS_BAR = re.compile(r"\d+%\|.*\|.*step/s")  # tqdm's: "  3%|▎         | 31.0k/1.00M [00:04<02:13, 7.27kstep/s]"


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The killed run and each job of the re-launched sweep, run straight through. The sweep's jobs share one loop
    structure, so each has a fresh process of its own; the first shares its process with the killed run (Adam: a
    loop of its own). Returns each job's process by name (the killed run's: "killed", a sweep job's: its lr)."""
    root = tmp_path_factory.mktemp("alone")
    sweep_jobs = {lr: [*SWEEP_JOB, f"lr={lr}"] for lr in SWEEP_LRS}
    first, *others = SWEEP_LRS
    processes = [FreshProcess(root / "0", {"killed": KILLED_RUN, first: sweep_jobs[first]})]
    processes += [FreshProcess(root / str(i), {lr: sweep_jobs[lr]}) for i, lr in enumerate(others, 1)]
    yield {name: process for process in processes for name in process.dirs}
    for process in processes:
        process.stop()


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def interrupt_after_first_checkpoint(
    process: subprocess.Popen, run_dir: Path, signal_number: int, later: float = 0
) -> float:
    """Send `signal_number` `later` seconds after `run_dir` holds a complete checkpoint (TensorFlow writes the
    `checkpoint` file that names it last); return the seconds until the process exited.

    `run_dir` may be a glob pattern of job directories below a sweep directory.
    """
    deadline = time.monotonic() + 120
    while not list(run_dir.parent.glob(f"{run_dir.name}/checkpoint/checkpoint")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.05)
    time.sleep(later)
    sent = time.monotonic()
    process.send_signal(signal_number)
    process.wait(timeout=60)
    return time.monotonic() - sent


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("signal_number", "exit_code", "trained_for"),
    [  # SIGTERM after 4 s: long enough for a progress bar on a terminal
        pytest.param(signal.SIGINT, 130, 0, id="SIGINT"),
        pytest.param(signal.SIGTERM, 143, 4, id="SIGTERM after 4 s"),
    ],
)
def test_a_signal_stops_the_run_within_seconds_and_keeps_everything(tmp_path, signal_number, exit_code, trained_for):
    process = start(*SLOW_RUN, *ADAM, "epochs=1000000", f"hydra.run.dir={tmp_path}")
    waited = interrupt_after_first_checkpoint(process, tmp_path, signal_number, later=trained_for)
    stdout, stderr = process.communicate()
    assert process.returncode == exit_code and "Traceback" not in stderr
    # The line of a single run, which says nothing of sweeps.
    line = f"interrupted by {signal.Signals(signal_number).name} after \\d+ steps; continue with resume=true "
    assert re.search(line + re.escape(f"hydra.run.dir={tmp_path}") + "$", stdout, re.MULTILINE), stdout
    assert not PROGRESS_BAR.search(stderr)  # piped: no progress bar, although this run would show one on a terminal
    assert waited < 20  # a guard against a hang, not a timing: on an idle machine the answer takes about a second
    summary = summary_of(tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert summary["status"] == "interrupted" and 0 < summary["steps"] < 1000000
    assert summary["log_every"] == 100  # log.max_rows=10000 over 10^6 steps
    assert metrics["step"].tolist() == list(range(0, summary["steps"], 100))  # every row before the stop, once
    assert (tmp_path / "checkpoint" / f"ckpt-{summary['steps']}.index").exists()


class Terminal:
    """`python run.py ARGS` on a pseudo-terminal of 80 columns, as typed into a shell: its output (stdout and
    stderr) read as it comes."""

    def __init__(self, *args: str) -> None:
        main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a new one has 0 columns
        self.process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], stdin=child, stdout=child,
                                        stderr=child, close_fds=True)  # fmt: skip
        os.close(child)
        self._main, self._output = main, bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._main, 4096)
            except OSError:  # the process ended and closed the terminal
                break
            if not data:
                break
            self._output += data

    @property
    def output(self) -> str:
        return self._output.decode(errors="replace").replace("\r\n", "\n")

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not pattern.search(self.output):
            assert self.process.poll() is None, self.output[-3000:]
            assert time.monotonic() < deadline, f"no {pattern.pattern!r} within {timeout} s: {self.output[-3000:]}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        os.close(self._main)


def saved_checkpoint(run_dir: Path) -> int | None:
    """The step of the checkpoint that TensorFlow's `checkpoint` file names (it writes that file last), or None."""
    state = run_dir / "checkpoint" / "checkpoint"
    found = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text() if state.exists() else "", re.M)
    return int(found.group(1)) if found else None


def wait_for_next_checkpoint(process: subprocess.Popen, run_dir: Path, after: int | None) -> int:
    """Wait until the run in `run_dir` has saved a checkpoint beyond step `after`; return its step."""
    deadline = time.monotonic() + 60
    while (saved := saved_checkpoint(run_dir)) is None or (after is not None and saved <= after):
        assert process.poll() is None, "the run ended"
        assert time.monotonic() < deadline, "no new checkpoint within a minute"
        time.sleep(0.002)
    return saved


@pytest.mark.timeout(120)
def test_on_a_terminal_a_long_run_shows_a_progress_bar_and_a_second_ctrl_c_stops_it_at_once_without_saving(tmp_path):
    terminal = Terminal(*SLOW_RUN, *ADAM, "epochs=1000000", f"hydra.run.dir={tmp_path}")
    try:
        terminal.wait_for(PROGRESS_BAR)  # once the run has taken three seconds
        # The first Ctrl-C a moment after a chunk's checkpoint, in the next compiled call: Python answers it when the
        # call returns, and the run saves that chunk's checkpoint, then its end (its summary says `interrupted`).
        chunk = wait_for_next_checkpoint(terminal.process, tmp_path, saved_checkpoint(tmp_path))
        time.sleep(0.1)
        terminal.process.send_signal(signal.SIGINT)
        last_chunk = wait_for_next_checkpoint(terminal.process, tmp_path, chunk)  # so the first one was answered
        assert summary_of(tmp_path)["status"] == "running", "the run's end was saved before the second Ctrl-C came"
        terminal.process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        terminal.process.wait(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        terminal.close()
    assert stopped_after < 10, stopped_after  # a guard against a hang
    assert terminal.process.returncode == -signal.SIGINT  # Python's own end on a Ctrl-C it didn't catch
    assert "KeyboardInterrupt" in terminal.output and "interrupted by SIGINT" not in terminal.output, terminal.output
    summary = summary_of(tmp_path)  # the last chunk's: the run's end saved nothing
    assert (summary["status"], summary["steps"]) == ("running", last_chunk)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run killed by SIGKILL once it saved its first checkpoint: no chance to save, so it is left with the last
    chunk's checkpoint and its `running` summary. Tests copy it before they resume it."""
    killed = tmp_path_factory.mktemp("killed") / "run"
    process = start(*KILLED_RUN, f"hydra.run.dir={killed}")
    interrupt_after_first_checkpoint(process, killed, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    return killed


@pytest.mark.timeout(240)
@pytest.mark.parametrize("first_save_complete", [True, False])
def test_resume_continues_a_killed_run_to_the_history_of_an_uninterrupted_one(
    tmp_path, alone, killed_run, first_save_complete
):
    killed = tmp_path / "killed"
    shutil.copytree(killed_run, killed)
    assert summary_of(killed)["status"] == "running"
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

    whole = alone["killed"].runs()["killed"]
    pd.testing.assert_frame_equal(
        pd.read_csv(killed / "metrics.csv"), pd.read_csv(whole / "metrics.csv"), check_exact=True
    )  # to the bit
    assert summary_of(killed)["status"] == "completed" and summary_of(killed)["steps"] == 8000
    assert (killed / ".hydra" / "config.yaml").read_bytes() == saved_config  # the original stays
    assert list((killed / ".hydra").glob("resumed_at_*/overrides.yaml"))


@pytest.mark.timeout(360)
def test_a_relaunched_sweep_skips_finished_jobs_and_continues_the_interrupted_one(tmp_path, alone):
    sweep = ["-m", *SWEEP_JOB, f"lr={','.join(SWEEP_LRS)}", f"hydra.sweep.dir={tmp_path}"]
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

    # Each job equals the same job run straight through, traced afresh in a fresh process, although in the sweep's
    # processes it reused the loop of a diverged job (the first launch) or of an interrupted and resumed one (the
    # re-launch).
    for job_dir, lr in ((diverged, "10"), (interrupted, "0.05"), (next(tmp_path.glob("*lr=0.02*_2")), "0.02")):
        reference = alone[lr].runs()[lr]
        pd.testing.assert_frame_equal(
            pd.read_csv(job_dir / "metrics.csv"), pd.read_csv(reference / "metrics.csv"), check_exact=True
        )
        assert summary_of(job_dir)["final_loss"] == summary_of(reference)["final_loss"]


@pytest.mark.timeout(120)
def test_a_signal_while_a_run_writes_its_last_files_still_ends_it_as_interrupted(tmp_path, monkeypatch):
    # The signal comes (to this process, whose run catches it) as the run starts drawing its pictures, after
    # its last step: the run still writes every file, as completed, and then stops as a stopped run does.
    import tapelab

    draw, signalled = RunRecord.draw, []

    def draw_after_a_signal(record: RunRecord) -> object:
        if not signalled:  # once: a second Ctrl-C would stop the process at once
            signalled.append(os.kill(os.getpid(), signal.SIGINT))
        return draw(record)

    monkeypatch.setattr(RunRecord, "draw", draw_after_a_signal)
    with pytest.raises(tapelab.Interrupted, match=r"^interrupted by SIGINT after 20 steps$") as stopped:
        tapelab.run("epochs=20", "log.plots=false", run_dir=tmp_path / "run")
    assert stopped.value.exit_code == 130 and stopped.value.ended  # the command line's line says nothing is left
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # SGD at lr 0.01 on (x − 1)² from 0: x_t = 1 − 0.98^t, so the loss after 20 steps is 0.98^40.
    assert (summary["status"], summary["steps"]) == ("completed", 20)
    assert summary["final_loss"] == pytest.approx(0.98**40, rel=1e-6)
