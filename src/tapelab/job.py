"""One Hydra job's task, shared by the command line, `tapelab.run` and the batched launcher: what its
directory's state means for it, and HydraConfig holding it while it runs."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapelab.errors import ConfigError, one_line
from tapelab.overrides import task_overrides
from tapelab.rundir import JobState, forget_failure, job_state, read_summary

log = logging.getLogger("tapelab")


@contextmanager
def holding(hydra_cfg: DictConfig, own_log: bool = False) -> Iterator[None]:
    """HydraConfig holding a job's config (a JobReturn's `hydra_cfg`) for the block; with `own_log`, log records
    go to the job's own log file from then on (as Hydra's `run_job` leaves them). After `Interrupted`
    HydraConfig still holds the job, so that the line that reports it names the directory of the job."""
    from hydra.core.utils import configure_log

    from tapelab.interrupts import Interrupted

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.cfg = hydra_cfg
    try:
        if own_log:
            configure_log(hydra_cfg.hydra.job_logging, hydra_cfg.hydra.verbose)
        yield
    except Interrupted:
        before = hydra_cfg
        raise
    finally:
        hydra_config.cfg = before


def run_job(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's output directory (HydraConfig's job) and return its final loss (inf if it
    diverged).

    In a sweep, a job that fails is recorded as failed (loss inf) so that the other jobs still run; a job
    that finished in an earlier launch into the same sweep directory is skipped, an interrupted one continues.
    A single run's config mistake raises `ConfigError` (or OmegaConf's error); a run stopped by SIGINT or
    SIGTERM raises `Interrupted`, in a sweep too, after saving everything.
    """
    from tapelab.console import run_line, to_console
    from tapelab.failures import record_failure, stored_result
    from tapelab.interrupts import Interrupted
    from tapelab.resume import check_same_job, composer, resumed_config
    from tapelab.runs import train_config
    from tapelab.sinks.hparams import trial_id

    hydra_node = HydraConfig.get()
    run_dir = Path(hydra_node.runtime.output_dir)
    if cfg.get("study") is not None:
        from tapelab.study.runner import run_study

        run_study(cfg, run_dir, composer(list(hydra_node.overrides.hydra)))
        return 0.0
    multirun = hydra_node.mode == RunMode.MULTIRUN
    overrides = task_overrides(hydra_node)
    trial = trial_id(run_dir, multirun)
    try:
        state = job_state(run_dir, overrides) if multirun else None
        if state is JobState.FOREIGN:  # another job's directory: write nothing into it, its log neither
            try:
                check_same_job(run_dir, overrides)
            except ConfigError as clash:
                to_console(log, f"Error in config: {one_line(clash)}", logging.ERROR)
            return math.inf
        if state is JobState.FINISHED:
            return stored_result(run_dir)  # done in an earlier launch: its files stay as they are
        if state in (JobState.NEW, JobState.BLOCKED):  # an earlier launch's failure: forgotten as the job starts
            forget_failure(run_dir)
        resume = cfg.resume or state is JobState.INTERRUPTED
        if resume:
            cfg = resumed_config(run_dir, overrides, composer(list(hydra_node.overrides.hydra)))
        loss = train_config(cfg, run_dir, resume=resume, progress=not multirun, trial=trial)
    except Interrupted:
        raise
    except Exception as error:
        if not multirun:
            raise
        if not isinstance(error, (ConfigError, OmegaConfBaseException)):  # a config mistake: its job's line says it
            log.exception("the job failed")
        tensorboard = OmegaConf.select(cfg, "log.tensorboard", default=True, throw_on_resolution_failure=False)
        return record_failure(run_dir, error, trial, hydra_node, tensorboard)
    if not multirun:  # a sweep's jobs get their line from tapelab.callbacks.JobLines
        log.info("%s", run_line(read_summary(run_dir), run_dir))
    return loss
