"""The compiled training loop: chunks of update steps, each one `tf.function` call.

Row t of the history is the state after t updates: the loss, the gradient's global norm, the learning
rate, every parameter element and every gradient element, all evaluated at that state.

Inside a chunk every step writes its row into a fixed-size buffer, at the slot after the rows kept so far,
and a row on the `log.every` grid is kept; so the loop compiles with XLA (no conditional write) and the
history is written after the call. The loop is an explicit `tf.while_loop`, traced without AutoGraph, and
the plain graph runs as traced (`as_traced`).

A trainer holds the loop of one structure: the objective's structure and shapes, the optimizer's structure,
which stop rules are on, and XLA or not. Everything else is a variable that the loop reads: the start
values, the objective's constants and data, the learning rate and the optimizer's inputs, `log.every` and
the stop rules' thresholds. So the runs of one process borrow the trainer of their structure
(`trainer_for`), load their values, reset the state (parameters, optimizer slots, step, best loss, plateau
counter) and reuse the traced and compiled loop.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
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


def wants_xla(setting: bool | None, epochs: int, problem: Problem) -> bool:
    """`jit_compile`: true or false as set; auto (None) turns XLA on where its compile pays for itself."""
    if setting is not None:
        return setting
    elements = sum(np.size(value) for value in (*problem.start.values(), *problem.constants.values()))
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

    parts = (problem.structure, shapes(problem.start), shapes(problem.constants), problem.starts)
    return repr((*parts, optimizer.structure(), stop.grad_tol is not None, stop.plateau_active(), jit_compile))


@dataclass(frozen=True)
class Chunk:
    """What one call of the compiled loop returns."""

    history: pd.DataFrame  # the logged rows, with a `step` column
    updates: int  # steps done: updates applied after a finite row (not the one after a non-finite row)
    status: str | None  # None while running; "diverged", "converged" or "completed" when the run ends here
    last_finite: pd.DataFrame | None  # the chunk's last finite row, logged or not; None if it had none


class LoopGraphs:
    """What `Trainer` and `BatchTrainer` share beyond their loops: TensorBoard's graphs of the loop and of one
    step, each traced once and kept, and history frames. Reads `_chunk`, `_evaluate`, `_apply` and `columns`;
    keeps `_graph_def` and `_step_graph_def` (None until first asked for)."""

    _graph_def: bytes | None
    _step_graph_def: bytes | None
    columns: list[str]

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

    def _frame(self, steps: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=self.columns[1:])
        frame.insert(0, "step", steps.astype(np.int64))
        return frame


class Trainer(LoopGraphs):
    """The variables and the compiled chunk loop of one loop structure; `load` readies them for a run.

    TensorFlow is imported here, not at module import, so that config errors and `--help` stay fast.
    """

    def __init__(self, problem: Problem, optimizer: Optimizer, stop: StopConfig, jit_compile: bool) -> None:
        import tensorflow as tf

        self.variables = {name: tf.Variable(value, name=name) for name, value in problem.start.items()}
        self.constants = {
            name: tf.Variable(value, trainable=False, name=name) for name, value in problem.constants.items()
        }
        self.starts = problem.starts
        if self.starts is None:
            self.param_columns = element_columns(problem.start)
            self.columns = ["step", "loss", "grad_norm", "lr", *self.param_columns]
            self.columns += [f"grad_{column}" for column in self.param_columns]
        else:  # a batch of starts: `loss` is the best start's, then the mean and the worst
            self.param_columns = []
            self.columns = ["step", "loss", "grad_norm", "lr", "loss_mean", "loss_worst"]
        self.jit_compile = jit_compile
        self._loss = problem.loss
        self._update = optimizer.build()
        self._checks_gradient = stop.grad_tol is not None
        self._checks_plateau = stop.plateau_active()
        self._capacity = int(np.clip(ROW_BUFFER_FLOATS // len(self.columns), 2, MAX_ROWS_PER_CHUNK))
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._best = tf.Variable(np.inf, dtype=tf.float32, trainable=False, name="best_loss")
        self._plateau_best = tf.Variable(np.inf, dtype=tf.float32, trainable=False, name="plateau_best")
        self._plateau_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_steps")
        self._log_every = tf.Variable(1, dtype=tf.int64, trainable=False, name="log_every")
        self._grad_tol = tf.Variable(0.0, trainable=False, name="grad_tol")
        self._min_progress = tf.Variable(0.0, trainable=False, name="min_progress")
        self._patience = tf.Variable(1, dtype=tf.int64, trainable=False, name="patience")
        self._update.prepare(list(self.variables.values()), lambda: self._loss(self.variables, self.constants))
        self._chunk = tf.function(self._run_chunk, jit_compile=jit_compile, autograph=False)
        self._compiled = False
        self._graph_def: bytes | None = None
        self._step_graph_def: bytes | None = None
        self._max_chunk_steps = self._capacity - 1
        self._end: tuple[np.ndarray, np.ndarray] | None = None  # the row and the loss(es) where the last call ended
        self.step_seconds = 0.0  # this run's time in the chunks' compiled calls

    def load(self, problem: Problem, optimizer: Optimizer, lr: float, log_every: int, stop: StopConfig) -> None:
        """Set this run's values and return the state to before its first step."""
        for name, variable in self.variables.items():
            variable.assign(problem.start[name])
        for name, variable in self.constants.items():
            variable.assign(problem.constants[name])
        self._update.load(lr, optimizer.hyperparameters())
        self._step.assign(0)
        self._best.assign(np.inf)
        self._plateau_best.assign(np.inf)
        self._plateau_steps.assign(0)
        self._log_every.assign(log_every)
        self._grad_tol.assign(stop.grad_tol or 0.0)
        self._min_progress.assign(stop.min_progress())
        self._patience.assign(stop.steps_without_progress())
        self._max_chunk_steps = (self._capacity - 1) * log_every  # the kept rows, and the slot after them
        self._end = None
        self.step_seconds = 0.0

    @property
    def step(self) -> int:
        """Updates applied so far."""
        return int(self._step.numpy())

    @property
    def best_loss(self) -> float:
        """The lowest finite loss of every step so far (inf before the first)."""
        return float(self._best.numpy())

    def state_variables(self) -> dict[str, Any]:
        """Everything a resumed run needs: parameters, optimizer state, step, best loss, plateau counter."""
        state = {"params": self.variables, "step": self._step, "best_loss": self._best}
        state.update(plateau_best=self._plateau_best, plateau_steps=self._plateau_steps)
        optimizer = self._update.state()
        return {**state, **({"optimizer": optimizer} if optimizer else {})}

    def checkpoint(self) -> tf.train.Checkpoint:
        """A checkpoint of `state_variables`."""
        import tensorflow as tf

        return tf.train.Checkpoint(**self.state_variables())

    def _evaluate(self, values=None):
        """The row at the current state (without `step`), the gradients, and the loss (one per start); or at
        `values`, the parameters' values in the variables' order."""
        import tensorflow as tf

        params = self.variables if values is None else dict(zip(self.variables, values, strict=True))
        variables = list(params.values())
        with tf.GradientTape() as tape:
            if values is not None:
                tape.watch(variables)
            with tf.name_scope("loss"):
                loss = tf.cast(self._loss(params, self.constants), tf.float32)
                total = loss if self.starts is None else tf.reduce_sum(loss)  # a start's gradient is its own
        with tf.name_scope("gradients"):
            gradients = tape.gradient(total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        with tf.name_scope("row"):
            flat = lambda tensors: [tf.reshape(t, [-1]) for t in tensors]  # noqa: E731
            # In float64, so that large but finite gradients don't overflow into a false divergence.
            grad_norm = tf.cast(tf.linalg.global_norm([tf.cast(g, tf.float64) for g in gradients]), tf.float32)
            lr = self._update.learning_rate()
            if self.starts is not None:
                spread = [tf.reduce_min(loss), grad_norm, lr, tf.reduce_mean(loss), tf.reduce_max(loss)]
                return tf.stack(spread), gradients, loss
            row = tf.concat([tf.stack([loss, grad_norm, lr]), *flat(variables), *flat(gradients)], axis=0)
        return row, gradients, loss

    def _apply(self, gradients) -> Any:
        """One update; returns a dummy tensor so that it can be a branch of tf.cond."""
        import tensorflow as tf

        with tf.name_scope("update"):
            self._update.apply(gradients, list(self.variables.values()))
        return tf.constant(True)

    def _converged(self, row, plateau_best, plateau_steps):
        """Apply the stop rules to a row: (converged, plateau best, steps without progress)."""
        import tensorflow as tf

        converged = tf.constant(False)
        if self._checks_gradient:
            converged = row[1] <= self._grad_tol
        if self._checks_plateau:
            progress = row[0] < plateau_best - self._min_progress
            plateau_best = tf.where(progress, row[0], plateau_best)
            plateau_steps = tf.where(progress, tf.constant(0, tf.int64), plateau_steps + 1)
            converged = tf.logical_or(converged, plateau_steps >= self._patience)
        return converged, plateau_best, plateau_steps

    def _run_chunk(self, n_steps):
        import tensorflow as tf

        stops = self._checks_gradient or self._checks_plateau
        width = len(self.columns) - 1
        first_step = self._step.read_value()
        log_every = self._log_every.read_value()

        # XLA (TensorFlow 2.21) reads a batch's variables after this loop as they were before it (a
        # tf.vectorized_map under a tape in the loop's body): for a batch, the loop carries their values out.
        # (A user's Python loss that calls tf.vectorized_map itself is not covered.)
        carried = self.starts is not None

        def take_step(done, status, n_rows, last_row, steps, rows, best, plateau_best, plateau_steps, _values):
            row, gradients, _ = self._evaluate()
            finite = tf.reduce_all(tf.math.is_finite(row))
            status = tf.where(finite, status, DIVERGED)
            if stops:
                converged, plateau_best, plateau_steps = self._converged(row, plateau_best, plateau_steps)
                status = tf.where(tf.logical_and(finite, converged), CONVERGED, status)
            moving = tf.equal(status, RUNNING)
            # Every row is written, to the slot after the kept ones; it is kept (the count moves on) if it is on
            # the log.every grid and an update follows it. Not a conditional write: that is slow under XLA.
            step = first_step + done
            steps = steps.write(n_rows, step)
            rows = rows.write(n_rows, row)
            n_rows += tf.cast(tf.logical_and(tf.equal(step % log_every, 0), moving), tf.int32)
            last_row = tf.where(finite, row, last_row)
            best = tf.where(finite, tf.minimum(best, row[0]), best)
            if stops or self.starts is not None:
                # A converged run ends on the state it converged at; a batch, on the state it stopped at.
                tf.cond(moving, lambda: self._apply(gradients), lambda: tf.constant(False))
            else:
                # A diverging step applies its update too (a conditional update is slow under XLA), but the
                # state it leaves is never reported: the run ends, and its last row is the one before.
                self._apply(gradients)
            done += tf.cast(moving, tf.int64)
            values = tuple(variable.read_value() for variable in self.variables.values()) if carried else ()
            return done, status, n_rows, last_row, steps, rows, best, plateau_best, plateau_steps, values

        # No `break`: stopping is in the loop's condition (a conditional in the body makes XLA ~10x slower).
        done, status, n_rows, last_row, steps, rows, best, plateau_best, plateau_steps, values = tf.while_loop(
            lambda done, status, *_: tf.logical_and(done < n_steps, tf.equal(status, RUNNING)),
            take_step,
            (
                tf.constant(0, tf.int64),
                tf.constant(RUNNING),
                tf.constant(0),
                tf.fill([width], tf.constant(np.nan, tf.float32)),
                tf.TensorArray(tf.int64, size=self._capacity, element_shape=[]),
                tf.TensorArray(tf.float32, size=self._capacity, element_shape=[width]),
                self._best.read_value(),
                self._plateau_best.read_value(),
                self._plateau_steps.read_value(),
                tuple(variable.read_value() for variable in self.variables.values()) if carried else (),
            ),
        )
        self._step.assign_add(done)
        self._best.assign(best)
        self._plateau_best.assign(plateau_best)
        self._plateau_steps.assign(plateau_steps)
        # Where the next chunk starts: the final row, if this is the last.
        end_row, _, end_loss = self._evaluate(values if carried else None)
        return steps.stack(), rows.stack(), n_rows, done, status, last_row, end_row, end_loss

    def trace(self) -> float:
        """Trace the loop if it isn't yet (the first run of a structure); return the seconds it took."""
        import tensorflow as tf

        if self._compiled:
            return 0.0
        started = time.perf_counter()
        self._chunk.get_concrete_function(tf.TensorSpec([], tf.int64))
        return time.perf_counter() - started

    def compile(self) -> float:
        """Compile the loop if it isn't yet (XLA's compile, or the plain graph's instantiation) by a call of
        no steps; return the seconds it took."""
        if self._compiled:
            return 0.0
        started = time.perf_counter()
        self._call_chunk(0)
        return time.perf_counter() - started

    def _call_chunk(self, n_steps: int):
        """Call the compiled chunk; if XLA can't compile it the first time, fall back to the plain graph."""
        import tensorflow as tf

        try:
            with as_traced(), xla_without_fma() if self.jit_compile and not self._compiled else nullcontext():
                outputs = self._chunk(tf.constant(n_steps, tf.int64))
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            if self._compiled or not self.jit_compile:
                raise
            reason = str(error).strip().splitlines()[0][:300]
            log.warning("XLA can't compile this objective and optimizer, so the plain graph runs instead: %s", reason)
            self.jit_compile = False
            self._graph_def = None
            self._chunk = tf.function(self._run_chunk, autograph=False)
            with as_traced():
                outputs = self._chunk(tf.constant(n_steps, tf.int64))
        finally:
            self._compiled = True
        *_, end_row, end_loss = outputs
        self._end = (end_row.numpy(), end_loss.numpy())
        return outputs

    def run_chunk(self, n_steps: int) -> Chunk:
        """Apply up to `n_steps` updates from the current state."""
        first_step = self.step
        started = time.perf_counter()
        steps, rows, n_rows, updates, status, last_row, _, _ = self._call_chunk(n_steps)
        n_rows, updates, status = int(n_rows), int(updates), int(status)
        self.step_seconds += time.perf_counter() - started
        # The last finite row is the last one an update followed, or the converged row (none follows it).
        last_step = first_step + updates - (status != CONVERGED)
        last_finite = self._frame(np.array([last_step]), last_row.numpy()[None, :]) if last_step >= first_step else None
        return Chunk(
            history=self._frame(steps.numpy()[:n_rows], rows.numpy()[:n_rows]),
            updates=updates,
            status={RUNNING: None, DIVERGED: "diverged", CONVERGED: "converged"}[status],
            last_finite=last_finite,
        )

    def current_row(self) -> pd.DataFrame | None:
        """The row of the current state as a one-row frame, or None if it isn't finite.

        It comes from the last compiled call, which evaluates the state it ends on (a call of no steps if none
        ran yet), so it is computed exactly as every other row.
        """
        if self._end is None:
            self._call_chunk(0)
        row = self._end[0]
        return self._frame(np.array([self.step]), row[None, :]) if np.all(np.isfinite(row)) else None

    def current_losses(self) -> np.ndarray:
        """The loss at the current state: one value, or one per start of a batch."""
        if self._end is None:
            self._call_chunk(0)
        return self._end[1]

    def final_chunk(self, status: str) -> Chunk:
        """The row of the final state, which no update follows, and the run's end `status`
        ("diverged" instead if that state isn't finite)."""
        row = self.current_row()
        if row is None:
            empty = self._frame(np.zeros(0, np.int64), np.zeros((0, len(self.columns) - 1), np.float32))
            return Chunk(empty, 0, "diverged", None)
        self._best.assign(min(self.best_loss, float(row["loss"].iat[0])))
        return Chunk(row, 0, status, row)

    def start_values(self) -> np.ndarray:
        """For a batch of starts: each start's current flat parameters, one row per start."""
        flat = [np.reshape(variable.numpy(), (self.starts, -1)) for variable in self.variables.values()]
        return np.concatenate(flat, axis=1)

    def chunks(self, epochs: int) -> Iterator[Chunk]:
        """Run until `epochs` updates are done in all (counting earlier ones) in chunks sized to CHUNK_SECONDS,
        then yield the final row. The last chunk's status is the run's: completed, converged or diverged.

        The caller may stop early (an interrupt) by not asking for the next chunk.
        """
        size, status = min(FIRST_CHUNK_STEPS, self._max_chunk_steps), "completed"
        while self.step < epochs:
            n_steps = min(size, epochs - self.step, self._max_chunk_steps)
            before = self.step_seconds
            chunk = self.run_chunk(n_steps)
            size = next_chunk_steps(n_steps, self.step_seconds - before)
            yield chunk
            if chunk.status == "diverged":
                return
            if chunk.status == "converged":
                status = "converged"
                break
        yield self.final_chunk(status)


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
TrainerT = TypeVar("TrainerT")


@contextmanager
def borrowed(key: str, make: Callable[[], TrainerT]) -> Iterator[TrainerT]:
    """The process's idle trainer of loop key `key` if it has one, else `make()`; kept for later runs when the
    block ends (at most MAX_IDLE_TRAINERS keys, the least recently used dropped first)."""
    with _idle_lock:
        waiting = _idle.get(key)
        trainer = waiting.pop() if waiting else None
    if trainer is None:
        trainer = make()
    try:
        yield trainer
    finally:
        with _idle_lock:
            _idle.setdefault(key, []).append(trainer)
            _idle.move_to_end(key)
            while len(_idle) > MAX_IDLE_TRAINERS:
                _idle.popitem(last=False)


@contextmanager
def trainer_for(
    problem: Problem, optimizer: Optimizer, lr: float, log_every: int, stop: StopConfig, jit_compile: bool
) -> Iterator[Trainer]:
    """A trainer for `problem` and `optimizer`, loaded with this run's values: the process's trainer of that
    loop structure if it has an idle one, else a new one, kept for later runs when this one ends."""
    key = loop_key(problem, optimizer, stop, jit_compile)
    with borrowed(key, lambda: Trainer(problem, optimizer, stop, jit_compile)) as trainer:
        trainer.load(problem, optimizer, lr, log_every, stop)
        yield trainer
