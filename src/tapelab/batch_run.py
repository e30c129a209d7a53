"""A group of runs trained as one batch: each member writes into its own run directory what it would write
alone (metrics.csv, TensorBoard events, summary.json, pictures, its HParams session); the batch saves one
checkpoint of every member, from which any launcher resumes each of them alone."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from tapelab.config import Experiment, to_experiment
from tapelab.errors import one_line
from tapelab.interrupts import Interrupted, StopRequests
from tapelab.record import RunRecord
from tapelab.resume import CHECKPOINTS
from tapelab.rundir import check_unused
from tapelab.runner import checked_problem
from tapelab.sinks.summary import write_json_atomically
from tapelab.stopwatch import Stopwatch
from tapelab.tensorflow_start import import_tensorflow

if TYPE_CHECKING:
    from tapelab.training import Trainer

log = logging.getLogger(__name__)

BATCH_CHECKPOINTS = "batch"  # in the first member's checkpoint directory
MEMBER_FILE = "member.json"  # in each member's: where its batch's checkpoint is, and which member it is


class BatchCheckpoint:
    """One checkpoint of every member's state, saved once per chunk into the first member's
    `checkpoint/batch/`, and in each member's `checkpoint/` a `member.json` that points there, so that any
    launcher resumes each job alone (`restore_member`)."""

    def __init__(self, trainer: Trainer, run_dirs: Sequence[Path]) -> None:
        import tensorflow as tf

        self.trainer, self.run_dirs = trainer, run_dirs
        self.variables = tf.nest.map_structure(
            lambda value: tf.Variable(value, trainable=False), trainer.member_states()
        )
        directory = run_dirs[0] / CHECKPOINTS / BATCH_CHECKPOINTS
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(**self.variables), directory, max_to_keep=1)
        self.pointed = False

    def save(self, step: int) -> None:
        """Save every member's state as the batch's checkpoint of `step`."""
        import tensorflow as tf

        states = self.trainer.member_states()
        tf.nest.map_structure(lambda variable, value: variable.assign(value), self.variables, states)
        self.manager.save(checkpoint_number=step)
        if not self.pointed:  # after the first save: a member's checkpoint directory always holds a checkpoint
            batch = self.run_dirs[0] / CHECKPOINTS / BATCH_CHECKPOINTS
            for member, run_dir in enumerate(self.run_dirs):
                (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
                pointer = {"batch": os.path.relpath(batch, run_dir / CHECKPOINTS), "member": member}
                write_json_atomically(run_dir / CHECKPOINTS / MEMBER_FILE, {**pointer, "members": len(self.run_dirs)})
            self.pointed = True


def restore_member(state_variables: dict[str, Any], run_dir: Path) -> bool:
    """Load the state of the batch member whose run is in `run_dir` into a run alone's `state_variables`, from
    its batch's latest checkpoint; return False if the run was no batch member or its batch saved no complete
    checkpoint. Raises AssertionError or ValueError if the checkpoint doesn't fit."""
    import tensorflow as tf

    pointer_file = run_dir / CHECKPOINTS / MEMBER_FILE
    if not pointer_file.exists():
        return False
    pointer = json.loads(pointer_file.read_text())
    latest = tf.train.latest_checkpoint(str(run_dir / CHECKPOINTS / pointer["batch"]))
    if latest is None:
        return False
    members = pointer["members"]
    stacked = tf.nest.map_structure(
        lambda variable: tf.Variable(tf.zeros([members, *variable.shape], variable.dtype), trainable=False),
        state_variables,
    )
    tf.train.Checkpoint(**stacked).restore(latest).assert_consumed()
    member = pointer["member"]
    tf.nest.map_structure(lambda variable, batch: variable.assign(batch[member]), state_variables, stacked)
    return True


class CannotCompile(Exception):
    """XLA can't compile a batch's loop (an objective with an op XLA lacks); str(error) is XLA's reason."""


def compile_before_writing(trainer: Trainer) -> None:
    """Compile the batch's loop before its members write anything, or raise CannotCompile."""
    import tensorflow as tf

    try:
        trainer.compile(fallback=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        raise CannotCompile(str(error).strip().splitlines()[0][:300]) from None
    if not trainer.jit_compile:  # a run alone's trainer of this key, which had fallen back to the plain graph
        raise CannotCompile("XLA could not compile this loop for an earlier run of the process")


def member_values(experiments: Sequence[Experiment]) -> tuple[list[Any], list[float], int, list[Any]]:
    """What a batch's trainer takes of its runs' experiments besides the problems: the optimizers, the learning
    rates, log.every and the stop rules."""
    return (
        [experiment.optimizer for experiment in experiments],
        [experiment.lr for experiment in experiments],
        experiments[0].log_every(),
        [experiment.stop for experiment in experiments],
    )


def finish_all(records: Sequence[RunRecord], trials: Sequence[str]) -> list[dict[str, Any]]:
    """Finish every member and return their summaries. Each member's pictures are drawn first, so that one's files
    are written while the next are drawn; if drawing one fails, the members before it still finish, and then its
    error propagates, as if the members had ended one by one."""
    drawn = 0
    try:
        for record in records:
            record.draw()
            drawn += 1
    finally:
        summaries = [record.finish(trial) for record, trial in zip(records[:drawn], trials, strict=False)]
    return summaries


def prepare_next(upcoming: Sequence[DictConfig]) -> None:
    """Compile the loop of the runs of the `upcoming` task configs (the next batch's new runs) while this batch's
    runs end (`training.compile_ahead`). What fails here is only logged: that batch meets it again when it runs,
    and handles it."""
    from tapelab.training import compile_ahead

    try:
        experiments = [to_experiment(task_cfg) for task_cfg in upcoming]
        compile_ahead([checked_problem(experiment)[0] for experiment in experiments], *member_values(experiments))
    except Exception as error:
        log.debug("the next batch's loop was not compiled ahead: %s: %s", type(error).__name__, one_line(error))


def train_batch(
    experiments: Sequence[Experiment],
    run_dirs: Sequence[Path],
    trials: Sequence[str],
    group: int,
    upcoming: Sequence[DictConfig] = (),
) -> list[float]:
    """Train new runs that share a loop structure, epochs and logging as one batch, under XLA; return each one's
    final loss (inf if it diverged). Each summary.json records `batch: {group, size}`. Raises CannotCompile,
    before anything is written, if XLA can't compile the loop, and `Interrupted` after saving every member if a
    signal came while the batch trained or ended. The loop of the runs of the `upcoming` task configs (the next
    batch's new runs), if any, is compiled while this batch's runs end (`prepare_next`)."""
    for run_dir in run_dirs:
        check_unused(run_dir)
    checked = [checked_problem(experiment) for experiment in experiments]
    if any(starts is not None for _, starts in checked):
        raise ValueError("a multi-start run can't be a member of a batch")
    problems = [problem for problem, _ in checked]
    log_every = experiments[0].log_every()
    batch = {"group": group, "size": len(experiments)}
    import_tensorflow()
    from tapelab.training import quiet_tensorflow_logs, trainer_for

    size = len(experiments)
    started = time.perf_counter(), time.time()
    loop = trainer_for(problems, *member_values(experiments), jit_compile=True)
    with StopRequests() as stop_requests, quiet_tensorflow_logs(), loop as trainer:
        compile_before_writing(trainer)
        for run_dir in run_dirs:
            run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = BatchCheckpoint(trainer, run_dirs)
        runs = zip(experiments, problems, trainer.runs(), run_dirs, strict=True)
        records = [
            RunRecord(experiment, problem, trained, run_dir, None, log_every, Stopwatch(), None, started, batch)
            for experiment, problem, trained, run_dir in runs
        ]
        for members in trainer.chunks(experiments[0].epochs):
            for record, chunks in zip(records, members, strict=True):
                for chunk in chunks:
                    record.take(chunk)
            if any(chunk.updates for chunks in members for chunk in chunks):  # after every member's summary
                saving = time.perf_counter()
                checkpoint.save(trainer.step)
                seconds = time.perf_counter() - saving
                for record in records:  # each member's share
                    record.timings.add("checkpoint", seconds / size)
            if stop_requests.received is not None:
                break
        if upcoming and stop_requests.received is None:
            prepare_next(upcoming)
        summaries = finish_all(records, trials)
    if stop_requests.received is not None:  # also one that came while the members ended: the sweep stops
        raise Interrupted(stop_requests.received, trainer.step)
    return [
        math.inf if record.status == "diverged" else summary["final_loss"]
        for record, summary in zip(records, summaries, strict=True)
    ]
