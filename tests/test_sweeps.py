"""Sweeps end to end: real `python run.py -m` runs with Hydra's launchers and the Optuna sweeper."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import CONF_DIR, ROOT
from tensorboard_client import TensorBoard, experiment_of, session_of

pytestmark = pytest.mark.e2e
RAY_PYTHON = os.environ.get("TAPELAB_RAY_PYTHON")  # a Python with the `ray` extra (.ci/run makes one)


def run_tapelab(*args: str, cwd: Path = ROOT, python: str = sys.executable) -> subprocess.CompletedProcess:
    finished = subprocess.run(
        [python, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished


def sweep_in_process(*arguments: str) -> None:
    """`python run.py -m <arguments>` in this process, as Hydra runs it from the command line (the sweep's report
    included). Hydra's state and the root logger's handlers (Hydra's point to job log files) are as before
    afterwards."""
    from hydra.core.singleton import Singleton

    from test_batched_launcher import TAPELAB_TASK, multirun, registered_plugins

    state, root = Singleton.get_state(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        registered_plugins()
        multirun(TAPELAB_TASK, *arguments)
    finally:
        Singleton.set_state(state)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def sgd_final_loss(lr: float, epochs: int):
    """Gradient descent on (x − 1)² from 0: x_t − 1 = −(1 − 2·lr)^t, so the loss is (1 − 2·lr)^(2t).

    Near x = 1, float32's x² − 2x + 1 loses digits to cancellation: about 1e-7 absolute.
    """
    return pytest.approx((1 - 2 * lr) ** (2 * epochs), rel=1e-4, abs=1e-7)


def without_log_prefix(line: str) -> str:
    """A console line without its logging prefix: `[time][HYDRA] ` or `[time][logger][LEVEL] - `."""
    return re.sub(r"^\[[^]]*\](\[HYDRA\] |\[[^]]*\]\[[A-Z]+\] - )", "", line)


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(path.parent.parent for path in sweep_dir.glob("*/.hydra/overrides.yaml"))


def assert_rows_are_the_jobs(sweep_dir: Path, table: pd.DataFrame) -> None:
    """Each row of a sweep table against the job's own files, read here as Hydra and the job wrote them: a row
    for every job directory; its number from Hydra's hydra.yaml, its value of each swept key (the columns
    between `job` and `status`) from Hydra's overrides.yaml, parsed by Hydra's parser, and its results from the
    job's summary.json."""
    assert sorted(table["dir"]) == sorted(path.relative_to(sweep_dir).as_posix() for path in job_dirs(sweep_dir))
    keys = list(table.columns[1 : table.columns.get_loc("status")])
    results = ("final_loss", "best_loss", "steps", "wall_time_s", "distance_to_min")
    for row in table.to_dict("records"):
        job_dir = sweep_dir / row["dir"]
        hydra_config = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
        assert row["job"] == int(hydra_config["hydra"]["job"]["num"])
        overrides = OverridesParser.create().parse_overrides(
            yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        )
        given = {override.key_or_group: override.value() for override in overrides}
        assert {key: row[key] for key in keys} == {key: given[key] for key in keys}, job_dir.name
        summary = json.loads((job_dir / "summary.json").read_text())
        assert row["status"] == summary["status"], job_dir.name
        for column in results:
            if column in table:
                expected = summary.get(column)
                assert row[column] == expected or (expected is None and pd.isna(row[column])), (job_dir.name, column)
        if "error" in table:
            assert row["error"] == summary.get("error") or (pd.isna(row["error"]) and "error" not in summary)


GRID = ["lr=0.001,0.1,10", "optimizer=sgd,adam", "epochs=30"]
GRID_LINES = "grid_console.txt"  # beside the grid's sweep directory: what the sweep printed
GRID_COLUMNS = ["job", "lr", "optimizer", "status", "final_loss", "best_loss", "steps", "wall_time_s",
                "distance_to_min", "dir"]  # fmt: skip


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """A 6-job grid, run once for the module: tests that change its directory work on a copy."""
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "grid"
    finished = run_tapelab("-m", *GRID, f"hydra.sweep.dir={sweep_dir}")
    (sweep_dir.parent / GRID_LINES).write_text(finished.stderr + finished.stdout)
    return sweep_dir


def grid_jobs() -> list[tuple[int, str, str]]:
    """The grid's jobs in launch order: (number, lr, optimizer)."""
    pairs = [(lr, optimizer) for lr in ("0.001", "0.1", "10") for optimizer in ("sgd", "adam")]
    return [(num, lr, optimizer) for num, (lr, optimizer) in enumerate(pairs)]


def assert_grid_results(table: pd.DataFrame) -> None:
    """The grid's SGD jobs as the closed form gives them; lr 10 diverges: 361^t overflows float32 at t = 16."""
    by_job = table.set_index(["optimizer", "lr"])
    for lr in (0.001, 0.1):
        assert by_job.loc[("sgd", lr), "final_loss"] == sgd_final_loss(lr, 30)
        assert by_job.loc[("sgd", lr), "steps"] == 30
    diverged = by_job.loc[("sgd", 10.0)]
    assert (diverged["status"], diverged["steps"]) == ("diverged", 15)
    assert set(table["status"]) == {"completed", "diverged"}


def test_grid_runs_every_combination_in_directories_named_after_the_swept_keys(grid):
    names = [path.name for path in job_dirs(grid)]
    assert sorted(names) == sorted(f"lr={lr},optimizer={optimizer}_{num}" for num, lr, optimizer in grid_jobs())
    for job_dir in job_dirs(grid):  # the constant override stays in the job's own record
        assert "epochs=30" in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())


def test_sweep_prints_a_line_per_job_as_it_ends_and_no_tensorflow_start_up_lines(grid):
    lines = (grid.parent / GRID_LINES).read_text().splitlines()
    messages = [without_log_prefix(line) for line in lines]
    assert messages[0] == f"sweep of 6 jobs into {grid}"
    job_lines = messages[1:7]
    for line, (num, lr, optimizer) in zip(job_lines, grid_jobs(), strict=True):
        summary = json.loads((grid / f"lr={lr},optimizer={optimizer}_{num}" / "summary.json").read_text())
        expected = f"job {num + 1}/6 lr={lr},optimizer={optimizer}_{num}: {summary['status']} after "
        assert line.startswith(expected) and line.endswith(f"final loss {summary['final_loss']}")
        job_log = (grid / f"lr={lr},optimizer={optimizer}_{num}" / "tapelab.log").read_text()
        assert job_log.rstrip().endswith(line)  # the job's own log ends with it too
    assert job_lines[4].startswith("job 5/6 lr=10,optimizer=sgd_4: diverged after 15 steps in ")
    assert messages[7] == f"sweep of 6 jobs: 5 completed, 1 diverged; {grid / 'sweep.csv'}"
    assert len(lines) == 8  # nothing else: no Hydra line per job, no TensorFlow start-up lines


def test_sweep_csv_has_a_row_per_job_that_matches_its_summary(grid):
    table = pd.read_csv(grid / "sweep.csv")
    assert list(table.columns) == GRID_COLUMNS
    assert table["job"].tolist() == list(range(6))
    assert_rows_are_the_jobs(grid, table)
    assert_grid_results(table)


def test_load_sweep_reads_the_table_with_each_jobs_run(grid, tmp_path):
    import tapelab

    table = tapelab.load_sweep(grid)
    assert list(table.columns) == [*GRID_COLUMNS, "run"]
    assert_rows_are_the_jobs(grid, table.drop(columns="run"))
    assert_grid_results(table)
    assert [run.dir for run in table["run"]] == [grid / name for name in table["dir"]]
    sgd = table.set_index(["optimizer", "lr"]).loc[("sgd", 0.1), "run"]
    assert sgd.summary["final_loss"] == sgd_final_loss(0.1, 30)
    np.testing.assert_allclose(sgd.history["x"], 1 - 0.8 ** np.arange(31), rtol=1e-6)  # x_t = 1 − (1 − 2·lr)^t
    assert sgd.history["step"].tolist() == list(range(31))
    unreported = tmp_path / "unreported"  # a sweep stopped before its report: read from its job directories
    shutil.copytree(grid, unreported, ignore=shutil.ignore_patterns("sweep.csv"))
    read_back = tapelab.load_sweep(unreported)
    assert_rows_are_the_jobs(unreported, read_back.drop(columns="run"))
    pd.testing.assert_frame_equal(read_back.drop(columns="run"), table.drop(columns="run"), check_exact=True)
    assert [run.dir for run in read_back["run"]] == [unreported / name for name in table["dir"]]


def test_load_sweep_reads_a_sweep_that_varies_nothing_whose_jobs_are_numbers(tmp_path):
    import tapelab

    sweep = tmp_path / "sweep"
    sweep_in_process("epochs=3", "log.plots=false", "log.tensorboard=false", f"hydra.sweep.dir={sweep}")
    unreported = shutil.copytree(sweep, tmp_path / "unreported", ignore=shutil.ignore_patterns("sweep.csv"))
    for sweep_dir in (sweep, unreported):
        table = tapelab.load_sweep(sweep_dir)
        assert table["dir"].tolist() == ["0"] and [run.dir for run in table["run"]] == [sweep_dir / "0"]
        np.testing.assert_allclose(table["run"][0].history["x"], 1 - 0.98 ** np.arange(4), rtol=1e-6)


def sweep_png_size(numeric_keys: int) -> tuple[int, int]:
    """sweep.png's (width, height): 7 inches for the loss curves and 4.5 for each numeric swept key, at 110 dpi."""
    return round((7 + 4.5 * numeric_keys) * 110), round(4.8 * 110)


def test_sweep_png_has_the_loss_panel_and_one_panel_per_numeric_swept_key(grid):
    height, width, _ = matplotlib.image.imread(grid / "sweep.png").shape
    assert (width, height) == sweep_png_size(1)  # `lr` is the only numeric swept key


def test_hparams_tab_shows_every_job_of_the_sweep(grid):
    table = pd.read_csv(grid / "sweep.csv")
    server = TensorBoard(grid)
    try:
        server.wait_for_run(table["dir"].iloc[-1])
        runs = server.get("/data/runs")
        experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
        groups = server.session_groups()["sessionGroups"]
        failures = server.session_groups(["STATUS_FAILURE"])["sessionGroups"]
    finally:
        server.stop()
    assert sorted(runs) == sorted(table["dir"])  # every job, and no empty run for the sweep's root
    domains = {info["name"]: info["domainDiscrete"] for info in experiment["hparamInfos"]}
    statuses = ["completed", "converged", "diverged", "failed", "interrupted"]
    assert domains == {
        "objective": ["quadratic"],  # not swept, and listed: the tab shows only one experiment's columns
        "optimizer": ["adam", "sgd"],
        "lr": [0.001, 0.1, 10.0],
        "status": statuses,
    }
    metric_tags = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert metric_tags == ["summary/final_loss", "summary/best_loss", "summary/steps"]
    by_run = {session["name"]: group for group in groups for session in group["sessions"]}
    assert sorted(by_run) == sorted(table["dir"]) and len(groups) == len(table)  # a row of its own for every job
    for row in table.itertuples():
        group = by_run[row.dir]
        assert re.fullmatch(rf"{grid.name}/{re.escape(row.dir)} · {grid.parent.name} · [0-9a-f]{{6}}", group["name"])
        assert (group["hparams"]["optimizer"], group["hparams"]["lr"]) == (row.optimizer, row.lr)
        assert group["hparams"]["status"] == row.status
        (session,) = group["sessions"]
        assert session["status"] == {"completed": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE"}[row.status]
        metrics = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
        assert metrics["summary/final_loss"] == pytest.approx(row.final_loss, rel=1e-6)
        assert metrics["summary/steps"] == row.steps
    assert [session["name"] for group in failures for session in group["sessions"]] == ["lr=10,optimizer=sgd_4"]


def test_report_script_rebuilds_the_table_of_an_existing_sweep_from_its_jobs(grid, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(grid, copy)
    for report_file in [copy / "sweep.csv", copy / "sweep.png", *copy.rglob("events.out.tfevents.experiment")]:
        report_file.unlink()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sweep_report.py"), str(copy)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    rebuilt = pd.read_csv(copy / "sweep.csv")
    # What the sweep wrote when it ended, and what the jobs' own files and the closed form say.
    pd.testing.assert_frame_equal(rebuilt, pd.read_csv(grid / "sweep.csv"), check_exact=True)
    assert list(rebuilt.columns) == GRID_COLUMNS and rebuilt["job"].tolist() == list(range(6))
    assert_rows_are_the_jobs(copy, rebuilt)
    assert_grid_results(rebuilt)
    height, width, _ = matplotlib.image.imread(copy / "sweep.png").shape
    assert (width, height) == sweep_png_size(1)
    assert [path.relative_to(copy).as_posix() for path in copy.rglob("events.out.tfevents.experiment")] == [
        "lr=0.001,optimizer=sgd_0/events.out.tfevents.experiment"  # one experiment, in the first job's directory
    ]


def test_relaunching_a_finished_sweep_skips_every_job_and_changes_no_job_file(grid, tmp_path):
    copy = tmp_path / "grid"
    shutil.copytree(grid, copy)  # with the files' times
    job_files = [path for job in job_dirs(copy) for path in job.rglob("*") if path.is_file()]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in job_files}
    table_before = pd.read_csv(copy / "sweep.csv")
    relaunched = run_tapelab("-m", *GRID, f"hydra.sweep.dir={copy}")
    assert "6 finished jobs are skipped" in relaunched.stdout + relaunched.stderr
    after = [path for job in job_dirs(copy) for path in job.rglob("*") if path.is_file()]
    assert sorted(after) == sorted(job_files)
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in after} == before
    pd.testing.assert_frame_equal(pd.read_csv(copy / "sweep.csv"), table_before, check_exact=True)


def test_relaunching_a_sweep_named_after_every_override_by_an_earlier_version_finds_its_jobs(grid, tmp_path):
    copy = tmp_path / "grid"
    shutil.copytree(grid, copy)
    # As earlier versions left it: job directories named after every override, and no naming recorded.
    for job_dir in job_dirs(copy):
        job_dir.rename(copy / f"epochs=30,{job_dir.name}")
    multirun = OmegaConf.load(copy / "multirun.yaml")
    multirun.hydra.overrides.hydra = [line for line in multirun.hydra.overrides.hydra if "override_dirname" not in line]
    OmegaConf.save(multirun, copy / "multirun.yaml")
    before = {path: path.stat().st_mtime_ns for job in job_dirs(copy) for path in job.rglob("*") if path.is_file()}

    relaunched = run_tapelab("-m", *GRID, f"hydra.sweep.dir={copy}")
    names = [f"epochs=30,lr={lr},optimizer={optimizer}_{num}" for num, lr, optimizer in grid_jobs()]
    assert [path.name for path in job_dirs(copy)] == sorted(names)
    assert "6 finished jobs are skipped" in relaunched.stdout + relaunched.stderr
    after = {path: path.stat().st_mtime_ns for job in job_dirs(copy) for path in job.rglob("*") if path.is_file()}
    assert after == before  # no job ran again, and the report's experiment in the first job is the same file
    assert pd.read_csv(copy / "sweep.csv")["dir"].tolist() == names


def test_a_different_sweep_into_a_used_directory_reports_the_clash_and_keeps_the_old_job(tmp_path):
    # With job directories named by number only, job 0 of a new grid lands on job 0 of the old one.
    sweep_dir = tmp_path / "sweep"
    by_number = "hydra.sweep.subdir=job${hydra.job.num}"
    sweep_in_process("lr=0.1", "epochs=5", f"hydra.sweep.dir={sweep_dir}", by_number)
    old_files = {path: path.read_bytes() for path in (sweep_dir / "job0").rglob("*") if path.is_file()}
    assert json.loads(old_files[sweep_dir / "job0" / "summary.json"])["status"] == "completed"
    clash = run_tapelab("-m", "lr=0.2", "epochs=5", f"hydra.sweep.dir={sweep_dir}", by_number)
    lines = [without_log_prefix(line) for line in (clash.stdout + clash.stderr).splitlines()]
    expected = f"Error in config: hydra.sweep.dir: {sweep_dir / 'job0'} holds a different job (lr=0.1 epochs=5); "
    assert [line for line in lines if "job0" in line] == [expected + "choose a new sweep directory"]
    assert not any(line.startswith("job 1/1") for line in lines)  # not reported as the other job's result
    assert {path: path.read_bytes() for path in (sweep_dir / "job0").rglob("*") if path.is_file()} == old_files


# Two sweeps and two single runs started at once, in one working directory, into directories whose names end
# in a fixed name, so that both sweeps want the very same directory, and both runs another one. Each sweep has
# a job that fails on its value and two jobs with the same values.
FAILING_SWEEP = ["-q", "-m", "lr=-1,0.1,0.1", "epochs=5", "hydra.sweep.dir=outputs/multirun/${now:%Y-%m-%d}/same"]
SINGLE_RUN = ["epochs=2", "hydra.run.dir=outputs/${now:%Y-%m-%d}/same"]


@pytest.fixture(scope="module")
def started_together(tmp_path_factory) -> tuple[Path, dict[Path, list[str]]]:
    """The working directory of FAILING_SWEEP twice and SINGLE_RUN twice, started together, and each sweep's
    console lines (without their logging prefix) by the sweep directory its last line names."""
    cwd = tmp_path_factory.mktemp("together")
    processes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (FAILING_SWEEP, FAILING_SWEEP, SINGLE_RUN, SINGLE_RUN)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [err[-2000:] for _, err in outputs]
    consoles = {}
    for out, err in outputs[:2]:
        lines = [without_log_prefix(line) for line in (err + out).splitlines()]
        sweep_csv = Path(lines[-1].rsplit("; ", 1)[1])
        consoles[(cwd / sweep_csv).parent] = lines
    return cwd, consoles


def test_sweeps_and_runs_started_in_the_same_second_never_share_a_directory(started_together):
    cwd, consoles = started_together
    (day,) = (cwd / "outputs" / "multirun").iterdir()
    assert sorted(path.name for path in day.iterdir()) == ["same", "same_1"]
    assert sorted(consoles) == [day / "same", day / "same_1"]  # each sweep reports its own directory
    assert all(len(pd.read_csv(sweep_dir / "sweep.csv")) == 3 for sweep_dir in day.iterdir())
    runs = [path for path in (cwd / "outputs").glob("*/same*")]
    assert sorted(path.name for path in runs) == ["same", "same_1"]
    assert all(json.loads((run / "summary.json").read_text())["steps"] == 2 for run in runs)


def test_failed_and_repeated_jobs_keep_rows_and_directories_of_their_own(started_together):
    cwd, consoles = started_together
    for sweep_dir, lines in consoles.items():
        assert [path.name for path in job_dirs(sweep_dir)] == ["lr=-1_0", "lr=0.1_1", "lr=0.1_2"]
        # --quiet: the failed job's line only, with its reason, before the sweep's own last line.
        assert lines[0].startswith("job 1/3 lr=-1_0: failed: ConfigError: lr: must be a finite number > 0")
        sweep_csv = (sweep_dir / "sweep.csv").relative_to(cwd)
        assert lines[1:] == [f"sweep of 3 jobs: 2 completed, 1 failed; {sweep_csv}"]
        table = pd.read_csv(sweep_dir / "sweep.csv")
        assert_rows_are_the_jobs(sweep_dir, table)
        # Its HParams row says it failed, with the values it was given and the objective and optimizer it had.
        trial, hparams, status = session_of(sweep_dir / "lr=-1_0")
        assert re.fullmatch(rf"{sweep_dir.name}/lr=-1_0 · {sweep_dir.parent.name} · [0-9a-f]{{6}}", trial)
        assert hparams == {"objective": "quadratic", "optimizer": "sgd", "lr": -1.0, "epochs": 5.0, "status": "failed"}
        assert status == "STATUS_FAILURE"
        assert experiment_of(sweep_dir / "lr=-1_0")["lr"] == [-1, 0.1]  # the tab's lr filter lists its value too
        assert table["status"].tolist() == ["failed", "completed", "completed"]
        assert "lr: must be a finite number > 0" in table["error"].iloc[0]
        assert table["final_loss"].iloc[1:].tolist() == [sgd_final_loss(0.1, 5)] * 2


def test_default_directories_are_dated_under_outputs():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = compose(config_name="config", return_hydra_config=True).hydra
    assert OmegaConf.to_container(hydra.run, resolve=False)["dir"] == "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"
    assert OmegaConf.to_container(hydra.sweep, resolve=False) == {
        "dir": "outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}",
        "subdir": "${tapelab_job_dir:${hydra.job.override_dirname},${hydra.job.num}}",
    }


COMPOSED_GRID = ["optimizer=sgd,adam", "lr=0.1,0.01,0.001", "epochs=2", "log.plots=false", "log.tensorboard=false"]


def compositions(sweep_dir: Path, *arguments: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[RunMode, list]]:
    """Each config Hydra's config loader composes while `python run.py -m <arguments>` sweeps into `sweep_dir`
    in this process: its run mode and the overrides of the task (a job's, or the sweep's)."""
    composed = []
    load_configuration = ConfigLoaderImpl.load_configuration

    def counted(self, config_name, overrides, run_mode, *args, **kwargs):
        composed.append((run_mode, [override for override in overrides if not override.startswith("hydra")]))
        return load_configuration(self, config_name, overrides, run_mode, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ConfigLoaderImpl, "load_configuration", counted)
        sweep_in_process(*arguments, f"hydra.sweep.dir={sweep_dir}")
    return composed


def test_a_real_sweep_composes_each_job_at_most_once_and_the_launcher_takes_the_checks_configs(tmp_path, monkeypatch):
    # Hydra's basic sweeper composes every job's config to check the batch, and its launcher composes it again.
    hydras = compositions(tmp_path / "hydra", *COMPOSED_GRID, "hydra/sweeper=basic", monkeypatch=monkeypatch)
    jobs = [  # each job's overrides, as Hydra writes them
        [f"optimizer={optimizer}", f"lr={lr}", "epochs=2", "log.plots=False", "log.tensorboard=False"]
        for optimizer in ("sgd", "adam")
        for lr in ("0.1", "0.01", "0.001")
    ]
    assert hydras == [(RunMode.MULTIRUN, COMPOSED_GRID)] + [(RunMode.RUN, job) for job in jobs + jobs]
    # The grid sweeper's check composes the first job of each optimizer and derives the others (they differ in
    # lr alone); the launcher composes none.
    ours = compositions(tmp_path / "grid", *COMPOSED_GRID, monkeypatch=monkeypatch)
    assert ours == [(RunMode.MULTIRUN, COMPOSED_GRID), (RunMode.RUN, jobs[0]), (RunMode.RUN, jobs[3])]
    # Each job saved the config and the overrides that Hydra's own sweeper gave it.
    assert [path.name for path in job_dirs(tmp_path / "grid")] == [path.name for path in job_dirs(tmp_path / "hydra")]
    for job_dir in job_dirs(tmp_path / "grid"):
        for saved in ("config.yaml", "overrides.yaml"):
            hydra_s = tmp_path / "hydra" / job_dir.name / ".hydra" / saved
            assert (job_dir / ".hydra" / saved).read_text() == hydra_s.read_text(), (job_dir.name, saved)


# The same jobs under every launcher: `jit_compile=true`, as the README's Exactness paragraph says.
PARALLEL_GRID = ["lr=0.01,0.1", "epochs=20", "jit_compile=true"]


@pytest.fixture(scope="module")
def basic_launcher_jobs(tmp_path_factory) -> Path:
    """PARALLEL_GRID's sweep directory under the basic launcher, run in this process."""
    sweep_dir = tmp_path_factory.mktemp("basic") / "sweep"
    sweep_in_process(*PARALLEL_GRID, "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_run_each_job_to_the_bit_of_the_basic_launcher(tmp_path, launcher, basic_launcher_jobs):
    run_tapelab("-m", f"hydra/launcher={launcher}", *PARALLEL_GRID, f"hydra.sweep.dir={tmp_path}")
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table["lr"].tolist() == [0.01, 0.1]
    assert table["final_loss"].tolist() == [sgd_final_loss(0.01, 20), sgd_final_loss(0.1, 20)]
    assert_rows_are_the_jobs(tmp_path, table)
    names = [path.name for path in job_dirs(tmp_path)]
    assert names == [path.name for path in job_dirs(basic_launcher_jobs)] == ["lr=0.01_0", "lr=0.1_1"]
    for name in names:
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / name / "metrics.csv"),
            pd.read_csv(basic_launcher_jobs / name / "metrics.csv"),
            check_exact=True,
        )


@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna < 3 on SQLAlchemy < 2
def test_optuna_search_minimises_the_final_loss_and_records_diverged_trials_as_the_worst_value(tmp_path):
    import optuna

    # On 10x² − 2x + 1 (minimum 0.9 at x = 0.1), plain descent diverges for lr > 0.1: |1 − 20·lr| > 1.
    # 3 random startup trials, then 5 that TPE proposes (with its default 8 startup trials, it would propose none).
    # The sampler is seeded (seed=0): the same trials every time, one of them SGD at lr 0.58.
    study = tmp_path / "study.db"
    run_tapelab(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.sampler.n_startup_trials=3",
        "objective.a=10",
        "epochs=20",
        "log.plots=false",
        "log.tensorboard=false",
        f"hydra.sweeper.storage=sqlite:///{study}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    sweep_dir = tmp_path / "sweep"
    table = pd.read_csv(sweep_dir / "sweep.csv")
    assert table["job"].tolist() == list(range(8)) and len(job_dirs(sweep_dir)) == 8
    assert_rows_are_the_jobs(sweep_dir, table)
    startup, proposed = table["final_loss"].iloc[:3], table["final_loss"].iloc[3:]
    assert proposed.min() <= startup.min()  # TPE's best is no worse than the random start's
    assert table["lr"].between(1e-4, 1.0).all()
    assert set(table["optimizer"]) <= {"sgd", "adam", "rmsprop", "adagrad", "nadam"}
    assert "diverged" in set(table["status"])
    # Optuna's own record: trial i is job i, with its values; a diverged trial's value is inf, not a failure.
    trials = optuna.load_study(study_name="tapelab", storage=f"sqlite:///{study}").trials
    assert [trial.number for trial in trials] == table["job"].tolist()
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    for trial, row in zip(trials, table.itertuples(), strict=True):
        assert (trial.params["lr"], trial.params["optimizer"]) == (row.lr, row.optimizer)
        value = float("inf") if row.status == "diverged" else np.float32(row.final_loss)
        assert np.float32(trial.value) == value, row.dir
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(table["final_loss"].min())
    assert results["best_value"] == pytest.approx(0.9, rel=1e-6)  # the objective's minimum


# In the Ray launcher's Python: `python run.py -m hydra/launcher=ray <arguments>` for each sweep given in argv[1]
# (JSON: its directory, the variables the environment adds before it, and its arguments), in one process as a
# script that calls run.py's main does. Ray's cluster, started by the first, serves the others. Written to
# argv[2], for each sweep: the Ray variables at ray.init and at the launch, the variables that changed from
# before the sweep to after it, and the run mode of each config Hydra composed (the sweep's, then jobs').
RAY_SWEEPS = """
import json, os, sys
import ray
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from tapelab.cli import main

Plugins.instance()  # Hydra's plugin scan executes the plugins' modules again: their classes are those made here
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher

NAMES = ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")
seen, composed = {}, []
ray_init, ray_launch, load_configuration = ray.init, RayLauncher.launch, ConfigLoaderImpl.load_configuration

def init(*args, **kwargs):
    seen["init"] = {name: os.environ.get(name) for name in NAMES}
    return ray_init(*args, **kwargs)

def launch(self, *args, **kwargs):
    seen["launch"] = {name: os.environ.get(name) for name in NAMES}
    return ray_launch(self, *args, **kwargs)

def counted(self, config_name, overrides, run_mode, *args, **kwargs):
    composed.append(run_mode.name)
    return load_configuration(self, config_name, overrides, run_mode, *args, **kwargs)

ray.init, RayLauncher.launch, ConfigLoaderImpl.load_configuration = init, launch, counted
sweeps, report_file, report = json.loads(sys.argv[1]), sys.argv[2], []
for sweep_dir, added, arguments in sweeps:
    os.environ.update(added)
    before = dict(os.environ)
    seen.clear(), composed.clear()
    sys.argv = ["run.py", "-m", "hydra/launcher=ray", *arguments, f"hydra.sweep.dir={sweep_dir}"]
    main()
    GlobalHydra.instance().clear()
    changed = {name: os.environ.get(name) for name, _ in set(before.items()) ^ set(os.environ.items())}
    report.append({"seen": dict(seen), "changed": changed, "composed": list(composed)})
with open(report_file, "w") as out:
    json.dump(report, out)
"""


@pytest.mark.skipif(RAY_PYTHON is None, reason="set TAPELAB_RAY_PYTHON to a Python with the `ray` extra")
def test_ray_launcher_runs_the_grid_on_a_private_loopback_cluster_and_restores_the_environment(
    tmp_path, basic_launcher_jobs
):
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    names = ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")
    sweeps = [
        (str(tmp_path / "private"), {}, PARALLEL_GRID),
        (str(tmp_path / "address"), {}, ["hydra.launcher.ray.init.address=auto", "lr=0.2", "epochs=20"]),
        (str(tmp_path / "user"), {"RAY_USAGE_STATS_ENABLED": "1"}, ["lr=0.3", "epochs=20"]),
    ]
    env = {key: value for key, value in os.environ.items() if key not in names}
    finished = subprocess.run(
        [RAY_PYTHON, "-c", RAY_SWEEPS, json.dumps(sweeps), str(tmp_path / "report.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    private, address, user = json.loads((tmp_path / "report.json").read_text())
    # The private cluster starts with no usage reports and no token; the variables are then as before.
    defaults = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    assert private["seen"] == {"launch": defaults, "init": defaults}
    # With an address, the environment is left as it is (the running cluster serves the sweep).
    assert address["seen"] == {"launch": dict.fromkeys(names)}
    # A value the environment sets wins; the other is set for the launch.
    assert user["seen"] == {"launch": {"RAY_USAGE_STATS_ENABLED": "1", "RAY_AUTH_MODE": "disabled"}}
    # What changed in the environment: run.py's TF_CPP_MIN_LOG_LEVEL and Ray's own PYTHONBREAKPOINT, not these.
    assert all(name not in sweep["changed"] for sweep in (private, address, user) for name in names)
    # The launcher takes the configs of the sweeper's check: the first job composed, the second derived.
    assert [sweep["composed"].count("RUN") for sweep in (private, address, user)] == [1, 1, 1]
    for sweep_dir, lrs in [("private", [0.01, 0.1]), ("address", [0.2]), ("user", [0.3])]:
        table = pd.read_csv(tmp_path / sweep_dir / "sweep.csv", dtype={"dir": str})  # one job: its directory is 0
        assert table["final_loss"].tolist() == [sgd_final_loss(lr, 20) for lr in lrs]
        assert_rows_are_the_jobs(tmp_path / sweep_dir, table)
    for name in ("lr=0.01_0", "lr=0.1_1"):  # each job to the bit of the basic launcher's
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "private" / name / "metrics.csv"),
            pd.read_csv(basic_launcher_jobs / name / "metrics.csv"),
            check_exact=True,
        )
    leftovers = subprocess.run(["pgrep", "-f", "raylet|gcs_server"], capture_output=True, text=True).stdout
    assert leftovers == "", "Ray processes outlived the sweep"
    assert token.exists() == had_token
