"""The real `tensorboard` server, on loopback, serves a run's scalars, graph and hparams."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from tensorboard_client import TensorBoard, experiment_of

pytestmark = pytest.mark.e2e
RUN_NAME = "adam_run"


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    finished = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "objective=rosenbrock",
            "optimizer=adam",
            "lr=0.02",
            "epochs=60",
            "log.every=2",
            f"hydra.run.dir={logdir / RUN_NAME}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    server = TensorBoard(logdir)
    try:
        server.wait_for_run(RUN_NAME)
        run_dir = logdir / RUN_NAME
        yield server, pd.read_csv(run_dir / "metrics.csv"), json.loads((run_dir / "summary.json").read_text())
    finally:
        server.stop()


def test_server_serves_loss_and_parameter_scalars_equal_to_metrics_csv(served_run):
    server, metrics, _ = served_run
    for tag, column in [("loss", "loss"), ("params/x[0]", "x[0]"), ("params/x[1]/grad", "grad_x[1]")]:
        points = server.get("/data/plugin/scalars/scalars", run=RUN_NAME, tag=tag)
        assert [step for _, step, _ in points] == metrics["step"].tolist()
        assert [value for _, _, value in points] == pytest.approx(metrics[column].tolist(), rel=1e-6)


def test_graphs_tab_shows_one_step_in_loss_gradients_and_update_and_the_loop_as_a_tag(served_run):
    server, _, _ = served_run
    info = server.get("/data/plugin/graphs/info")[RUN_NAME]
    assert info["run_graph"] is True and set(info["tags"]) == {"training_loop"}
    step = server.get("/data/plugin/graphs/graph", run=RUN_NAME, conversions="false")
    names = re.findall(r'^  name: "([^"]+)"', step, flags=re.MULTILINE)
    assert {"loss", "gradients", "update"} <= {name.split("/")[0] for name in names}
    assert any(name.startswith("update/adam/") for name in names)  # Keras's Adam, under update
    assert "loss/pow" in names and "gradients/loss/pow/mul" in names  # Rosenbrock's squares, and their derivative
    assert 'op: "While"' not in step
    loop = server.get("/data/plugin/graphs/graph", run=RUN_NAME, tag="training_loop", conversions="false")
    assert 'op: "While"' in loop and 'op: "IsFinite"' in loop


def test_server_serves_hparams_and_final_metrics(served_run):
    server, metrics, summary = served_run
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"]: info for info in experiment["hparamInfos"]}
    assert {"objective", "optimizer", "lr", "epochs", "seed", "optimizer.beta_1"} <= set(hparams)
    assert hparams["optimizer"]["domainDiscrete"] == ["adam"]
    assert {"summary/final_loss", "summary/best_loss"} <= {info["name"]["tag"] for info in experiment["metricInfos"]}
    (group,) = server.session_groups()["sessionGroups"]
    # The trial ID: the run directory's name, the one above it (pytest's logs0), and a code of its own.
    assert re.fullmatch(rf"{RUN_NAME} · logs\d* · [0-9a-f]{{6}}", group["name"])
    assert group["hparams"]["lr"] == 0.02 and group["hparams"]["objective"] == "rosenbrock"
    assert group["hparams"]["status"] == "completed" and group["sessions"][0]["status"] == "STATUS_SUCCESS"
    values = {value["name"]["tag"]: value for value in group["metricValues"]}
    assert values["summary/final_loss"]["trainingStep"] == 60
    assert values["summary/final_loss"]["value"] == pytest.approx(metrics["loss"].iloc[-1], rel=1e-6)
    # best_loss counts every step, the unlogged odd ones too, so it can only be lower than the logged minimum.
    assert values["summary/best_loss"]["value"] == pytest.approx(summary["best_loss"], rel=1e-6)
    assert summary["best_loss"] <= metrics["loss"].min()


# The same grid swept twice under one logdir, as the README's `python run.py -m` commands name their directories:
# under the basic launcher with 5 steps, then under the batched one with 7, so that each job's numbers differ
# from its namesake's. No job diverges: each job's final loss is then its last step's.
GRID = ["objective=rosenbrock", "optimizer=sgd,adam", "lr=0.0001,0.001", "log.plots=false"]
SWEEPS = {
    "multirun/2026-12-06/10-00-00": ["epochs=5", "hydra/launcher=basic"],
    "multirun/2026-12-06/10-05-00": ["epochs=7", "hydra/launcher=batched"],
}
SINGLE_RUNS = {
    "2026-12-06/10-10-00": ["objective=himmelblau", "optimizer=adam", "lr=0.05", "epochs=5", "log.plots=false"],
    "2026-12-07/09-00-00": ["lr=0.1", "epochs=5", "log.plots=false"],
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An `outputs` directory with SWEEPS and SINGLE_RUNS, each run in this process by Hydra as the command line
    runs it (the sweeps' report included). Hydra's state and the root logger's handlers (Hydra's point to job log
    files) are as before afterwards."""
    import tapelab
    from test_sweeps import sweep_in_process

    logdir = tmp_path_factory.mktemp("outputs")
    for sweep_dir, overrides in SWEEPS.items():
        sweep_in_process(*GRID, *overrides, f"hydra.sweep.dir={logdir / sweep_dir}")
    for run_dir, overrides in SINGLE_RUNS.items():
        tapelab.run(*overrides, run_dir=logdir / run_dir)
    return logdir


def test_hparams_rows_are_runs_each_with_its_own_metrics(outputs):
    runs = sorted(path.parent.relative_to(outputs).as_posix() for path in outputs.rglob("summary.json"))
    assert len(runs) == 2 * 4 + 2  # the two sweeps' jobs, with the same four names, and the single runs
    summaries = {run: json.loads((outputs / run / "summary.json").read_text()) for run in runs}
    server = TensorBoard(outputs)
    try:
        for run in runs:
            server.wait_for_run(run)
        experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
        groups = server.session_groups()["sessionGroups"]
    finally:
        server.stop()
    # One row per run: its only session is the run's, with the run's own numbers, not a mean with its namesake's.
    assert len(groups) == len(runs)
    by_run = {}
    for group in groups:
        (session,) = group["sessions"]
        by_run[session["name"]] = group
    assert sorted(by_run) == runs
    for run, group in by_run.items():
        summary = summaries[run]
        metrics = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
        assert metrics["summary/final_loss"] == pytest.approx(summary["final_loss"], rel=1e-6)
        assert metrics["summary/best_loss"] == pytest.approx(summary["best_loss"], rel=1e-6)
        assert metrics["summary/steps"] == summary["steps"]
        hparams = group["hparams"]
        assert (hparams["objective"], hparams["optimizer"], hparams["lr"]) == (
            summary["objective"], summary["optimizer"], summary["lr"]
        )  # fmt: skip
        # The row's name: the sweep and the job, or the single run's time, then the directory above, and a code.
        parts = run.split("/")
        name = f"{parts[2]}/{parts[3]} · {parts[1]}" if parts[0] == "multirun" else f"{parts[1]} · {parts[0]}"
        assert re.fullmatch(rf"{re.escape(name)} · [0-9a-f]{{6}}", group["name"])
    first, second = (sorted(name for name in runs if name.startswith(sweep)) for sweep in SWEEPS)
    for basic, batched in zip(first, second, strict=True):
        assert basic.rsplit("/", 1)[1] == batched.rsplit("/", 1)[1]  # namesakes
        assert summaries[basic]["final_loss"] != summaries[batched]["final_loss"]
    # TensorBoard shows one of the two sweeps' experiments; either has the objective and the optimizer.
    assert {"objective", "optimizer", "lr", "status"} <= {info["name"] for info in experiment["hparamInfos"]}


def test_every_sweeps_experiment_lists_the_objective_and_the_optimizer(outputs):
    for sweep_dir in SWEEPS:
        (experiment_file,) = (outputs / sweep_dir).rglob("events.out.tfevents.experiment")
        domains = experiment_of(experiment_file.parent)
        assert domains["objective"] == ["rosenbrock"]  # not swept
        assert domains["optimizer"] == ["adam", "sgd"]  # swept
        assert domains["lr"] == [0.0001, 0.001]
