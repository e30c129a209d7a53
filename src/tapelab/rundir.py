"""What a run directory holds, and the guard that keeps a finished run from being written over."""

from __future__ import annotations

from pathlib import Path

from tapelab.errors import ConfigError

METRICS = "metrics.csv"
SUMMARY = "summary.json"


def check_unused(run_dir: Path) -> None:
    """Raise `ConfigError` if `run_dir` already holds a run's results."""
    existing = [name for name in (METRICS, SUMMARY) if (run_dir / name).exists()]
    if existing:
        raise ConfigError(
            "hydra.run.dir", f"{run_dir} already holds a run ({', '.join(existing)}); choose a new directory"
        )
