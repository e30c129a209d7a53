"""The real `tensorboard` server, on loopback, serves a run's scalars, graph and hparams."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e
RUN_NAME = "adam_run"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TensorBoard:
    """A tensorboard process on 127.0.0.1 and a small JSON client for its HTTP API."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        executable = Path(sys.executable).parent / "tensorboard"
        self.process = subprocess.Popen(
            [str(executable), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.port),
             "--reload_interval", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def get(self, path: str, **query: str):
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body.decode()

    def post(self, path: str, body: dict):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for_run(self, run: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "tensorboard exited"
            try:
                if run in self.get("/data/runs") and run in self.get("/data/plugin/scalars/tags"):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"tensorboard did not serve {run} within {timeout} s")

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    finished = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "objective=rosenbrock", "optimizer=adam", "lr=0.02", "epochs=60",
         "log.every=2", f"hydra.run.dir={logdir / RUN_NAME}"],
        capture_output=True, text=True, timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    server = TensorBoard(logdir)
    try:
        server.wait_for_run(RUN_NAME)
        yield server, pd.read_csv(logdir / RUN_NAME / "metrics.csv"), json.loads((logdir / RUN_NAME / "summary.json").read_text())
    finally:
        server.stop()


def test_server_serves_loss_and_parameter_scalars_equal_to_metrics_csv(served_run):
    server, metrics, _ = served_run
    for tag, column in [("loss", "loss"), ("params/x[0]", "x[0]"), ("grads/x[1]", "grad_x[1]")]:
        points = server.get("/data/plugin/scalars/scalars", run=RUN_NAME, tag=tag)
        assert [step for _, step, _ in points] == metrics["step"].tolist()
        assert [value for _, _, value in points] == pytest.approx(metrics[column].tolist(), rel=1e-6)


def test_server_serves_the_train_loop_op_graph(served_run):
    server, _, _ = served_run
    info = server.get("/data/plugin/graphs/info")
    assert info[RUN_NAME]["tags"]["train_loop"]["op_graph"] is True
    graph = server.get("/data/plugin/graphs/graph", run=RUN_NAME, tag="train_loop", conversions="false")
    assert 'op: "While"' in graph


def test_server_serves_hparams_and_final_metrics(served_run):
    server, metrics, summary = served_run
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"]: info for info in experiment["hparamInfos"]}
    assert {"objective", "optimizer", "lr", "epochs", "seed", "optimizer.beta_1"} <= set(hparams)
    assert hparams["optimizer"]["domainDiscrete"] == ["adam"]
    assert {"final_loss", "best_loss"} <= {info["name"]["tag"] for info in experiment["metricInfos"]}
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
    })
    (group,) = groups["sessionGroups"]
    assert group["hparams"]["lr"] == 0.02 and group["hparams"]["objective"] == "rosenbrock"
    values = {value["name"]["tag"]: value for value in group["metricValues"]}
    assert values["final_loss"]["trainingStep"] == 60
    assert values["final_loss"]["value"] == pytest.approx(metrics["loss"].iloc[-1], rel=1e-6)
    # best_loss counts every step, the unlogged odd ones too, so it can only be lower than the logged minimum.
    assert values["best_loss"]["value"] == pytest.approx(summary["best_loss"], rel=1e-6)
    assert summary["best_loss"] <= metrics["loss"].min()
