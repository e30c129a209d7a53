"""The one driver of training: runs trained as one batch of the process's loop pool, their records fed chunk by
chunk, the checkpoint saved after each chunk's updates, and a stop request (Ctrl-C, SIGTERM) turned into
`Interrupted` after everything is saved.

A run alone, a multi-start run and a batch of runs differ only in their `Plan`: which members the batch has,
whether it resumes, how its checkpoint is kept, whether a progress bar shows, how it compiles, and which loop
it compiles ahead while its runs end.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapelab.checkpoints import BatchCheckpoint, RunCheckpoint
from tapelab.config import Experiment
from tapelab.errors import one_line
from tapelab.interrupts import Interrupted, StopRequests
from tapelab.objectives import Problem
from tapelab.record import RunRecord
from tapelab.stopwatch import Stopwatch
from tapelab.tensorflow_start import import_tensorflow, quiet_tensorflow_logs

if TYPE_CHECKING:
    from tapelab.engine.batch import Batch, Chunk

log = logging.getLogger(__name__)

# A batch member: its problem, and the experiment whose optimizer, learning rate and stop rules it trains with.
Member = tuple[Problem, Experiment]


@dataclass(frozen=True)
class RunSpec:
    """One run to train: its experiment, its problem (checked), its directory and its HParams trial ID."""

    experiment: Experiment
    problem: Problem
    run_dir: Path
    trial: str


@dataclass(frozen=True)
class Plan:
    """How runs train. A run alone (`batch` None) may resume, keeps its own checkpoint, may show a progress bar,
    and falls back to the plain graph if XLA can't compile its loop; a batch's runs (`batch`: the `{group, size}`
    their summaries record) are new, share one checkpoint, and raise `CannotCompile` before anything is written."""

    members: Sequence[Member]  # one per run, or a multi-start run's starts
    log_every: int
    jit_compile: bool
    pooled: bool = False  # one report of all members: a multi-start run
    previous: dict[str, Any] | None = None  # the summary of the run this one continues (None: a new run)
    progress: bool = False  # a progress bar on a terminal
    batch: dict[str, int] | None = None
    upcoming: Sequence[Member] = ()  # the next batch's members, whose loop compiles while these runs end


def train_runs(runs: Sequence[RunSpec], plan: Plan) -> list[float]:
    """Train `runs` as one batch by `plan`; return each one's final loss (inf if it diverged). Raises
    `Interrupted`, after saving every run, if a signal came while they trained or ended."""
    import_tensorflow()
    from tapelab.engine.pool import POOL

    started = time.perf_counter(), time.time()
    problems, experiments = zip(*plan.members, strict=True)
    borrowed = POOL.batch_for(problems, [e.optimizer for e in experiments], [e.lr for e in experiments],
                              plan.log_every, [e.stop for e in experiments], plan.jit_compile, plan.pooled,
                              experiments[0].dtype)  # fmt: skip
    with StopRequests() as stop_requests, quiet_tensorflow_logs(), borrowed as batch:
        checkpoint, set_up = start(batch, runs, plan)
        records = [
            RunRecord(
                run.experiment,
                run.problem,
                view,
                run.run_dir,
                plan.previous,
                plan.log_every,
                timings(plan.previous, set_up),
                started,
                plan.batch,
            )  # fmt: skip
            for run, view in zip(runs, batch.runs(), strict=True)
        ]
        epochs = runs[0].experiment.epochs
        with progress_bar(epochs, batch.step, plan.progress) as bar:
            for reports in batch.chunks(epochs):
                if feed(records, reports, bar):
                    save(checkpoint, batch.step, records)
                if stop_requests.received is not None:
                    break
        if stop_requests.received is None and plan.upcoming:
            compile_ahead(plan.upcoming)
        summaries = finish_all(records, [run.trial for run in runs])
    ended = all(record.ended for record in records)
    if stop_requests.received is not None or not ended:
        raise Interrupted(stop_requests.received or signal.SIGINT, batch.step, ended)
    return [math.inf if record.status == "diverged" else summary["final_loss"]
            for record, summary in zip(records, summaries, strict=True)]  # fmt: skip


def start(
    batch: Batch, runs: Sequence[RunSpec], plan: Plan
) -> tuple[RunCheckpoint | BatchCheckpoint, dict[str, float]]:
    """Compile the loop, make the run directories and the checkpoint, and restore a resumed run; the checkpoint,
    and the seconds of the set-up's phases that a run alone's timings count."""
    if plan.batch is not None:
        batch.compile(fallback=False)
        for run in runs:
            run.run_dir.mkdir(parents=True, exist_ok=True)
        return BatchCheckpoint(batch, [run.run_dir for run in runs]), {}
    (run,) = runs
    run.run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = RunCheckpoint(batch, run.run_dir)
    if plan.previous is not None:
        checkpoint.restore()
        log.info("continuing %s from step %d to %d", run.run_dir, batch.step, run.experiment.epochs)
    return checkpoint, {"trace": batch.trace(), "compile": batch.compile()}


def timings(previous: dict[str, Any] | None, set_up: dict[str, float]) -> Stopwatch:
    """A run's stopwatch: a resumed run's earlier phases, and this session's set-up."""
    stopwatch = Stopwatch((previous or {}).get("timings_s"))
    for phase, seconds in set_up.items():
        stopwatch.add(phase, seconds)
    return stopwatch


def feed(records: Sequence[RunRecord], reports: list[list[Chunk]], bar: Any) -> bool:
    """Give each run its chunks of one compiled call, and the progress bar (a run alone's) their steps; whether
    any run's state moved (then it must be saved)."""
    moved = False
    for record, chunks in zip(records, reports, strict=True):
        for chunk in chunks:
            record.take(chunk)
            moved = moved or chunk.updates > 0
            bar.update(chunk.updates)
    return moved


def save(checkpoint: RunCheckpoint | BatchCheckpoint, step: int, records: Sequence[RunRecord]) -> None:
    """Save the checkpoint, after every run's summary says it runs; each run's timings get an equal share."""
    saving = time.perf_counter()
    checkpoint.save(step)
    seconds = time.perf_counter() - saving
    for record in records:
        record.timings.add("checkpoint", seconds / len(records))


def compile_ahead(members: Sequence[Member]) -> None:
    """Compile the loop of the next batch's `members` while this batch's runs end (`LoopPool.compile_ahead`).
    What fails here is only logged: that batch meets it again when it runs, and handles it."""
    from tapelab.engine.pool import POOL

    problems, experiments = zip(*members, strict=True)
    try:
        POOL.compile_ahead(problems, [e.optimizer for e in experiments], [e.lr for e in experiments],
                           experiments[0].log_every(), [e.stop for e in experiments], experiments[0].dtype)  # fmt: skip
    except Exception as error:
        log.debug("the next batch's loop was not compiled ahead: %s: %s", type(error).__name__, one_line(error))


def finish_all(records: Sequence[RunRecord], trials: Sequence[str]) -> list[dict[str, Any]]:
    """Finish every run and return their summaries. Each run's pictures are drawn first, so that one's files are
    written while the next are drawn; if drawing one fails, the runs before it still finish, and then its error
    propagates, as if the runs had ended one by one."""
    drawn = 0
    try:
        for record in records:
            record.draw()
            drawn += 1
    finally:
        summaries = [record.finish(trial) for record, trial in zip(records[:drawn], trials, strict=False)]
    return summaries


@contextmanager
def progress_bar(epochs: int, done: int, wanted: bool) -> Iterator[Any]:
    """A tqdm bar of steps, on a terminal only, shown once a run has taken a few seconds."""
    from tqdm import tqdm

    shown = wanted and sys.stderr.isatty()
    with tqdm(total=epochs, initial=done, unit="step", unit_scale=True, delay=3, disable=not shown) as bar:
        yield bar
