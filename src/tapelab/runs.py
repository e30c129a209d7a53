"""Training runs from their experiments: the checks that need no TensorFlow, and the plans by which a run alone
(a multi-start run too) and a batch of runs go to the driver (`tapelab.driver`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from tapelab.config import Experiment, to_experiment
from tapelab.driver import Member, Plan, RunSpec, train_runs
from tapelab.engine.compiled import wants_xla
from tapelab.errors import one_line
from tapelab.multistart import check_elementwise, draw_starts, member_problems, search_box
from tapelab.objectives import Problem
from tapelab.rundir import check_unused, read_summary
from tapelab.sinks.hparams import trial_id

log = logging.getLogger(__name__)


def checked_problem(experiment: Experiment) -> tuple[Problem, np.ndarray | None]:
    """The objective's problem and, for a multi-start run, its flat starts, after every check that needs no
    TensorFlow: the values, the optimizer's own ranges and size limit, and the multi-start rules."""
    problem = experiment.objective.build(experiment.seed)
    experiment.optimizer.check(int(problem.flat_start().size))
    if experiment.objective.starts == 1:
        return problem, None
    check_elementwise(experiment.optimizer)
    box = search_box(experiment.objective, problem)
    return problem, draw_starts(box, experiment.objective.starts, experiment.seed, experiment.dtype)


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` (or OmegaConf's error) where `train_config` would refuse `cfg`, writing nothing: every
    check of its values and of the problem they build (a Python objective's imports TensorFlow and calls its
    function)."""
    checked_problem(to_experiment(cfg))


def train_config(cfg: DictConfig, run_dir: Path, resume: bool = False, progress: bool = False,
                 trial: str | None = None) -> float:  # fmt: skip
    """Check `cfg`, train it alone (continuing the run in `run_dir` if `resume`), and return the final loss (inf
    if diverged). Raises `Interrupted` after saving everything if a signal stopped the run. `progress` shows a
    progress bar on a terminal; `trial` is the run's HParams trial ID (default: `trial_id`)."""
    return train_alone(to_experiment(cfg), run_dir, resume, progress, trial)


def train_alone(experiment: Experiment, run_dir: Path, resume: bool = False, progress: bool = False,
                trial: str | None = None) -> float:  # fmt: skip
    """Train `experiment` alone, or its starts as one pooled batch (a multi-start run), writing metrics.csv,
    TensorBoard events, a checkpoint and summary.json into `run_dir`. A resumed run keeps its first session's
    logging grid and choice of XLA."""
    previous = read_summary(run_dir) if resume else None
    if previous is None:
        check_unused(run_dir)
    problem, flat_starts = checked_problem(experiment)
    members = [problem] if flat_starts is None else member_problems(problem, flat_starts)
    log_every = (previous or {}).get("log_every", experiment.log_every())
    if log_every != experiment.log.every and previous is None:
        log.info("log.every raised to %d so that at most log.max_rows=%d rows are written", log_every,
                 experiment.log.max_rows)  # fmt: skip
    auto_xla = wants_xla(experiment.jit_compile, experiment.epochs, problem, len(members))
    plan = Plan(members=[(member, experiment) for member in members], log_every=log_every,
                jit_compile=(previous or {}).get("xla", auto_xla), pooled=flat_starts is not None, previous=previous,
                progress=progress)  # fmt: skip
    (loss,) = train_runs([RunSpec(experiment, problem, run_dir, trial or trial_id(run_dir, in_sweep=False))], plan)
    return loss


def train_batch(experiments: Sequence[Experiment], run_dirs: Sequence[Path], trials: Sequence[str], group: int,
                upcoming: Sequence[DictConfig] = ()) -> list[float]:  # fmt: skip
    """Train new runs that share a loop structure, epochs and logging as one batch, under XLA; return each one's
    final loss (inf if it diverged). Each summary.json records `batch: {group, size}`. Raises CannotCompile,
    before anything is written, if XLA can't compile the loop. The loop of the runs of the `upcoming` task
    configs (the next batch's new runs), if any, is compiled while this batch's runs end."""
    for run_dir in run_dirs:
        check_unused(run_dir)
    checked = [checked_problem(experiment) for experiment in experiments]
    if any(starts is not None for _, starts in checked):
        raise ValueError("a multi-start run can't be a member of a batch")
    runs = [RunSpec(experiment, problem, run_dir, trial) for experiment, (problem, _), run_dir, trial
            in zip(experiments, checked, run_dirs, trials, strict=True)]  # fmt: skip
    plan = Plan(
        members=[(run.problem, run.experiment) for run in runs],
        log_every=experiments[0].log_every(),
        jit_compile=True,
        batch={"group": group, "size": len(runs)},
        upcoming=next_members(upcoming),
    )
    return train_runs(runs, plan)


def next_members(upcoming: Sequence[DictConfig]) -> list[Member]:
    """The members of the next batch's task configs, for its loop to compile ahead; none if they can't be built
    (that batch meets the reason again when it runs, and handles it)."""
    try:
        experiments = [to_experiment(task_cfg) for task_cfg in upcoming]
        return [(checked_problem(experiment)[0], experiment) for experiment in experiments]
    except Exception as error:
        log.debug("the next batch's loop was not compiled ahead: %s: %s", type(error).__name__, one_line(error))
        return []
