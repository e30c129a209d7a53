"""Hydra callbacks: directory guards before a run or sweep starts, and the sweep report when it ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tapelab.errors import ConfigError, exit_on_user_error
from tapelab.rundir import check_no_sweep_results, check_unused, claim_new_dir


def is_time_named(node: DictConfig) -> bool:
    """Whether `node.dir` is still a pattern of the start time (not a path the user chose)."""
    return "${now:" in str(OmegaConf.to_container(node, resolve=False)["dir"])


def quoted(path: Path) -> str:
    """`path` as a quoted Hydra override value."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


class RunDirectories(Callback):
    """Give every run and sweep a directory of its own, before Hydra writes anything into it.

    A time-named directory (the default) that is already taken gets a `_1`, `_2`, … suffix. A directory the
    user named is used as named, but refused when it already holds a run's or a sweep's results.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run = config.hydra.run
        if is_time_named(run):
            run.dir = str(claim_new_dir(Path(run.dir)))
            return
        try:
            check_unused(Path(run.dir))
        except ConfigError as error:
            exit_on_user_error(error)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = config.hydra.sweep
        if is_time_named(sweep):
            sweep.dir = str(claim_new_dir(Path(sweep.dir)))
            # Jobs re-compose their config from the overrides, so the claimed name must be one of them.
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(Path(sweep.dir))}")
        else:
            try:
                check_no_sweep_results(Path(sweep.dir))
            except ConfigError as error:
                exit_on_user_error(error)
        # The basic sweeper saves multirun.yaml (the sweep's config) itself; others, like Optuna's, don't.
        multirun_file = Path(sweep.dir) / "multirun.yaml"
        if not multirun_file.exists():
            multirun_file.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, multirun_file)


class SweepReport(Callback):
    """Write sweep.csv, sweep.png and the HParams experiment at the sweep root when a sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from tapelab.sweep import write_report

        write_report(Path(config.hydra.sweep.dir))
