"""Run and sweep directories: what they hold, and the guards that keep two runs from sharing one."""

from __future__ import annotations

import os
from pathlib import Path

from tapelab.errors import ConfigError

METRICS = "metrics.csv"
SUMMARY = "summary.json"


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
