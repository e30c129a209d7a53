"""The real `tensorboard` server, on loopback, serves a run's scalars, graph and hparams."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from tensorboard_client import TensorBoard

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
    parent, name = group["name"].split("/")  # the trial ID: the run directory's last two parts
    assert name == RUN_NAME and parent.startswith("logs")
    assert group["hparams"]["lr"] == 0.02 and group["hparams"]["objective"] == "rosenbrock"
    assert group["hparams"]["status"] == "completed" and group["sessions"][0]["status"] == "STATUS_SUCCESS"
    values = {value["name"]["tag"]: value for value in group["metricValues"]}
    assert values["summary/final_loss"]["trainingStep"] == 60
    assert values["summary/final_loss"]["value"] == pytest.approx(metrics["loss"].iloc[-1], rel=1e-6)
    # best_loss counts every step, the unlogged odd ones too, so it can only be lower than the logged minimum.
    assert values["summary/best_loss"]["value"] == pytest.approx(summary["best_loss"], rel=1e-6)
    assert summary["best_loss"] <= metrics["loss"].min()
