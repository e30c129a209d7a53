"""Sweeps end to end: real `python run.py -m` runs with Hydra's launchers and the Optuna sweeper."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
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


def assert_table_matches_summaries(sweep_dir: Path, table: pd.DataFrame) -> None:
    for row in table.itertuples():
        summary = json.loads((sweep_dir / row.dir / "summary.json").read_text())
        assert row.status == summary["status"]
        assert (row.final_loss, row.best_loss, row.steps) == (
            summary["final_loss"],
            summary["best_loss"],
            summary["steps"],
        )


GRID_LINES = "grid_console.txt"  # beside the grid's sweep directory: what the sweep printed


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "grid"
    finished = run_tapelab("-m", "lr=0.001,0.1,10", "optimizer=sgd,adam", "epochs=30", f"hydra.sweep.dir={sweep_dir}")
    (sweep_dir.parent / GRID_LINES).write_text(finished.stderr + finished.stdout)
    return sweep_dir


def grid_jobs() -> list[tuple[int, str, str]]:
    """The grid's jobs in launch order: (number, lr, optimizer)."""
    pairs = [(lr, optimizer) for lr in ("0.001", "0.1", "10") for optimizer in ("sgd", "adam")]
    return [(num, lr, optimizer) for num, (lr, optimizer) in enumerate(pairs)]


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
    assert list(table.columns) == [
        "job",
        "lr",
        "optimizer",
        "status",
        "final_loss",
        "best_loss",
        "steps",
        "wall_time_s",
        "distance_to_min",
        "dir",
    ]
    assert table["job"].tolist() == list(range(6))
    assert_table_matches_summaries(grid, table)
    for row in table.itertuples():
        overrides = yaml.safe_load((grid / row.dir / ".hydra" / "overrides.yaml").read_text())
        assert f"lr={row.lr:g}" in overrides and f"optimizer={row.optimizer}" in overrides


def test_load_sweep_reads_the_table_with_each_jobs_run(grid, tmp_path):
    import tapelab

    table = tapelab.load_sweep(grid)
    pd.testing.assert_frame_equal(table.drop(columns="run"), pd.read_csv(grid / "sweep.csv"), check_exact=True)
    sgd = table.set_index(["optimizer", "lr"]).loc[("sgd", 0.1), "run"]
    assert sgd.summary["final_loss"] == sgd_final_loss(0.1, 30)
    assert sgd.history["step"].tolist() == list(range(31))
    unreported = tmp_path / "unreported"  # a sweep stopped before its report: read from its job directories
    shutil.copytree(grid, unreported, ignore=shutil.ignore_patterns("sweep.csv"))
    pd.testing.assert_frame_equal(
        tapelab.load_sweep(unreported).drop(columns="run"), table.drop(columns="run"), check_exact=True
    )


def test_sweep_csv_keeps_the_diverged_job_and_matches_the_closed_form(grid):
    table = pd.read_csv(grid / "sweep.csv").set_index(["optimizer", "lr"])
    for lr in (0.001, 0.1):
        assert table.loc[("sgd", lr), "final_loss"] == sgd_final_loss(lr, 30)
    diverged = table.loc[("sgd", 10.0)]
    assert (diverged["status"], diverged["steps"]) == ("diverged", 15)  # 361^t overflows float32 at t = 16
    assert set(table["status"]) == {"completed", "diverged"}


def test_sweep_png_has_the_loss_panel_and_one_panel_per_numeric_swept_key(grid):
    height, width, _ = matplotlib.image.imread(grid / "sweep.png").shape
    # 7 inches for the loss curves plus 4.5 for `lr` (the only numeric swept key), at 110 dpi.
    assert (width, height) == (round((7 + 4.5) * 110), round(4.8 * 110))


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


def test_report_script_rebuilds_the_same_table_for_an_existing_sweep(grid, tmp_path):
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
    rebuilt, original = pd.read_csv(copy / "sweep.csv"), pd.read_csv(grid / "sweep.csv")
    pd.testing.assert_frame_equal(rebuilt, original, check_exact=True)  # read back from the same summaries
    assert matplotlib.image.imread(copy / "sweep.png").shape == matplotlib.image.imread(grid / "sweep.png").shape
    assert [path.relative_to(copy).as_posix() for path in copy.rglob("events.out.tfevents.experiment")] == [
        "lr=0.001,optimizer=sgd_0/events.out.tfevents.experiment"  # one experiment, in the first job's directory
    ]


def test_failed_and_repeated_jobs_keep_rows_and_directories_of_their_own(tmp_path):
    finished = run_tapelab("-q", "-m", "lr=-1,0.1,0.1", "epochs=5", f"hydra.sweep.dir={tmp_path}")
    assert [path.name for path in job_dirs(tmp_path)] == ["lr=-1_0", "lr=0.1_1", "lr=0.1_2"]
    # --quiet: the failed job's line only, with its reason, before the sweep's own last line.
    lines = [without_log_prefix(line) for line in (finished.stderr + finished.stdout).splitlines()]
    assert lines[0].startswith("job 1/3 lr=-1_0: failed: ConfigError: lr: must be a finite number > 0")
    assert lines[1:] == [f"sweep of 3 jobs: 2 completed, 1 failed; {tmp_path / 'sweep.csv'}"]
    table = pd.read_csv(tmp_path / "sweep.csv")
    # Its HParams row says it failed, with the values it was given and the objective and optimizer it had.
    trial, hparams, status = session_of(tmp_path / "lr=-1_0")
    assert re.fullmatch(rf"{tmp_path.name}/lr=-1_0 · {tmp_path.parent.name} · [0-9a-f]{{6}}", trial)
    assert hparams == {"objective": "quadratic", "optimizer": "sgd", "lr": -1.0, "epochs": 5.0, "status": "failed"}
    assert status == "STATUS_FAILURE"
    assert experiment_of(tmp_path / "lr=-1_0")["lr"] == [-1, 0.1]  # the tab's lr filter lists its value too
    assert table["status"].tolist() == ["failed", "completed", "completed"]
    assert "lr: must be a finite number > 0" in table["error"].iloc[0]
    assert table["final_loss"].iloc[1:].tolist() == [sgd_final_loss(0.1, 5)] * 2


def test_relaunching_a_finished_sweep_skips_every_job_and_changes_no_job_file(grid):
    job_files = [path for job in job_dirs(grid) for path in job.rglob("*") if path.is_file()]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in job_files}
    table_before = pd.read_csv(grid / "sweep.csv")
    run_tapelab("-m", "lr=0.001,0.1,10", "optimizer=sgd,adam", "epochs=30", f"hydra.sweep.dir={grid}")
    after = [path for job in job_dirs(grid) for path in job.rglob("*") if path.is_file()]
    assert sorted(after) == sorted(job_files)
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in after} == before
    pd.testing.assert_frame_equal(pd.read_csv(grid / "sweep.csv"), table_before, check_exact=True)


def test_a_different_sweep_into_a_used_directory_reports_the_clash_and_keeps_the_old_job(tmp_path):
    # With job directories named by number only, job 0 of a new grid lands on job 0 of the old one.
    sweep_dir = tmp_path / "sweep"
    run_tapelab("-m", "lr=0.1", "epochs=5", f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=job${hydra.job.num}")
    old_files = {path: path.read_bytes() for path in (sweep_dir / "job0").rglob("*") if path.is_file()}
    clash = run_tapelab(
        "-m", "lr=0.2", "epochs=5", f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=job${hydra.job.num}"
    )
    lines = [without_log_prefix(line) for line in (clash.stdout + clash.stderr).splitlines()]
    expected = f"Error in config: hydra.sweep.dir: {sweep_dir / 'job0'} holds a different job (lr=0.1 epochs=5); "
    assert [line for line in lines if "job0" in line] == [expected + "choose a new sweep directory"]
    assert not any(line.startswith("job 1/1") for line in lines)  # not reported as the other job's result
    assert {path: path.read_bytes() for path in (sweep_dir / "job0").rglob("*") if path.is_file()} == old_files


def test_relaunching_a_sweep_named_after_every_override_by_an_earlier_version_finds_its_jobs(tmp_path):
    sweep = ["-m", "lr=0.01,0.02", "epochs=5", f"hydra.sweep.dir={tmp_path}"]
    run_tapelab(*sweep)
    # As earlier versions left it: job directories named after every override, and no naming recorded.
    for job_dir in job_dirs(tmp_path):
        job_dir.rename(tmp_path / f"epochs=5,{job_dir.name}")
    multirun = OmegaConf.load(tmp_path / "multirun.yaml")
    multirun.hydra.overrides.hydra = [line for line in multirun.hydra.overrides.hydra if "override_dirname" not in line]
    OmegaConf.save(multirun, tmp_path / "multirun.yaml")
    before = {path: path.stat().st_mtime_ns for job in job_dirs(tmp_path) for path in job.rglob("*") if path.is_file()}

    relaunched = run_tapelab(*sweep)
    assert [path.name for path in job_dirs(tmp_path)] == ["epochs=5,lr=0.01_0", "epochs=5,lr=0.02_1"]
    assert "2 finished jobs are skipped" in relaunched.stdout + relaunched.stderr
    after = {path: path.stat().st_mtime_ns for job in job_dirs(tmp_path) for path in job.rglob("*") if path.is_file()}
    assert after == before  # no job ran again, and the report's experiment in the first job is the same file
    assert pd.read_csv(tmp_path / "sweep.csv")["dir"].tolist() == ["epochs=5,lr=0.01_0", "epochs=5,lr=0.02_1"]


def test_sweeps_and_runs_started_in_the_same_second_never_share_a_directory(tmp_path):
    # The time patterns below end in a fixed name, so both processes want the very same directory.
    sweep = ["-m", "lr=0.1", "epochs=2", "hydra.sweep.dir=outputs/multirun/${now:%Y-%m-%d}/same"]
    single = ["epochs=2", "hydra.run.dir=outputs/${now:%Y-%m-%d}/same"]
    processes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (sweep, sweep, single, single)
    ]
    assert all(process.wait(timeout=300) == 0 for process in processes)
    (day,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert sorted(path.name for path in day.iterdir()) == ["same", "same_1"]
    assert all(len(pd.read_csv(sweep_dir / "sweep.csv")) == 1 for sweep_dir in day.iterdir())
    runs = [path for path in (tmp_path / "outputs").glob("*/same*")]
    assert sorted(path.name for path in runs) == ["same", "same_1"]
    assert all(json.loads((run / "summary.json").read_text())["steps"] == 2 for run in runs)


def test_default_directories_are_dated_under_outputs():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = compose(config_name="config", return_hydra_config=True).hydra
    assert OmegaConf.to_container(hydra.run, resolve=False)["dir"] == "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"
    assert OmegaConf.to_container(hydra.sweep, resolve=False) == {
        "dir": "outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}",
        "subdir": "${tapelab_job_dir:${hydra.job.override_dirname},${hydra.job.num}}",
    }


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_run_the_grid(tmp_path, launcher):
    run_tapelab("-m", f"hydra/launcher={launcher}", "lr=0.01,0.1", "epochs=20", f"hydra.sweep.dir={tmp_path}")
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table["lr"].tolist() == [0.01, 0.1]
    assert table["final_loss"].tolist() == [sgd_final_loss(0.01, 20), sgd_final_loss(0.1, 20)]
    assert_table_matches_summaries(tmp_path, table)


def test_optuna_search_minimises_the_final_loss(tmp_path):
    # 3 random startup trials, then 5 that TPE proposes (with its default 8 startup trials, it would propose none).
    # The sampler is seeded (seed=0): the same trials every time.
    run_tapelab(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.sampler.n_startup_trials=3",
        "epochs=20",
        "log.plots=false",
        "log.tensorboard=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table["job"].tolist() == list(range(8)) and len(job_dirs(tmp_path)) == 8  # job i is trial i
    startup, proposed = table["final_loss"].iloc[:3], table["final_loss"].iloc[3:]
    assert proposed.min() <= startup.min()  # TPE's best is no worse than the random start's
    assert table["lr"].between(1e-4, 1.0).all()
    assert set(table["optimizer"]) <= {"sgd", "adam", "rmsprop", "adagrad", "nadam"}
    assert_table_matches_summaries(tmp_path, table)
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(table["final_loss"].min())


def test_optuna_records_diverged_trials_as_the_worst_value(tmp_path):
    # Plain descent with lr in [5, 20] on (x − 1)² always diverges: |1 − 2·lr| > 1.
    run_tapelab(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "epochs=30",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.params.lr='tag(log, interval(5.0, 20.0))'",
        "hydra.sweeper.params.optimizer='choice(gd)'",
    )
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table["status"].tolist() == ["diverged", "diverged"]
    assert yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["best_value"] == float("inf")


@pytest.mark.skipif(RAY_PYTHON is None, reason="set TAPELAB_RAY_PYTHON to a Python with the `ray` extra")
def test_ray_launcher_runs_the_grid_on_a_private_loopback_cluster(tmp_path):
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    run_tapelab(
        "-m", "hydra/launcher=ray", "lr=0.01,0.1", "epochs=20", f"hydra.sweep.dir={tmp_path}", python=RAY_PYTHON
    )
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table["final_loss"].tolist() == [sgd_final_loss(0.01, 20), sgd_final_loss(0.1, 20)]
    leftovers = subprocess.run(["pgrep", "-f", "raylet|gcs_server"], capture_output=True, text=True).stdout
    assert leftovers == "", "Ray processes outlived the sweep"
    assert token.exists() == had_token
