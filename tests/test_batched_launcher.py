"""`hydra/launcher=batched`: Hydra's launcher test suites, and tapelab's sweeps under it give each job what the
basic launcher gives it."""

from __future__ import annotations

import importlib
import json
import logging
import logging.handlers
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hydra import version
from hydra._internal.core_plugins import basic_sweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_automatic_config_search_path
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite
from omegaconf import DictConfig

from conftest import ROOT, compose_config
from hydra_plugins.tapelab_batched_launcher import batched_launcher
from hydra_plugins.tapelab_batched_launcher.batched_launcher import batches
from hydra_plugins.tapelab_sweeper import grid_sweeper
from tapelab import cli
from tapelab.api import own_global_hydra
from tapelab.batching import CannotBatch, group_key
from tapelab.config import register_configs
from test_interrupts import SLOW_RUN, interrupt_after_first_checkpoint, start

pytestmark = pytest.mark.usefixtures("hydra_restore_singletons")
TAPELAB_TASK = cli.experiment.__wrapped__  # the function Hydra's launchers get


def registered_plugins() -> None:
    """tapelab's plugins registered with Hydra, also after a restore of Hydra's singletons: that scans the plugins
    again, which can't see an editable install and executes Hydra's own plugin modules again. The grid sweeper
    then subclasses a BasicSweeper that is no longer the module's, whose __init__ names the module's in super():
    it is reloaded onto the new one."""
    if grid_sweeper.GridSweeper.__bases__[0] is not basic_sweeper.BasicSweeper:
        importlib.reload(grid_sweeper)
    register_configs()


@pytest.fixture(autouse=True)
def plugins_and_logging() -> Iterator[None]:
    """tapelab's plugins registered, and the root logger's handlers afterwards as before (Hydra's point to job
    log files)."""
    registered_plugins()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def hydra_test_version_base(hydra_restore_singletons) -> None:
    """The version base Hydra's test apps run with: none given, so version 1.1's defaults, by which a job runs in
    its own directory (importing tapelab.cli set 1.3). Hydra's singletons, this one too, come back afterwards."""
    version.VersionBase.instance().setbase(version.__compat_version__)


# Hydra's suites run tasks that have no batching protocol: the basic launcher's way.
@pytest.mark.usefixtures("hydra_test_version_base")
@pytest.mark.parametrize(("launcher_name", "overrides"), [("batched", [])])
class TestBatchedLauncher(LauncherTestSuite):
    pass


@pytest.mark.usefixtures("hydra_test_version_base")
@pytest.mark.parametrize(
    ("launcher_name", "overrides"), [("batched", ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=2"])]
)
class TestBatchedLauncherInSweeperBatches(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize(("task_launcher_cfg", "extra_flags"), [({}, ["-m", "hydra/launcher=batched"])])
class TestBatchedLauncherIntegration(IntegrationTestSuite):
    """Hydra's apps in subprocesses, which find the plugin by Hydra's scan of `hydra_plugins` on their path
    (an editable install's import hook hides it from the scan)."""

    @pytest.fixture(autouse=True)
    def plugin_on_the_path(self, monkeypatch):
        monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))


def test_jobs_group_by_their_keys_in_sweep_order_and_split_by_max_batch():
    keys = ["a", "b", "a", CannotBatch("why"), "b", "a", "a"]
    assert batches(keys, None) == [[0, 2, 5, 6], [1, 4], [3]]
    assert batches(keys, 3) == [[0, 2, 5], [6], [1, 4], [3]]
    assert batches(keys, 1) == [[0], [2], [5], [6], [1], [4], [3]]
    assert batches([], None) == []


def test_jobs_that_differ_only_in_lr_share_a_group():
    adam = group_key(compose_config("objective=rosenbrock", "optimizer=adam", "lr=0.1"))
    assert group_key(compose_config("objective=rosenbrock", "optimizer=adam", "lr=0.001")) == adam
    for other in (["optimizer=sgd"], ["optimizer=adam", "epochs=7"], ["optimizer=adam", "optimizer.clipvalue=1.0"]):
        assert group_key(compose_config("objective=rosenbrock", "lr=0.1", *other)) != adam, other


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["optimizer=lamb"], "lamb's trust ratio couples the members"),
        (["optimizer=newton"], "newton's Hessian would span every member's parameters"),
        (["optimizer=adam", "optimizer.clipnorm=1.0"], "optimizer.clipnorm would clip the members' gradients together"),
        (["optimizer=sgd", "optimizer.global_clipnorm=1.0"], "optimizer.global_clipnorm would clip the members' "
         "gradients together"),
    ],
)  # fmt: skip
def test_jobs_that_must_train_alone_say_why(overrides, reason):
    with pytest.raises(CannotBatch) as alone:
        group_key(compose_config(*overrides))
    assert str(alone.value) == reason


def multirun(task_function: Any, *arguments: str) -> list[Any]:
    """`python run.py -m <arguments>` in this process with `task_function` as its task; the JobReturns the
    sweeper returns, in order."""
    search_path = create_automatic_config_search_path(None, None, cli.CONFIG_PATH)
    with own_global_hydra():
        app = Hydra.create_main_hydra2(task_name="tapelab", config_search_path=search_path)
        overrides = [*arguments, "hydra.mode=MULTIRUN"]  # as the command line's -m adds it
        returned = app.multirun("config", task_function, overrides, with_log_configuration=False)
    return [job_return for batch in returned or [] for job_return in batch]  # Optuna's sweeper returns None


def unbatched(cfg: DictConfig) -> float:
    """The command line's task without its batching protocol: the batched launcher runs it as the basic one."""
    return TAPELAB_TASK(cfg)


@contextmanager
def launcher_records() -> Iterator[list[logging.LogRecord]]:
    """The batched launcher's log records, DEBUG and up, while the block runs."""
    logger = logging.getLogger(batched_launcher.__name__)
    handler, level = logging.handlers.BufferingHandler(capacity=10**6), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# lr=-1 fails (tapelab refuses it), lamb runs alone and diverges at lr=10, Adam's three jobs form batches of 2 and 1.
SWEEP = ["objective=rosenbrock", "lr=-1,0.01,10", "optimizer=adam,lamb", "epochs=20", "log.plots=false"]
SWEEP += ["hydra/launcher=batched", "hydra.launcher.max_batch=2"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Any]:
    """SWEEP under the batched launcher with tapelab's task (its batches), and then with `unbatched` (the basic
    launcher's way), into the same sweep directory, each moved away when done; and what each launch returned."""
    base = tmp_path_factory.mktemp("launches")
    sweep_dir = base / "sweep"
    state = Singleton.get_state()
    found: dict[str, Any] = {}
    try:
        registered_plugins()
        with launcher_records() as found["records"]:
            found["batched_returns"] = multirun(TAPELAB_TASK, *SWEEP, f"hydra.sweep.dir={sweep_dir}")
        found["batched"] = sweep_dir.rename(base / "batched")
        found["basic_returns"] = multirun(unbatched, *SWEEP, f"hydra.sweep.dir={sweep_dir}")
        found["basic"] = sweep_dir.rename(base / "basic")
    finally:
        Singleton.set_state(state)
    return found


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(path for path in sweep_dir.iterdir() if path.is_dir())


def file_names(job_dir: Path) -> list[str]:
    """The files in a job's directory, with the time, host and process in the names of event files as `*`."""
    names = [str(path.relative_to(job_dir)) for path in job_dir.rglob("*") if path.is_file()]
    return sorted(re.sub(r"^events\.out\.tfevents\.\d+\..*", "events.out.tfevents.*", name) for name in names)


def result(job_dir: Path) -> tuple[Any, ...]:
    """A job's status, steps, final loss and error (for a failed job) from its summary.json."""
    summary = json.loads((job_dir / "summary.json").read_text())
    return tuple(summary.get(key) for key in ("status", "steps", "final_loss", "error"))


def log_lines(job_dir: Path) -> list[str]:
    """A job's tapelab.log without its times: the logging prefix's and the job line's seconds."""
    text = (job_dir / "tapelab.log").read_text()
    return [re.sub(r" in [0-9.]+ s:", " in … s:", line.partition("]")[2]) for line in text.splitlines()]


def test_each_job_gets_the_files_and_result_the_basic_launcher_gives_it(sweeps):
    batched, basic = sweeps["batched"], sweeps["basic"]
    assert [job.name for job in job_dirs(batched)] == [job.name for job in job_dirs(basic)]
    assert len(job_dirs(batched)) == 6
    for batched_job, basic_job in zip(job_dirs(batched), job_dirs(basic), strict=True):
        saved = sorted(path.name for path in (basic_job / ".hydra").iterdir())
        assert saved == ["config.yaml", "hydra.yaml", "overrides.yaml"]
        for name in saved:
            assert (batched_job / ".hydra" / name).read_bytes() == (basic_job / ".hydra" / name).read_bytes(), name
        assert file_names(batched_job) == file_names(basic_job)
        if (basic_job / "metrics.csv").exists():  # not for a failed job
            pd.testing.assert_frame_equal(
                pd.read_csv(batched_job / "metrics.csv"), pd.read_csv(basic_job / "metrics.csv"), check_exact=True
            )
        assert result(batched_job) == result(basic_job)
        assert log_lines(batched_job) == log_lines(basic_job) != []
    assert sorted(result(job)[0] for job in job_dirs(batched)) == ["completed"] * 3 + ["diverged", "failed", "failed"]
    assert (batched / "multirun.yaml").read_bytes() == (basic / "multirun.yaml").read_bytes()
    columns = ["job", "lr", "optimizer", "status", "final_loss", "steps", "dir"]
    pd.testing.assert_frame_equal(
        pd.read_csv(batched / "sweep.csv")[columns], pd.read_csv(basic / "sweep.csv")[columns]
    )

    # The JobReturns come in the sweep's order, as the basic launcher returns them.
    assert [returned(r) for r in sweeps["batched_returns"]] == [returned(r) for r in sweeps["basic_returns"]]


def returned(job_return: JobReturn) -> tuple[Any, ...]:
    """What a JobReturn holds."""
    fields = ("overrides", "return_value", "status", "cfg", "hydra_cfg", "working_dir", "task_name")
    return tuple(getattr(job_return, field) for field in fields)


def test_jobs_that_cannot_batch_run_alone_with_a_line_that_says_why(sweeps):
    info = [record.getMessage() for record in sweeps["records"] if record.levelno == logging.INFO]
    assert info == [
        f"job {num} (lr={lr},optimizer=lamb) runs alone: lamb's trust ratio couples the members"
        for num, lr in ((2, -1), (4, 0.01), (6, 10))
    ]
    lamb_jobs = [job for job in job_dirs(sweeps["batched"]) if "lamb" in job.name]
    assert [result(job)[0] for job in lamb_jobs] == ["failed", "completed", "diverged"]  # lr=-1, 0.01, 10


def test_max_batch_splits_a_group_into_consecutive_batches(sweeps):
    debug = [record.getMessage() for record in sweeps["records"] if record.levelno == logging.DEBUG]
    assert debug == ["batch of 2: jobs 1, 3", "batch of 1: jobs 5"]  # Adam's jobs; lamb's run alone


def test_relaunching_a_finished_batched_sweep_skips_its_jobs(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweeps["batched"], sweep_dir)  # with the files' times
    finished = [job for job in job_dirs(sweep_dir) if result(job)[0] != "failed"]  # a failed job runs again
    assert len(finished) == 4
    job_files = [path for job in finished for path in job.rglob("*") if path.is_file()]
    before = {path: path.stat().st_mtime_ns for path in job_files if path.name != "events.out.tfevents.experiment"}
    returns = multirun(TAPELAB_TASK, *SWEEP, f"hydra.sweep.dir={sweep_dir}")
    assert {path: path.stat().st_mtime_ns for path in before} == before
    for job in set(job_dirs(sweep_dir)) - set(finished):  # ran again, and its line went to its own log again
        assert sum(": failed: ConfigError: lr:" in line for line in log_lines(job)) == 2
    assert [r.return_value for r in returns] == [r.return_value for r in sweeps["batched_returns"]]


def test_an_optuna_search_runs_its_trials_in_batches(tmp_path):
    arguments = ["hparams_search=optuna", "objective=rosenbrock", "epochs=20", "log.plots=false"]
    arguments += ["hydra/launcher=batched", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4"]
    multirun(TAPELAB_TASK, *arguments, f"hydra.sweep.dir={tmp_path}")
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert len(table) == 4 and len(job_dirs(tmp_path)) == 4
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    best_row = table.loc[table["final_loss"].idxmin()]
    assert best["best_value"] == pytest.approx(best_row["final_loss"])
    assert best["best_params"] == {"lr": pytest.approx(best_row["lr"]), "optimizer": best_row["optimizer"]}


@pytest.mark.parametrize("max_batch", ["0", "-3"])
def test_a_max_batch_below_1_is_refused_in_one_line(tmp_path, monkeypatch, capsys, max_batch):
    arguments = ["-m", "hydra/launcher=batched", f"hydra.launcher.max_batch={max_batch}", "lr=0.1,0.2"]
    monkeypatch.setattr(sys, "argv", ["run.py", *arguments, f"hydra.sweep.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"Error in config: hydra.launcher.max_batch: must be an integer >= 1, or null for no limit; got {max_batch}\n"
    )
    assert not list(tmp_path.glob("*/.hydra"))  # no job started


@pytest.mark.e2e
def test_ctrl_c_stops_a_batched_sweep_as_it_stops_a_sweep_under_the_basic_launcher(tmp_path):
    sweep = ["-m", "hydra/launcher=batched", *SLOW_RUN, "optimizer=gd", "lr=0.05,0.02", "epochs=1000000"]
    process = start(*sweep, f"hydra.sweep.dir={tmp_path}")
    interrupt_after_first_checkpoint(process, tmp_path / "*lr=0.05*_0", signal.SIGINT)
    stdout, stderr = process.communicate()
    assert process.returncode == 130
    assert "Traceback" not in stderr + stdout
    (job_dir,) = tmp_path.glob("*lr=0.05*_0")
    warning = re.compile(
        r"interrupted by SIGINT after \d+ steps; continue with resume=true "
        rf"hydra.run.dir={re.escape(str(job_dir))} \(or re-launch the sweep\)$"
    )
    assert [line for line in stdout.splitlines() if warning.search(line)]
    assert json.loads((job_dir / "summary.json").read_text())["status"] == "interrupted"
    (next_job,) = tmp_path.glob("*lr=0.02*_1")  # started with the first, in its batch: the batched way
    assert (next_job / ".hydra" / "overrides.yaml").is_file() and not (next_job / "summary.json").exists()
