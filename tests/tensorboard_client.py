"""A real `tensorboard` process on 127.0.0.1 for end-to-end tests, and a small client for its HTTP API."""

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

ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


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
            [
                str(executable),
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--reload_interval",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def get(self, path: str, **query: str):
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body.decode()

    def get_bytes(self, path: str, query: str) -> bytes:
        """The body of a GET as it comes, e.g. an image's PNG; `query` is already URL-encoded."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}?{query}", timeout=10) as response:
            return response.read()

    def post(self, path: str, body: dict):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
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

    def session_groups(self, statuses: list[str] = ALL_STATUSES) -> dict:
        """The HParams tab's rows, one session group per run, of the sessions whose status the tab's Status
        filter allows."""
        return self.post(
            "/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "startIndex": 0,
                "sliceSize": 1000,
                "colParams": [],
                "allowedStatuses": statuses,
            },
        )


def session_of(run_dir):
    """The run's HParams session, read from its event files: (trial ID, hparams as Python values, end status
    by name)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    events = EventAccumulator(str(run_dir))
    events.Reload()
    start_content = events.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    end_content = events.SummaryMetadata(hparams_metadata.SESSION_END_INFO_TAG).plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(start_content).session_start_info
    end = plugin_data_pb2.HParamsPluginData.FromString(end_content).session_end_info
    values = {
        key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        for key, value in start.hparams.items()
    }
    return start.group_name, values, api_pb2.Status.Name(end.status)


def experiment_of(run_dir) -> dict:
    """The HParams experiment in a run directory's event files: each hparam's name and its listed values."""
    from google.protobuf.json_format import MessageToDict
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.SummaryMetadata(hparams_metadata.EXPERIMENT_TAG).plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    return {info.name: MessageToDict(info.domain_discrete) for info in experiment.hparam_infos}


TIME_SERIES_PLUGINS = {"scalars", "histograms", "images"}  # the plugins whose tags are Time Series cards


def _is_digit(character: str) -> bool:
    return "0" <= character <= "9"


def _number_end(tag: str, index: int) -> int:
    """Where the number that starts before `index` ends: digits, then a fraction and an exponent (`consumeNumber`)."""
    state = "natural"
    while index < len(tag):
        character = tag[index]
        if state in ("natural", "real") and character in "eE":
            state = "exponent_sign"
        elif state == "natural" and character == ".":
            state = "real"
        elif state in ("natural", "real", "exponent"):
            if not _is_digit(character):
                break
        elif state == "exponent_sign":
            if not _is_digit(character) and character not in "+-":
                break
            state = "exponent"
        index += 1
    return index


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")  # JavaScript's Number("1e") is NaN, which compares neither less nor greater


def compare_tag_names(a: str, b: str) -> int:
    """TensorBoard's tag order (`compareTagNames` in tensorboard/webapp/metrics/utils.ts): runs of digits compare
    as numbers; `/` and digits come before any other character; other characters compare by their code."""
    i = j = 0
    while True:
        if i == len(a):
            return 0 if j == len(b) else -1
        if j == len(b):
            return 1
        if _is_digit(a[i]) and _is_digit(b[j]):
            start_a, start_b = i, j
            i, j = _number_end(a, i + 1), _number_end(b, j + 1)
            left, right = _number(a[start_a:i]), _number(b[start_b:j])
            if left < right:
                return -1
            if left > right:
                return 1
            continue
        first_a, first_b = a[i] == "/" or _is_digit(a[i]), b[j] == "/" or _is_digit(b[j])
        if first_a and not first_b:
            return -1
        if first_b and not first_a:
            return 1
        if not first_a and a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i, j = i + 1, j + 1


def time_series_groups(tags: list[str]) -> dict[str, list[str]]:
    """Time Series' card groups, in its order: the tags sorted by `compare_tag_names`, grouped by the text before
    their first `/` (`groupCardIdWithMetdata`, `getTagGroupName`), each group where its first tag comes.
    TensorBoard opens the first two groups when it shows a logdir (the metrics reducer's `tagGroupExpanded`)."""
    import functools

    groups: dict[str, list[str]] = {}
    for tag in sorted(tags, key=functools.cmp_to_key(compare_tag_names)):
        groups.setdefault(tag.split("/", 1)[0], []).append(tag)
    return groups


def time_series_tags(run_dir) -> list[str]:
    """The tags of a run directory that Time Series shows as cards (scalars, histograms and images), read with
    TensorBoard's event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 1})
    events.Reload()
    return [
        tag
        for tag in events.Tags()["tensors"]
        if events.SummaryMetadata(tag).plugin_data.plugin_name in TIME_SERIES_PLUGINS
    ]
