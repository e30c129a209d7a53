"""Which jobs of a sweep train together, and training them: the protocol of `hydra/launcher=batched`.

Jobs whose configs have the same `group_key` form a group, which the launcher hands to `run_group` in
batches, with the jobs of the batch it runs next (whose loop is compiled while the batch's runs end). A
batch's new runs train as one compiled loop (`tapelab.batch_run.train_batch`); a job that an earlier launch
finished, interrupted or failed is handled as `tapelab.job.run_job` handles it, alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tapelab.errors import ConfigError, one_line

log = logging.getLogger("tapelab")


class CannotBatch(Exception):
    """Raised by group_key for a job that must run alone; str(error) says why (one short clause)."""


@dataclass(frozen=True)
class Job:
    """One job of a batch: the config its task function gets, and its `hydra` node as HydraConfig holds it."""

    task_cfg: DictConfig
    hydra_cfg: DictConfig


def group_key(task_cfg: DictConfig) -> str:
    """The key that jobs must share to train as one batch: the loop's structure, epochs, logging and the
    optimizer's values but its `member_inputs`. Members may differ in `lr`, those, the objective's values
    (start, constants, data, seed) and the stop rules' thresholds. Raises CannotBatch(reason) for a job that
    must train alone."""
    from tapelab.config import to_experiment
    from tapelab.runner import checked_problem
    from tapelab.training import loop_key

    if task_cfg.resume:
        raise CannotBatch("resume=true continues one run")
    try:
        experiment = to_experiment(task_cfg)
        problem, starts = checked_problem(experiment)
    except (ConfigError, OmegaConfBaseException) as mistake:
        raise CannotBatch(f"its config has a mistake ({one_line(mistake)})") from None
    coupling = experiment.optimizer.coupling()
    if coupling is not None:
        raise CannotBatch(f"{coupling} would couple the members")
    if starts is not None:
        raise CannotBatch("objective.starts > 1 trains its starts as a batch of their own")
    if experiment.jit_compile is False:
        raise CannotBatch("jit_compile=false, and batches train under XLA")
    loop = loop_key(problem, experiment.optimizer, experiment.stop, jit_compile=True)
    shared = (experiment.epochs, experiment.log_every(), dataclasses.asdict(experiment.log))
    optimizer = experiment.optimizer
    values = {key: value for key, value in optimizer.hyperparameters().items() if key not in optimizer.member_inputs}
    return repr((loop, *shared, values))


def run_group(jobs: Sequence[Job], upcoming: Sequence[Job] = ()) -> list[Any]:
    """Train the jobs of one batch; return one result per job, in order: the job's return value (a float, the
    final loss; inf if diverged) or the BaseException it failed with. The new runs of the `upcoming` batch (the
    launcher's next one, if any) have their loop compiled while this batch's runs end.

    The new runs train as one batch, named after the first one's job number, while HydraConfig holds that job
    and its log file takes the batch's log records. Any other job (one that an earlier launch finished or left
    to continue, or whose directory holds another job's files) runs as Hydra's `run_job` runs it, with
    HydraConfig holding its config and its log records going to its own log file; so do the new runs if XLA
    can't compile their loop. `Interrupted` propagates, with HydraConfig holding an interrupted job's config
    (the message that names its directory reads it there).
    """
    from hydra.core.hydra_config import HydraConfig

    from tapelab.batch_run import CannotCompile

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    results: list[Any] = [None] * len(jobs)
    new: list[tuple[int, Path]] = []
    for index, job in enumerate(jobs):
        hydra_config.cfg = job.hydra_cfg
        if is_new(job):
            new.append((index, output_dir(job)))
        else:  # also a directory left with results but no checkpoint: it fails alone, as under any launcher
            results[index] = run_alone(job)
    if new:
        next_runs = [job for job in upcoming if is_new(job)]
        try:
            for index, loss in zip([index for index, _ in new], train_new_runs(jobs, new, next_runs), strict=True):
                results[index] = loss
        except CannotCompile as reason:
            log.info("jobs %s run alone: XLA can't compile their loop (%s)", job_numbers(jobs, new), reason)
            for index, _ in new:
                results[index] = run_alone(jobs[index])
    hydra_config.cfg = before
    return results


def output_dir(job: Job) -> Path:
    """The job's directory."""
    return Path(job.hydra_cfg.hydra.runtime.output_dir)


def is_new(job: Job) -> bool:
    """Whether the job is a new run: no earlier launch ran it, and its directory holds no results."""
    from tapelab.job import new_sweep_run, task_overrides
    from tapelab.rundir import results_in

    return new_sweep_run(output_dir(job), task_overrides(job.hydra_cfg.hydra)) and not results_in(output_dir(job))


def job_numbers(jobs: Sequence[Job], new: list[tuple[int, Path]]) -> str:
    """The numbers of these jobs, as the job lines count them (from 1)."""
    return ", ".join(str(jobs[index].hydra_cfg.hydra.job.num + 1) for index, _ in new)


def run_alone(job: Job) -> Any:
    """Run a job as Hydra's `run_job` runs it, with HydraConfig holding it and logging to its own file; return
    its result or the exception it failed with (`Interrupted` propagates)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log

    from tapelab.interrupts import Interrupted
    from tapelab.job import run_job

    HydraConfig.instance().cfg = job.hydra_cfg
    configure_log(job.hydra_cfg.hydra.job_logging, job.hydra_cfg.hydra.verbose)
    try:
        return run_job(job.task_cfg)
    except Interrupted:
        raise
    except Exception as error:
        return error


def train_new_runs(jobs: Sequence[Job], new: list[tuple[int, Path]], upcoming: Sequence[Job] = ()) -> list[float]:
    """Train the jobs at these indices, new runs in these directories, as one batch, logging into the first
    one's log file, and compile the loop of the `upcoming` jobs (new runs too) while they end. If the batch
    fails (not by a signal, and not because XLA can't compile it: CannotCompile propagates), a job that had
    ended keeps its result and each other one is recorded as failed, as `tapelab.job.run_job` records a job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log

    from tapelab.batch_run import CannotCompile, train_batch
    from tapelab.config import to_experiment
    from tapelab.interrupts import Interrupted
    from tapelab.job import task_overrides
    from tapelab.resume import is_finished
    from tapelab.runner import record_failure, stored_result
    from tapelab.sinks.hparams import trial_id

    first = jobs[new[0][0]].hydra_cfg
    HydraConfig.instance().cfg = first
    configure_log(first.hydra.job_logging, first.hydra.verbose)
    experiments = [to_experiment(jobs[index].task_cfg) for index, _ in new]
    run_dirs = [run_dir for _, run_dir in new]
    trials = [trial_id(run_dir, in_sweep=True) for run_dir in run_dirs]
    try:
        upcoming_configs = [job.task_cfg for job in upcoming]
        return train_batch(experiments, run_dirs, trials, group=first.hydra.job.num, upcoming=upcoming_configs)
    except (Interrupted, CannotCompile):
        raise
    except Exception as error:
        log.exception("the batch failed")
        results = []
        for (index, run_dir), trial in zip(new, trials, strict=True):
            if is_finished(run_dir):
                results.append(stored_result(run_dir))
                continue
            hydra_node = jobs[index].hydra_cfg.hydra
            overrides = task_overrides(hydra_node) if experiments[0].log.tensorboard else None
            record_failure(run_dir, error, trial, overrides, hydra_node.runtime.choices)
            results.append(math.inf)
        return results
