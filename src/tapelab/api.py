"""tapelab from Python: train in-process as the command line does, and read runs and sweeps back.

import tapelab
run = tapelab.run("objective=rosenbrock", "optimizer=adam", "lr=0.01", "epochs=2000")
run.summary["final_loss"], run.history.tail(), run.plot()
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tapelab.callbacks import quoted
from tapelab.cli import CONFIG_PATH
from tapelab.config import register_configs
from tapelab.errors import ConfigError, PastHydra
from tapelab.failures import carried_past_hydra
from tapelab.rundir import METRICS, SUMMARY
from tapelab.study.tables import CHOSEN as STUDY_CHOSEN
from tapelab.study.tables import CURVES as STUDY_CURVES
from tapelab.study.tables import ECDF as STUDY_ECDF
from tapelab.study.tables import RUNS as STUDY_RUNS
from tapelab.study.tables import SUMMARY as STUDY_SUMMARY
from tapelab.sweep import SWEEP_CSV, find_jobs, sweep_table, swept_keys

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's format for a job's log file
_one_run_at_a_time = threading.Lock()  # Hydra's state (GlobalHydra, HydraConfig) is one per process


@dataclass(frozen=True)
class Run:
    """A run directory, read on demand: its history (metrics.csv), its summary.json and its loss picture."""

    dir: Path

    @property
    def history(self) -> pd.DataFrame:
        """metrics.csv: one row per logged step."""
        return pd.read_csv(self.dir / METRICS)

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json: status, steps, final and best loss, parameters, hyperparameters, timings."""
        return json.loads((self.dir / SUMMARY).read_text())

    def plot(self) -> Figure:
        """The loss against the step, as loss.png draws it (a matplotlib Figure, which a notebook shows inline)."""
        from tapelab.pictures import picture_title, thinned
        from tapelab.plots import loss_figure

        summary = self.summary
        history = thinned(self.history[["step", "loss"]])
        return loss_figure(history, picture_title(summary, self.dir), summary.get("loss_at_min"))


@dataclass(frozen=True)
class Study:
    """A study's directory, read on demand: its tables (`tapelab.study.tables`) and study.json."""

    dir: Path

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run: problem, optimizer, lr, seed, role, dtype, status, steps, gaps, runtime to each
        target (`runtime@<target>`, missing where missed) and the command that reproduces it alone."""
        return pd.read_parquet(self.dir / STUDY_RUNS)

    @property
    def curves(self) -> pd.DataFrame:
        """The runs' kept points: run, step, loss, best loss so far and gap."""
        return pd.read_parquet(self.dir / STUDY_CURVES)

    @property
    def chosen(self) -> pd.DataFrame:
        """Each (problem, optimizer)'s learning rate by the tuning rule, and its results on the evaluation seeds."""
        return pd.read_parquet(self.dir / STUDY_CHOSEN)

    @property
    def ecdf(self) -> pd.DataFrame:
        """The runtime ECDF per optimizer and problem group (and over all problems): step against share solved."""
        return pd.read_parquet(self.dir / STUDY_ECDF)

    @property
    def summary(self) -> dict[str, Any]:
        """study.json: complete or partial, the groups missing or failed, versions and the aggregates."""
        return json.loads((self.dir / STUDY_SUMMARY).read_text())

    def report(self, runs: pd.DataFrame | None = None, into: str | os.PathLike[str] | None = None) -> Path:
        """Rebuild the study's report from its tables alone (report.html, figures/, leaderboard.csv and
        tensorboard/) and return report.html's path.

        With `runs` (rows of this study's `runs`, e.g. filtered in pandas), the report covers those runs, their
        curves and the learning rates the tuning rule chooses among them, and goes to `into`, which must then be
        given, so that the study's own report stays as it is.
        """
        from tapelab.study.report import StudyTables, write_report

        tables = StudyTables.read(self.dir)
        if runs is not None:
            if into is None or Path(into).resolve() == self.dir.resolve():
                raise ValueError("Study.report(runs=...) needs into=<another directory>: the study's own report stays")
            tables = dataclasses.replace(
                tables, runs=runs, curves=tables.curves[tables.curves["run"].isin(runs["run"])]
            )
        return write_report(self.dir, tables, Path(into) if into is not None else None)


def run(*overrides: str, run_dir: str | os.PathLike[str] | None = None) -> Run:
    """Train one run in this process, as `python run.py <overrides>` would, and return it.

    The run goes to `run_dir`, or to outputs/<date>/<time>/ under the working directory, with the same files
    and checks as on the command line (`resume=true` with `run_dir` continues a run). A config mistake raises
    `ConfigError` with the command line's message, before the run's directory is made; a Ctrl-C ends the run
    after saving it and raises `Interrupted`. For the run's length, tapelab's log lines (INFO and up) also go to
    the run's tapelab.log, and XLA_FLAGS caps XLA's instruction set (see README, How it runs). Runs from several
    threads take turns.
    """
    job = launch(overrides, run_dir)
    return Run(Path(job.hydra_cfg.hydra.runtime.output_dir))


def run_study(*overrides: str, run_dir: str | os.PathLike[str] | None = None) -> Study:
    """Run a study in this process, as `python run.py study=<preset> <overrides>` would, and return it: into
    `study.dir`, or `run_dir`, or outputs/<date>/<time>/. Run it again into the same directory to train only
    the groups not done."""
    if not any(override.split("=")[0].lstrip("+~") == "study" for override in overrides):
        raise ConfigError("study", "tapelab.run_study needs study=<preset>, e.g. study=quick")
    job = launch(overrides, run_dir)
    return Study(Path(job.cfg.study.dir or job.hydra_cfg.hydra.runtime.output_dir).resolve())


def launch(overrides: Sequence[str], run_dir: str | os.PathLike[str] | None) -> Any:
    """Run tapelab's job in this process as the command line would; return Hydra's JobReturn."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path

    from tapelab.resume import override_key

    register_configs()
    arguments = list(overrides)
    if run_dir is not None:
        arguments.append(f"hydra.run.dir={quoted(Path(run_dir))}")
    search_path = create_automatic_config_search_path(None, None, CONFIG_PATH)
    with _one_run_at_a_time, own_global_hydra():
        try:
            for override in overrides:
                if override.startswith("-"):
                    raise ConfigError(override, "is a command-line flag; tapelab.run takes KEY=VALUE overrides")
                if override_key(override) == "hydra.mode":
                    raise ConfigError("hydra.mode", "tapelab.run trains one run; sweeps run from the command line")
            app = Hydra.create_main_hydra2(task_name="tapelab", config_search_path=search_path)
            return app.run("config", _task, arguments, with_log_configuration=False)
        except PastHydra as carried:
            raise carried.error from None
        except (CompactHydraException, OmegaConfBaseException) as mistake:
            raise ConfigError.of(mistake) from None


def load(run_dir: str | os.PathLike[str]) -> Run:
    """The run in `run_dir`; FileNotFoundError if it holds none."""
    path = Path(run_dir).resolve()
    if not (path / SUMMARY).exists():
        raise FileNotFoundError(f"{path} holds no run ({SUMMARY} is missing)")
    return Run(path)


def load_study(study_dir: str | os.PathLike[str]) -> Study:
    """The study in `study_dir` (complete or partial); FileNotFoundError if it holds none."""
    path = Path(study_dir).resolve()
    if not (path / STUDY_SUMMARY).exists():
        raise FileNotFoundError(f"{path} holds no study ({STUDY_SUMMARY} is missing)")
    return Study(path)


def load_sweep(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """sweep.csv as a DataFrame, one row per job, with each job's `Run` in the column `run`.

    A sweep still running, or stopped before its report, is read from its job directories as sweep.csv
    would be written.
    """
    path = Path(sweep_dir).resolve()
    if (path / SWEEP_CSV).exists():
        table = pd.read_csv(path / SWEEP_CSV, dtype={"dir": str})  # a sweep that varies nothing names jobs 0, 1, …
    else:
        jobs = find_jobs(path)
        if not jobs:
            raise FileNotFoundError(f"{path} holds no sweep ({SWEEP_CSV} and job directories are missing)")
        text = sweep_table(path, jobs, swept_keys(path, jobs)).to_csv(index=False)
        table = pd.read_csv(io.StringIO(text), dtype={"dir": str})  # the columns' types as sweep.csv's are read
    table["run"] = [Run(path / job_dir) for job_dir in table["dir"]]
    return table


def _task(cfg: DictConfig) -> float:
    """Hydra's task for `run`: the command line's job, with tapelab's log lines in the run's log file. Its
    errors pass Hydra's report of a failed job (a line on stderr) to `run`."""
    from tapelab.job import run_job

    hydra_config = HydraConfig.get()
    with log_file(Path(hydra_config.runtime.output_dir) / f"{hydra_config.job.name}.log"), carried_past_hydra():
        return run_job(cfg)


@contextmanager
def own_global_hydra() -> Iterator[None]:
    """Hydra's global state for one `run`; a Hydra the caller initialized (`hydra.initialize`) comes back after."""
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    callers = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        yield
    finally:
        global_hydra.clear()
        if callers is not None:
            global_hydra.initialize(callers)


@contextmanager
def log_file(path: Path) -> Iterator[None]:
    """tapelab's log records of INFO and up also go to `path` while this block runs."""
    logger = logging.getLogger("tapelab")
    handler, level = logging.FileHandler(path), logger.level
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
