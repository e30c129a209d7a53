"""Which jobs of a sweep train together, and training them: the protocol of `hydra/launcher=batched`.

Jobs whose configs have the same `group_key` form a group, which the launcher hands to `run_group` in
batches, with the jobs of the batch it runs next (whose loop is compiled while the batch's runs end). A
batch's new runs train as one compiled loop (`tapelab.runs.train_batch`); any other job (one that an earlier
launch finished or left to continue, or whose directory holds another job's files) is handled as
`tapelab.job.run_job` handles it, alone.
"""

from __future__ import annotations

import dataclasses
import logging
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
class BatchJob:
    """One job of a batch: the config its task function gets, and its `hydra` node as HydraConfig holds it."""

    task_cfg: DictConfig
    hydra_cfg: DictConfig


def group_key(task_cfg: DictConfig) -> str:
    """The key that jobs must share to train as one batch: the loop's structure, epochs, logging and the
    optimizer's values but its `member_inputs`. Members may differ in `lr`, those, the objective's values
    (start, constants, data, seed) and the stop rules' thresholds. Raises CannotBatch(reason) for a job that
    must train alone."""
    from tapelab.config import to_experiment
    from tapelab.engine.pool import loop_key
    from tapelab.runs import checked_problem

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
    loop = loop_key(problem, experiment.optimizer, experiment.stop, jit_compile=True, dtype=experiment.dtype)
    shared = (experiment.epochs, experiment.log_every(), dataclasses.asdict(experiment.log))
    optimizer = experiment.optimizer
    values = {key: value for key, value in optimizer.hyperparameters().items() if key not in optimizer.member_inputs}
    return repr((loop, *shared, values))


def run_group(jobs: Sequence[BatchJob], upcoming: Sequence[BatchJob] = ()) -> list[Any]:
    """Train the jobs of one batch; return one result per job, in order: the job's return value (a float, the
    final loss; inf if diverged) or the BaseException it failed with. The new runs of the `upcoming` batch (the
    launcher's next one, if any) have their loop compiled while this batch's runs end.

    The new runs train as one batch, named after the first one's job number, while HydraConfig holds that job
    and its log file takes the batch's log records. Any other job runs as Hydra's `run_job` runs it, with
    HydraConfig holding its config and its log records going to its own log file; so do the new runs if XLA
    can't compile their loop. `Interrupted` propagates, with HydraConfig holding an interrupted job's config
    (the message that names its directory reads it there).
    """
    from tapelab.engine.compiled import CannotCompile
    from tapelab.job import holding
    from tapelab.rundir import forget_failure

    results: list[Any] = [None] * len(jobs)
    new: list[int] = []
    for index, job in enumerate(jobs):
        if is_new(job):
            forget_failure(output_dir(job))
            new.append(index)
        else:
            results[index] = run_alone(job)
    if new:
        next_runs = [job for job in upcoming if is_new(job)]
        try:
            with holding(jobs[new[0]].hydra_cfg, own_log=True):
                for index, loss in zip(new, train_new_runs([jobs[index] for index in new], next_runs), strict=True):
                    results[index] = loss
        except CannotCompile as reason:
            log.info("jobs %s run alone: XLA can't compile their loop (%s)", job_numbers(jobs, new), reason)
            for index in new:
                results[index] = run_alone(jobs[index])
    return results


def output_dir(job: BatchJob) -> Path:
    """The job's directory."""
    return Path(job.hydra_cfg.hydra.runtime.output_dir)


def is_new(job: BatchJob) -> bool:
    """Whether the job starts a new run (see `tapelab.rundir.job_state`)."""
    from tapelab.overrides import task_overrides
    from tapelab.rundir import JobState, job_state

    return job_state(output_dir(job), task_overrides(job.hydra_cfg.hydra)) is JobState.NEW


def job_numbers(jobs: Sequence[BatchJob], new: list[int]) -> str:
    """The numbers of these jobs, as the job lines count them (from 1)."""
    return ", ".join(str(jobs[index].hydra_cfg.hydra.job.num + 1) for index in new)


def run_alone(job: BatchJob) -> Any:
    """Run a job as Hydra's `run_job` runs it, with HydraConfig holding it and logging to its own file; return
    its result or the exception it failed with (`Interrupted` propagates)."""
    from tapelab.failures import result_or_error
    from tapelab.job import holding, run_job

    with holding(job.hydra_cfg, own_log=True):
        return result_or_error(lambda: run_job(job.task_cfg))


def train_new_runs(jobs: Sequence[BatchJob], upcoming: Sequence[BatchJob] = ()) -> list[float]:
    """Train these jobs, new runs, as one batch, and compile the loop of the `upcoming` jobs (new runs too) while
    they end. If the batch fails (not by a signal, and not because XLA can't compile it: CannotCompile
    propagates), a job that had ended keeps its result and each other one is recorded as failed, as
    `tapelab.job.run_job` records a job."""
    from tapelab.config import to_experiment
    from tapelab.engine.compiled import CannotCompile
    from tapelab.failures import record_failure, stored_result
    from tapelab.interrupts import Interrupted
    from tapelab.rundir import is_finished
    from tapelab.runs import train_batch
    from tapelab.sinks.hparams import trial_id

    experiments = [to_experiment(job.task_cfg) for job in jobs]
    run_dirs = [output_dir(job) for job in jobs]
    trials = [trial_id(run_dir, in_sweep=True) for run_dir in run_dirs]
    try:
        group = jobs[0].hydra_cfg.hydra.job.num
        return train_batch(experiments, run_dirs, trials, group, upcoming=[job.task_cfg for job in upcoming])
    except (Interrupted, CannotCompile):
        raise
    except Exception as error:
        log.exception("the batch failed")
        tensorboard = experiments[0].log.tensorboard
        return [stored_result(run_dir) if is_finished(run_dir) else
                record_failure(run_dir, error, trial, job.hydra_cfg.hydra, tensorboard)
                for job, run_dir, trial in zip(jobs, run_dirs, trials, strict=True)]  # fmt: skip
