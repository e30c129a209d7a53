"""Run and sweep directories: what they hold, what state a job's directory is in, and the guards that keep two
runs from sharing one."""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tapelab.errors import ConfigError
from tapelab.overrides import read_overrides

METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoint"
SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"
FINISHED = ("completed", "converged", "diverged")  # a sweep re-launch skips jobs that ended like this


class JobState(enum.Enum):
    """What a sweep job's directory holds when the job starts."""

    NEW = "new"  # nothing of a run: the job starts one
    FINISHED = "finished"  # a run an earlier launch finished: its files stay as they are
    INTERRUPTED = "interrupted"  # a run's checkpoint: the job continues it
    FOREIGN = "foreign"  # another job's files (started with other overrides): nothing is written there
    BLOCKED = "blocked"  # a run's results but no checkpoint: no run can start or continue there


def job_state(run_dir: Path, overrides: Sequence[str]) -> JobState:
    """The state of the sweep job with `overrides` in `run_dir`. The summary.json of an earlier launch's failure
    before any checkpoint doesn't count: the job starts again as new (`forget_failure` before it does)."""
    if holds_other_job(run_dir, overrides):
        return JobState.FOREIGN
    if is_finished(run_dir):
        return JobState.FINISHED
    if (run_dir / CHECKPOINTS).is_dir():
        return JobState.INTERRUPTED
    results = results_in(run_dir)
    if (read_summary(run_dir) or {}).get("status") == "failed":
        results.remove(SUMMARY)
    return JobState.BLOCKED if results else JobState.NEW


def results_in(run_dir: Path) -> list[str]:
    """The names of the run results `run_dir` holds (metrics.csv, summary.json)."""
    return [name for name in (METRICS, SUMMARY) if (run_dir / name).exists()]


def check_unused(run_dir: Path) -> None:
    """Raise `ConfigError` if `run_dir` already holds a run's results."""
    existing = results_in(run_dir)
    if existing:
        raise ConfigError(
            "hydra.run.dir", f"{run_dir} already holds a run ({', '.join(existing)}); choose a new directory"
        )


def check_writable(directory: Path, key: str) -> None:
    """Create `directory` if needed; raise `ConfigError` naming `key` if that fails or it can't be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(key, f"can't create {directory}: {error.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(key, f"{directory} is not writable; choose a directory you can write to")


def claim_new_dir(base: Path, key: str) -> Path:
    """Create and return `base`, or `base_1`, `base_2`, … if it exists: the first name no one else has.

    Creating the directory is the claim, so two processes started in the same second get different ones.
    `key` names the setting that chose `base`, for the error if its parent can't be written.
    """
    check_writable(base.parent, key)
    candidate, suffix = base, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = base.with_name(f"{base.name}_{suffix}")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, or None if it has none."""
    path = run_dir / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def saved_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra saved for the run in `run_dir`, or None if it saved none."""
    path = run_dir / SAVED_OVERRIDES
    return read_overrides(path) if path.exists() else None


def is_finished(run_dir: Path) -> bool:
    """Whether the run in `run_dir` ended for good (completed, converged or diverged)."""
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") in FINISHED


def forget_failure(run_dir: Path) -> None:
    """Remove the summary.json of a job that failed before its first checkpoint, so that it can run again."""
    summary = read_summary(run_dir)
    if summary is not None and summary.get("status") == "failed" and not (run_dir / CHECKPOINTS).is_dir():
        (run_dir / SUMMARY).unlink()


def holds_other_job(run_dir: Path, overrides: Sequence[str]) -> bool:
    """Whether `run_dir` holds a job that was started with other overrides than these."""
    saved = saved_overrides(run_dir)
    return saved is not None and saved != list(overrides)
