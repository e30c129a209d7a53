"""Hydra callbacks: the checks, directory guards and names before a run or sweep starts, a line as each job of a
sweep ends, and the sweep report when it ends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapelab.config import check_added_keys
from tapelab.console import count_of_jobs, job_line, to_console
from tapelab.errors import ConfigError
from tapelab.extras import missing_in_launch
from tapelab.failures import carried_past_hydra
from tapelab.resume import composer, resumed_config
from tapelab.rundir import SUMMARY, check_unused, check_writable, claim_new_dir

log = logging.getLogger(__name__)


def is_time_named(node: DictConfig) -> bool:
    """Whether `node.dir` is still a pattern of the start time (not a path the user chose)."""
    return "${now:" in str(OmegaConf.to_container(node, resolve=False)["dir"])


def quoted(value: str | Path) -> str:
    """`value` as a quoted Hydra override value."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextmanager
def as_in_the_job(config: DictConfig) -> Iterator[None]:
    """HydraConfig and the environment (`hydra.job.env_set`) as Hydra's `run_job` sets them for the task, for
    checks made before it; put back after."""
    from hydra.core.utils import env_override

    hydra_config, readonly = HydraConfig.instance(), OmegaConf.is_readonly(config.hydra)
    before = hydra_config.cfg
    hydra_config.set_config(config)  # which makes config.hydra read-only
    try:
        with env_override(resolvable_values(config.hydra.job.env_set)):
            yield
    finally:
        hydra_config.cfg = before
        OmegaConf.set_readonly(config.hydra, readonly)


def resolvable_values(node: DictConfig) -> dict[str, str]:
    """The values of `node` that resolve before the run's directory is made: one that names it
    (`${hydra:runtime.output_dir}`) is left out."""
    values = {}
    for key in node:
        try:
            values[key] = str(node[key])
        except OmegaConfBaseException:
            continue
    return values


def resumed(config: DictConfig) -> DictConfig:
    """The config of the run that `resume=true` continues, refused (ConfigError) before Hydra saves anything into
    the run's .hydra/."""
    run_dir = config.hydra.run.dir
    if is_time_named(config.hydra.run):
        raise ConfigError("resume", "needs hydra.run.dir=<the directory of the run to continue>")
    resumed_cfg = resumed_config(
        Path(run_dir), list(config.hydra.overrides.task), composer(config.hydra.overrides.hydra)
    )
    check_writable(Path(run_dir), "hydra.run.dir")  # the run's own directory, which resumed_config found
    return resumed_cfg


class RunChecks(Callback):
    """Refuse a run or sweep of tapelab's task that can't run, before Hydra or `RunDirectories` writes anything.

    A run's config must pass every check of a run (`tapelab.runs.check_config`), and a key that the command
    line adds with `+` must be one of tapelab's (`tapelab.config.check_added_keys`). A sweep's launcher and
    sweeper must be installed, and its added keys known; its jobs' values are checked as each job runs, so that
    a job with a bad value fails and the others go on. Listed before `RunDirectories`, whose callbacks Hydra
    calls after these.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tapelab.runs import check_config

        with carried_past_hydra():
            check_added_keys(config)
            task_config = resumed(config) if config.resume else config
            with as_in_the_job(config):
                check_config(task_config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with carried_past_hydra():
            missing = missing_in_launch(config)
            if missing is not None:
                raise ConfigError(*missing)
            check_added_keys(config)


class RunDirectories(Callback):
    """Give every run and sweep a directory of its own, before Hydra writes anything into it.

    A time-named directory (the default) that is already taken gets a `_1`, `_2`, … suffix. A run directory
    the user named is used as named, but refused when it already holds a run's results, unless `resume=true`
    asks to continue that run (`RunChecks` checks that run). A sweep directory the user named may hold an
    earlier launch of the same sweep: its finished jobs are skipped and its interrupted ones continue (see
    `tapelab.job.run_job`).

    A sweep's job directories are named after the keys the sweep varies, and the job number
    (`lr=0.1,optimizer=adam_3`): the keys the command line sets to one value are left out of
    `hydra.job.override_dirname`, like those in its `exclude_keys`.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run = config.hydra.run
        with carried_past_hydra():
            if is_time_named(run):
                run.dir = str(claim_new_dir(Path(run.dir), "hydra.run.dir"))
            elif not OmegaConf.select(config, "resume", default=False):
                check_writable(Path(run.dir), "hydra.run.dir")
                check_unused(Path(run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = config.hydra.sweep
        with carried_past_hydra():
            if is_time_named(sweep):
                sweep.dir = str(claim_new_dir(Path(sweep.dir), "hydra.sweep.dir"))
                # Jobs re-compose their config from the overrides, so the claimed name must be one of them.
                config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(Path(sweep.dir))}")
            else:
                check_writable(Path(sweep.dir), "hydra.sweep.dir")
                log_earlier_launch(Path(sweep.dir))
        naming = job_naming(config, Path(sweep.dir))
        if naming is not None:
            config.hydra.overrides.hydra.append(naming)
        # The basic sweeper saves multirun.yaml (the sweep's config) itself; others, like Optuna's, don't.
        multirun_file = Path(sweep.dir) / "multirun.yaml"
        if not multirun_file.exists():
            multirun_file.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, multirun_file)


EXCLUDED_KEYS = "hydra.job.config.override_dirname.exclude_keys"


def job_naming(config: DictConfig, sweep_dir: Path) -> str | None:
    """The Hydra override that names a sweep's job directories after the keys it varies.

    A re-launch into `sweep_dir` keeps the naming of the launch that made it, recorded in its multirun.yaml,
    so that it finds its jobs: None when that launch named them after every override, as earlier versions of
    tapelab did (the config's own `exclude_keys` alone).
    """
    earlier = sweep_dir / "multirun.yaml"
    if not earlier.exists():
        return f"{EXCLUDED_KEYS}={names_list(excluded_keys(config))}"
    recorded = OmegaConf.select(OmegaConf.load(earlier), "hydra.overrides.hydra", default=[])
    namings = [line for line in recorded if line.startswith(f"{EXCLUDED_KEYS}=")]
    return namings[-1] if namings else None


def excluded_keys(config: DictConfig) -> list[str]:
    """The keys left out of a sweep's job directory names: those already excluded, and those not swept."""
    from tapelab.sweep import split_sweep_keys

    _, constant = split_sweep_keys(config)
    already = list(OmegaConf.select(config, EXCLUDED_KEYS, default=[]))
    return already + [key for key in constant if key not in already]


def names_list(names: list[str]) -> str:
    """`names` as a Hydra override's list of quoted strings."""
    return "[" + ",".join(quoted(name) for name in names) + "]"


def log_earlier_launch(sweep_dir: Path) -> None:
    """Say what a re-launch into `sweep_dir` will do with the jobs an earlier launch left there."""
    from tapelab.rundir import is_finished

    job_dirs = [path.parent for path in sweep_dir.glob(f"*/{SUMMARY}")]
    finished = sum(is_finished(job_dir) for job_dir in job_dirs)
    if job_dirs:
        log.info(
            "%s holds an earlier launch: %d finished jobs are skipped, %d others continue or start again",
            sweep_dir,
            finished,
            len(job_dirs) - finished,
        )


class JobLines(Callback):
    """One line as each job of a sweep ends: `job 3/12 lr=0.1,optimizer=adam_2: completed after …`, on the
    console and in the job's tapelab.log.

    With `quiet`, only failed jobs get their line. A job that ended in an earlier launch of the sweep gets
    its line on the console only, so that its files stay as they were; a job whose directory holds another
    job gets none (`tapelab.job.run_job` says so). The number of jobs is known for the grid sweeper (but for
    `glob(…)`) and the Optuna sweeper; otherwise the line says `job 3`. Jobs may start together and end
    later (`hydra/launcher=batched`).
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.total: int | None = None
        self.started: dict[str, tuple[bool, bool]] = {}  # job directory: (clash, earlier) of a job not yet ended

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tapelab.sweep import planned_jobs

        self.total = planned_jobs(config)
        if not self.quiet:
            log.info("sweep of %s into %s", count_of_jobs(self.total), config.hydra.sweep.dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tapelab.rundir import JobState, job_state

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        # Hydra has saved this job's overrides, unless the directory is another job's or finished.
        state = job_state(job_dir, OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        self.started[str(job_dir)] = (state is JobState.FOREIGN, state is JobState.FINISHED)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from tapelab.rundir import read_summary

        job_dir = Path(config.hydra.runtime.output_dir)
        clash, earlier = self.started.pop(str(job_dir), (False, False))
        if config.hydra.mode != RunMode.MULTIRUN or clash:
            return
        if config.get("study") is not None:  # a unit of a study: its own lines said what it trained
            return
        summary = read_summary(job_dir)
        if self.quiet and (summary or {}).get("status") != "failed":
            return
        line = job_line(int(config.hydra.job.num) + 1, self.total, job_dir.name, summary, earlier)
        if earlier:
            to_console(log, line)
        else:
            log.info("%s", line)


class SweepReport(Callback):
    """Write sweep.csv and sweep.png at the sweep's root, and its HParams experiment, when a sweep ends; or, for a
    sweep of a study's units, merge their groups into the study's tables."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from tapelab.sweep import write_report

        if config.get("study") is not None:  # studies: each merged its own; units of one, into study.dir
            from tapelab.study.runner import merge_study

            if config.study.dir is not None:
                merge_study(config, composer(list(config.hydra.overrides.hydra)))
            return
        write_report(Path(config.hydra.sweep.dir))
