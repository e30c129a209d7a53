"""The compiled training loop: chunks of update steps, each one `tf.function` call (XLA by default).

Row t of the history is the state after t updates: the loss, the gradient's global norm, the learning
rate, every parameter element and every gradient element, all evaluated at that state.

Inside a chunk the steps run in segments that end on the `log.every` grid; the row at each segment's start
goes into a fixed-size buffer, so the loop compiles with XLA and the history is written after the call.
The trainer's state (parameters, optimizer slots, step, best loss, plateau counter) lives in variables,
which `checkpoint()` saves and restores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tapelab.config import StopConfig
from tapelab.objectives import Problem
from tapelab.optimizers import Update

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

FIRST_CHUNK_STEPS = 1000
CHUNK_SECONDS = (
    0.5  # aim for this long per compiled call: a Ctrl-C waits at most this, and history is written as it goes
)
MAX_ROWS_PER_CHUNK = 4096
ROW_BUFFER_FLOATS = 2**22  # 16 MB of float32 rows per chunk at most, for objectives with many parameters

RUNNING, DIVERGED, CONVERGED = 0, 1, 2


class _OneTracePerRun(logging.Filter):
    """Each run compiles its own loop on purpose (its variables and loss differ), so in a sweep TensorFlow
    warns about "retracing" after a few jobs. That warning is about this design, not a fault: drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_OneTracePerRun())


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


@dataclass(frozen=True)
class Chunk:
    """What one call of the compiled loop returns."""

    history: pd.DataFrame  # the logged rows, with a `step` column
    updates: int  # steps done: updates applied after a finite row (not the one after a non-finite row)
    status: str | None  # None while running; "diverged", "converged" or "completed" when the run ends here
    last_finite: pd.DataFrame | None  # the chunk's last finite row, logged or not; None if it had none


class Trainer:
    """Holds the variables and the optimizer state, and runs the loop in chunks.

    TensorFlow is imported here, not at module import, so that config errors and `--help` stay fast.
    """

    def __init__(self, problem: Problem, update: Update, log_every: int, stop: StopConfig, jit_compile: bool) -> None:
        import tensorflow as tf

        self.variables = {name: tf.Variable(value, name=name) for name, value in problem.start.items()}
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
        self._update = update
        self._stop = stop
        self._log_every = tf.constant(log_every, tf.int64)
        self._capacity = int(np.clip(ROW_BUFFER_FLOATS // len(self.columns), 2, MAX_ROWS_PER_CHUNK))
        self._max_chunk_steps = (self._capacity - 1) * log_every  # the first segment may be a partial one
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._best = tf.Variable(np.inf, dtype=tf.float32, trainable=False, name="best_loss")
        self._plateau_best = tf.Variable(np.inf, dtype=tf.float32, trainable=False, name="plateau_best")
        self._plateau_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_steps")
        update.prepare(list(self.variables.values()), lambda: self._loss(self.variables))
        self._chunk = tf.function(self._run_chunk, jit_compile=jit_compile)
        self._compiled = False

    @property
    def step(self) -> int:
        """Updates applied so far."""
        return int(self._step.numpy())

    @property
    def best_loss(self) -> float:
        """The lowest finite loss of every step so far (inf before the first)."""
        return float(self._best.numpy())

    def checkpoint(self) -> tf.train.Checkpoint:
        """Everything a resumed run needs: parameters, optimizer state, step, best loss, plateau counter."""
        import tensorflow as tf

        state = {"params": self.variables, "step": self._step, "best_loss": self._best}
        state.update(plateau_best=self._plateau_best, plateau_steps=self._plateau_steps)
        optimizer = self._update.state()
        return tf.train.Checkpoint(**state, **({"optimizer": optimizer} if optimizer is not None else {}))

    def _evaluate(self):
        """The row at the current state (without `step`), and the gradients."""
        import tensorflow as tf

        variables = list(self.variables.values())
        with tf.GradientTape() as tape:
            loss = tf.cast(self._loss(self.variables), tf.float32)
            total = loss if self.starts is None else tf.reduce_sum(loss)  # a start's gradient is its own
        gradients = tape.gradient(total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        flat = lambda tensors: [tf.reshape(t, [-1]) for t in tensors]  # noqa: E731
        # The norm is taken in float64, so that large but finite gradients don't overflow into a false divergence.
        grad_norm = tf.cast(tf.linalg.global_norm([tf.cast(g, tf.float64) for g in gradients]), tf.float32)
        lr = self._update.learning_rate()
        if self.starts is not None:
            spread = [tf.reduce_min(loss), grad_norm, lr, tf.reduce_mean(loss), tf.reduce_max(loss)]
            return tf.stack(spread), gradients
        return tf.concat([tf.stack([loss, grad_norm, lr]), *flat(variables), *flat(gradients)], axis=0), gradients

    def start_values(self) -> tuple[np.ndarray, np.ndarray]:
        """For a batch of starts: each start's flat parameters (one row per start) and its current loss."""
        flat = [np.reshape(variable.numpy(), (self.starts, -1)) for variable in self.variables.values()]
        return np.concatenate(flat, axis=1), self._loss(self.variables).numpy()

    def _converged(self, row, plateau_best, plateau_steps):
        """Apply the stop rules to a row: (converged, plateau best, steps without progress)."""
        import tensorflow as tf

        converged = tf.constant(False)
        if self._stop.grad_tol is not None:
            converged = row[1] <= self._stop.grad_tol
        if self._stop.plateau_active():
            progress = row[0] < plateau_best - self._stop.min_progress()
            plateau_best = tf.where(progress, row[0], plateau_best)
            plateau_steps = tf.where(progress, tf.constant(0, tf.int64), plateau_steps + 1)
            converged = tf.logical_or(converged, plateau_steps >= self._stop.steps_without_progress())
        return converged, plateau_best, plateau_steps

    def _run_chunk(self, n_steps):
        import tensorflow as tf

        width = len(self.columns) - 1
        steps = tf.TensorArray(tf.int64, size=self._capacity, element_shape=[])
        rows = tf.TensorArray(tf.float32, size=self._capacity, element_shape=[width])
        first_step = self._step.read_value()
        best, plateau_best, plateau_steps = (
            self._best.read_value(),
            self._plateau_best.read_value(),
            self._plateau_steps.read_value(),
        )
        n_rows, done, status = tf.constant(0), tf.constant(0, tf.int64), tf.constant(RUNNING)
        last_row = tf.fill([width], tf.constant(np.nan, tf.float32))
        while done < n_steps and status == RUNNING:
            start = first_step + done
            length = tf.minimum(self._log_every - start % self._log_every, n_steps - done)
            start_row, j = last_row, tf.constant(0, tf.int64)
            # Not `for j in tf.range(…)` (XLA wants a range's bounds to be compile-time constants), and no
            # `break`: AutoGraph would wrap the rest of the body in conditionals, which makes XLA ~10x slower.
            while j < length and status == RUNNING:
                row, gradients = self._evaluate()
                start_row = tf.where(j == 0, row, start_row)
                j += 1
                finite = tf.reduce_all(tf.math.is_finite(row))
                status = tf.where(finite, status, DIVERGED)
                if self._stop.active():
                    converged, plateau_best, plateau_steps = self._converged(row, plateau_best, plateau_steps)
                    status = tf.where(tf.logical_and(finite, converged), CONVERGED, status)
                moving = status == RUNNING
                last_row = tf.where(finite, row, last_row)
                best = tf.where(finite, tf.minimum(best, row[0]), best)
                if self._stop.active() or self.starts is not None:
                    # A converged run ends on the state it converged at; a batch, on the state it stopped at.
                    if moving:
                        self._update.apply(gradients, list(self.variables.values()))
                else:
                    # A diverging step applies its update too (a conditional update is slow under XLA), but the
                    # state it leaves is never reported: the run ends, and its last row is the one before.
                    self._update.apply(gradients, list(self.variables.values()))
                done += tf.cast(moving, tf.int64)
            # Written unconditionally (a cond here would copy the buffer), but kept only if the segment starts
            # on the grid (a chunk may end between grid points) and an update followed the row.
            steps = steps.write(n_rows, start)
            rows = rows.write(n_rows, start_row)
            on_grid = start % self._log_every == 0
            n_rows += tf.cast(tf.logical_and(on_grid, first_step + done > start), tf.int32)
        self._step.assign_add(done)
        self._best.assign(best)
        self._plateau_best.assign(plateau_best)
        self._plateau_steps.assign(plateau_steps)
        return steps.stack(), rows.stack(), n_rows, done, status, last_row

    def _call_chunk(self, n_steps: int):
        """Call the compiled chunk; if XLA can't compile it the first time, fall back to the plain graph."""
        import tensorflow as tf

        try:
            return self._chunk(tf.constant(n_steps, tf.int64))
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            if self._compiled or not self.jit_compile:
                raise
            reason = str(error).strip().splitlines()[0][:300]
            log.warning("XLA can't compile this objective and optimizer, so the plain graph runs instead: %s", reason)
            self.jit_compile = False
            self._chunk = tf.function(self._run_chunk)
            return self._chunk(tf.constant(n_steps, tf.int64))
        finally:
            self._compiled = True

    def run_chunk(self, n_steps: int) -> Chunk:
        """Apply up to `n_steps` updates from the current state."""
        first_step = self.step
        steps, rows, n_rows, updates, status, last_row = self._call_chunk(n_steps)
        n_rows, updates, status = int(n_rows), int(updates), int(status)
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

        Evaluated eagerly: tracing a graph for one row would cost more than it saves, even on an interrupt.
        """
        row = self._evaluate()[0].numpy()
        return self._frame(np.array([self.step]), row[None, :]) if np.all(np.isfinite(row)) else None

    def final_chunk(self, status: str) -> Chunk:
        """The row of the final state, which no update follows, and the run's end `status`
        ("diverged" instead if that state isn't finite)."""
        row = self.current_row()
        if row is None:
            empty = self._frame(np.zeros(0, np.int64), np.zeros((0, len(self.columns) - 1), np.float32))
            return Chunk(empty, 0, "diverged", None)
        self._best.assign(min(self.best_loss, float(row["loss"].iat[0])))
        return Chunk(row, 0, status, row)

    def loop_graph(self) -> tf.Graph:
        """The graph of the compiled chunk loop (traced once; the first call reuses the trace)."""
        import tensorflow as tf

        return self._chunk.get_concrete_function(tf.TensorSpec([], tf.int64)).graph

    def chunks(self, epochs: int) -> Iterator[Chunk]:
        """Run until `epochs` updates are done in all (counting earlier ones) in chunks sized to CHUNK_SECONDS,
        then yield the final row. The last chunk's status is the run's: completed, converged or diverged.

        The caller may stop early (an interrupt) by not asking for the next chunk.
        """
        size, status = min(FIRST_CHUNK_STEPS, self._max_chunk_steps), "completed"
        while self.step < epochs:
            n_steps = min(size, epochs - self.step, self._max_chunk_steps)
            started = time.perf_counter()
            chunk = self.run_chunk(n_steps)
            size = next_chunk_steps(n_steps, time.perf_counter() - started)
            yield chunk
            if chunk.status == "diverged":
                return
            if chunk.status == "converged":
                status = "converged"
                break
        yield self.final_chunk(status)

    def _frame(self, steps: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=self.columns[1:])
        frame.insert(0, "step", steps.astype(np.int64))
        return frame
