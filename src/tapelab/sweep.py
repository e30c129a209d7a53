"""The sweep report: sweep.csv and sweep.png at the root of a sweep directory, and its HParams experiment.

Everything is read back from the job directories (their `.hydra/` files and summary.json), so the same
report can be rebuilt for any sweep, finished, interrupted or run elsewhere (scripts/sweep_report.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tapelab.atomic import replacing
from tapelab.console import sweep_end_line
from tapelab.overrides import load_yaml, parse_overrides, read_overrides
from tapelab.run_summary import CHOSEN_GROUPS, flat_hparams, given_hparams, hparam_value
from tapelab.rundir import METRICS, SAVED_OVERRIDES, SUMMARY
from tapelab.sinks.hparams import EXPERIMENT_FILE, write_experiment

log = logging.getLogger(__name__)

SWEEP_CSV = "sweep.csv"
SWEEP_PNG = "sweep.png"
LEGACY_EXPERIMENT_SUFFIX = ".sweep-hparams"  # earlier versions wrote the experiment at the sweep's root
RESULT_COLUMNS = ["status", "final_loss", "best_loss", "steps", "wall_time_s", "distance_to_min"]


@dataclass(frozen=True)
class Job:
    """One job directory of a sweep."""

    dir: Path
    num: int
    overrides: dict[str, Any]  # key -> value, parsed as Hydra parses the command line
    summary: dict[str, Any] | None  # None while the job has not finished (or was killed)
    choices: dict[str, Any]  # the option of each config group (hydra.runtime.choices), e.g. objective: rosenbrock

    @property
    def status(self) -> str:
        return self.summary["status"] if self.summary else "incomplete"


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory below `sweep_dir` (those holding `.hydra/overrides.yaml`), by job number."""
    jobs = []
    for overrides_file in sweep_dir.rglob(".hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        # libyaml's loader: hydra.yaml is long, and OmegaConf's loader takes ~20 ms a job.
        hydra_config = load_yaml(job_dir / ".hydra" / "hydra.yaml")
        summary_file = job_dir / SUMMARY
        jobs.append(
            Job(
                dir=job_dir,
                num=int(hydra_config["hydra"]["job"]["num"]),
                overrides={
                    override.key_or_group: override.value()
                    for override in parse_overrides(read_overrides(overrides_file))
                },
                summary=json.loads(summary_file.read_text()) if summary_file.exists() else None,
                choices=dict(hydra_config["hydra"].get("runtime", {}).get("choices") or {}),
            )
        )
    return sorted(jobs, key=lambda job: (job.num, str(job.dir)))


def swept_keys(sweep_dir: Path, jobs: list[Job]) -> list[str]:
    """The keys the sweep varied, in the jobs' override order.

    They are read from multirun.yaml: the overrides with sweep syntax (`lr=0.1,1`, `range(…)`) and the
    sweeper's search space (`hydra.sweeper.params`). Without multirun.yaml, the keys whose values differ.
    """
    in_order = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    multirun_file = sweep_dir / "multirun.yaml"
    if multirun_file.exists():
        swept, _ = split_sweep_keys(OmegaConf.load(multirun_file))
    else:
        swept = [key for key in in_order if len({repr(job.overrides.get(key)) for job in jobs}) > 1]
    return [key for key in in_order if key in swept]


def split_sweep_keys(multirun: DictConfig) -> tuple[list[str], list[str]]:
    """The keys a sweep's config (multirun.yaml) varies, and the keys its command line sets to one value.

    Varied: the overrides with sweep syntax (`lr=0.1,1`, `range(…)`) and the sweeper's search space
    (`hydra.sweeper.params`).
    """
    task = parse_overrides(list(OmegaConf.select(multirun, "hydra.overrides.task", default=[])))
    swept = [override.key_or_group for override in task if override.is_sweep_override()]
    swept += [key for key in OmegaConf.select(multirun, "hydra.sweeper.params", default=None) or {} if key not in swept]
    return swept, [override.key_or_group for override in task if override.key_or_group not in swept]


def planned_jobs(multirun: DictConfig) -> int | None:
    """How many jobs the sweep of config `multirun` launches, for the grid and Optuna sweepers; None for others
    (or a grid that needs the config loader to expand, like `glob(…)`)."""
    sweeper = str(OmegaConf.select(multirun, "hydra.sweeper._target_", default=""))
    if sweeper.endswith("OptunaSweeper"):
        return int(multirun.hydra.sweeper.n_trials)
    if not sweeper.endswith(("GridSweeper", "BasicSweeper")):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    params = OmegaConf.select(multirun, "hydra.sweeper.params", default=None) or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(multirun.hydra.overrides.task)
    try:
        (jobs,) = BasicSweeper.split_arguments(parse_overrides(lines), None)
    except HydraException:
        return None
    return len(jobs)


def sweep_table(sweep_dir: Path, jobs: list[Job], keys: list[str]) -> pd.DataFrame:
    """One row per job: its number, its value of each swept key, and how it ended."""
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.num}
        row.update({key: hparam_value(job.overrides.get(key)) for key in keys})
        row.update({column: (job.summary or {}).get(column) for column in RESULT_COLUMNS})
        row["status"] = job.status
        row["error"] = (job.summary or {}).get("error")
        row["dir"] = job.dir.relative_to(sweep_dir).as_posix()
        rows.append(row)
    table = pd.DataFrame(rows, columns=["job", *keys, *RESULT_COLUMNS, "error", "dir"])
    table["steps"] = table["steps"].astype("Int64")  # stays an integer column beside failed jobs' blanks
    if table["distance_to_min"].isna().all():
        table = table.drop(columns="distance_to_min")
    if table["error"].isna().all():
        table = table.drop(columns="error")
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write sweep.csv in one step."""
    with replacing(path) as temporary:
        table.to_csv(temporary, index=False)


def write_hparams_experiment(sweep_dir: Path, jobs: list[Job], keys: list[str]) -> None:
    """Describe the sweep to TensorBoard's HParams tab: the objective, the optimizer and each swept key with
    their values, `status` and the run metrics.

    The experiment goes into the first job's directory, not the sweep's root, where TensorBoard would list
    it as a run of its own with no data; the tab finds it in any run. A key's values are those its jobs'
    sessions record: a finished job's config, a failed one's overrides and Hydra's choices of objective and
    optimizer (`tapelab.failures.record_failure`).
    """
    if not jobs:
        return
    values: dict[str, set] = {}
    for job in jobs:
        finished = job.summary is not None and "objective_params" in job.summary
        logged = flat_hparams(job.summary) if finished else given_hparams(job.overrides, job.choices)
        for key in dict.fromkeys([*CHOSEN_GROUPS, *keys]):
            if key in logged:
                values.setdefault(key, set()).add(logged[key])
    stale = [*sweep_dir.rglob(EXPERIMENT_FILE), *sweep_dir.glob(f"events.out.tfevents.*{LEGACY_EXPERIMENT_SUFFIX}")]
    for path in stale:
        if path.parent != jobs[0].dir:
            path.unlink()  # TensorBoard is to see one experiment: this one
    # Dated as the first job's start (when Hydra saved its overrides): a report rebuilt from the same jobs is
    # the same file, so a re-launch that skips every job changes none of their files.
    created = (jobs[0].dir / SAVED_OVERRIDES).stat().st_mtime
    write_experiment(jobs[0].dir, {key: sorted(domain_values(found)) for key, found in values.items()}, created)


def domain_values(values: set) -> list:
    """Values of one type, as HParams domains need: ints mixed with floats become floats."""
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return [float(value) for value in values] if any(isinstance(v, float) for v in values) else list(values)
    if all(isinstance(value, bool) for value in values):
        return list(values)
    return [str(value) for value in values]


def loss_curves(jobs: list[Job], max_points: int = 2000) -> dict[int, pd.DataFrame]:
    """Each job's (step, loss) history by job number, thinned to at most `max_points` rows."""
    curves = {}
    for job in jobs:
        metrics_file = job.dir / METRICS
        if metrics_file.exists():
            history = pd.read_csv(metrics_file, usecols=["step", "loss"])
            curves[job.num] = history.iloc[:: max(1, len(history) // max_points)]
    return curves


def write_report(sweep_dir: Path) -> pd.DataFrame:
    """Write sweep.csv, sweep.png and the HParams experiment for `sweep_dir`; return the table."""
    from tapelab.sweep_plots import plot_sweep

    jobs = find_jobs(sweep_dir)
    keys = swept_keys(sweep_dir, jobs)
    table = sweep_table(sweep_dir, jobs, keys)
    write_table(table, sweep_dir / SWEEP_CSV)
    plot_sweep(table, loss_curves(jobs), keys, sweep_dir / SWEEP_PNG)
    write_hparams_experiment(sweep_dir, jobs, keys)
    log.info(sweep_end_line(table["status"].tolist(), sweep_dir / SWEEP_CSV))
    return table
