"""A group of runs trained as one batch: each member writes into its own run directory what it would write
alone (metrics.csv, TensorBoard events, a checkpoint, summary.json, pictures, its HParams session)."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tapelab.config import Experiment
from tapelab.interrupts import Interrupted, StopRequests
from tapelab.record import RunRecord
from tapelab.resume import CHECKPOINTS
from tapelab.rundir import check_unused
from tapelab.runner import checked_problem
from tapelab.stopwatch import Stopwatch
from tapelab.tensorflow_start import import_tensorflow

if TYPE_CHECKING:
    from tapelab.batch_training import BatchTrainer

log = logging.getLogger(__name__)


class Member:
    """One member of a batch, seen as the run it stands for (what a `RunRecord` reads)."""

    def __init__(self, trainer: BatchTrainer, index: int) -> None:
        self.trainer, self.index = trainer, index
        self.columns, self.param_columns = trainer.columns, trainer.param_columns
        self.jit_compile = trainer.jit_compile

    @property
    def step_seconds(self) -> float:
        return self.trainer.step_seconds  # the batch's compiled calls: every member's time

    @property
    def step(self) -> int:
        return int(self.trainer.steps[self.index])

    @property
    def best_loss(self) -> float:
        return float(self.trainer.best_losses[self.index])

    def current_row(self) -> pd.DataFrame | None:
        return self.trainer.current_row(self.index)

    def step_graph_def(self) -> bytes:
        return self.trainer.step_graph_def()

    def graph_def(self) -> bytes:
        return self.trainer.graph_def()


class MemberCheckpoint:
    """A member's checkpoint in `run_dir`, in the layout of a run alone, so that any launcher resumes it."""

    def __init__(self, state: dict[str, Any], run_dir: Path) -> None:
        import tensorflow as tf

        self.variables = tf.nest.map_structure(lambda value: tf.Variable(value, trainable=False), state)
        checkpoint = tf.train.Checkpoint(**self.variables)
        self.manager = tf.train.CheckpointManager(checkpoint, run_dir / CHECKPOINTS, max_to_keep=1)

    def save(self, state: dict[str, Any], step: int) -> None:
        import tensorflow as tf

        tf.nest.map_structure(lambda variable, value: variable.assign(value), self.variables, state)
        self.manager.save(checkpoint_number=step)


def train_batch(experiments: Sequence[Experiment], run_dirs: Sequence[Path], trials: Sequence[str]) -> list[float]:
    """Train new runs that share a loop structure, epochs and logging as one batch; return each one's final
    loss (inf if it diverged). Raises `Interrupted` after saving every member if a signal stopped the batch."""
    for run_dir in run_dirs:
        check_unused(run_dir)
    checked = [checked_problem(experiment) for experiment in experiments]
    if any(starts is not None for _, starts in checked):
        raise ValueError("a multi-start run can't be a member of a batch")
    problems = [problem for problem, _ in checked]
    first = experiments[0]
    log_every = first.log_every()
    import_tensorflow()
    from tapelab.batch_training import BatchTrainer
    from tapelab.training import quiet_tensorflow_logs, wants_xla

    xla = wants_xla(first.jit_compile, first.epochs, problems[0])
    with StopRequests() as stop_requests, quiet_tensorflow_logs():
        started = time.perf_counter(), time.time()
        trainer = BatchTrainer(problems[0], len(experiments), first.optimizer, first.stop, xla)
        lrs, stops = [experiment.lr for experiment in experiments], [experiment.stop for experiment in experiments]
        trainer.load(problems, first.optimizer, lrs, log_every, stops)
        records = []
        for index, (experiment, problem, run_dir) in enumerate(zip(experiments, problems, run_dirs, strict=True)):
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint = MemberCheckpoint(trainer.member_state(index), run_dir)
            save = lambda step, index=index, checkpoint=checkpoint: checkpoint.save(  # noqa: E731
                trainer.member_state(index), step
            )
            member = Member(trainer, index)
            records.append(RunRecord(experiment, problem, member, run_dir, None, log_every, Stopwatch(), save, started))
        for members in trainer.chunks(first.epochs):
            for record, chunks in zip(records, members, strict=True):
                for chunk in chunks:
                    record.take(chunk)
            if stop_requests.received is not None:
                break
        summaries = [record.finish(trial) for record, trial in zip(records, trials, strict=True)]
    if any(record.status == "interrupted" for record in records):
        raise Interrupted(stop_requests.received or signal.SIGINT, trainer.step)
    return [
        math.inf if record.status == "diverged" else summary["final_loss"]
        for record, summary in zip(records, summaries, strict=True)
    ]
