"""TensorBoard event files: scalars, histograms, the graphs and the pictures of a run.

The events are TensorBoard's own protocol buffers (its summary metadata helpers), appended to the file with
TensorFlow's record writer: no summary op is traced, so a sweep's jobs pay no tracing for their TensorBoard
output (the step graph is traced once per loop structure, `CompiledLoop.step_graph_def`). Tags (`scalar_tag`):
`loss`, `loss/grad_norm`, `loss/mean`, `loss/worst`, `lr`, `params/<column>`, `params/<column>/grad`,
histograms `params/<name>` for vector parameters, `summary/final_loss`, `summary/best_loss`, `summary/steps`
at the end, and `plots/<picture>`. The graph of one training step is the run graph of the Graphs tab; the
compiled chunk loop's graph is its tag `training_loop`. The HParams tab's session is a file of its own
(`sinks.hparams`).
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.sinks import RunEnd
from tapelab.sinks.hparams import write_session

HISTOGRAM_BUCKETS = 30  # TensorBoard's default bucket count
SUMMARY_METRICS = ("final_loss", "best_loss", "steps")  # summary.json's, as `summary/<key>` at the end
LOSS_GROUP = {"grad_norm": "loss/grad_norm", "loss_mean": "loss/mean", "loss_worst": "loss/worst"}
_file_numbers = itertools.count()


def scalar_tag(column: str, param_columns: list[str]) -> str:
    """The TensorBoard tag of a metrics.csv column.

    Time Series groups its cards by the text before a tag's first `/`, orders them by TensorBoard's tag order
    (`/` and digits first, then by character) and opens the first two groups: here `loss` (the loss, its
    gradient's norm, a multi-start run's mean and worst loss) and `lr`. A parameter element is
    `params/<column>`, its gradient `params/<column>/grad`, in the group that follows, closed.
    """
    if column in param_columns:
        return f"params/{column}"
    if column.startswith("grad_") and column[len("grad_") :] in param_columns:
        return f"params/{column[len('grad_') :]}/grad"
    return LOSS_GROUP.get(column, column)


def histogram_buckets(rows: np.ndarray, bucket_count: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """One histogram per row of `rows`, as `[rows, buckets, 3]` (left edge, right edge, count), float64.

    The rule of TensorBoard's `histogram_pb` (equal-width buckets from the row's minimum to its maximum;
    a row of one value has all edges there and its count in the last bucket), for many rows at once.
    """
    data = np.asarray(rows, np.float64)
    # A row whose span is beyond float64's range (a float64 run near its divergence) is binned at half scale.
    with np.errstate(over="ignore"):
        scale = np.where(np.isfinite(data.max(axis=1) - data.min(axis=1)), 1.0, 0.5)
    scaled = data * scale[:, None]
    low, high = scaled.min(axis=1), scaled.max(axis=1)
    span = high - low
    single = span == 0
    width = np.where(single, 1.0, span) / bucket_count
    indices = np.minimum(np.floor((scaled - low[:, None]) / width[:, None]).astype(np.int64), bucket_count - 1)
    counts = np.zeros((len(data), bucket_count))
    np.add.at(counts, (np.arange(len(data))[:, None], indices), 1)
    edges = np.linspace(low, high, bucket_count + 1, axis=1) / scale[:, None]
    low = low / scale
    buckets = np.stack([edges[:, :-1], edges[:, 1:], counts], axis=2)
    buckets[single, :, :2] = low[single, None, None]
    buckets[single, :, 2] = 0
    buckets[single, -1, 2] = data.shape[1]
    return buckets


def add_png(summary: Any, tag: str, picture: Path) -> None:
    """Add the PNG file `picture` to `summary` as the image `tag`: the image plugin's metadata and a string
    tensor [width, height, PNG bytes], as TensorFlow's `tf.summary.image` writes it."""
    from PIL import Image
    from tensorboard.compat.proto import types_pb2
    from tensorboard.plugins.image import metadata as image_metadata

    encoded = picture.read_bytes()
    with Image.open(picture) as image:
        width, height = image.size
    value = summary.value.add(tag=tag)
    value.metadata.CopyFrom(image_metadata.create_summary_metadata(display_name=None, description=None))
    value.tensor.dtype = types_pb2.DT_STRING
    value.tensor.tensor_shape.dim.add(size=3)
    value.tensor.string_val.extend([str(width).encode(), str(height).encode(), encoded])


class EventWriter:
    """One event file in `log_dir`: `Event` protocol buffers, appended with TensorFlow's record writer."""

    def __init__(self, log_dir: Path) -> None:
        import tensorflow as tf
        from tensorboard.compat.proto import event_pb2

        self._event = event_pb2.Event
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
        # Zero-padded: TensorBoard reads a run's files in name order, and a resumed run's later file must come
        # after its earlier one, also when the process's 10th file follows its 9th in the same second.
        self.path = log_dir / f"{name}{next(_file_numbers):06d}"
        self._records = tf.io.TFRecordWriter(str(self.path))
        self._records.write(self._event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())

    def summary(self, summary: Any, step: int, wall_time: float | None = None) -> None:
        """Append a `Summary` at `step`."""
        event = self._event(wall_time=time.time() if wall_time is None else wall_time, step=step, summary=summary)
        self._records.write(event.SerializeToString())

    def graph(self, graph_def: bytes) -> None:
        """Append a serialized `GraphDef`: the run graph of the Graphs tab."""
        self._records.write(self._event(wall_time=time.time(), graph_def=graph_def).SerializeToString())

    def tagged_graph(self, tag: str, graph_def: bytes) -> None:
        """Append a serialized `GraphDef` as the Graphs tab's tag `tag` (as `tf.summary.trace_export` does)."""
        from tensorboard.compat.proto import config_pb2, graph_pb2, summary_pb2, types_pb2
        from tensorboard.plugins.graph import metadata

        run_metadata = config_pb2.RunMetadata()
        run_metadata.function_graphs.add().pre_optimization_graph.CopyFrom(graph_pb2.GraphDef.FromString(graph_def))
        summary = summary_pb2.Summary()
        value = summary.value.add(tag=tag)
        value.metadata.plugin_data.plugin_name = metadata.PLUGIN_NAME_RUN_METADATA_WITH_GRAPH
        value.metadata.plugin_data.content = b"1"
        value.tensor.dtype = types_pb2.DT_STRING
        value.tensor.tensor_shape.SetInParent()
        value.tensor.string_val.append(run_metadata.SerializeToString())
        self.summary(summary, step=0)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


class TensorBoardSink:
    """Writes one run's event file into `log_dir`."""

    kind = "tensorboard"

    def __init__(
        self,
        log_dir: Path,
        columns: list[str],
        param_columns: list[str],
        vector_params: Mapping[str, slice],
    ) -> None:
        from tensorboard.compat.proto import summary_pb2, types_pb2
        from tensorboard.plugins.histogram import metadata as histogram_metadata
        from tensorboard.plugins.scalar import metadata as scalar_metadata

        self._summary = summary_pb2.Summary
        self._float, self._double = types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE
        self._scalar_metadata = scalar_metadata.create_summary_metadata(display_name=None, description=None)
        self._histogram_metadata = histogram_metadata.create_summary_metadata(display_name=None, description=None)
        self._described: set[str] = set()  # tags whose metadata is written (once per file, as TensorFlow does)
        self._template: Any = None  # a row's Summary without metadata, refilled for each later row
        self._log_dir = log_dir
        self._events = EventWriter(log_dir)
        self._value_columns = [column for column in columns if column != "step"]
        self._tags = [scalar_tag(column, param_columns) for column in self._value_columns]
        first_param = self._value_columns.index(param_columns[0]) if param_columns else 0
        self._histograms = {
            f"params/{name}": slice(first_param + part.start, first_param + part.stop)
            for name, part in vector_params.items()
        }

    def _metadata_once(self, value: Any, tag: str, metadata: Any) -> None:
        if tag not in self._described:
            value.metadata.CopyFrom(metadata)
            self._described.add(tag)

    def _scalars(self, summary: Any, tags: list[str], values: list[float]) -> None:
        for tag, number in zip(tags, values, strict=True):
            value = summary.value.add(tag=tag)
            value.tensor.dtype = self._float
            value.tensor.tensor_shape.SetInParent()  # a scalar
            value.tensor.float_val.append(number)
            self._metadata_once(value, tag, self._scalar_metadata)

    def _row(self, row: list[float], buckets: list[np.ndarray]) -> Any:
        """The `Summary` of one row: its scalars, then the histograms' `buckets`. A tag's first carries its
        metadata; after that, one message is refilled for every row (a new one per row costs three times more)."""
        if len(self._described) < len(self._tags) + len(self._histograms) or self._template is None:
            summary = self._summary()
            self._scalars(summary, self._tags, row)
            for tag, values in zip(self._histograms, buckets, strict=True):
                value = summary.value.add(tag=tag)
                value.tensor.dtype = self._double
                value.tensor.tensor_shape.dim.add(size=values.shape[0])
                value.tensor.tensor_shape.dim.add(size=3)
                value.tensor.tensor_content = values.tobytes()
                self._metadata_once(value, tag, self._histogram_metadata)
            self._template = self._summary()
            self._template.CopyFrom(summary)
            for value in self._template.value:
                value.ClearField("metadata")
            return summary
        values = self._template.value
        for index, number in enumerate(row):
            values[index].tensor.float_val[0] = number
        for index, histogram in enumerate(buckets, start=len(row)):
            values[index].tensor.tensor_content = histogram.tobytes()
        return self._template

    def write(self, history: pd.DataFrame) -> None:
        """Write the rows of `history` (columns as in metrics.csv), one event per step."""
        if history.empty:
            return
        values = history[self._value_columns].to_numpy(np.float64)
        histograms = [histogram_buckets(values[:, part]) for part in self._histograms.values()]
        with np.errstate(over="ignore"):
            rows = values.astype(np.float32)  # TensorBoard's scalars are float32 (a float64 run's beyond: inf)
        now = time.time()
        for i, (step, row) in enumerate(zip(history["step"].tolist(), rows.tolist(), strict=True)):
            self._events.summary(self._row(row, [buckets[i] for buckets in histograms]), step, now)
        self._events.flush()  # on disk before the chunk's checkpoint, so a resume never writes a step twice

    def write_graphs(self, step_graph_def: bytes, loop_graph_def: bytes) -> None:
        """The Graphs tab: one training step as the run graph, and the chunk loop as the tag `training_loop`."""
        self._events.graph(step_graph_def)
        self._events.tagged_graph("training_loop", loop_graph_def)

    def write_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars that summarise the run (the HParams tab's metric columns)."""
        summary = self._summary()
        self._scalars(summary, list(metrics), [float(value) for value in metrics.values()])
        self._events.summary(summary, step)

    def write_images(self, pictures: list[Path], step: int) -> None:
        """PNG files as image summaries, tagged `plots/<file name without .png>`."""
        summary = self._summary()
        for picture in pictures:
            add_png(summary, f"plots/{picture.stem}", picture)
        if pictures:
            self._events.summary(summary, step)

    def finish(self, end: RunEnd) -> None:
        """The run's pictures and, if it ended with a loss, its summary metrics; then close the event file and
        write the run's HParams session."""
        summary, status = end.summary, end.summary["status"]
        self.write_images(end.pictures, step=summary["steps"])
        if summary["final_loss"] is not None and status != "interrupted":
            metrics = {f"summary/{key}": summary[key] for key in SUMMARY_METRICS if summary[key] is not None}
            self.write_metrics(metrics, step=summary["steps"])
        self._events.close()
        write_session(self._log_dir, end.hparams, end.trial, status, end.started_at)
