"""TensorBoard's HParams tab: a run's session and a sweep's experiment, each a small event file of its own.

A run's session file holds its hyperparameters, `status` among them, its trial ID and how it ended
(TensorBoard's session end status, which the tab's Status filter reads). It is written when the run ends,
and written again, in place, when a resumed run ends: TensorBoard keeps the first description of a tag it
reads in a run, so a run has one such file. The trial ID is the name of the run's row: TensorBoard merges
the sessions of one trial ID into one row, with the mean of their metrics, so each run's is its own
(`trial_id`). A sweep's experiment names the objective, the optimizer, the swept keys, their values and the
run metrics (`summary/final_loss`, `summary/best_loss`, `summary/steps`): TensorBoard shows the columns of
one experiment of a logdir, whichever it finds first, so each lists the objective and the optimizer.

Both are written with TensorBoard's own protocol buffers and record writer, without TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tapelab.atomic import replacing

SESSION_FILE = "events.out.tfevents.session"  # one per run directory
EXPERIMENT_FILE = "events.out.tfevents.experiment"  # one per sweep, in its first job's directory
RUN_METRICS = ["summary/final_loss", "summary/best_loss", "summary/steps"]
STATUSES = ["completed", "converged", "diverged", "failed", "interrupted"]
# How each status shows in the tab's Status filter.
SESSION_STATUS = {
    "completed": "STATUS_SUCCESS",
    "converged": "STATUS_SUCCESS",
    "diverged": "STATUS_FAILURE",
    "failed": "STATUS_FAILURE",
    "interrupted": "STATUS_UNKNOWN",  # neither finished nor running: it continues with resume=true
}


def trial_id(run_dir: Path, in_sweep: bool) -> str:
    """A run's row name: where it is, its most telling part first, and a code of its own.

    A sweep's job is `<sweep>/<job> · <directory above the sweep>` (`19-10-00/lr=0.1,optimizer=adam_3 ·
    2026-12-06`), a single run `<run> · <directory above it>` (`19-12-41 · 2026-12-06`): the tab's narrow
    column shows the sweep's or the run's time. The code, 6 hex digits of the SHA-256 of the run directory's
    absolute path, tells apart the runs whose names are otherwise the same (the same sweep name and job name
    under different parents), so that no two runs share a row.
    """
    path = run_dir.resolve()
    depth = 2 if in_sweep else 1
    place, above = path.parts[-depth:], path.parts[1:-depth][-1:]  # parts[0] is the root
    code = hashlib.sha256(str(path).encode()).hexdigest()[:6]
    return " · ".join(["/".join(place), *above, code])


def write_session(run_dir: Path, hparams: Mapping[str, Any], trial: str, status: str, start_time: float) -> None:
    """Write (or replace) the run's session file: `hparams` with `status`, under the trial ID `trial`."""
    now = time.time()
    write_events(run_dir / SESSION_FILE, session_summaries(hparams, trial, status, start_time, now), now)


def session_summaries(
    hparams: Mapping[str, Any], trial: str, status: str, start_time: float, end_time: float
) -> list[Any]:
    """A session's two summaries: its start (`hparams` with `status`, under the trial ID `trial`) and its end,
    with `status` as the tab's Status filter reads it (`SESSION_STATUS`)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

    start = summary_v2.hparams_pb({**hparams, "status": status}, trial_id=trial, start_time_secs=start_time)
    end_info = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.Status.Value(SESSION_STATUS[status]), end_time_secs=end_time
    )
    end = summary_pb2.Summary()
    end.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end_info)),
        tensor=metadata.NULL_TENSOR,
    )
    return [start, end]


def write_experiment(directory: Path, domains: Mapping[str, Sequence[Any]], created: float) -> None:
    """Write the sweep's experiment into `directory`: each key with its values, `status`, and the run metrics,
    as of the time `created`. The same experiment again leaves the file as it is."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    hparams = [hp.HParam(key, hp.Discrete(values)) for key, values in domains.items()]
    hparams.append(hp.HParam("status", hp.Discrete(STATUSES)))
    metrics = [hp.Metric(tag) for tag in RUN_METRICS]
    experiment = hp.hparams_config_pb(hparams=hparams, metrics=metrics, time_created_secs=created)
    write_events(directory / EXPERIMENT_FILE, [experiment], created)


def write_events(path: Path, summaries: list[Any], wall_time: float, durable: bool = True) -> None:
    """Write an event file of `summaries` at step 0, replacing `path` in one step, unless it holds them already
    (`durable`: flushed to disk first, see `tapelab.atomic.replacing`).

    The temporary file's name has no "tfevents" in it, so that a running TensorBoard never reads it.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    records = RecordWriter(buffer)
    records.write(event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString())
    for summary in summaries:
        records.write(event_pb2.Event(wall_time=wall_time, step=0, summary=summary).SerializeToString())
    content = buffer.getvalue()
    if path.exists() and path.read_bytes() == content:
        return
    with replacing(path, temporary_name=f".events.{os.getpid()}.tmp", durable=durable) as temporary:
        temporary.write_bytes(content)
