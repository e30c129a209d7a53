"""The task of one Hydra job, shared by the command line and `tapelab.run`."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapelab.errors import ConfigError, one_line

log = logging.getLogger("tapelab")


def task_overrides(hydra_node: DictConfig) -> list[str]:
    """A job's overrides as typed, from its `hydra` node (HydraConfig's, or a JobReturn's `hydra_cfg.hydra`)."""
    return list(OmegaConf.to_container(hydra_node.overrides.task, resolve=False))


def new_sweep_run(run_dir: Path, overrides: list[str]) -> bool:
    """Whether this sweep job starts a new run in `run_dir`: it holds no other job's files, no run that an
    earlier launch finished and no checkpoint to continue. An earlier launch's failure before any checkpoint is
    forgotten, so that the job runs again."""
    from tapelab.resume import CHECKPOINTS, forget_failure, holds_other_job, is_finished

    if holds_other_job(run_dir, overrides) or is_finished(run_dir) or (run_dir / CHECKPOINTS).is_dir():
        return False
    forget_failure(run_dir)
    return True


def run_job(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's output directory and return its final loss (inf if it diverged).

    In a sweep, a job that fails is recorded as failed (loss inf) so that the other jobs still run; a job
    that finished in an earlier launch into the same sweep directory is skipped, an interrupted one continues.
    A single run's config mistake raises `ConfigError` (or OmegaConf's error); a run stopped by SIGINT or
    SIGTERM raises `Interrupted`, in a sweep too, after saving everything.
    """
    from tapelab.console import run_line, to_console
    from tapelab.interrupts import Interrupted
    from tapelab.resume import (
        CHECKPOINTS,
        check_same_job,
        composer,
        forget_failure,
        is_finished,
        read_summary,
        resumed_config,
    )
    from tapelab.runner import record_failure, run, stored_result
    from tapelab.sinks.hparams import trial_id

    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    multirun = hydra_config.mode == RunMode.MULTIRUN
    overrides = task_overrides(hydra_config)
    trial = trial_id(run_dir, multirun)
    try:
        if multirun:
            try:
                check_same_job(run_dir, overrides)
            except ConfigError as clash:  # another job's directory: write nothing into it, its log neither
                to_console(log, f"Error in config: {one_line(clash)}", logging.ERROR)
                return math.inf
            if is_finished(run_dir):
                return stored_result(run_dir)  # done in an earlier launch: its files stay as they are
            forget_failure(run_dir)  # an earlier launch's failure before any checkpoint: run it again
        resume = cfg.resume or (multirun and (run_dir / CHECKPOINTS).is_dir())
        if resume:
            cfg = resumed_config(run_dir, overrides, composer(list(hydra_config.overrides.hydra)))
        loss = run(cfg, run_dir, resume=resume, progress=not multirun, trial=trial)
    except Interrupted:
        raise
    except Exception as error:
        if not multirun:
            raise
        if not isinstance(error, (ConfigError, OmegaConfBaseException)):  # a config mistake: its job's line says it
            log.exception("the job failed")
        tensorboard = OmegaConf.select(cfg, "log.tensorboard", default=True, throw_on_resolution_failure=False)
        return record_failure(run_dir, error, trial, overrides if tensorboard else None, hydra_config.runtime.choices)
    if not multirun:  # a sweep's jobs get their line from tapelab.callbacks.JobLines
        log.info("%s", run_line(read_summary(run_dir), run_dir))
    return loss
