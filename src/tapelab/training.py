"""The compiled training loop: a batch of independent members, trained in chunks of update steps, each one
`tf.function` call. A run alone is a batch of one member; a multi-start run and a batched sweep's group are
batches of many.

Row t of a member's history is its state after t updates: the loss, the gradient's global norm, the learning
rate, every parameter element and every gradient element, all evaluated at that state.

A batch of several keeps each parameter as one [members, elements] variable; its loss is the objective's
loss mapped over the members (`tf.vectorized_map`), and the trainer minimises the sum of the members' losses,
whose gradient for one member is that member's own. So with an elementwise optimizer the batch is exactly its
members' runs side by side: under XLA each member's history is bit for bit the one it has alone.

Every member has its own status, best loss, plateau counter and stop rules. A member that diverges or
converges stops at its own step: from then on its update is undone at every step (`tf.where` on its
parameters and its optimizer slots, not a conditional update, which is slow under XLA; what the members
share, such as the iteration count, moves while any member does), its rows end, and the others go on. The
loop ends when every member has stopped or the chunk's steps are done. The rows go to one report per
member, or (pooled: a multi-start run) to one report of the batch's best, mean and worst loss.

Inside a chunk every step writes its reports' rows into a fixed-size buffer, at the slot after the rows
kept so far, and a row on the `log.every` grid is kept; so the loop compiles with XLA (no conditional
write) and the history is written after the call. The loop is an explicit `tf.while_loop`, traced without
AutoGraph, and the plain graph runs as traced (`as_traced`).

A trainer holds the loop of one structure and size: the objective's structure and shapes, the optimizer's
structure, which stop rules are on, XLA or not, and the members and reports. Everything else is a variable
that the loop reads: the start values, the objective's constants and data, the learning rates and the
optimizer's inputs, `log.every` and the stop rules' thresholds. So the batches of one process borrow the
trainer of their structure (`trainer_for`), load their values, reset the state (parameters, optimizer slots,
steps, best losses, plateau counters) and reuse the traced and compiled loop.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from tapelab.config import StopConfig
from tapelab.environ import restored_environ
from tapelab.objectives import Problem
from tapelab.optimizers import Optimizer

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

FIRST_CHUNK_STEPS = 1000
CHUNK_SECONDS = 0.5  # per compiled call: a Ctrl-C waits at most this, and history is written as it goes
MAX_ROWS_PER_CHUNK = 4096
ROW_BUFFER_FLOATS = 2**22  # 16 MB of float32 rows per chunk at most, for objectives with many parameters
MAX_IDLE_TRAINERS = 16  # loop structures a process keeps for later runs

# jit_compile=auto: XLA once a run's estimated work, epochs × (1 + elements / XLA_ELEMENTS_PER_STEP), reaches
# XLA_MIN_WORK. Measured by scripts/bench.py: the plain graph costs ~50 µs a step on a small problem (a row
# written every step) plus ~9 ns per element of parameters and data, XLA ~0.04 µs plus ~0.7 ns, and XLA's
# compile ~0.15 s more than the plain graph's first call: they break even near 3000 steps.
XLA_MIN_WORK = 3000
XLA_ELEMENTS_PER_STEP = 5000

RUNNING, DIVERGED, CONVERGED = 0, 1, 2
STATUS_NAMES = {RUNNING: None, DIVERGED: "diverged", CONVERGED: "converged"}


XLA_ISA_CAP = "--xla_cpu_max_isa=AVX"


class _OneTracePerStructure(logging.Filter):
    """Each loop structure is traced once per process, so a sweep over several optimizers or objectives traces a
    few loops of the same code, and TensorFlow warns about "retracing". That warning is about this design,
    not a fault: drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextmanager
def quiet_tensorflow_logs() -> Iterator[None]:
    """For one run: no retracing warnings, and no INFO lines from absl (the checkpoint writer's timings)."""
    tensorflow_log, absl_log = logging.getLogger("tensorflow"), logging.getLogger("absl")
    retracing, absl_level = _OneTracePerStructure(), absl_log.level
    tensorflow_log.addFilter(retracing)
    absl_log.setLevel(max(absl_level, logging.WARNING))
    try:
        yield
    finally:
        tensorflow_log.removeFilter(retracing)
        absl_log.setLevel(absl_level)


@contextmanager
def xla_without_fma() -> Iterator[None]:
    """XLA_FLAGS with XLA's CPU instruction set capped at AVX, for the length of this block.

    On AVX2 CPUs XLA fuses a*b + c into one FMA instruction, which rounds once instead of twice, so its
    history would drift from the plain graph's and the seeds' by an ulp now and then. XLA reads XLA_FLAGS
    once, at the first XLA compile in the process: if that is this block's, the cap then holds for every
    later XLA computation of the process; if XLA started earlier, the cap comes too late (the README says
    more). A user's own `xla_cpu_max_isa` is left as it is.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_max_isa" in flags:
        yield
        return
    with restored_environ("XLA_FLAGS"):
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_ISA_CAP}".strip()
        yield


def wants_xla(setting: bool | None, epochs: int, problem: Problem, starts: int = 1) -> bool:
    """`jit_compile`: true or false as set; auto (None) turns XLA on where its compile pays for itself, for
    `starts` starts of `problem` (which share its constants)."""
    if setting is not None:
        return setting
    elements = starts * sum(np.size(value) for value in problem.start.values())
    elements += sum(np.size(value) for value in problem.constants.values())
    return epochs * (1 + elements / XLA_ELEMENTS_PER_STEP) >= XLA_MIN_WORK


def next_chunk_steps(steps: int, seconds: float) -> int:
    """Scale the chunk towards CHUNK_SECONDS, growing at most fourfold at a time."""
    wanted = steps * CHUNK_SECONDS / max(seconds, 1e-6)
    return int(min(max(wanted, 100), 4 * steps))


def element_columns(start: dict[str, np.ndarray]) -> list[str]:
    """Column names of the parameter elements: `x` for a scalar, `w[0]`, `w[1]` for a vector."""
    columns = []
    for name, value in start.items():
        columns += [name] if np.ndim(value) == 0 else [f"{name}[{i}]" for i in range(np.size(value))]
    return columns


def vector_slices(start: dict[str, np.ndarray]) -> dict[str, slice]:
    """Where each vector parameter's elements sit among the parameter columns."""
    slices, offset = {}, 0
    for name, value in start.items():
        if np.ndim(value) == 1:
            slices[name] = slice(offset, offset + np.size(value))
        offset += int(np.size(value))
    return slices


def loop_key(problem: Problem, optimizer: Optimizer, stop: StopConfig, jit_compile: bool) -> str:
    """Everything a trainer's traced loop is built from; runs with the same key can share it."""

    def shapes(values: dict[str, np.ndarray]) -> tuple:
        return tuple((name, np.shape(value)) for name, value in values.items())

    parts = (problem.structure, shapes(problem.start), shapes(problem.constants))
    return repr((*parts, optimizer.structure(), stop.grad_tol is not None, stop.plateau_active(), jit_compile))


@dataclass(frozen=True)
class Chunk:
    """What one call of the compiled loop returns."""

    history: pd.DataFrame  # the logged rows, with a `step` column
    updates: int  # steps done: updates applied after a finite row (not the one after a non-finite row)
    status: str | None  # None while running; "diverged", "converged" or "completed" when the run ends here
    last_finite: pd.DataFrame | None  # the chunk's last finite row, logged or not; None if it had none


class Trainer:
    """The variables and the compiled chunk loop of a batch of `members` runs of one loop structure; `load`
    readies them for a batch's values. A run alone is a batch of one.

    A batch of several keeps each parameter as one [members, elements] variable; a run alone keeps its
    parameters in their own shapes, so that its loop computes exactly what the seeds compute. The rows go to
    one report per member, or (`pooled`, a multi-start run) to one report of the whole batch.

    TensorFlow is imported here, not at module import, so that config errors and `--help` stay fast.
    """

    def __init__(
        self,
        problem: Problem,
        optimizer: Optimizer,
        stop: StopConfig,
        jit_compile: bool,
        members: int = 1,
        pooled: bool = False,
    ) -> None:
        import tensorflow as tf

        self.members, self.pooled = members, pooled
        self._shapes = {name: np.shape(value) for name, value in problem.start.items()}
        self._sizes = {name: int(np.size(value)) for name, value in problem.start.items()}
        # A batch's parameter: a row of its elements per member; a run alone's: in its own shape.
        shape = lambda name: [members, self._sizes[name]] if members > 1 else list(self._shapes[name])  # noqa: E731
        self.variables = {name: tf.Variable(np.zeros(shape(name), np.float32), name=name) for name in problem.start}
        self._stacked_constants = members > 1 and not pooled  # a multi-start run's starts share one copy of its data
        self.constants = {
            name: tf.Variable(np.zeros([members, *np.shape(value)] if self._stacked_constants else np.shape(value),
                                       np.float32), trainable=False, name=name)
            for name, value in problem.constants.items()
        }  # fmt: skip
        self.param_columns = [] if pooled else element_columns(problem.start)
        if pooled:  # `loss` is the best member's, then the mean and the worst over the members not diverged
            self.columns = ["step", "loss", "grad_norm", "lr", "loss_mean", "loss_worst"]
        else:
            self.columns = ["step", "loss", "grad_norm", "lr", *self.param_columns]
            self.columns += [f"grad_{column}" for column in self.param_columns]
        self.reports = 1 if pooled else members
        self._row_width = 3 + 2 * sum(self._sizes.values())  # a member's row: loss, grad_norm, lr, elements, grads
        self.jit_compile = jit_compile
        self._loss = problem.loss
        self._update = optimizer.build()
        if members > 1:
            self._update.for_members(members)
        self._checks_gradient = stop.grad_tol is not None
        self._checks_plateau = stop.plateau_active()
        self._capacity = int(np.clip(ROW_BUFFER_FLOATS // (self.reports * len(self.columns)), 2, MAX_ROWS_PER_CHUNK))
        per_member = lambda value, dtype, name: tf.Variable(  # noqa: E731
            tf.fill([members], tf.constant(value, dtype)), trainable=False, name=name
        )
        self._clock = tf.Variable(0, dtype=tf.int64, trainable=False, name="clock")  # the batch's steps
        self._steps = per_member(0, tf.int64, "step")  # each member's updates
        self._status = per_member(RUNNING, tf.int32, "status")
        self._best = per_member(np.inf, tf.float32, "best_loss")
        self._plateau_best = per_member(np.inf, tf.float32, "plateau_best")
        self._plateau_steps = per_member(0, tf.int64, "plateau_steps")
        self._grad_tol = per_member(0.0, tf.float32, "grad_tol")
        self._min_progress = per_member(0.0, tf.float32, "min_progress")
        self._patience = per_member(1, tf.int64, "patience")
        self._log_every = tf.Variable(1, dtype=tf.int64, trainable=False, name="log_every")
        self._update.prepare(list(self.variables.values()), lambda: tf.reduce_sum(self._losses()))
        self._chunk = tf.function(self._run_chunk, jit_compile=jit_compile, autograph=False)
        self._compiled = False
        self._compiling: Future | None = None  # a compile started by `compile_in_background`
        self._graph_def: bytes | None = None
        self._step_graph_def: bytes | None = None
        self._max_chunk_steps = self._capacity - 1
        self._every = 1  # log.every, as `_log_every` holds it for the loop
        self._starts = np.zeros((members, sum(self._sizes.values())), np.float32)
        self._end: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # member rows, reports, losses at the end
        self.step_seconds = 0.0  # the batch's time in the chunks' compiled calls since `load`
        self.last_step_times: list[float | None] = [None] * self.reports  # see `run_chunk`

    def load(
        self,
        problems: Sequence[Problem],
        optimizers: Sequence[Optimizer],
        lrs: Sequence[float],
        log_every: int,
        stops: Sequence[StopConfig],
    ) -> None:
        """Set each member's values (one problem, optimizer, learning rate and stop config each) and return the
        state to before the first step. Of a batch's optimizer keys, the members' own are their
        `member_inputs`; the others are the first member's (a batch's members share them)."""
        if not len(problems) == len(optimizers) == len(lrs) == len(stops) == self.members:
            raise ValueError(f"a batch of {self.members} members needs as many problems, optimizers, lrs and stops")
        if self._compiling is not None:  # the compile's call of no steps sets the state too: wait for it
            self._compiling.exception()
        stacked = lambda values: np.stack(values) if self.members > 1 else values[0]  # noqa: E731
        for name, variable in self.variables.items():
            variable.assign(stacked([np.ravel(problem.start[name]) for problem in problems]).reshape(variable.shape))
        for name, variable in self.constants.items():
            values = [problem.constants[name] for problem in problems]
            variable.assign(np.stack(values) if self._stacked_constants else values[0])
        self._starts = np.stack([problem.flat_start() for problem in problems]).astype(np.float32)
        values = optimizers[0].hyperparameters()
        lr = lrs[0]
        if self.members > 1:  # each member's own, as an [members, 1] column
            lr = np.array(lrs, np.float32)[:, None]
            for key in self._update.member_keys:
                values[key] = np.array([[optimizer.hyperparameters()[key]] for optimizer in optimizers], np.float32)
        self._update.load(lr, values)
        self._clock.assign(0)
        for variable, value in (
            (self._steps, 0),
            (self._status, RUNNING),
            (self._best, np.inf),
            (self._plateau_best, np.inf),
            (self._plateau_steps, 0),
        ):
            variable.assign(np.full(self.members, value, variable.dtype.as_numpy_dtype))
        self._grad_tol.assign(np.array([stop.grad_tol or 0.0 for stop in stops], np.float32))
        self._min_progress.assign(np.array([stop.min_progress() for stop in stops], np.float32))
        self._patience.assign(np.array([stop.steps_without_progress() for stop in stops], np.int64))
        self._log_every.assign(log_every)
        self._every = log_every
        self._max_chunk_steps = (self._capacity - 1) * log_every  # the kept rows, and the slot after them
        self._end = None
        self.step_seconds = 0.0
        self.last_step_times = [None] * self.reports

    @property
    def step(self) -> int:
        """The batch's steps so far: the updates of every member still running."""
        return int(self._clock.numpy())

    @property
    def steps(self) -> np.ndarray:
        """Each member's updates so far."""
        return self._steps.numpy()

    @property
    def best_losses(self) -> np.ndarray:
        """Each member's lowest finite loss so far (inf before its first)."""
        return self._best.numpy()

    @property
    def statuses(self) -> list[str | None]:
        """Each member's status: None while it runs, else "diverged" or "converged"."""
        return [STATUS_NAMES[int(status)] for status in self._status.numpy()]

    def runs(self) -> list[TrainedRun]:
        """The runs this batch trains, one per report: each member, or the pooled batch."""
        return [TrainedRun(self, report) for report in range(self.reports)]

    def _losses(self):
        """Each member's loss at the current state."""
        import tensorflow as tf

        if self.members == 1:
            return tf.reshape(self._loss(self.variables, self.constants), [1])
        shapes, loss = self._shapes, self._loss
        shaped = lambda params: {name: tf.reshape(value, shapes[name]) for name, value in params.items()}  # noqa: E731
        if not self._stacked_constants:  # the members share the constants
            return tf.vectorized_map(lambda params: loss(shaped(params), self.constants), dict(self.variables))
        constants = {name: variable.read_value() for name, variable in self.constants.items()}
        # One member's parameters in their own shapes, and its constants.
        return tf.vectorized_map(lambda member: loss(shaped(member[0]), member[1]), (dict(self.variables), constants))

    def _evaluate(self):
        """Each member's row (without `step`) at the current state, the gradients, and the losses."""
        import tensorflow as tf

        variables = list(self.variables.values())
        with tf.GradientTape() as tape:
            with tf.name_scope("loss"):
                losses = tf.cast(self._losses(), tf.float32)
                total = tf.reduce_sum(losses)  # a member's gradient is its own
        with tf.name_scope("gradients"):
            gradients = tape.gradient(total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = [tf.convert_to_tensor(gradient) for gradient in gradients]  # one member's may be sparse
        with tf.name_scope("row"):
            wide = [tf.cast(gradient, tf.float64) for gradient in gradients]
            # In float64, so that large but finite gradients don't overflow into a false divergence.
            if self.members == 1:
                grad_norm = tf.reshape(tf.cast(tf.linalg.global_norm(wide), tf.float32), [1])
            else:
                grad_norm = tf.cast(tf.sqrt(tf.add_n([tf.reduce_sum(g * g, axis=1) for g in wide])), tf.float32)
            lr = tf.reshape(self._update.learning_rate(), [self.members])
            flat = lambda tensors: [tf.reshape(t, [self.members, -1]) for t in tensors]  # noqa: E731
            rows = tf.concat([tf.stack([losses, grad_norm, lr], axis=1), *flat(variables), *flat(gradients)], axis=1)
        return rows, gradients, losses

    def _report(self, rows, status):
        """The reports' rows: each member's own, or (pooled) the best member's loss, gradient norm and learning
        rate, and the mean and worst loss, over the members that have not diverged."""
        import tensorflow as tf

        if not self.pooled:
            return rows
        kept = tf.not_equal(status, DIVERGED)
        losses = tf.where(kept, rows[:, 0], tf.constant(np.inf, tf.float32))
        best = tf.argmin(losses)
        # The mean in float64: the sum of large finite losses would overflow float32. NaN once all diverged.
        total = tf.reduce_sum(tf.cast(tf.where(kept, rows[:, 0], tf.zeros_like(losses)), tf.float64))
        mean = tf.cast(total / tf.reduce_sum(tf.cast(kept, tf.float64)), tf.float32)
        worst = tf.reduce_max(tf.where(kept, rows[:, 0], tf.constant(-np.inf, tf.float32)))
        return tf.stack([losses[best], rows[best, 1], rows[best, 2], mean, worst])[None, :]

    def _apply(self, gradients) -> Any:
        """One update of every member; returns a dummy tensor so that it can be a branch of tf.cond."""
        import tensorflow as tf

        with tf.name_scope("update"):
            self._update.apply(gradients, list(self.variables.values()))
        return tf.constant(True)

    def _converged(self, rows, running, plateau_best, plateau_steps):
        """The stop rules on each member's row: (converged, plateau best, steps without progress)."""
        import tensorflow as tf

        converged = tf.zeros([self.members], tf.bool)
        if self._checks_gradient:
            converged = rows[:, 1] <= self._grad_tol
        if self._checks_plateau:
            progress = rows[:, 0] < plateau_best - self._min_progress
            plateau_best = tf.where(running & progress, rows[:, 0], plateau_best)
            counted = tf.where(progress, tf.zeros_like(plateau_steps), plateau_steps + 1)
            plateau_steps = tf.where(running, counted, plateau_steps)
            converged = converged | (plateau_steps >= self._patience)
        return converged, plateau_best, plateau_steps

    def _run_chunk(self, n_steps):
        import tensorflow as tf

        stops = self._checks_gradient or self._checks_plateau
        width = len(self.columns) - 1
        first_step = self._clock.read_value()
        log_every = self._log_every.read_value()
        # A batch ends its chunk with a pass that only evaluates the states it leaves, so its loop holds its
        # only evaluation; its members that stay are held by a `tf.where` after every update. A run alone
        # updates unconditionally (30 times faster a step under XLA than a held update) and evaluates its end
        # state after the loop.
        alone = self.members == 1

        def take_step(_, done, status, member_steps, n_rows, last_row, last_step, rows, end_rows, *rest):
            best, plateau_best, plateau_steps = rest
            row, gradients, _ = self._evaluate()
            counting = tf.constant(True) if alone else done < n_steps  # a batch's last pass only evaluates
            alive = tf.equal(status, RUNNING)
            running = alive & counting
            finite = tf.reduce_all(tf.math.is_finite(row), axis=1)
            status = tf.where(alive & ~finite, DIVERGED, status)  # the end state too: out of a pool's report
            if stops:
                converged, plateau_best, plateau_steps = self._converged(row, running, plateau_best, plateau_steps)
                status = tf.where(running & finite & converged, CONVERGED, status)
            moving = tf.equal(status, RUNNING) & counting
            moves = tf.reduce_any(moving)
            report = self._report(row, status)
            # Every row is written, to the slot after the kept ones; it is kept (the count moves on) if it is on
            # the log.every grid and an update follows it. Not a conditional write: that is slow under XLA. So
            # the kept rows are those of the grid's steps from `first_step` on, while the batch moves.
            step = first_step + done
            rows = rows.write(n_rows, report)
            n_rows += tf.cast(tf.equal(step % log_every, 0) & moves, tf.int32)
            # A report's last finite row: a member's while it runs, the pool's while any member runs.
            fresh = running & finite
            if self.pooled:
                fresh = tf.reduce_any(running, keepdims=True) & tf.reduce_all(tf.math.is_finite(report), axis=1)
            last_row = tf.where(fresh[:, None], report, last_row)
            last_step = tf.where(fresh, step, last_step)
            best = tf.where(running & finite, tf.minimum(best, row[:, 0]), best)
            # A batch's loop ends on a pass where no member moves: its rows are of the states the chunk leaves.
            # (In their static shape, which a loss through tf.py_function leaves unknown.)
            end_rows = tf.reshape(row, [self.members, self._row_width])
            self._update_moving(gradients, moving)
            member_steps += tf.cast(moving, tf.int64)
            done += tf.cast(moves, tf.int64)
            outputs = done, status, member_steps, n_rows, last_row, last_step, rows, end_rows, best
            return (moves, *outputs, plateau_best, plateau_steps)

        # No `break`: stopping is in the loop's condition (a conditional in the body makes XLA ~10x slower).
        outputs = tf.while_loop(
            lambda going, done, *_: going & (done < n_steps) if alone else going,
            take_step,
            (
                tf.constant(True),
                tf.constant(0, tf.int64),
                self._status.read_value(),
                self._steps.read_value(),
                tf.constant(0),
                tf.fill([self.reports, width], tf.constant(np.nan, tf.float32)),
                tf.fill([self.reports], tf.constant(-1, tf.int64)),
                tf.TensorArray(tf.float32, size=self._capacity, element_shape=[self.reports, width]),
                tf.fill([self.members, self._row_width], tf.constant(np.nan, tf.float32)),
                self._best.read_value(),
                self._plateau_best.read_value(),
                self._plateau_steps.read_value(),
            ),
        )
        _, done, status, member_steps, n_rows, last_row, last_step, rows, end_rows, *rest = outputs
        best, plateau_best, plateau_steps = rest
        self._clock.assign_add(done)
        self._steps.assign(member_steps)
        self._status.assign(status)
        self._best.assign(best)
        self._plateau_best.assign(plateau_best)
        self._plateau_steps.assign(plateau_steps)
        if alone:  # the state the chunk leaves
            end_rows = self._evaluate()[0]
        outputs = rows.stack(), n_rows, member_steps, status, last_row, last_step
        return (*outputs, end_rows, self._report(end_rows, status), end_rows[:, 0])

    def _update_moving(self, gradients, moving) -> None:
        """Update the members that move on; the others keep their state, their optimizer slots too. A batch
        updates every member and restores the others by a `tf.where` on each variable (a conditional update is
        slow under XLA). A run alone with stop rules updates in a `tf.cond`, so that a converged run ends on
        the state it converged at; without, it updates every step: a diverging step's update leaves a state
        that is never reported (the run ends, and its last row is the one before)."""
        import tensorflow as tf

        if self.members == 1:
            if self._checks_gradient or self._checks_plateau:
                tf.cond(moving[0], lambda: self._apply(gradients), lambda: tf.constant(False))
            else:
                self._apply(gradients)
            return
        held = [*self.variables.values(), *self._update.state()]
        before = [tf.identity(variable) for variable in held]
        self._apply(gradients)
        member_rows = {(self.members, size) for size in self._sizes.values()}
        for variable, value in zip(held, before, strict=True):
            if tuple(variable.shape) in member_rows:  # a parameter, or a slot of one: a row per member
                keep = moving[:, None]
            else:  # shared by the members (the iteration count): it moves while any member does
                keep = tf.reduce_any(moving)
            variable.assign(tf.where(keep, tf.identity(variable), value))

    def graph_def(self) -> bytes:
        """The serialized graph of the compiled chunk loop, for TensorBoard (from the loop's own trace)."""
        import tensorflow as tf

        if self._graph_def is None:
            graph = self._chunk.get_concrete_function(tf.TensorSpec([], tf.int64)).graph
            self._graph_def = graph.as_graph_def().SerializeToString()
        return self._graph_def

    def step_graph_def(self) -> bytes:
        """The serialized graph of one training step, in the name scopes `loss`, `gradients`, `row` and `update`,
        for TensorBoard: the loop's body without its bookkeeping, traced once per structure and never run."""
        import tensorflow as tf

        if self._step_graph_def is None:
            step = tf.function(lambda: self._apply(self._evaluate()[1]), autograph=False)
            graph_def = step.get_concrete_function().graph.as_graph_def()
            self._step_graph_def = gradients_in_their_scope(graph_def).SerializeToString()
        return self._step_graph_def

    def trace(self) -> float:
        """Trace the loop if it isn't yet (the first batch of a structure); return the seconds it took."""
        import tensorflow as tf

        if self._compiled:
            return 0.0
        started = time.perf_counter()
        self._chunk.get_concrete_function(tf.TensorSpec([], tf.int64))
        return time.perf_counter() - started

    def compile(self, fallback: bool = True) -> float:
        """Compile the loop if it isn't yet (XLA's compile, or the plain graph's instantiation) by a call of
        no steps; return the seconds it took. If XLA can't compile it: with `fallback`, the plain graph runs
        instead; without, TensorFlow's InvalidArgumentError or UnimplementedError is raised. A compile that
        `compile_in_background` started is waited for, and its error raised."""
        if self._compiled and self._compiling is None:
            return 0.0
        started = time.perf_counter()
        if self._compiling is not None:
            compiling, self._compiling = self._compiling, None
            if compiling.exception() is not None and not fallback:
                raise compiling.exception()
        if not self._compiled:
            self._call_chunk(0, fallback)
        return time.perf_counter() - started

    def compile_in_background(self) -> None:
        """Start XLA's compile of the traced loop in a thread of its own, which runs without the GIL while this
        thread goes on; `load` and `compile` wait for it. Only after XLA's first compile in the process: the
        first one sets XLA_FLAGS (`xla_without_fma`), which a thread must not change."""
        assert self.jit_compile and _xla_started.is_set() and self._compiling is None
        if not self._compiled:
            self._compiling = compile_thread().submit(self._call_chunk, 0, False)

    def _call_chunk(self, n_steps: int, fallback: bool = True):
        """Call the compiled chunk; if XLA can't compile it the first time, fall back to the plain graph."""
        import tensorflow as tf

        try:
            with as_traced(), xla_without_fma() if self.jit_compile and not _xla_started.is_set() else nullcontext():
                outputs = self._chunk(tf.constant(n_steps, tf.int64))
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            if self._compiled or not self.jit_compile or not fallback:
                raise
            reason = str(error).strip().splitlines()[0][:300]
            log.warning("XLA can't compile this objective and optimizer, so the plain graph runs instead: %s", reason)
            self.jit_compile = False
            self._graph_def = None
            self._chunk = tf.function(self._run_chunk, autograph=False)
            with as_traced():
                outputs = self._chunk(tf.constant(n_steps, tf.int64))
        self._compiled = True
        if self.jit_compile:
            _xla_started.set()
        *_, end_rows, end_reports, end_losses = outputs
        self._end = (end_rows.numpy(), end_reports.numpy(), end_losses.numpy())
        return outputs

    def run_chunk(self, n_steps: int) -> list[Chunk | None]:
        """Apply up to `n_steps` updates to every running member; one Chunk per report (None for a report that
        had ended before). Each running report's `last_step_times` becomes the time (`time.perf_counter()`) of
        its last step in the call: the call's start plus its share of the call's steps of the call's time."""
        first_step, before = self.step, self.steps
        was_running = self._running_reports()
        started = time.perf_counter()
        rows, n_rows, member_steps, status, last_row, last_step, *_ = self._call_chunk(n_steps)
        seconds = time.perf_counter() - started
        self.step_seconds += seconds
        rows, n_rows = rows.numpy()[: int(n_rows)], int(n_rows)
        first_kept = -(-first_step // self._every) * self._every  # the kept rows: the grid's steps from here on
        steps = first_kept + self._every * np.arange(n_rows, dtype=np.int64)
        last_row, last_step = last_row.numpy(), last_step.numpy()
        if self.pooled:
            updates, statuses = [self.step - first_step], [pooled_status(status.numpy())]
        else:
            updates, statuses = member_steps.numpy() - before, [STATUS_NAMES[int(code)] for code in status.numpy()]
        call_steps = max(self.step - first_step, 1)
        chunks: list[Chunk | None] = []
        for report in range(self.reports):
            if not was_running[report]:
                chunks.append(None)
                continue
            self.last_step_times[report] = started + seconds * min(updates[report] / call_steps, 1.0)
            kept = steps < first_step + updates[report]  # a member's rows end at the step it stopped
            last_finite = None
            if last_step[report] >= first_step:
                last_finite = self._frame(last_step[report : report + 1], last_row[report][None, :])
            history = self._frame(steps[kept], rows[kept, report])
            chunks.append(Chunk(history, int(updates[report]), statuses[report], last_finite))
        return chunks

    def _running_reports(self) -> list[bool]:
        running = [status is None for status in self.statuses]
        return [any(running)] if self.pooled else running

    def report_step(self, report: int) -> int:
        """A report's updates so far: its member's, or the pooled batch's."""
        return self.step if self.pooled else int(self.steps[report])

    def report_best_loss(self, report: int) -> float:
        """A report's lowest finite loss so far: its member's, or the lowest of the pooled batch's members."""
        best = self.best_losses
        return float(best.min() if self.pooled else best[report])

    def current_row(self, report: int) -> pd.DataFrame | None:
        """A report's row at the current state as a one-row frame, or None if it isn't finite.

        It comes from the last compiled call, which evaluates the state it ends on (a call of no steps if none
        ran yet), so it is computed exactly as every other row.
        """
        if self._end is None:
            self._call_chunk(0)
        row = self._end[1][report]
        return self._frame(np.array([self.report_step(report)]), row[None, :]) if np.all(np.isfinite(row)) else None

    def final_chunk(self, report: int, status: str) -> Chunk:
        """A report's row of its final state, which no update follows, and its end `status` ("diverged" instead
        if that state isn't finite)."""
        row = self.current_row(report)
        if row is None:
            empty = self._frame(np.zeros(0, np.int64), np.zeros((0, len(self.columns) - 1), np.float32))
            return Chunk(empty, 0, "diverged", None)
        best = self.best_losses
        if self.pooled:  # every member's final state that is finite
            losses = self._end[2]
            best = np.where(np.isfinite(losses), np.minimum(best, losses), best)
        else:
            best[report] = min(best[report], float(row["loss"].iat[0]))
        self._best.assign(best)
        return Chunk(row, 0, status, row)

    def _ended_chunk(self, report: int) -> Chunk:
        """The end of a report that had stopped when this batch was restored (its run was killed before it
        recorded that): its final row if it converged, else none, as diverged."""
        codes = self._status.numpy()
        converged = (codes == CONVERGED).any() if self.pooled else codes[report] == CONVERGED
        return self.final_chunk(report, "converged" if converged else "diverged")

    def chunks(self, epochs: int) -> Iterator[list[list[Chunk]]]:
        """Run until every member has done `epochs` updates (counting earlier ones) or stopped, in chunks sized
        to CHUNK_SECONDS.

        Yields, for each compiled call, each report's chunks: the call's chunk, then for a report that ended in
        it (or, after the last call, for each report still running) the chunk of its final row. Its last
        chunk's status is the report's: completed, converged or diverged. A report that ended earlier gets none.
        The caller may stop early (an interrupt) by not asking for the next chunk.
        """
        size = min(FIRST_CHUNK_STEPS, self._max_chunk_steps)
        running = self._running_reports()
        if self.step >= epochs or not all(running):  # resumed: done its steps, or ended, but not recorded so
            yield [[self.final_chunk(report, "completed")] if going and self.step >= epochs else
                   [] if going else [self._ended_chunk(report)] for report, going in enumerate(running)]  # fmt: skip
        while self.step < epochs and any(self._running_reports()):
            n_steps = min(size, epochs - self.step, self._max_chunk_steps)
            before = self.step_seconds
            chunks = self.run_chunk(n_steps)
            size = next_chunk_steps(n_steps, self.step_seconds - before)
            last = self.step >= epochs
            reports = []
            for report, chunk in enumerate(chunks):
                if chunk is None:
                    reports.append([])
                elif chunk.status == "converged" or (chunk.status is None and last):
                    reports.append([chunk, self.final_chunk(report, chunk.status or "completed")])
                else:
                    reports.append([chunk])
            yield reports

    def member_ends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        """Each member's flat start and current parameters, its loss there, its steps and its status (None
        while it runs)."""
        if self._end is None:
            self._call_chunk(0)
        ends = np.concatenate(
            [np.reshape(variable.numpy(), (self.members, -1)) for variable in self.variables.values()], axis=1
        )
        return self._starts, ends, self._end[2], self.steps, self.statuses

    def state_variables(self) -> dict[str, Any]:
        """Everything a resumed batch needs: parameters, optimizer state, each member's steps, status, best loss
        and plateau counter."""
        state = {"params": self.variables, "step": self._steps, "status": self._status, "best_loss": self._best}
        state.update(plateau_best=self._plateau_best, plateau_steps=self._plateau_steps)
        optimizer = self._update.state()
        return {**state, **({"optimizer": optimizer} if optimizer else {})}

    def checkpoint(self) -> tf.train.Checkpoint:
        """A checkpoint of `state_variables`."""
        import tensorflow as tf

        return tf.train.Checkpoint(**self.state_variables())

    def restored(self) -> None:
        """After `state_variables` were loaded from a checkpoint: the batch's clock is its furthest member's."""
        self._clock.assign(int(self.steps.max()))
        self._end = None

    def member_states(self) -> dict[str, Any]:
        """Every member's state as a run alone's `state_variables`, stacked on a first axis of members: the
        parameters in their shapes, a slot as its members' rows, and a value the members share repeated."""
        members = self.members
        if members == 1:
            import tensorflow as tf

            return tf.nest.map_structure(lambda variable: variable.numpy()[None], self.state_variables())
        params = {
            name: variable.numpy().reshape([members, *self._shapes[name]]) for name, variable in self.variables.items()
        }
        optimizer = []
        for variable in self._update.state():
            value, name = variable.numpy(), self._slot_of(variable)
            if name is not None:
                optimizer.append(value.reshape([members, *self._shapes[name]]))
            else:  # shared by the members (the iteration count)
                optimizer.append(np.broadcast_to(value, [members, *value.shape]))
        state = {"params": params}
        bookkeeping = {"step": self._steps, "status": self._status, "best_loss": self._best,
                       "plateau_best": self._plateau_best, "plateau_steps": self._plateau_steps}  # fmt: skip
        for key, variable in bookkeeping.items():
            state[key] = variable.numpy()[:, None]  # a run alone's is a vector of one member
        return {**state, **({"optimizer": optimizer} if optimizer else {})}

    def _slot_of(self, variable: Any) -> str | None:
        """The parameter whose slot (momentum, velocity, …) an optimizer variable is, or None. Keras names a slot
        after its parameter's variable (`x:0` → `x_0_momentum`): the longest parameter name that prefixes it."""
        if tuple(variable.shape) not in {(self.members, size) for size in self._sizes.values()}:
            return None
        prefixes = {name: param.name.replace(":", "_") + "_" for name, param in self.variables.items()}
        names = [name for name, prefix in prefixes.items() if variable.name.startswith(prefix)]
        return max(names, key=lambda name: len(prefixes[name]), default=None)

    def _frame(self, steps: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=self.columns[1:])
        frame.insert(0, "step", steps.astype(np.int64))
        return frame


def pooled_status(codes: np.ndarray) -> str | None:
    """A pooled batch's status: None while a member runs, else converged if one converged, else diverged."""
    if (codes == RUNNING).any():
        return None
    return "converged" if (codes == CONVERGED).any() else "diverged"


class TrainedRun:
    """One report of a batch seen as the run it stands for: what a `tapelab.record.RunRecord` reads."""

    def __init__(self, trainer: Trainer, report: int) -> None:
        self.trainer, self.report = trainer, report
        self.columns, self.param_columns = trainer.columns, trainer.param_columns

    @property
    def jit_compile(self) -> bool:
        return self.trainer.jit_compile

    @property
    def pooled(self) -> bool:
        """Whether the run is a pooled batch of members (a multi-start run), with `member_ends`."""
        return self.trainer.pooled

    @property
    def step_seconds(self) -> float:
        return self.trainer.step_seconds / self.trainer.reports  # its share of the batch's compiled calls

    @property
    def step(self) -> int:
        return self.trainer.report_step(self.report)

    @property
    def last_step_time(self) -> float | None:
        """When (`time.perf_counter()`) its last step so far ran, estimated within the batch's call that ran it."""
        return self.trainer.last_step_times[self.report]

    @property
    def best_loss(self) -> float:
        return self.trainer.report_best_loss(self.report)

    def current_row(self) -> pd.DataFrame | None:
        return self.trainer.current_row(self.report)

    def member_ends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
        return self.trainer.member_ends()

    def step_graph_def(self) -> bytes:
        return self.trainer.step_graph_def()

    def graph_def(self) -> bytes:
        return self.trainer.graph_def()


TAPE_OPS = re.compile(r"^(\^?)((?:gradient_tape/)+)(update/)?")  # a tape's op name, as an input (^: control)


def gradients_in_their_scope(graph_def: Any) -> Any:
    """`graph_def` with the tapes' ops moved into the scope of the step they belong to.

    A tape names the ops it adds `gradient_tape/<forward scope>/…` from the top level, whatever scope it is
    called in (`gradient_tape/gradient_tape/…` for a tape over a tape). The step's gradient, of the ops in
    `loss`, goes to `gradients/loss/…`; the tapes an optimizer runs itself (Newton's Hessian), of ops in
    `update`, go to `update/gradient_tape/…`.
    """

    def moved(name: str) -> str:
        match = TAPE_OPS.match(name)
        if match is None:
            return name
        control, tapes, update = match.groups()
        rest = name[match.end() :]
        return (
            f"{control}update/{tapes}{rest}" if update else f"{control}gradients/{tapes[len('gradient_tape/') :]}{rest}"
        )

    for node in graph_def.node:
        node.name = moved(node.name)
        node.input[:] = [moved(source) for source in node.input]
    return graph_def


@contextmanager
def as_traced() -> Iterator[None]:
    """Run this thread's function calls as they were traced: without Grappler's graph rewrites.

    The plain graph then computes what eager TensorFlow (and the seeds) compute, in the same order:
    - Grappler's arithmetic optimizer turns a chain of additions into one AddN, which sums in another order:
      a·x² + b·x + c at x = 1.292 gives 1.9612643 instead of the seed's 1.9612641;
    - its dependency optimizer can drop the control edge that makes a step read a variable (for its loss and
      row) before the optimizer's update writes it; in about one new plain-graph loop in three, a step then
      computed its loss from the value its own update wrote (seen with Keras's SGD and RMSprop).
    XLA runs no Grappler. The option is set for the calls inside this block, in this thread only, through the
    eager context's function-call options (as `tensorflow.python.eager.context.function_executor_type` sets the
    executor). Without the rewrites a plain-graph step costs ~15% more, and the first call ~0.05 s less.
    """
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    options = context.context().function_call_options
    saved = copy.copy(options)
    config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    options.config_proto_serialized = config
    try:
        yield
    finally:
        context.context().function_call_options = saved


_idle: OrderedDict[str, list[Any]] = OrderedDict()  # loop key -> trainers no run is using
_idle_lock = threading.Lock()
_borrowed: Counter[str] = Counter()  # loop key -> trainers in use
_xla_started = threading.Event()  # set by the process's first XLA compile
TrainerT = TypeVar("TrainerT")


@contextmanager
def borrowed(key: str, make: Callable[[], TrainerT]) -> Iterator[TrainerT]:
    """The process's idle trainer of loop key `key` if it has one, else `make()`; kept for later runs when the
    block ends (see `keep_idle`)."""
    with _idle_lock:
        waiting = _idle.get(key)
        trainer = waiting.pop() if waiting else None
        _borrowed[key] += 1
    if trainer is None:
        trainer = make()
    try:
        yield trainer
    finally:
        with _idle_lock:
            _borrowed[key] -= 1
        keep_idle(key, trainer)


def keep_idle(key: str, trainer: Any) -> None:
    """Keep `trainer` for a later run of loop key `key` (at most MAX_IDLE_TRAINERS keys, the least recently used
    dropped first)."""
    with _idle_lock:
        _idle.setdefault(key, []).append(trainer)
        _idle.move_to_end(key)
        while len(_idle) > MAX_IDLE_TRAINERS:
            _idle.popitem(last=False)


def trainer_key(problems: Sequence[Problem], optimizer: Optimizer, stop: StopConfig, jit_compile: bool,
                pooled: bool) -> str:  # fmt: skip
    """The key of the process's trainers that can train these members."""
    return f"{loop_key(problems[0], optimizer, stop, jit_compile)} members={len(problems)} pooled={pooled}"


@contextmanager
def trainer_for(
    problems: Sequence[Problem],
    optimizers: Sequence[Optimizer],
    lrs: Sequence[float],
    log_every: int,
    stops: Sequence[StopConfig],
    jit_compile: bool,
    pooled: bool = False,
) -> Iterator[Trainer]:
    """A trainer for a batch of `problems` (one per member, a run alone's one), loaded with the members' values:
    the process's trainer of that loop structure and size if it has an idle one, else a new one, kept for later
    batches when this one ends."""
    key = trainer_key(problems, optimizers[0], stops[0], jit_compile, pooled)
    make = lambda: Trainer(problems[0], optimizers[0], stops[0], jit_compile, len(problems), pooled)  # noqa: E731
    with borrowed(key, make) as trainer:
        trainer.load(problems, optimizers, lrs, log_every, stops)
        yield trainer


def compile_ahead(
    problems: Sequence[Problem],
    optimizers: Sequence[Optimizer],
    lrs: Sequence[float],
    log_every: int,
    stops: Sequence[StopConfig],
) -> None:
    """Get the XLA trainer that a later `trainer_for` of these members will borrow ready while this thread goes on
    (a batched sweep's next batch, while this one ends): made, loaded and traced here, compiled in a thread of its
    own (`Trainer.compile_in_background`). Does nothing before XLA's first compile in the process, or if a
    trainer of that structure and size is idle or in use (a group split by `max_batch`: the next batch gets it)."""
    key = trainer_key(problems, optimizers[0], stops[0], True, False)
    with _idle_lock:
        if not _xla_started.is_set() or _idle.get(key) or _borrowed[key]:
            return
    log.debug("compiling the loop of the next batch (%d members) meanwhile", len(problems))
    trainer = Trainer(problems[0], optimizers[0], stops[0], True, len(problems))
    trainer.load(problems, optimizers, lrs, log_every, stops)
    trainer.trace()
    trainer.compile_in_background()
    keep_idle(key, trainer)


@functools.cache
def compile_thread() -> ThreadPoolExecutor:
    """The thread in which `compile_ahead`'s compiles run, one at a time."""
    return ThreadPoolExecutor(1, thread_name_prefix="tapelab-compile")
