"""Hydra callbacks: directory guards before a run or sweep starts, and the sweep report when it ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tapelab.errors import ConfigError, PastHydra
from tapelab.resume import composer, resumed_config
from tapelab.rundir import SUMMARY, check_unused, check_writable, claim_new_dir

log = logging.getLogger(__name__)


def is_time_named(node: DictConfig) -> bool:
    """Whether `node.dir` is still a pattern of the start time (not a path the user chose)."""
    return "${now:" in str(OmegaConf.to_container(node, resolve=False)["dir"])


def quoted(path: Path) -> str:
    """`path` as a quoted Hydra override value."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


class RunDirectories(Callback):
    """Give every run and sweep a directory of its own, before Hydra writes anything into it.

    A time-named directory (the default) that is already taken gets a `_1`, `_2`, … suffix. A run directory
    the user named is used as named, but refused when it already holds a run's results, unless `resume=true`
    asks to continue that run. A sweep directory the user named may hold an earlier launch of the same sweep:
    its finished jobs are skipped and its interrupted ones continue (see `tapelab.cli.experiment`).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run = config.hydra.run
        try:
            if is_time_named(run):
                if config.resume:
                    raise ConfigError("resume", "needs hydra.run.dir=<the directory of the run to continue>")
                run.dir = str(claim_new_dir(Path(run.dir), "hydra.run.dir"))
                return
            check_writable(Path(run.dir), "hydra.run.dir")
            if not config.resume:
                check_unused(Path(run.dir))
            else:  # refuse a resume before Hydra saves its config into the run's .hydra/
                resumed_config(Path(run.dir), list(config.hydra.overrides.task), composer(config.hydra.overrides.hydra))
        except ConfigError as error:
            raise PastHydra(error) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = config.hydra.sweep
        try:
            if is_time_named(sweep):
                sweep.dir = str(claim_new_dir(Path(sweep.dir), "hydra.sweep.dir"))
                # Jobs re-compose their config from the overrides, so the claimed name must be one of them.
                config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(Path(sweep.dir))}")
            else:
                check_writable(Path(sweep.dir), "hydra.sweep.dir")
                log_earlier_launch(Path(sweep.dir))
        except ConfigError as error:
            raise PastHydra(error) from None
        # The basic sweeper saves multirun.yaml (the sweep's config) itself; others, like Optuna's, don't.
        multirun_file = Path(sweep.dir) / "multirun.yaml"
        if not multirun_file.exists():
            multirun_file.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, multirun_file)


def log_earlier_launch(sweep_dir: Path) -> None:
    """Say what a re-launch into `sweep_dir` will do with the jobs an earlier launch left there."""
    from tapelab.resume import is_finished

    job_dirs = [path.parent for path in sweep_dir.glob(f"*/{SUMMARY}")]
    finished = sum(is_finished(job_dir) for job_dir in job_dirs)
    if job_dirs:
        log.info(
            "%s holds an earlier launch: %d finished jobs are skipped, %d others continue or start again",
            sweep_dir,
            finished,
            len(job_dirs) - finished,
        )


class SweepReport(Callback):
    """Write sweep.csv, sweep.png and the HParams experiment at the sweep root when a sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from tapelab.sweep import write_report

        write_report(Path(config.hydra.sweep.dir))
