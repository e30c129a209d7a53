"""Training a study's groups: each group's members as one batch of the engine, under XLA, with no directory and
no TensorBoard per run; a group that ends is saved at once, so that a stopped study loses at most the group
it was training."""

from __future__ import annotations

import logging
import shlex
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from tapelab.config import StopConfig
from tapelab.console import plural
from tapelab.errors import ConfigError, one_line
from tapelab.interrupts import Interrupted, StopRequests
from tapelab.landscape import lowest_at_minima
from tapelab.objectives import Problem
from tapelab.optimizers import OptimizerConfig
from tapelab.study import tables
from tapelab.study.curves import MemberCurves
from tapelab.study.plan import (
    Group,
    draw_start,
    member_problem,
    override_value,
    plan_groups,
    problem_shape,
    study_targets,
)
from tapelab.study.selection import hit_columns

log = logging.getLogger("tapelab")


@dataclass(frozen=True)
class GroupResult:
    """A trained group: one row per member, and the members' kept curve points."""

    runs: pd.DataFrame
    curves: pd.DataFrame


def member_command(group: Group, start_keys: dict, lr: float, seed: int, sources: Sequence[str]) -> str:
    """The run.py command that trains one member alone, to the bit (with the study's own config sources)."""
    starts = [f"objective.{key}={override_value(value)}" for key, value in start_keys.items()]
    overrides = [*sources, *group.overrides[:1], *starts, *group.overrides[1:], f"lr={lr!r}", f"seed={seed}"]
    return "python run.py " + " ".join(shlex.quote(override) for override in overrides)


def user_config_sources() -> list[str]:
    """The arguments that give a command the config directories this job's command line added: `--config-dir`
    and `hydra.searchpath`."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    arguments = []
    for source in HydraConfig.get().runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            arguments += ["--config-dir", source.path]
        elif source.provider == "hydra.searchpath in command-line":
            arguments.append(f"hydra.searchpath=[{source.schema}://{source.path}]")
    return arguments


@dataclass(frozen=True)
class Members:
    """A group's members as the engine takes them: each one's problem (its seed's start and data) and learning
    rate, with its seed's f* and start keys."""

    group: Group
    problems: list[Problem]
    lrs: list[float]
    stars: np.ndarray
    start_keys: list[dict]
    coupled: bool  # Newton's Hessian over every element would mix a batch's members: they train one at a time


def group_members(group: Group) -> Members:
    """Draw each seed's start point from the problem's domain and build its problem, as run.py builds the member's
    command's."""
    experiment = group.experiment
    objective, dtype = experiment.objective, experiment.dtype
    box = objective.box()  # plan.checked_experiment made sure there is one
    like = problem_shape(objective)
    if len(box) == 1:
        box = np.repeat(box, like.flat_start().size, axis=0)
    by_seed = {}
    for seed in sorted({member.seed for member in group.members}):
        problem, keys = member_problem(objective, draw_start(box, seed, dtype), seed, like)
        by_seed[seed] = (problem, keys, lowest_at_minima(problem, "float64"))
    seeds = [member.seed for member in group.members]
    return Members(group, [by_seed[seed][0] for seed in seeds], [member.lr for member in group.members],
                   np.array([by_seed[seed][2] for seed in seeds]), [by_seed[seed][1] for seed in seeds],
                   experiment.optimizer.coupling() is not None)  # fmt: skip


def next_members(todo: Sequence[Group]) -> Members | None:
    """The members of the next group to train, if any (None if they can't be built: that group meets the reason
    again when it trains, and is recorded as failed)."""
    try:
        return group_members(todo[0]) if todo else None
    except Exception as error:
        log.debug("the next group's members were not built ahead: %s: %s", type(error).__name__, one_line(error))
        return None


def compile_ahead(members: Members) -> None:
    """Compile a group's loop in the background while the current group trains (`LoopPool.compile_ahead`)."""
    from tapelab.engine.pool import POOL

    if members.coupled:
        return
    count, experiment = len(members.problems), members.group.experiment
    try:
        POOL.compile_ahead(members.problems, [experiment.optimizer] * count, members.lrs, 1, [StopConfig()] * count,
                           experiment.dtype)  # fmt: skip
    except Exception as error:  # that group meets it again when it trains, and handles it
        log.debug("the next group's loop was not compiled ahead: %s: %s", type(error).__name__, one_line(error))


def train_group(members: Members, targets: np.ndarray, stops: StopRequests, sources: Sequence[str] = (),
                upcoming: Members | None = None) -> GroupResult:  # fmt: skip
    """Train a group's members as one batch and return its tables, compiling the `upcoming` group's loop
    meanwhile; raise `Interrupted` if a stop was asked for (after the current chunk)."""
    group, problems, lrs, stars = members.group, members.problems, members.lrs, members.stars
    dtype = group.experiment.dtype
    like = problems[0]
    curves = MemberCurves(stars, targets, group.budget)
    count = len(problems)
    started = time.perf_counter()
    parts = [slice(member, member + 1) for member in range(count)] if members.coupled else [slice(0, count)]
    statuses = [""] * count
    for part in parts:
        statuses[part] = train_members(problems[part], group.experiment.optimizer, lrs[part], group.budget, dtype,
                                       curves, part.start, stops, upcoming)  # fmt: skip
        upcoming = None
    curves.finish()
    ends = curves.last_step.clip(min=0)  # as a run alone counts them: the steps to its last finite row
    seconds = time.perf_counter() - started
    runs = pd.DataFrame(
        {
            "member": np.arange(count),
            "problem": group.problem,
            "problem_group": group.problem_group or f"{like.flat_start().size}-D",
            "dim": like.flat_start().size,
            "optimizer": group.optimizer.name,
            "lr": lrs,
            "on_grid": [member.on_grid for member in group.members],
            "keras_default": [member.keras_default for member in group.members],
            "seed": [member.seed for member in group.members],
            "role": [member.role for member in group.members],
            "dtype": dtype,
            "budget": group.budget,
            "status": statuses,
            "steps": ends,
            "final_loss": curves.last_loss,
            "best_loss": curves.best,
            "f_star": stars,
            "hessians": ends if group.optimizer.option == "newton" else 0,
            "command": [
                member_command(group, keys, m.lr, m.seed, sources)
                for m, keys in zip(group.members, members.start_keys, strict=True)
            ],  # fmt: skip
            "group_seconds": seconds,
        }
    )
    hits = pd.DataFrame(curves.hits, columns=hit_columns(targets))
    return GroupResult(pd.concat([runs, hits], axis=1), curves.table())


def train_members(problems: list[Problem], optimizer: OptimizerConfig, lrs: list[float], budget: int, dtype: str,
                  curves: MemberCurves, first: int, stops: StopRequests,
                  upcoming: Members | None) -> list[str]:  # fmt: skip
    """Train members as one batch for `budget` steps, under XLA, feeding their rows to `curves` (where they are
    members `first`, `first` + 1, …), with the `upcoming` group's loop compiling meanwhile; return each one's
    status (completed or diverged)."""
    from tapelab.engine.pool import POOL

    count = len(problems)
    with POOL.batch_for(problems, [optimizer] * count, lrs, 1, [StopConfig()] * count, True, False, dtype) as batch:
        batch.trace()
        batch.compile()
        if upcoming is not None:
            compile_ahead(upcoming)
        while batch.step < budget and any(status is None for status in batch.statuses):
            steps, rows = batch.advance_rows(min(batch.max_chunk_steps, budget - batch.step))
            member_steps = np.broadcast_to(steps[:, None], (len(steps), count))
            curves.take(member_steps, rows[:, :, 0], member_steps < batch.steps[None, :], first)
            if stops.received is not None:
                raise Interrupted(stops.received, batch.step)
        # As a run alone ends: diverged if its last state isn't finite, which then isn't one of its rows.
        end_rows = batch.end_rows()
        finite = np.isfinite(end_rows).all(axis=1) & np.array([status is None for status in batch.statuses])
        curves.take(batch.steps[None, :], end_rows[None, :, 0], finite[None, :], first)
        return ["completed" if ended else "diverged" for ended in finite]


def run_study(cfg: DictConfig, run_dir: Path, compose: Callable[[list[str]], DictConfig]) -> Path:
    """Run the study of `cfg.study` into its directory: train the groups not done yet (of this unit, if
    `study.unit` is set), then merge every finished group into the study's tables. Return the directory."""
    from tapelab.tensorflow_start import import_tensorflow, quiet_tensorflow_logs

    study = cfg.study
    study_dir = Path(study.dir) if study.dir else run_dir
    check_units(study.unit, study.units, study.dir)
    groups = plan_groups(study, compose)
    mine = unit_groups(groups, study.unit, study.units)
    targets = study_targets(study)
    todo = [group for group in mine if not tables.is_done(study_dir, group)]
    runs = sum(len(group.members) for group in mine)
    log.info("study: %s (%s), %d to train", plural(len(mine), "group"), plural(runs, "run"), len(todo))
    import_tensorflow()
    tables.write_config(study_dir, cfg)
    progress = Progress(mine, todo)
    sources = user_config_sources()
    again = "run the same command again to train the groups left"
    if study.dir is None:
        again = f"run the same command with hydra.run.dir={study_dir} to train the groups left"
    with StopRequests() as stops, quiet_tensorflow_logs():
        upcoming = None
        for number, group in enumerate(todo):
            try:
                members = upcoming if upcoming is not None and upcoming.group is group else group_members(group)
                upcoming = next_members(todo[number + 1 :])
                result = train_group(members, targets, stops, sources, upcoming)
            except Interrupted:
                tables.merge(study_dir, groups, study)  # no report: stop now (`load_study(dir).report()` makes one)
                raise Interrupted(stops.received or signal.SIGINT, progress.done_runs, how_to_continue=again) from None
            except Exception as error:  # recorded and retried next time, never cached as done
                log.error("study: group %s × %s failed: %s", group.problem, group.optimizer.name, one_line(error))
                tables.save_failure(study_dir, group, error)
                progress.skip(group)
                continue
            tables.save_group(study_dir, group, result.runs, result.curves)
            progress.done(group)
            if stops.received is not None:
                break
    # One unit of a spread study merges what is done; its sweep's end reports, once every unit has ended.
    finished = stops.received is None  # a stopped study stops now: `tapelab.load_study(dir).report()` reports it
    summary = merge_and_report(study_dir, groups, study, report=study.report and study.unit is None and finished)
    if stops.received is not None:
        raise Interrupted(stops.received, progress.done_runs, how_to_continue=again)
    say_how_it_ended(summary, study_dir)
    return study_dir


def merge_study(cfg: DictConfig, compose: Callable[[list[str]], DictConfig]) -> None:
    """Merge the groups that a sweep's units of the study trained into the tables of `study.dir`."""
    study_dir = Path(cfg.study.dir)
    study = cfg.study
    say_how_it_ended(merge_and_report(study_dir, plan_groups(study, compose), study, report=study.report), study_dir)


def merge_and_report(study_dir: Path, groups: Sequence[Group], study: DictConfig, report: bool) -> dict:
    """Merge every finished group into the study's tables and, with `report`, rebuild its report from them;
    return the study's summary."""
    from tapelab.study.report import write_report

    summary = tables.merge(study_dir, groups, study)
    if report and summary["runs"]:
        write_report(study_dir)
        log.info("study: report in %s", study_dir / "report.html")
    return summary


def say_how_it_ended(summary: dict, study_dir: Path) -> None:
    """The study's last lines: complete or partial, and what failed or was trained by other versions."""
    log.info("study %s: %d/%d groups, %d runs (%s)", summary["status"], summary["groups_done"], summary["groups"],
             summary["runs"], study_dir)  # fmt: skip
    for problem in summary["failed"]:
        log.warning("study: %s failed (see study.json); run the study again to retry it", problem)
    if "warning" in summary:
        log.warning("study: %s", summary["warning"])


def check_units(unit: int | None, units: int, study_dir: str | None) -> None:
    """`study.unit` is null, or one of `study.units`, with the `study.dir` that every unit writes into."""
    if units < 1 or (unit is not None and not 0 <= unit < units):
        raise ConfigError("study.unit", f"must be null or from 0 to study.units - 1 = {units - 1}, got {unit}")
    if unit is not None and study_dir is None:
        raise ConfigError("study.dir", "must be set with study.unit: the directory every unit of the study writes into")


def unit_groups(groups: Sequence[Group], unit: int | None, units: int) -> list[Group]:
    """The groups of one unit: every `units`-th group in the order of their keys (which the config's order
    doesn't change), starting at `unit`; every group if `unit` is null."""
    if unit is None:
        return list(groups)
    ordered = sorted(groups, key=lambda group: group.key)
    return [group for number, group in enumerate(ordered) if number % units == unit]


class Progress:
    """A line as each group ends: groups and runs done, and an estimate of the time left."""

    def __init__(self, groups: Sequence[Group], todo: Sequence[Group]) -> None:
        self.groups, self.runs = len(groups), sum(len(group.members) for group in groups)
        self.done_groups = self.groups - len(todo)
        self.done_runs = self.runs - sum(len(group.members) for group in todo)
        self.left_runs = self.runs - self.done_runs
        self.started, self.trained = time.perf_counter(), 0

    def done(self, group: Group) -> None:
        self.done_groups += 1
        self.done_runs += len(group.members)
        self.trained += len(group.members)
        self.left_runs -= len(group.members)
        seconds = time.perf_counter() - self.started
        left = seconds / self.trained * self.left_runs
        log.info("study: %d/%d groups, %d/%d runs done (%s × %s), about %.0f s left", self.done_groups, self.groups,
                 self.done_runs, self.runs, group.problem, group.optimizer.name, left)  # fmt: skip

    def skip(self, group: Group) -> None:
        self.left_runs -= len(group.members)
