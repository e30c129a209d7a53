"""A run's TensorBoard event files read back with TensorBoard's own reader (`EventAccumulator`), as values to
compare: each tag's events with their steps and values, the pictures decoded to pixels, the HParams session and
a sweep's HParams experiment."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tapelab.sinks.hparams import EXPERIMENT_FILE, SESSION_FILE

KEEP_ALL = {kind: 0 for kind in ("scalars", "histograms", "images", "tensors", "graph", "run_metadata")}


def accumulated(path: Path) -> Any:
    """TensorBoard's `EventAccumulator` of one event file (or a run directory), with every event kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path), size_guidance=KEEP_ALL)
    events.Reload()
    return events


def history_file(run_dir: Path) -> Path:
    """A run's one event file of its history, pictures and graphs (not its HParams session, nor a sweep's
    experiment)."""
    (path,) = [
        path for path in run_dir.glob("events.out.tfevents.*") if path.name not in (SESSION_FILE, EXPERIMENT_FILE)
    ]
    return path


@dataclass(frozen=True)
class Point:
    """One event of a tag: its step, when it was written, and its value as TensorBoard decodes it."""

    step: int
    wall_time: float
    value: np.ndarray


def tag_points(events: Any) -> dict[str, list[Point]]:
    """Every tag (scalars, histograms, pictures and tagged graphs, all of them tensors) with its events in order."""
    from tensorboard.util import tensor_util

    return {
        tag: [
            Point(event.step, event.wall_time, tensor_util.make_ndarray(event.tensor_proto))
            for event in events.Tensors(tag)
        ]
        for tag in events.Tags()["tensors"]
    }


def plugin_of(events: Any, tag: str) -> tuple[str, bytes]:
    """The plugin that shows a tag (`scalars`, `histograms`, `images`, …) and its plugin data."""
    plugin_data = events.SummaryMetadata(tag).plugin_data
    return plugin_data.plugin_name, plugin_data.content


def picture(value: np.ndarray) -> tuple[int, int, np.ndarray]:
    """An image summary's value (width, height, PNG) as its width, height and decoded pixels."""
    import matplotlib.image

    width, height, png = value.tolist()
    return int(width), int(height), matplotlib.image.imread(io.BytesIO(png), format="png")


def png_pixels(path: Path) -> np.ndarray:
    """A PNG file's pixels, decoded."""
    import matplotlib.image

    return matplotlib.image.imread(path)


@dataclass(frozen=True)
class Session:
    """A run's HParams session: its trial ID, hparams (as Python values), how it ended, and when it began and
    ended."""

    trial_id: str
    hparams: dict[str, Any]
    status: str
    start_time_secs: float
    end_time_secs: float


def session_in(path: Path) -> Session:
    """The HParams session in an event file (a run's `events.out.tfevents.session`)."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    events = accumulated(path)
    start_content = plugin_of(events, hparams_metadata.SESSION_START_INFO_TAG)[1]
    end_content = plugin_of(events, hparams_metadata.SESSION_END_INFO_TAG)[1]
    start = plugin_data_pb2.HParamsPluginData.FromString(start_content).session_start_info
    end = plugin_data_pb2.HParamsPluginData.FromString(end_content).session_end_info
    hparams = {key: value_of(value) for key, value in start.hparams.items()}
    return Session(start.group_name, hparams, api_pb2.Status.Name(end.status), start.start_time_secs, end.end_time_secs)


def value_of(value: Any) -> Any:
    """A `google.protobuf.Value` as a Python value (None for a null)."""
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)


def experiment_in(path: Path) -> Any:
    """The HParams experiment in an event file (a sweep's `events.out.tfevents.experiment`), as TensorBoard's
    `Experiment` message."""
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = plugin_of(accumulated(path), hparams_metadata.EXPERIMENT_TAG)[1]
    return plugin_data_pb2.HParamsPluginData.FromString(content).experiment
