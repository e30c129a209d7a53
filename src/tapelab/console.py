"""What a run and a sweep print: one line when a run ends, and one line as each job of a sweep ends."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def outcome(summary: dict[str, Any] | None) -> str:
    """How a run ended, from its summary.json: status, steps, time (and the size of the batch it trained in),
    final loss, or a failure's reason."""
    if summary is None:
        return "no result (summary.json is missing)"
    status = summary.get("status")
    if status == "failed":
        return "failed: " + " ".join(str(summary.get("error")).split())
    steps = summary.get("steps")
    text = f"{status} after {steps} step{'' if steps == 1 else 's'}"
    if "wall_time_s" in summary:
        text += f" in {summary['wall_time_s']:.2f} s"
    if summary.get("batch") and summary["batch"]["size"] > 1:
        text += f" (in a batch of {summary['batch']['size']})"
    return text + (f": final loss {summary['final_loss']}" if summary.get("final_loss") is not None else "")


def run_line(summary: dict[str, Any], run_dir: Path) -> str:
    """The line a single run prints when it ends: its outcome, parameters and directory."""
    params = ", ".join(f"{name}={value}" for name, value in summary["params"].items())
    return f"{outcome(summary)}, {params} ({shown_path(run_dir)})"


def job_line(number: int, total: int | None, name: str, summary: dict[str, Any] | None, earlier: bool) -> str:
    """The line of job `number` (from 1) of `total` (None: unknown) as it ends; `earlier`: it ended in an
    earlier launch of the sweep, and was skipped."""
    of_total = f"/{total}" if total else ""
    return f"job {number}{of_total} {name}: {outcome(summary)}{' (in an earlier launch)' if earlier else ''}"


def to_console(logger: logging.Logger, message: str, level: int = logging.INFO) -> None:
    """Log `message` through the root logger's console handlers only, not into its files: for a sweep job
    whose directory is to stay as it was (finished in an earlier launch, or another job's)."""
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(logger.name, level, "(console)", 0, message, None, None)
    for handler in logging.getLogger().handlers:
        console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if console and record.levelno >= handler.level:
            handler.handle(record)


# The order in which a sweep's last line counts its jobs' statuses; any other status comes after these.
STATUS_ORDER = ("completed", "converged", "diverged", "interrupted", "failed", "incomplete")


def sweep_end_line(statuses: Sequence[str], table: Path) -> str:
    """The line a sweep prints when it ends, from its jobs' statuses, e.g. "sweep of 4 jobs: 2 completed,
    2 diverged; outputs/multirun/…/sweep.csv"."""
    counts = Counter(statuses)
    order = [status for status in STATUS_ORDER if status in counts] + sorted(set(counts) - set(STATUS_ORDER))
    counted = ", ".join(f"{counts[status]} {status}" for status in order)
    return f"sweep of {count_of_jobs(len(statuses))}: {counted}; {table}" if counted else f"sweep of 0 jobs: {table}"


def count_of_jobs(count: int | None) -> str:
    """`count` jobs, in words: "1 job", "12 jobs", or "jobs" if unknown."""
    return "jobs" if count is None else plural(count, "job")


def plural(count: int, noun: str) -> str:
    """`1 group`, `2 groups`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def shown_path(path: Path) -> str:
    """`path` relative to the working directory where it lies below it, as given otherwise."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive
        return str(path)
