"""The compiled training loop: chunks of update steps, each one `tf.function` call with a `tf.range` loop.

Row t of the history is the state after t updates: the loss, the gradient's global norm, the learning
rate, every parameter element and every gradient element, all evaluated at that state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tapelab.objectives import Problem
from tapelab.optimizers import Update

FIRST_CHUNK_STEPS = 1000
CHUNK_SECONDS = 0.5  # aim for this long per compiled call, so a long run's history is written as it goes


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

    history: pd.DataFrame  # the logged rows, indexed by nothing, with a `step` column
    updates: int  # updates applied whose result was finite
    best_loss: float  # the lowest loss over every step of the chunk, logged or not
    diverged: bool  # a non-finite loss, gradient or parameter stopped the chunk
    last_finite: pd.DataFrame | None  # the chunk's last finite row, logged or not; None if it had none


class Trainer:
    """Holds the variables and the optimizer state, and runs the loop in chunks.

    TensorFlow is imported here, not at module import, so that config errors and `--help` stay fast.
    """

    def __init__(self, problem: Problem, update: Update, log_every: int) -> None:
        import tensorflow as tf

        self.variables = {name: tf.Variable(value, name=name) for name, value in problem.start.items()}
        self.param_columns = element_columns(problem.start)
        self.columns = ["step", "loss", "grad_norm", "lr", *self.param_columns]
        self.columns += [f"grad_{column}" for column in self.param_columns]
        self._loss = problem.loss
        self._update = update
        self._log_every = tf.constant(log_every, tf.int64)
        update.prepare(list(self.variables.values()), lambda: self._loss(self.variables))
        self._chunk = tf.function(self._run_chunk)
        self._row = tf.function(self._evaluate)

    def _evaluate(self):
        """The row at the current state (without `step`), and the gradients."""
        import tensorflow as tf

        variables = list(self.variables.values())
        with tf.GradientTape() as tape:
            loss = tf.cast(self._loss(self.variables), tf.float32)
        gradients = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        flat = lambda tensors: [tf.reshape(t, [-1]) for t in tensors]  # noqa: E731
        # The norm is taken in float64, so that large but finite gradients don't overflow into a false divergence.
        grad_norm = tf.cast(tf.linalg.global_norm([tf.cast(g, tf.float64) for g in gradients]), tf.float32)
        head = tf.stack([loss, grad_norm, self._update.learning_rate()])
        return tf.concat([head, *flat(variables), *flat(gradients)], axis=0), gradients

    def _run_chunk(self, first_step, n_steps):
        import tensorflow as tf

        width = len(self.columns) - 1
        steps = tf.TensorArray(tf.int64, size=0, dynamic_size=True)
        rows = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        best = tf.constant(np.inf, tf.float32)
        updates = tf.constant(0, tf.int64)
        diverged = tf.constant(False)
        last_row = tf.fill([width], tf.constant(np.nan, tf.float32))
        for i in tf.range(n_steps):
            step = first_step + i
            row, gradients = self._evaluate()
            if not tf.reduce_all(tf.math.is_finite(row)):
                diverged = tf.constant(True)
                break
            best = tf.minimum(best, row[0])
            last_row = row
            if step % self._log_every == 0:
                steps = steps.write(steps.size(), step)
                rows = rows.write(rows.size(), row)
            self._update.apply(gradients, list(self.variables.values()))
            updates += 1
        return steps.stack(), tf.reshape(rows.stack(), [-1, width]), updates, best, diverged, last_row

    def run_chunk(self, first_step: int, n_steps: int) -> Chunk:
        """Apply up to `n_steps` updates, starting from the state after `first_step` updates."""
        import tensorflow as tf

        steps, rows, updates, best, diverged, last_row = self._chunk(
            tf.constant(first_step, tf.int64), tf.constant(n_steps, tf.int64)
        )
        updates = int(updates)
        last_finite = self._frame(np.array([first_step + updates - 1]), last_row.numpy()[None, :])
        return Chunk(
            history=self._frame(steps.numpy(), rows.numpy()),
            updates=updates,
            best_loss=float(best),
            diverged=bool(diverged),
            last_finite=last_finite if updates else None,
        )

    def final_chunk(self, step: int) -> Chunk:
        """The row of the final state (after `step` updates), which no update follows."""
        row, _ = self._row()
        row = row.numpy()
        if not np.all(np.isfinite(row)):
            empty = self._frame(np.zeros(0, np.int64), np.zeros((0, row.size), np.float32))
            return Chunk(empty, 0, np.inf, True, None)
        frame = self._frame(np.array([step]), row[None, :])
        return Chunk(frame, 0, float(row[0]), False, frame)

    def chunks(self, epochs: int, trace: Callable[[Callable[[], Chunk]], Chunk] | None = None) -> Iterator[Chunk]:
        """Run `epochs` updates in chunks sized to CHUNK_SECONDS, then yield the final row.

        `trace`, when given, wraps the first call (which traces the loop) to export its graph.
        Stops after the first chunk that diverges.
        """
        step, size = 0, min(FIRST_CHUNK_STEPS, epochs)
        while step < epochs:
            n_steps = min(size, epochs - step)
            started = time.perf_counter()
            if step == 0 and trace is not None:
                chunk = trace(lambda n_steps=n_steps: self.run_chunk(0, n_steps))
            else:
                chunk = self.run_chunk(step, n_steps)
            size = next_chunk_steps(n_steps, time.perf_counter() - started)
            yield chunk
            if chunk.diverged:
                return
            step += chunk.updates
        yield self.final_chunk(step)

    def _frame(self, steps: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=self.columns[1:])
        frame.insert(0, "step", steps.astype(np.int64))
        return frame
