"""Which jobs of a sweep train together, and training them: the protocol of `hydra/launcher=batched`.

Jobs whose configs have the same `group_key` form a group, which the launcher hands to `run_group` in
batches. For now `run_group` trains a batch's jobs one after another, each exactly as under Hydra's basic
launcher; the batches will train as one compiled loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Optimizers that couple the members of a batch, by their schema's name.
ALONE = {
    "lamb": "lamb's trust ratio couples the members",
    "newton": "newton's Hessian would span every member's parameters",
}
NORM_CLIPS = ("clipnorm", "global_clipnorm")  # a norm over a batch's gradients couples its members


class CannotBatch(Exception):
    """Raised by group_key for a job that must run alone; str(error) says why (one short clause)."""


@dataclass(frozen=True)
class Job:
    """One job of a batch: the config its task function gets, and its `hydra` node as HydraConfig holds it."""

    task_cfg: DictConfig
    hydra_cfg: DictConfig


def group_key(task_cfg: DictConfig) -> str:
    """The key that jobs must share to train as one batch (equal keys = same batch group).
    Raises CannotBatch(reason) for a job that must train alone."""
    optimizer = getattr(OmegaConf.get_type(task_cfg, "optimizer"), "name", None)
    if optimizer in ALONE:
        raise CannotBatch(ALONE[optimizer])
    for key in NORM_CLIPS:
        if OmegaConf.select(task_cfg, f"optimizer.{key}") is not None:
            raise CannotBatch(f"optimizer.{key} would clip the members' gradients together")
    return OmegaConf.to_yaml(OmegaConf.masked_copy(task_cfg, [key for key in task_cfg if key != "lr"]))


def run_group(jobs: Sequence[Job]) -> list[Any]:
    """Train the jobs of one group; return one result per job, in order: the job's return value
    (a float, the final loss; inf if diverged) or the BaseException instance it failed with.

    Each job runs as Hydra's `run_job` runs it: with HydraConfig holding its config and its log records
    going to its own log file. `Interrupted` propagates, with HydraConfig still holding the interrupted
    job's config (the message that names its directory reads it there).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log

    from tapelab.interrupts import Interrupted
    from tapelab.job import run_job

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    results: list[Any] = []
    for job in jobs:
        hydra_config.cfg = job.hydra_cfg
        configure_log(job.hydra_cfg.hydra.job_logging, job.hydra_cfg.hydra.verbose)
        try:
            results.append(run_job(job.task_cfg))
        except Interrupted:
            raise
        except Exception as error:
            results.append(error)
    hydra_config.cfg = before
    return results
