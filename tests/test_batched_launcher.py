"""`hydra/launcher=batched`: Hydra's launcher test suites, and tapelab's sweeps under it give each job what the
basic launcher gives it."""

from __future__ import annotations

import importlib
import json
import logging
import logging.handlers
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import version
from hydra._internal.core_plugins import basic_sweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_automatic_config_search_path
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite
from omegaconf import DictConfig, OmegaConf

from conftest import ROOT, compose_config, no_idle_trainers
from hydra_plugins.tapelab_batched_launcher import batched_launcher
from hydra_plugins.tapelab_batched_launcher.batched_launcher import batches, prepares
from hydra_plugins.tapelab_sweeper import grid_sweeper
from tapelab import checkpoints, cli
from tapelab.api import own_global_hydra
from tapelab.batching import CannotBatch, group_key
from tapelab.config import register_configs
from tapelab.sinks.hparams import EXPERIMENT_FILE, SESSION_FILE
from tensorboard_events import (
    accumulated,
    experiment_in,
    history_file,
    picture,
    plugin_of,
    png_pixels,
    session_in,
    tag_points,
)
from test_batch_training import MEMBER_KEYS, MEMBER_VALUES
from test_grid_sweeper import OTHER_OVERRIDES_OF_THE_SWEPT_KEY
from test_interrupts import start

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


@contextmanager
def root_logging_kept() -> Iterator[None]:
    """The root logger's handlers and level afterwards as before (Hydra's point to job log files)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


@pytest.fixture(autouse=True)
def plugins_and_logging() -> Iterator[None]:
    """tapelab's plugins registered, and the root logger as before afterwards."""
    registered_plugins()
    with root_logging_kept():
        yield


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


def test_the_next_batch_is_prepared_only_if_it_is_a_batch_and_neither_batch_sets_environment_variables():
    plain, other, with_env = ("loop a", ()), ("loop b", ()), ("loop c", (("OMP_NUM_THREADS", "1"),))
    keys = [plain, other, with_env, CannotBatch("why"), plain]
    assert prepares(keys, [0], [1])
    assert not prepares(keys, [1], [2])  # the next one sets its environment
    assert not prepares(keys, [2], [4])  # this one does
    assert not prepares(keys, [1], [3])  # the next one runs alone
    assert not prepares(keys, [4], [])  # no next one


def test_jobs_that_differ_only_in_batchable_values_share_a_group():
    adam = group_key(compose_config("objective=rosenbrock", "optimizer=adam", "lr=0.1"))
    for same in (["lr=0.001"], ["objective.a=2.0", "objective.init=[0.5,0.5]"], ["seed=7"], ["optimizer.beta_1=0.8"]):
        assert group_key(compose_config("objective=rosenbrock", "optimizer=adam", "lr=0.1", *same)) == adam, same
    quadratic = group_key(compose_config("objective=quadratic", "optimizer=adam", "lr=0.1", "stop.grad_tol=1e-3"))
    assert group_key(compose_config("objective=quadratic", "optimizer=adam", "lr=0.1", "stop.grad_tol=1e-6")) == (
        quadratic
    )
    for other in (
        ["optimizer=sgd"],
        ["optimizer=adam", "epochs=7"],
        ["optimizer=adam", "optimizer.clipvalue=1.0"],
        ["optimizer=adam", "optimizer.amsgrad=true"],
        ["optimizer=adam", "optimizer.weight_decay=0.01"],  # on or off is the loop's structure; its value is a member's
        ["optimizer=adam", "stop.grad_tol=1e-3"],  # a stop rule on or off is the loop's structure
        ["optimizer=adam", "log.every=10"],
        ["optimizer=adam", "objective=himmelblau"],
    ):
        assert group_key(compose_config("objective=rosenbrock", "lr=0.1", *other)) != adam, other


def test_jobs_that_differ_in_the_optimizer_s_member_keys_share_a_group():
    for optimizer, keys in MEMBER_KEYS.items():
        base = ["objective=rosenbrock", f"optimizer={optimizer}", "optimizer.weight_decay=0.004"]
        members = [[f"optimizer.{key}={MEMBER_VALUES[key][member]}" for key in keys] for member in range(2)]
        assert len({group_key(compose_config(*base, *values)) for values in members}) == 1, optimizer
    # Nadam's beta_1 feeds a scalar variable of Keras's, and Keras tests SGD's momentum in Python: those split.
    for optimizer, key in (("nadam", "optimizer.beta_1=0.8"), ("sgd", "optimizer.momentum=0.9")):
        default = group_key(compose_config("objective=rosenbrock", f"optimizer={optimizer}"))
        assert group_key(compose_config("objective=rosenbrock", f"optimizer={optimizer}", key)) != default, key


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["optimizer=newton"], "newton's Hessian over all elements would couple the members"),
        (["objective=rosenbrock", "objective.starts=4"], "objective.starts > 1 trains its starts as a batch of their "
         "own"),
        (["jit_compile=false"], "jit_compile=false, and batches train under XLA"),
        (["resume=true"], "resume=true continues one run"),
        (["lr=-1"], "its config has a mistake (lr: must be a finite number > 0 (in float32, so 1e-45 to 3.4e38), "
         "got -1.0)"),
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
def launcher_records(logger: logging.Logger | None = None) -> Iterator[list[logging.LogRecord]]:
    """The log records of `logger` (default: the batched launcher's), DEBUG and up, while the block runs."""
    logger = logger or logging.getLogger(batched_launcher.__name__)
    handler, level = logging.handlers.BufferingHandler(capacity=10**6), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# lr=-1 fails (tapelab refuses it), and its jobs run alone; each optimizer's other three jobs form batches of 2
# (SGD's lr=10 diverges at step 1, lr=0.0001 completes 20 steps) and 1. Lamb's batches take its trust ratio per
# member. Batches train under XLA: here, so do the runs under the basic launcher.
SWEEP = ["objective=rosenbrock", "lr=-1,10,0.0001,0.001", "optimizer=sgd,lamb", "epochs=20", "jit_compile=true"]
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
        with root_logging_kept(), launcher_records() as found["records"]:
            found["batched_returns"] = multirun(TAPELAB_TASK, *SWEEP, f"hydra.sweep.dir={sweep_dir}")
        found["batched"] = sweep_dir.rename(base / "batched")
        with root_logging_kept():
            found["basic_returns"] = multirun(unbatched, *SWEEP, f"hydra.sweep.dir={sweep_dir}")
        found["basic"] = sweep_dir.rename(base / "basic")
    finally:
        Singleton.set_state(state)
    return found


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(path for path in sweep_dir.iterdir() if path.is_dir())


def file_names(job_dir: Path) -> list[str]:
    """The files in a job's directory but its checkpoint's, with the time, host and process in the names of event
    files as `*`."""
    names = [str(path.relative_to(job_dir)) for path in job_dir.rglob("*") if path.is_file()]
    names = [name for name in names if not name.startswith("checkpoint/")]
    return sorted(re.sub(r"^events\.out\.tfevents\.\d+\..*", "events.out.tfevents.*", name) for name in names)


def checkpoint_files(job_dir: Path) -> list[str]:
    return sorted(str(path.relative_to(job_dir / "checkpoint")) for path in job_dir.glob("checkpoint/**/*"))


def result(job_dir: Path) -> tuple[Any, ...]:
    """A job's status, steps, final loss and error (for a failed job) from its summary.json."""
    summary = json.loads((job_dir / "summary.json").read_text())
    return tuple(summary.get(key) for key in ("status", "steps", "final_loss", "error"))


def log_lines(job_dir: Path) -> list[str]:
    """A job's tapelab.log without its times (the logging prefix's and the job line's seconds) and without the
    size of the batch it trained in."""
    text = (job_dir / "tapelab.log").read_text()
    return [
        re.sub(r" in [0-9.]+ s( \(in a batch of \d+\))?:", " in … s:", line.partition("]")[2])
        for line in text.splitlines()
    ]


def test_each_job_gets_the_files_and_result_the_basic_launcher_gives_it(sweeps):
    batched, basic = sweeps["batched"], sweeps["basic"]
    assert [job.name for job in job_dirs(batched)] == [job.name for job in job_dirs(basic)]
    assert len(job_dirs(batched)) == 8
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
    # A batch saves one checkpoint in its first job's directory; each of its jobs points there.
    assert checkpoint_files(batched / "lr=10,optimizer=sgd_2") == [
        "batch", "batch/checkpoint", "batch/ckpt-20.data-00000-of-00001", "batch/ckpt-20.index", "member.json",
    ]  # fmt: skip
    assert checkpoint_files(batched / "lr=0.0001,optimizer=sgd_4") == ["member.json"]
    assert checkpoint_files(basic / "lr=0.0001,optimizer=sgd_4") == [
        "checkpoint", "ckpt-20.data-00000-of-00001", "ckpt-20.index",
    ]  # fmt: skip
    assert sorted(result(job)[0] for job in job_dirs(batched)) == ["completed"] * 4 + ["diverged"] * 2 + ["failed"] * 2
    assert (batched / "multirun.yaml").read_bytes() == (basic / "multirun.yaml").read_bytes()
    table, alone_table = (pd.read_csv(sweep / "sweep.csv").drop(columns="wall_time_s") for sweep in (batched, basic))
    assert list(table.columns) == ["job", "lr", "optimizer", "status", "final_loss", "best_loss", "steps",
                                   "distance_to_min", "error", "dir"]  # fmt: skip
    pd.testing.assert_frame_equal(table, alone_table, check_exact=True)
    assert_same_pixels(png_pixels(batched / "sweep.png"), png_pixels(basic / "sweep.png"), batched / "sweep.png")

    # The JobReturns come in the sweep's order, as the basic launcher returns them.
    assert [returned(r) for r in sweeps["batched_returns"]] == [returned(r) for r in sweeps["basic_returns"]]


# What a batched job's files must hold unlike the same job's under the basic launcher, and why; all else is the same.
BATCH_GRAPHS = "the Graphs tab shows the batch's loop, with its [jobs, elements] variables"
GRAPH_TAGS = {"training_loop": BATCH_GRAPHS}  # the loop's graph; the run graph (one step) is the event file's graph
OWN_SUMMARY_KEYS = {
    "batch": "the batch it trained in, which a job alone has not",
    "timings_s": "its share of the batch's steps and checkpoints, and no trace or compile of its own",
    "wall_time_s": "it runs from the batch's start (the batch's set-up and compile) to the job's own last step",
    "steps_per_s": "its steps over that wall time",
}
# And the times the files were written at: each event's wall time, the HParams session's start and end, the
# experiment's creation (the sweep's start).


def assert_same_pixels(pixels: np.ndarray, alone_pixels: np.ndarray, what: object) -> None:
    """Two decoded pictures are the same size and alike in every pixel."""
    assert pixels.shape == alone_pixels.shape, what
    differing = np.argwhere((pixels != alone_pixels).any(axis=-1))
    assert len(differing) == 0, f"{what}: {len(differing)} pixels differ, the first at (row, column) {differing[0]}"


def assert_same_history_events(batched: Path, alone: Path) -> None:
    """The history event files of a batched job and of its run alone, read back with TensorBoard's reader: the
    same tags, each with the same plugin data and steps, and the same values, scalars and histograms bit for
    bit and pictures pixel for pixel; the Graphs tab's graphs are the batch's."""
    events, alone_events = accumulated(history_file(batched)), accumulated(history_file(alone))
    points, alone_points = tag_points(events), tag_points(alone_events)
    assert list(points) == list(alone_points)
    assert events.Tags()["graph"] and alone_events.Tags()["graph"]  # the run graph: BATCH_GRAPHS
    for tag, alone_tag_points in alone_points.items():
        plugin = plugin_of(events, tag)
        assert plugin == plugin_of(alone_events, tag), tag
        assert [point.step for point in points[tag]] == [point.step for point in alone_tag_points], tag
        if tag in GRAPH_TAGS:
            continue
        for point, alone_point in zip(points[tag], alone_tag_points, strict=True):
            if plugin[0] == "images":
                width, height, pixels = picture(point.value)
                alone_width, alone_height, alone_pixels = picture(alone_point.value)
                assert (width, height) == (alone_width, alone_height), tag
                assert_same_pixels(pixels, alone_pixels, f"{tag} at step {point.step}")
            else:
                assert (point.value.dtype, point.value.shape) == (alone_point.value.dtype, alone_point.value.shape)
                assert point.value.tobytes() == alone_point.value.tobytes(), (
                    f"{tag} at step {point.step}: {point.value.tolist()} != {alone_point.value.tolist()}"
                )


def test_each_job_s_events_pictures_session_and_summary_hold_what_the_basic_launcher_s_do(sweeps):
    batched, basic = sweeps["batched"], sweeps["basic"]
    plugins = set()
    for batched_job, basic_job in zip(job_dirs(batched), job_dirs(basic), strict=True):
        summary, alone = (json.loads((job / "summary.json").read_text()) for job in (batched_job, basic_job))
        in_batch = "batch" in summary
        assert summary.keys() - alone.keys() == ({"batch"} if in_batch else set()) and alone.keys() <= summary.keys()
        assert {key: value for key, value in summary.items() if key not in OWN_SUMMARY_KEYS} == {
            key: value for key, value in alone.items() if key not in OWN_SUMMARY_KEYS
        }, batched_job.name
        if in_batch:  # no trace or compile of its own, where its run alone has them
            assert {"trace", "compile"} <= alone["timings_s"].keys()
            assert not {"trace", "compile"} & summary["timings_s"].keys()
        session, alone_session = (session_in(job / SESSION_FILE) for job in (batched_job, basic_job))
        assert (session.trial_id, session.hparams, session.status) == (
            alone_session.trial_id, alone_session.hparams, alone_session.status,
        )  # fmt: skip
        assert session.hparams["status"] == summary["status"]
        if summary["status"] == "failed":  # its config had a mistake: no history, no pictures
            assert not list(batched_job.glob("*.png")) and not list(basic_job.glob("*.png"))
            continue
        assert_same_history_events(batched_job, basic_job)
        events = accumulated(history_file(batched_job))
        plugins |= {plugin_of(events, tag)[0] for tag in events.Tags()["tensors"]}
        metrics = {"summary/final_loss", "summary/best_loss", "summary/steps"}  # the HParams tab's metric columns
        assert metrics <= set(events.Tags()["tensors"])
        for name in ("loss.png", "trajectory.png"):
            assert_same_pixels(png_pixels(batched_job / name), png_pixels(basic_job / name), batched_job / name)
    assert plugins == {"scalars", "histograms", "images", "graph_run_metadata_graph"}
    experiment, alone_experiment = (
        experiment_in(next(sweep.glob(f"*/{EXPERIMENT_FILE}"))) for sweep in (batched, basic)
    )
    experiment.ClearField("time_created_secs")
    alone_experiment.ClearField("time_created_secs")
    assert experiment == alone_experiment and len(experiment.hparam_infos) == 4


def returned(job_return: JobReturn) -> tuple[Any, ...]:
    """What a JobReturn holds; its configs as they are, unresolved (`hydra.run.dir` resolves to the time)."""
    fields = ("overrides", "return_value", "status", "working_dir", "task_name")
    configs = (OmegaConf.to_container(config) for config in (job_return.cfg, job_return.hydra_cfg))
    return (*(getattr(job_return, field) for field in fields), *configs)


def test_jobs_that_cannot_batch_run_alone_with_a_line_that_says_why(sweeps):
    info = [record.getMessage() for record in sweeps["records"] if record.levelno == logging.INFO]
    mistake = "its config has a mistake (lr: must be a finite number > 0 (in float32, so 1e-45 to 3.4e38), got -1.0)"
    assert info == [
        f"job 1 (lr=-1,optimizer=sgd) runs alone: {mistake}",
        f"job 2 (lr=-1,optimizer=lamb) runs alone: {mistake}",
    ]


def test_max_batch_splits_a_group_into_consecutive_batches(sweeps):
    debug = [record.getMessage() for record in sweeps["records"] if record.levelno == logging.DEBUG]
    assert debug == ["batch of 2: jobs 3, 5", "batch of 1: jobs 7", "batch of 2: jobs 4, 6", "batch of 1: jobs 8"]
    jobs = job_dirs(sweeps["batched"])
    batch = {job.name: json.loads((job / "summary.json").read_text()).get("batch") for job in jobs}
    assert batch == {
        "lr=-1,optimizer=sgd_0": None,
        "lr=-1,optimizer=lamb_1": None,
        "lr=10,optimizer=sgd_2": {"group": 2, "size": 2},
        "lr=10,optimizer=lamb_3": {"group": 3, "size": 2},
        "lr=0.0001,optimizer=sgd_4": {"group": 2, "size": 2},
        "lr=0.0001,optimizer=lamb_5": {"group": 3, "size": 2},
        "lr=0.001,optimizer=sgd_6": {"group": 6, "size": 1},
        "lr=0.001,optimizer=lamb_7": {"group": 7, "size": 1},
    }
    # In the batch of two, lr=10 diverged at its first step while lr=0.0001 went on to the end.
    assert result(sweeps["batched"] / "lr=10,optimizer=sgd_2")[:2] == ("diverged", 1)
    assert result(sweeps["batched"] / "lr=0.0001,optimizer=sgd_4")[:2] == ("completed", 20)
    # So did Lamb's: each member's trust ratio is its own.
    assert result(sweeps["batched"] / "lr=10,optimizer=lamb_3")[0] == "diverged"
    assert result(sweeps["batched"] / "lr=0.0001,optimizer=lamb_5")[:2] == ("completed", 20)


ELEMENTWISE = ["gd", "sgd", "adam", "adamw", "adamax", "nadam", "adagrad", "adadelta", "rmsprop", "ftrl", "lion"]


def sweep_both_ways(tmp_path: Path, sweep: list[str]) -> tuple[list[str], list[dict]]:
    """`sweep` under the batched launcher, then under the basic one; the batched launcher's lines and each job's
    summary.json under it, each job's metrics.csv checked to be the basic launcher's bit for bit and its summary.json
    the same but for its times and `batch`."""
    with launcher_records() as records:
        multirun(TAPELAB_TASK, *sweep, "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path / 'batched'}")
    multirun(TAPELAB_TASK, *sweep, "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path / 'basic'}")
    summaries = []
    for batched, basic in zip(job_dirs(tmp_path / "batched"), job_dirs(tmp_path / "basic"), strict=True):
        assert batched.name == basic.name
        pd.testing.assert_frame_equal(
            pd.read_csv(batched / "metrics.csv"), pd.read_csv(basic / "metrics.csv"), check_exact=True
        )
        summary, alone = (json.loads((job / "summary.json").read_text()) for job in (batched, basic))
        times = ("wall_time_s", "steps_per_s", "timings_s", "batch")
        assert {key: value for key, value in summary.items() if key not in times} == {
            key: value for key, value in alone.items() if key not in times
        }  # status, steps, losses, parameters, the optimizer's values, distance to the minimum, …
        summaries.append(summary)
    return [record.getMessage() for record in records], summaries


def test_every_elementwise_optimizer_trains_each_job_of_its_batch_as_the_basic_launcher_does(tmp_path):
    sweep = ["objective=rosenbrock", f"optimizer={','.join(ELEMENTWISE)}", "lr=0.001,0.1,10", "epochs=40"]
    sweep += ["jit_compile=true", "log.plots=false", "log.tensorboard=false"]  # the histories are the point here
    sweep += ["stop.grad_tol=0.5", "stop.loss_tol=0.001", "stop.patience=3"]
    lines, summaries = sweep_both_ways(tmp_path, sweep)
    assert lines == [
        f"batch of 3: jobs {3 * n + 1}, {3 * n + 2}, {3 * n + 3}" for n in range(len(ELEMENTWISE))
    ]  # each optimizer's three learning rates as one batch
    assert all(summary["batch"]["size"] == 3 and summary["xla"] is True for summary in summaries)
    assert {summary["status"] for summary in summaries} == {"completed", "converged", "diverged"}


def test_jobs_that_differ_in_adam_s_beta_1_train_as_one_batch_each_as_the_basic_launcher_does(tmp_path):
    sweep = ["objective=rosenbrock", "optimizer=adam", "optimizer.beta_1=0.8,0.9,0.95", "lr=0.01", "epochs=40"]
    lines, summaries = sweep_both_ways(
        tmp_path, [*sweep, "jit_compile=true", "log.plots=false", "log.tensorboard=false"]
    )
    assert lines == ["batch of 3: jobs 1, 2, 3"]
    assert [summary["batch"] for summary in summaries] == [{"group": 0, "size": 3}] * 3
    assert sorted(summary["optimizer_params"]["beta_1"] for summary in summaries) == [0.8, 0.9, 0.95]
    assert len({summary["final_loss"] for summary in summaries}) == 3  # each job trained with its own beta_1


def test_a_job_left_with_files_fails_alone_and_the_others_still_train_as_a_batch(tmp_path):
    left = tmp_path / "lr=0.02_1"
    left.mkdir()
    (left / "metrics.csv").write_text("step,loss\n0,1.0\n")  # e.g. killed before its first checkpoint
    multirun(TAPELAB_TASK, "lr=0.05,0.02,0.01", "epochs=5", "log.plots=false", "hydra/launcher=batched",
             f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    summaries = {job.name: json.loads((job / "summary.json").read_text()) for job in job_dirs(tmp_path)}
    assert summaries["lr=0.02_1"]["status"] == "failed"
    assert "already holds a run (metrics.csv)" in summaries["lr=0.02_1"]["error"]
    assert (left / "metrics.csv").read_text() == "step,loss\n0,1.0\n"  # kept as it was
    for name in ("lr=0.05_0", "lr=0.01_2"):
        assert summaries[name]["status"] == "completed" and summaries[name]["batch"] == {"group": 0, "size": 2}


def sweep_outcome(arguments: list[str], sweep_dir: Path) -> str | dict[str, tuple[bytes, bytes, Any]]:
    """`python run.py -m <arguments>` in this process: each job's `.hydra/config.yaml`, `.hydra/overrides.yaml` and
    summary.json by its directory's name, or the error that refused the sweep."""
    try:
        multirun(TAPELAB_TASK, *arguments, f"hydra.sweep.dir={sweep_dir}")
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return {
        job.name: (
            (job / ".hydra" / "config.yaml").read_bytes(),
            (job / ".hydra" / "overrides.yaml").read_bytes(),
            json.loads((job / "summary.json").read_text()),
        )
        for job in job_dirs(sweep_dir)
    }


@pytest.mark.parametrize("arguments", OTHER_OVERRIDES_OF_THE_SWEPT_KEY[:7], ids=" ".join)
def test_sweeps_with_other_overrides_of_a_swept_key_give_each_job_hydra_s_config_under_both_launchers(
    tmp_path, arguments
):
    arguments = [*arguments, "epochs=5", "log.plots=false", "log.tensorboard=false"]  # configs and results only
    hydra_s = sweep_outcome([*arguments, "hydra/sweeper=basic"], tmp_path / "hydra")
    for launcher in ("basic", "batched"):
        grid = sweep_outcome([*arguments, f"hydra/launcher={launcher}"], tmp_path / launcher)  # the grid sweeper
        if isinstance(hydra_s, str):
            assert grid == hydra_s, launcher  # refused as Hydra's basic sweeper refuses it
            continue
        assert not isinstance(grid, str), grid  # never refused where Hydra runs the sweep
        assert grid.keys() == hydra_s.keys(), launcher
        for job, (config, overrides, summary) in grid.items():
            assert (config, overrides) == hydra_s[job][:2], (launcher, job)
            assert summary["status"] == hydra_s[job][2]["status"], (launcher, job)
            if summary["status"] != "failed":  # it trained with the learning rate its config records
                assert summary["lr"] == yaml.safe_load(config)["lr"], (launcher, job)
    if arguments[:2] == ["lr=0.01,0.1", "++lr=0.05"]:  # Hydra applies ++lr=0.05 after lr=0.1, in both jobs
        assert [summary["lr"] for _, _, summary in grid.values()] == [0.05, 0.05]


def test_a_batched_job_s_time_runs_to_its_own_last_step_and_its_line_says_it_ran_in_a_batch(tmp_path):
    # One batch: lr=0.0001 trains all 20,000 steps; lr=10 diverges at its first steps. The long job comes first,
    # so its files are written before the diverged job's.
    multirun(TAPELAB_TASK, "objective=rosenbrock", "lr=0.0001,10", "epochs=20000", "log.every=100",
             "log.plots=false", "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    long_job, diverged_job = tmp_path / "lr=0.0001_0", tmp_path / "lr=10_1"
    long, diverged = (json.loads((job / "summary.json").read_text()) for job in (long_job, diverged_job))
    assert (long["status"], long["steps"], diverged["status"]) == ("completed", 20000, "diverged")
    assert diverged["steps"] < 10
    assert diverged["wall_time_s"] < long["wall_time_s"]
    for job, summary in ((long_job, long), (diverged_job, diverged)):
        line = (job / "tapelab.log").read_text().splitlines()[-1]
        steps = f"{summary['status']} after {summary['steps']} steps? in {summary['wall_time_s']:.2f} s"
        assert re.search(rf"{re.escape(job.name)}: {steps} \(in a batch of 2\): final loss ", line), line


def summaries_in(sweep_dir: Path) -> list[dict]:
    """Each job's summary.json, in job order."""
    return [json.loads((job / "summary.json").read_text()) for job in sorted(job_dirs(sweep_dir), key=job_number)]


def job_number(job_dir: Path) -> int:
    return int(job_dir.name.rpartition("_")[2])


class JobClock(Callback):
    """A Hydra callback that notes when (`time.perf_counter()`) each job starts and ends, in `JobClock.times`."""

    times: list[tuple[str, float]] = []

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        JobClock.times.append(("start", time.perf_counter()))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        JobClock.times.append(("end", time.perf_counter()))


def test_a_batched_job_s_step_time_is_its_share_of_the_batch_s(tmp_path):
    # Sixteen linear regressions on 5000 points as one batch, whose steps take much of its time; lr=10 diverges
    # within a few steps, the others run all 3000. Its jobs all start before it trains, and end after.
    lrs = [f"{0.01 * number:.2f}" for number in range(1, 16)] + ["10"]
    JobClock.times.clear()
    multirun(TAPELAB_TASK, "objective=linear_regression", "objective.n_points=5000", "optimizer=sgd",
             f"lr={','.join(lrs)}", "epochs=3000", "log.every=100", "log.plots=false", "log.tensorboard=false",
             f"+hydra.callbacks.clock._target_={__name__}.JobClock", "hydra/launcher=batched",
             f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert [event for event, _ in JobClock.times] == ["start"] * 16 + ["end"] * 16
    batch_seconds = JobClock.times[16][1] - JobClock.times[15][1]
    summaries = summaries_in(tmp_path)
    assert [summary["steps"] for summary in summaries[:15]] == [3000] * 15
    assert summaries[15]["status"] == "diverged" and summaries[15]["steps"] < 100
    # Each job holds the same share, whatever its own steps; the shares add up to the batch's time in its
    # compiled calls, which lies within the batch's.
    (steps,) = {summary["timings_s"]["steps"] for summary in summaries}
    assert len(lrs) * steps <= batch_seconds


def test_a_batched_job_s_checkpoint_time_is_its_share_of_the_batch_s(tmp_path, monkeypatch):
    # Sixteen Rosenbrock runs as one batch (lr=1 diverges at its first step); the batch's saves are timed from
    # outside, around each call of its checkpoint's save.
    saves: list[float] = []
    save = checkpoints.BatchCheckpoint.save

    def timed_save(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return save(self, *args, **kwargs)
        finally:
            saves.append(time.perf_counter() - started)

    monkeypatch.setattr(checkpoints.BatchCheckpoint, "save", timed_save)
    lrs = [f"{0.0001 * number:.4f}" for number in range(1, 16)] + ["1"]
    multirun(TAPELAB_TASK, "objective=rosenbrock", "optimizer=sgd", f"lr={','.join(lrs)}", "epochs=9095",
             "log.every=1", "log.plots=false", "log.tensorboard=false", "hydra/launcher=batched",
             f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    summaries = summaries_in(tmp_path)
    assert [summary["steps"] for summary in summaries] == [9095] * 15 + [1]
    (checkpoint,) = {summary["timings_s"]["checkpoint"] for summary in summaries}  # the same share for each
    # The shares add up to the time the batch spent saving, as the outside clock saw it (each job's own record
    # adds a few microseconds a chunk); a job charged the whole save would hold sixteen times that.
    assert len(saves) >= 2
    assert len(lrs) * checkpoint == pytest.approx(sum(saves), rel=0.1)


def test_jobs_whose_loop_xla_cannot_compile_run_alone_on_the_plain_graph(tmp_path):
    python = [
        "objective=python",
        "objective.function=user_objectives.bowl_through_python",
        "objective.init={w: [0, 0]}",
    ]
    with launcher_records(logging.getLogger("tapelab")) as records:
        multirun(TAPELAB_TASK, *python, "optimizer=gd", "lr=0.1,0.2", "epochs=10", "log.plots=false",
                 "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert any(
        record.getMessage().startswith("jobs 1, 2 run alone: XLA can't compile their loop (") for record in records
    )
    for job in job_dirs(tmp_path):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["xla"] is False and "batch" not in summary
        shrink = 0.8 if job.name.startswith("lr=0.1_") else 0.6  # w ← w − lr·2(w − t): (1 − 2·lr) a step
        assert summary["final_loss"] == pytest.approx(5.0 * (shrink**10) ** 2, rel=1e-4)  # float32 steps


def test_the_next_batch_compiles_while_a_batch_ends_and_one_xla_cannot_compile_still_runs_alone(tmp_path):
    # Jobs 1–3 train as a batch under XLA and compile the next batch's loop meanwhile; XLA can't compile that one
    # (a loss through Python), so jobs 4–6 then run alone on the plain graph, as without the compile ahead. With no
    # trainer idle, as in a fresh process, whatever ran before: the loop of jobs 4–6 is not there to reuse.
    functions = "objective.function=user_objectives.shifted_bowl,user_objectives.bowl_through_python"
    with no_idle_trainers(), launcher_records(logging.getLogger("tapelab")) as records:
        multirun(TAPELAB_TASK, "objective=python", functions, "objective.init={w: [0, 0]}", "optimizer=gd",
                 "lr=0.05,0.1,0.2", "epochs=10", "log.plots=false", "hydra/launcher=batched",
                 f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    messages = [record.getMessage() for record in records]
    assert "compiling the loop of the next batch (3 members) meanwhile" in messages
    assert any(message.startswith("jobs 4, 5, 6 run alone: XLA can't compile their loop (") for message in messages)
    for job in job_dirs(tmp_path):
        summary = json.loads((job / "summary.json").read_text())
        batched = "shifted_bowl" in job.name
        assert summary["status"] == "completed" and summary["xla"] is batched and ("batch" in summary) is batched
        lr = float(re.match(r"lr=([0-9.]+),", job.name).group(1))
        shrink = 1 - 2 * lr  # w ← w − lr·2(w − t): (1 − 2·lr) a step
        assert summary["final_loss"] == pytest.approx(5.0 * (shrink**10) ** 2, rel=1e-4)  # float32 steps


# SGD and Adam, two loops of their own; each seed's jobs may share a batch (the seed is a member's value).
ENV_SWEEP = ["optimizer=adam,sgd", "lr=0.1,0.2", "seed=1,2", "epochs=5", "log.plots=false", "log.tensorboard=false"]
ENV_SWEEP += ["hydra/launcher=batched", "hydra.verbose=tapelab"]
ENVIRONMENT = "+hydra.job.env_set.TAPELAB_TEST_SEED=${seed}"  # each job's environment names its seed
COMPILE_AHEAD = "compiling the loop of the next batch ({} members) meanwhile"


@pytest.fixture(scope="module")
def env_sweeps(tmp_path_factory) -> dict[str, Any]:
    """ENV_SWEEP as it is ("plain"), and with ENVIRONMENT ("env_set"), each with no trainer idle (as in a fresh
    process): each one's directory, and the batched launcher's and tapelab's log records."""
    base = tmp_path_factory.mktemp("env")
    state = Singleton.get_state()
    found: dict[str, Any] = {}
    try:
        registered_plugins()
        for name, extra in (("plain", []), ("env_set", [ENVIRONMENT])):
            with root_logging_kept(), no_idle_trainers(), launcher_records() as batches_formed:
                with launcher_records(logging.getLogger("tapelab")) as records:
                    multirun(TAPELAB_TASK, *ENV_SWEEP, *extra, f"hydra.sweep.dir={base / name}")
            found[name] = (base / name, [record.getMessage() for record in batches_formed + records])
    finally:
        Singleton.set_state(state)
    return found


def logged(job_dir: Path) -> list[str]:
    """The messages in a job's tapelab.log, without the logging prefix."""
    return [line.partition(" - ")[2] for line in (job_dir / "tapelab.log").read_text().splitlines()]


def test_a_batch_s_log_records_go_to_its_first_job_s_log_and_each_job_s_line_to_its_own(env_sweeps):
    sweep_dir, messages = env_sweeps["plain"]
    assert messages[:2] == ["batch of 4: jobs 1, 2, 3, 4", "batch of 4: jobs 5, 6, 7, 8"]
    jobs = {job_number(job): job for job in job_dirs(sweep_dir)}
    assert len(jobs) == 8
    # While Adam's batch trains, tapelab's records (shown at DEBUG, hydra.verbose=tapelab) go to job 1's log.
    line = COMPILE_AHEAD.format(4)
    assert [num for num, job in jobs.items() if line in logged(job)] == [0]
    for num, job in jobs.items():
        job_lines = [message for message in logged(job) if message.startswith("job ")]
        assert len(job_lines) == 1 and job_lines[0].startswith(f"job {num + 1}/8 {job.name}: completed after 5 steps")


def test_hydra_job_env_set_splits_a_group_and_keeps_the_next_batch_from_compiling_meanwhile(env_sweeps):
    plain, plain_messages = env_sweeps["plain"]
    sweep_dir, messages = env_sweeps["env_set"]
    # Without it, each optimizer's jobs are one batch, and SGD's loop compiles while Adam's jobs end.
    assert COMPILE_AHEAD.format(4) in plain_messages
    assert [message for message in messages if message.startswith("batch of")] == [
        "batch of 2: jobs 1, 3", "batch of 2: jobs 2, 4", "batch of 2: jobs 5, 7", "batch of 2: jobs 6, 8",
    ]  # fmt: skip
    assert not [message for message in messages if message.startswith("compiling the loop")]
    assert not [job for job in job_dirs(sweep_dir) if any(m.startswith("compiling") for m in logged(job))]
    for job in job_dirs(sweep_dir):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["batch"]["size"] == 2


def test_jobs_that_run_in_their_own_directory_run_alone_with_tapelab_s_task_and_a_line_that_says_why(tmp_path):
    with launcher_records() as records:
        returns = multirun(TAPELAB_TASK, "lr=0.1,0.2", "epochs=5", "log.plots=false", "hydra.job.chdir=true",
                           "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    why = "runs alone: hydra.job.chdir runs each job in its own working directory"
    assert [record.getMessage() for record in records] == [f"job 1 (lr=0.1) {why}", f"job 2 (lr=0.2) {why}"]
    assert [job_return.working_dir for job_return in returns] == [
        str(tmp_path / "lr=0.1_0"),
        str(tmp_path / "lr=0.2_1"),
    ]
    for job in job_dirs(tmp_path):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and "batch" not in summary


def test_relaunching_a_finished_batched_sweep_skips_its_jobs(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweeps["batched"], sweep_dir)  # with the files' times
    finished = [job for job in job_dirs(sweep_dir) if result(job)[0] != "failed"]  # a failed job runs again
    assert len(finished) == 6
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
    arguments += ["hydra.sweeper.params.optimizer='choice(adam)'"]  # so that each launch's two trials batch
    multirun(TAPELAB_TASK, *arguments, f"hydra.sweep.dir={tmp_path}")
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert len(table) == 4 and len(job_dirs(tmp_path)) == 4
    batch = {
        job.name.rpartition("_")[2]: json.loads((job / "summary.json").read_text())["batch"]
        for job in job_dirs(tmp_path)
    }
    assert batch == {"0": {"group": 0, "size": 2}, "1": {"group": 0, "size": 2}, "2": {"group": 2, "size": 2},
                     "3": {"group": 2, "size": 2}}  # fmt: skip
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


# Three Adam runs of a regression on 4000 points as one batch, 0.1 to 0.4 ms a step. The noise keeps their
# gradients from reaching zero, so each step after a resume needs Adam's moments as the checkpoint kept them. The
# first chunk is 1000 steps and a chunk grows at most fourfold, so once the first is saved the test has 4000 steps
# or more (0.4 s or more) to send a signal that leaves steps to go.
LONG_SWEEP = ["-m", "hydra/launcher=batched", "objective=linear_regression", "objective.n_points=4000"]
LONG_SWEEP += ["objective.noise=0.1", "log.plots=false", "optimizer=adam", "lr=0.05,0.02,0.01", "epochs=6000"]


def output_of_success(process: subprocess.Popen, timeout: float = 300) -> str:
    """What a process printed, once it exited with 0."""
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def straight_sweep(tmp_path_factory) -> Path:
    """LONG_SWEEP, run to its end without a stop."""
    sweep_dir = tmp_path_factory.mktemp("straight")
    output_of_success(start(*LONG_SWEEP, f"hydra.sweep.dir={sweep_dir}"))
    return sweep_dir


@pytest.fixture(scope="module")
def interrupted_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """LONG_SWEEP stopped by a real SIGINT once its batch saved its first chunk: its directory, and the process's
    exit code and output."""
    sweep_dir = tmp_path_factory.mktemp("interrupted")
    process = start(*LONG_SWEEP, f"hydra.sweep.dir={sweep_dir}")
    deadline = time.monotonic() + 120
    while not (sweep_dir / "lr=0.01_2" / "checkpoint" / "member.json").exists():  # once the batch's first is saved
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return sweep_dir, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def statuses(sweep_dir: Path) -> dict[str, tuple[str, int]]:
    """Each job's status and steps, by its directory's name."""
    return {job.name: result(job)[:2] for job in job_dirs(sweep_dir)}


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_signal_stops_a_batched_sweep_with_each_job_interrupted_after_the_same_chunk(interrupted_sweep):
    sweep_dir, process = interrupted_sweep
    assert process.returncode == 130
    assert "Traceback" not in process.stderr + process.stdout
    assert re.search(r"interrupted by SIGINT after \d+ steps; continue with resume=true hydra.run.dir=\S+ "
                     r"\(or re-launch the sweep\)$", process.stdout, re.MULTILINE)  # fmt: skip
    jobs = job_dirs(sweep_dir)
    assert [job.name for job in jobs] == ["lr=0.01_2", "lr=0.02_1", "lr=0.05_0"]
    batch = sweep_dir / "lr=0.05_0" / "checkpoint" / "batch"  # the batch's checkpoint, in its first job's directory
    for member, job in enumerate(reversed(jobs)):  # every job stopped after the same chunk, pointing to it
        pointer = json.loads((job / "checkpoint" / "member.json").read_text())
        assert (job / "checkpoint" / pointer.pop("batch")).resolve() == batch.resolve()
        assert pointer == {"member": member, "members": 3}
    (ended,) = set(statuses(sweep_dir).values())
    assert ended[0] == "interrupted" and 1000 <= ended[1] < 6000


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("relaunch", ["hydra/launcher=batched", "hydra/launcher=basic"])
def test_an_interrupted_batched_sweep_is_finished_by_a_relaunch_as_if_never_stopped(
    tmp_path, interrupted_sweep, straight_sweep, relaunch
):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(interrupted_sweep[0], sweep_dir, symlinks=True)
    assert {status for status, _ in statuses(sweep_dir).values()} == {"interrupted"}
    output_of_success(start(*[argument for argument in LONG_SWEEP if "launcher" not in argument], relaunch,
                            f"hydra.sweep.dir={sweep_dir}"))  # fmt: skip
    for job, straight in zip(job_dirs(sweep_dir), job_dirs(straight_sweep), strict=True):
        assert result(job) == result(straight) and result(job)[:2] == ("completed", 6000)
        pd.testing.assert_frame_equal(
            pd.read_csv(job / "metrics.csv"), pd.read_csv(straight / "metrics.csv"), check_exact=True
        )


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_signal_while_a_batch_s_jobs_end_still_stops_the_sweep(tmp_path):
    # Adam's eight jobs train as one batch of 50 steps, then draw their pictures and write their files, one job
    # after another; SGD's batch would come next. The signal goes in while the process is stopped (SIGSTOP) once
    # the first job's loss.png is written and the last job's summary.json still says "running".
    lrs = ["0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2"]
    process = start("-m", "hydra/launcher=batched", "objective=rosenbrock", "optimizer=adam,sgd", f"lr={','.join(lrs)}",
                    "epochs=50", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    adam = [tmp_path / f"lr={lr},optimizer=adam_{num}" for num, lr in enumerate(lrs)]
    deadline = time.monotonic() + 120
    while not (adam[0] / "loss.png").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGSTOP)
    try:
        last_job = json.loads((adam[-1] / "summary.json").read_text())["status"]
        if last_job == "running":
            os.kill(process.pid, signal.SIGINT)  # delivered as it continues
    finally:
        os.kill(process.pid, signal.SIGCONT)
    if last_job != "running":
        process.kill()
    assert last_job == "running", "the batch's jobs had all ended before the signal"
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr + stdout
    assert re.search(r"interrupted by SIGINT after 50 steps; continue with resume=true hydra.run.dir=\S+ "
                     r"\(or re-launch the sweep\)$", stdout, re.MULTILINE)  # fmt: skip
    # Each of Adam's jobs ended as it would have: completed, with its files. SGD's batch never started.
    for job in adam:
        assert result(job)[:2] == ("completed", 50)
        assert (job / "loss.png").exists() and (job / "trajectory.png").exists() and (job / SESSION_FILE).exists()
    assert sorted(job_dirs(tmp_path)) == sorted(adam)


@pytest.mark.parametrize("launcher", ["basic", "batched"])
def test_a_key_added_under_a_swept_group_is_checked_in_each_job_against_its_own_option(tmp_path, launcher):
    # The sweep's own config composes sgd (the default): Adam's and Nadam's jobs have beta_1, SGD's has none.
    multirun(TAPELAB_TASK, "optimizer=adam,nadam,sgd", "++optimizer.beta_1=0.8", "epochs=5", "log.plots=false",
             f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    summaries = {job: json.loads((tmp_path / job / "summary.json").read_text()) for job in
                 ("optimizer=adam_0", "optimizer=nadam_1", "optimizer=sgd_2")}  # fmt: skip
    assert [summaries[job]["optimizer_params"]["beta_1"] for job in ("optimizer=adam_0", "optimizer=nadam_1")] == [
        0.8,
        0.8,
    ]
    assert summaries["optimizer=sgd_2"]["status"] == "failed"
    assert summaries["optimizer=sgd_2"]["error"].startswith("ConfigError: optimizer.beta_1: not a key of the config")
