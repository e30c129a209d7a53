"""Run and sweep directories: what they hold, and the guards that keep two runs from sharing one."""

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


def check_no_sweep_results(sweep_dir: Path) -> None:
    """Raise `ConfigError` if a job below `sweep_dir` already holds results (Hydra would rewrite its .hydra/)."""
    finished = [path.parent.name for name in (METRICS, SUMMARY) for path in sweep_dir.glob(f"*/{name}")]
    if finished:
        raise ConfigError(
            "hydra.sweep.dir",
            f"{sweep_dir} already holds the results of {len(set(finished))} jobs; choose a new directory",
        )


def claim_new_dir(base: Path) -> Path:
    """Create and return `base`, or `base_1`, `base_2`, … if it exists: the first name no one else has.

    Creating the directory is the claim, so two processes started in the same second get different ones.
    """
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = base, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = base.with_name(f"{base.name}_{suffix}")
