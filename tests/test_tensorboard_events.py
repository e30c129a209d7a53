"""The event files hold the same history as metrics.csv, under the documented tags."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2

from tensorboard_client import session_of, time_series_groups, time_series_tags


def load_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0, "histograms": 0})
    events.Reload()
    return events


def tensor_series(events: EventAccumulator, tag: str) -> tuple[list[int], list[np.ndarray]]:
    points = events.Tensors(tag)
    return [point.step for point in points], [tf.make_ndarray(point.tensor_proto) for point in points]


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    from conftest import Run, compose_config
    from tapelab.runs import train_config

    run_dir = tmp_path_factory.mktemp("tb") / "run"
    return Run(
        run_dir,
        train_config(
            compose_config("objective=sum_of_squares", "optimizer=adam", "lr=0.1", "epochs=25", "log.every=4"), run_dir
        ),
    )


def test_scalar_tags_are_named_without_loop_prefixes(vector_run):
    tags = set(load_events(vector_run.dir).Tags()["tensors"])
    expected = {
        "loss",
        "loss/grad_norm",
        "lr",
        "params/w[0]",
        "params/w[1]",
        "params/w[0]/grad",
        "params/w[1]/grad",
        "params/w",
        "summary/final_loss",
        "summary/best_loss",
        "summary/steps",
    }
    assert expected <= tags
    assert not any("while" in tag for tag in tags)


def test_time_series_opens_on_the_loss_group_then_lr_and_keeps_the_parameters_closed(vector_run):
    # TensorBoard's frontend sorts the tags, groups them by the text before the first "/" and opens the
    # first two groups.
    groups = time_series_groups(time_series_tags(vector_run.dir))
    assert list(groups) == ["loss", "lr", "params", "plots", "summary"]
    assert groups["loss"] == ["loss", "loss/grad_norm"] and groups["lr"] == ["lr"]
    assert groups["params"] == ["params/w", "params/w[0]", "params/w[0]/grad", "params/w[1]", "params/w[1]/grad"]


def test_scalars_equal_metrics_csv_at_every_logged_step(vector_run):
    events = load_events(vector_run.dir)
    metrics = vector_run.metrics
    assert metrics["step"].tolist() == [0, 4, 8, 12, 16, 20, 24, 25]
    for column, tag in [
        ("loss", "loss"),
        ("grad_norm", "loss/grad_norm"),
        ("lr", "lr"),
        ("w[1]", "params/w[1]"),
        ("grad_w[0]", "params/w[0]/grad"),
    ]:
        steps, values = tensor_series(events, tag)
        assert steps == metrics["step"].tolist(), tag
        np.testing.assert_array_equal(np.array(values, np.float32), metrics[column].to_numpy(np.float32))


def test_vector_parameter_gets_a_histogram_per_logged_step(vector_run):
    steps, histograms = tensor_series(load_events(vector_run.dir), "params/w")
    assert steps == vector_run.metrics["step"].tolist()
    # Each histogram bucket row is (left edge, right edge, count); the counts add up to the two elements.
    assert all(histogram[:, 2].sum() == 2 for histogram in histograms)
    first = histograms[0]
    assert first[:, 0].min() == pytest.approx(-3.0) and first[:, 1].max() == pytest.approx(1.0)


def test_final_and_best_loss_and_steps_are_logged_under_summary_at_the_last_step(vector_run):
    events = load_events(vector_run.dir)
    for key in ("final_loss", "best_loss", "steps"):
        steps, values = tensor_series(events, f"summary/{key}")
        assert steps == [25]
        assert float(values[0]) == pytest.approx(vector_run.summary[key])
    assert vector_run.summary["final_loss"] == pytest.approx(vector_run.metrics["loss"].iloc[-1])


def test_run_graph_is_one_training_step_in_loss_gradients_and_update_scopes(vector_run):
    graph = load_events(vector_run.dir).Graph()
    ops_in = lambda scope: {node.op for node in graph.node if node.name.startswith(f"{scope}/")}  # noqa: E731
    assert {node.name.split("/")[0] for node in graph.node} >= {"loss", "gradients", "update"}
    assert "While" not in {node.op for node in graph.node}  # one step, not the loop
    assert {"ReadVariableOp", "Pow", "Sum"} <= ops_in("loss")  # sum_of_squares: reduce_sum(w ** 2)
    assert "Mul" in ops_in("gradients")  # d(w²)/dw = 2w
    assert {"Sqrt", "AssignSubVariableOp"} <= ops_in("update")  # Adam's step: m / (√v + ε), subtracted


def test_loop_graph_is_the_graphs_tab_tag_training_loop(vector_run):
    from tensorboard.compat.proto import config_pb2

    (point,) = load_events(vector_run.dir).Tensors("training_loop")
    run_metadata = config_pb2.RunMetadata.FromString(tf.make_ndarray(point.tensor_proto).item())
    graph = run_metadata.function_graphs[0].pre_optimization_graph
    assert "While" in {node.op for node in graph.node}  # the loop runs in the graph
    loop_ops = {node.op for function in graph.library.function for node in function.node_def}
    assert {"IsFinite", "Sqrt", "AssignSubVariableOp"} <= loop_ops  # divergence check and the Adam update


def test_hparams_session_records_the_run_configuration(vector_run):
    events = load_events(vector_run.dir)
    content = events.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {key: value for key, value in start.hparams.items()}
    assert hparams["objective"].string_value == "sum_of_squares"
    assert hparams["optimizer"].string_value == "adam"
    assert hparams["lr"].number_value == 0.1
    assert hparams["epochs"].number_value == 25
    assert hparams["optimizer.beta_2"].number_value == 0.999
    assert "optimizer.weight_decay" not in hparams  # None is left out rather than logged as a string
    assert hparams["status"].string_value == "completed"
    # The trial ID: the run's directory, the one above it, and a code of its own.
    assert re.fullmatch(rf"run · {vector_run.dir.parent.name} · [0-9a-f]{{6}}", start.group_name)


def test_hparams_session_ends_with_the_status_the_filter_reads(vector_run):
    from tensorboard.plugins.hparams import api_pb2

    content = load_events(vector_run.dir).SummaryMetadata(hparams_metadata.SESSION_END_INFO_TAG).plugin_data.content
    end = plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info
    assert end.status == api_pb2.Status.STATUS_SUCCESS


def test_a_resumed_run_replaces_its_session_with_the_new_status(tmp_path):
    from tapelab.sinks.hparams import write_session

    write_session(tmp_path, {"lr": 0.1}, "trial", "interrupted", start_time=1.0)
    assert session_of(tmp_path) == ("trial", {"lr": 0.1, "status": "interrupted"}, "STATUS_UNKNOWN")
    write_session(tmp_path, {"lr": 0.1}, "trial", "diverged", start_time=1.0)
    assert session_of(tmp_path) == ("trial", {"lr": 0.1, "status": "diverged"}, "STATUS_FAILURE")
    assert [path.name for path in tmp_path.iterdir()] == ["events.out.tfevents.session"]  # one file, replaced


@pytest.mark.parametrize(
    ("overrides", "update_ops"),
    [
        (["optimizer=gd"], {"AssignSubVariableOp"}),  # x -= lr * g
        (["optimizer=sgd", "optimizer.momentum=0.9"], {"AssignVariableOp"}),
        (["optimizer=lamb"], {"Sqrt", "AssignSubVariableOp"}),
        (["optimizer=newton"], {"Svd", "AssignSubVariableOp"}),  # the pseudo-inverse of the Hessian, by its SVD
        (["optimizer=adam", "objective=himmelblau", "objective.starts=4", "jit_compile=true"], {"Sqrt"}),
    ],
)
def test_every_optimizers_step_graph_has_its_update_under_update(tmp_path, overrides, update_ops):
    from conftest import compose_config
    from tapelab.runs import train_config

    train_config(
        compose_config("objective=rosenbrock", "lr=0.001", "epochs=3", "log.plots=false", *overrides), tmp_path
    )
    graph = load_events(tmp_path).Graph()
    names = [node.name for node in graph.node]
    assert len(set(names)) == len(names)
    assert {name.split("/")[0] for name in names} - {"Const", "Identity", "NoOp"} == {
        "loss",
        "gradients",
        "row",
        "update",
    }
    assert update_ops <= {node.op for node in graph.node if node.name.startswith("update/")}
    assert any(name.startswith("gradients/loss/") for name in names)  # the step's gradient, by its forward ops


def test_the_graphs_change_no_number(tmp_path):
    from conftest import compose_config
    from tapelab.runs import train_config

    for graph in ("true", "false"):
        train_config(
            compose_config("objective=rosenbrock", "optimizer=newton", "epochs=20", f"log.graph={graph}"),
            tmp_path / graph,
        )
    with_graphs, without = (pd.read_csv(tmp_path / graph / "metrics.csv") for graph in ("true", "false"))
    pd.testing.assert_frame_equal(with_graphs, without, check_exact=True)
    assert load_events(tmp_path / "true").Graph() is not None
    with pytest.raises(ValueError):
        load_events(tmp_path / "false").Graph()  # no graph written


def test_a_process_names_its_event_files_in_the_order_it_writes_them(tmp_path):
    # TensorBoard reads a run's event files in name order; a resumed run's second file must come after its first.
    from tapelab.sinks.tensorboard_sink import EventWriter

    written = []
    for _ in range(12):  # past the 9th and 10th file of the process, in the same second or the next
        writer = EventWriter(tmp_path)
        writer.close()
        written.append(writer.path.name)
    assert sorted(written) == written
