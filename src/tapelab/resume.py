"""Continuing an earlier run: whether it can continue, with which config, and where its history stops."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapelab.errors import ConfigError, one_line
from tapelab.overrides import parse_override
from tapelab.rundir import (
    CHECKPOINTS,
    METRICS,
    SAVED_OVERRIDES,
    JobState,
    holds_other_job,
    job_state,
    read_summary,
    saved_overrides,
)

CHANGEABLE = ("epochs", "resume")  # the keys a resumed run may set; the rest comes from the earlier run


def saved_config_subdir(output_dir: str, mode: Any, overrides: Sequence[str]) -> str | None:
    """Where Hydra saves a job's config (`hydra.output_subdir`), so that nothing already written is replaced.

    A new run: `.hydra`. In a re-launched sweep, a finished job (skipped) or another job's directory (a
    clash, refused): nowhere. A run that continues: `.hydra/resumed_at_<step>`, beside the original.
    """
    run_dir = Path(output_dir)
    summary = read_summary(run_dir)
    if str(mode).endswith("MULTIRUN"):
        typed = OmegaConf.to_container(overrides, resolve=False) if isinstance(overrides, ListConfig) else overrides
        if job_state(run_dir, typed) in (JobState.FOREIGN, JobState.FINISHED):
            return None
    if summary is None:
        return ".hydra"
    return str(Path(".hydra") / f"resumed_at_{summary.get('steps', 0)}")


def override_key(override: str) -> str:
    """The key an override sets (`optimizer` for `optimizer=adam`, `lr` for `+lr=1`)."""
    return parse_override(override).key_or_group


def composer(hydra_overrides: Sequence[str]) -> Callable[[list[str]], DictConfig]:
    """Hydra's compose of tapelab's config from overrides, with this launch's `hydra.searchpath` (where a
    user's own options may be), for `resumed_config`."""
    from hydra import compose

    search_path = [override for override in hydra_overrides if override_key(override) == "hydra.searchpath"]
    return lambda overrides: compose(config_name="config", overrides=[*search_path, *overrides])


def resumed_config(run_dir: Path, overrides: Sequence[str], compose: Callable[[list[str]], DictConfig]) -> DictConfig:
    """The config of the run in `run_dir`, with a new `epochs` if `overrides` sets one, else its last launch's.

    Raises `ConfigError` if the run can't continue, or if `overrides` changes anything but epochs.
    """
    summary = read_summary(run_dir)
    if summary is None or not (run_dir / CHECKPOINTS).is_dir():
        raise ConfigError("resume", f"{run_dir} holds no checkpoint of a run to continue")
    status, steps = summary.get("status"), summary.get("steps", 0)
    if status in ("diverged", "converged"):
        raise ConfigError("resume", f"the run in {run_dir} {status} at step {steps}; continuing would stop again")
    saved = saved_overrides(run_dir)
    if saved is None:
        raise ConfigError("resume", f"{run_dir} holds no saved config ({SAVED_OVERRIDES}) to continue with")
    changed = [override for override in overrides if override_key(override) not in CHANGEABLE and override not in saved]
    if changed:
        raise ConfigError(
            "resume",
            f"continues {run_dir} with its own config, where only epochs can change; remove {', '.join(changed)}",
        )
    new_epochs = [override for override in overrides if override_key(override) == "epochs"]
    if not new_epochs and status == "completed":
        raise ConfigError(
            "epochs", f"the run in {run_dir} completed its {steps} steps; continue it with epochs=N > {steps}"
        )
    if not new_epochs and "epochs" in summary:  # its last launch's epochs, which may have extended the first
        new_epochs = [f"epochs={summary['epochs']}"]
    kept = [override for override in saved if override_key(override) not in CHANGEABLE or not new_epochs]
    try:
        cfg = compose([*kept, *new_epochs, "resume=true"])
    except (CompactHydraException, OmegaConfBaseException) as error:  # e.g. an option from a config dir not given
        raise ConfigError(
            "resume",
            f"the saved config of {run_dir} does not compose: {one_line(error)}; give the same --config-dir "
            "(or hydra.searchpath) as the run was started with",
        ) from None
    # An interrupted or killed run may have done all its updates and lack only its final row.
    if cfg.epochs < steps or (cfg.epochs == steps and status not in ("interrupted", "running")):
        raise ConfigError(
            "epochs", f"must be more than the {steps} steps the run in {run_dir} has done, got {cfg.epochs}"
        )
    return cfg


def check_same_job(run_dir: Path, overrides: Sequence[str]) -> None:
    """Raise `ConfigError` unless the job in `run_dir` was started with these same overrides."""
    if holds_other_job(run_dir, overrides):
        saved = saved_overrides(run_dir)
        raise ConfigError(
            "hydra.sweep.dir", f"{run_dir} holds a different job ({' '.join(saved)}); choose a new sweep directory"
        )


def last_logged_row(run_dir: Path) -> pd.DataFrame | None:
    """The last row of metrics.csv as a one-row frame (None if it has none): where an earlier session of the
    run left off (a finite row: a run writes no other)."""
    path = run_dir / METRICS
    if not path.exists():
        return None
    rows = pd.read_csv(path)
    return rows.iloc[-1:].reset_index(drop=True) if len(rows) else None
