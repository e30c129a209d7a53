"""Members trained as one batch: one compiled loop updates the runs of a group side by side.

A member is one run. The members of a batch share the loop's structure (objective, optimizer, which stop
rules are on, XLA or not) and differ in their values: start values, the objective's constants, the learning
rate and the stop rules' thresholds. Each parameter is one [members, elements] variable, the loss is the
objective's loss mapped over the members (`tf.vectorized_map`), and the trainer minimises the sum of the
members' losses, whose gradient for one member is that member's own. So with an elementwise optimizer the
batch is exactly its members' runs side by side, and under XLA each member's history is bit for bit the one
it has alone (`tapelab.training.Trainer`).

Every member has its own status, best loss and plateau counter. A member that diverges or converges stops at
its own step: from then on its update is undone at every step (`tf.where` on the parameters, not a
conditional update, which is slow under XLA), its rows end, and the others go on. The loop ends when every
member has stopped or the chunk's steps are done.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd

from tapelab.config import StopConfig
from tapelab.objectives import Problem
from tapelab.optimizers import Optimizer
from tapelab.training import (
    CONVERGED,
    DIVERGED,
    FIRST_CHUNK_STEPS,
    MAX_ROWS_PER_CHUNK,
    ROW_BUFFER_FLOATS,
    RUNNING,
    Chunk,
    LoopGraphs,
    as_traced,
    element_columns,
    next_chunk_steps,
    xla_without_fma,
)

STATUS_NAMES = {RUNNING: None, DIVERGED: "diverged", CONVERGED: "converged"}


class BatchTrainer(LoopGraphs):
    """The variables and the compiled chunk loop of a batch of `members` runs of one structure.

    `load` readies them for a batch: one problem, learning rate and stop config per member.
    """

    def __init__(self, problem: Problem, members: int, optimizer: Optimizer, stop: StopConfig, jit_compile: bool):
        import tensorflow as tf

        self.members = members
        self._shapes = {name: np.shape(value) for name, value in problem.start.items()}
        self.variables = {
            name: tf.Variable(np.zeros([members, np.size(value)], np.float32), name=name)
            for name, value in problem.start.items()
        }
        self.constants = {
            name: tf.Variable(np.zeros([members, *np.shape(value)], np.float32), trainable=False, name=name)
            for name, value in problem.constants.items()
        }
        self.param_columns = element_columns(problem.start)
        self.columns = ["step", "loss", "grad_norm", "lr", *self.param_columns]
        self.columns += [f"grad_{column}" for column in self.param_columns]
        self.jit_compile = jit_compile
        self._loss = problem.loss
        self._update = optimizer.build()
        self._update.for_members(members)
        self._checks_gradient = stop.grad_tol is not None
        self._checks_plateau = stop.plateau_active()
        width = members * len(self.columns)
        self._capacity = int(np.clip(ROW_BUFFER_FLOATS // width, 2, MAX_ROWS_PER_CHUNK))
        per_member = lambda value, dtype, name: tf.Variable(  # noqa: E731
            tf.fill([members], tf.constant(value, dtype)), trainable=False, name=name
        )
        self._clock = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # the batch's steps
        self._steps = per_member(0, tf.int64, "member_steps")  # each member's updates
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
        self._graph_def: bytes | None = None
        self._step_graph_def: bytes | None = None
        self._max_chunk_steps = self._capacity - 1
        self._end: tuple[np.ndarray, np.ndarray] | None = None  # each member's row and loss where the last call ended
        self.step_seconds = 0.0

    def load(
        self,
        problems: Sequence[Problem],
        optimizer: Optimizer,
        lrs: Sequence[float],
        log_every: int,
        stops: Sequence[StopConfig],
    ) -> None:
        """Set each member's values (one problem, learning rate and stop config each) and return the state to
        before the first step. The optimizer's own inputs are the batch's: its members share them."""
        if not len(problems) == len(lrs) == len(stops) == self.members:
            raise ValueError(f"a batch of {self.members} members needs as many problems, learning rates and stops")
        for name, variable in self.variables.items():
            variable.assign(np.stack([np.ravel(problem.start[name]) for problem in problems]))
        for name, variable in self.constants.items():
            variable.assign(np.stack([problem.constants[name] for problem in problems]))
        self._update.load(np.array(lrs, np.float32)[:, None], optimizer.hyperparameters())
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
        self._max_chunk_steps = (self._capacity - 1) * log_every
        self._end = None
        self.step_seconds = 0.0

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

    def _losses(self, values=None):
        """Each member's loss, at the current state or at `values` (the parameters in the variables' order)."""
        import tensorflow as tf

        flat = dict(self.variables) if values is None else dict(zip(self.variables, values, strict=True))
        constants = {name: variable.read_value() for name, variable in self.constants.items()}
        shapes, loss = self._shapes, self._loss

        def member_loss(member):  # one member's parameters in their own shapes, and its constants
            params, constants = member
            return loss({name: tf.reshape(value, shapes[name]) for name, value in params.items()}, constants)

        return tf.vectorized_map(member_loss, (flat, constants))

    def _evaluate(self, values=None):
        """Each member's row (without `step`) at the current state or at `values`, the gradients, and the losses."""
        import tensorflow as tf

        variables = list(self.variables.values())
        with tf.GradientTape() as tape:
            if values is not None:
                tape.watch(values)
            with tf.name_scope("loss"):
                losses = tf.cast(self._losses(values), tf.float32)
                total = tf.reduce_sum(losses)  # a member's gradient is its own
        with tf.name_scope("gradients"):
            sources = variables if values is None else list(values)
            gradients = tape.gradient(total, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = [tf.convert_to_tensor(gradient) for gradient in gradients]  # one member's may be sparse
        with tf.name_scope("row"):
            wide = [tf.cast(gradient, tf.float64) for gradient in gradients]
            # Each member's global norm, in float64 as a run alone computes it.
            grad_norm = tf.cast(tf.sqrt(tf.add_n([tf.reduce_sum(g * g, axis=1) for g in wide])), tf.float32)
            lr = tf.reshape(self._update.learning_rate(), [self.members])
            params = variables if values is None else values
            rows = tf.concat([tf.stack([losses, grad_norm, lr], axis=1), *params, *gradients], axis=1)
        return rows, gradients, losses

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
        variables = list(self.variables.values())

        def take_step(done, status, member_steps, n_rows, last_row, steps, rows, best, plateau_best, plateau_steps, _):
            row, gradients, _ = self._evaluate()
            running = tf.equal(status, RUNNING)
            finite = tf.reduce_all(tf.math.is_finite(row), axis=1)
            status = tf.where(running & ~finite, DIVERGED, status)
            if stops:
                converged, plateau_best, plateau_steps = self._converged(row, running, plateau_best, plateau_steps)
                status = tf.where(running & finite & converged, CONVERGED, status)
            moving = tf.equal(status, RUNNING)
            step = first_step + done
            steps = steps.write(n_rows, step)
            rows = rows.write(n_rows, row)
            n_rows += tf.cast(tf.equal(step % log_every, 0) & tf.reduce_any(moving), tf.int32)
            last_row = tf.where((running & finite)[:, None], row, last_row)
            best = tf.where(running & finite, tf.minimum(best, row[:, 0]), best)
            before = [variable.read_value() for variable in variables]
            self._apply(gradients)
            for variable, value in zip(variables, before, strict=True):  # a stopped member keeps its state
                variable.assign(tf.where(moving[:, None], variable.read_value(), value))
            member_steps += tf.cast(moving, tf.int64)
            done += tf.cast(tf.reduce_any(moving), tf.int64)
            values = tuple(variable.read_value() for variable in variables)
            return done, status, member_steps, n_rows, last_row, steps, rows, best, plateau_best, plateau_steps, values

        # XLA (TensorFlow 2.21) reads variables written under a tape over tf.vectorized_map in a loop's body as
        # they were before the loop: the loop carries the parameters' values out (as tapelab.training does).
        outputs = tf.while_loop(
            lambda done, status, *_: (done < n_steps) & tf.reduce_any(tf.equal(status, RUNNING)),
            take_step,
            (
                tf.constant(0, tf.int64),
                self._status.read_value(),
                self._steps.read_value(),
                tf.constant(0),
                tf.fill([self.members, width], tf.constant(np.nan, tf.float32)),
                tf.TensorArray(tf.int64, size=self._capacity, element_shape=[]),
                tf.TensorArray(tf.float32, size=self._capacity, element_shape=[self.members, width]),
                self._best.read_value(),
                self._plateau_best.read_value(),
                self._plateau_steps.read_value(),
                tuple(variable.read_value() for variable in variables),
            ),
        )
        done, status, member_steps, n_rows, last_row, steps, rows, best, plateau_best, plateau_steps, values = outputs
        self._clock.assign_add(done)
        self._steps.assign(member_steps)
        self._status.assign(status)
        self._best.assign(best)
        self._plateau_best.assign(plateau_best)
        self._plateau_steps.assign(plateau_steps)
        end_rows, _, end_losses = self._evaluate(list(values))
        return steps.stack(), rows.stack(), n_rows, member_steps, status, last_row, end_rows, end_losses

    def _apply(self, gradients) -> None:
        import tensorflow as tf

        with tf.name_scope("update"):
            self._update.apply(gradients, list(self.variables.values()))

    def compile(self) -> None:
        """Compile the loop now, if it isn't yet, by a call of no steps. Raises TensorFlow's InvalidArgumentError or
        UnimplementedError if XLA can't compile it (a batch has no plain graph to fall back to)."""
        if not self._compiled:
            self._call_chunk(0)

    def _call_chunk(self, n_steps: int):
        """Call the compiled chunk (the first call compiles it)."""
        import tensorflow as tf

        with as_traced(), xla_without_fma() if self.jit_compile and not self._compiled else nullcontext():
            outputs = self._chunk(tf.constant(n_steps, tf.int64))
        self._compiled = True
        *_, end_rows, end_losses = outputs
        self._end = (end_rows.numpy(), end_losses.numpy())
        return outputs

    def run_chunk(self, n_steps: int) -> list[Chunk | None]:
        """Apply up to `n_steps` updates to every running member; one Chunk per member (None for a member that
        had stopped before)."""
        first_step, before, was_running = self.step, self.steps, [status is None for status in self.statuses]
        started = time.perf_counter()
        steps, rows, n_rows, member_steps, status, last_row, _, _ = self._call_chunk(n_steps)
        self.step_seconds += time.perf_counter() - started
        steps, rows, n_rows = steps.numpy()[: int(n_rows)], rows.numpy()[: int(n_rows)], int(n_rows)
        updates, status, last_row = member_steps.numpy() - before, status.numpy(), last_row.numpy()
        chunks: list[Chunk | None] = []
        for member in range(self.members):
            if not was_running[member]:
                chunks.append(None)
                continue
            kept = steps < first_step + updates[member]  # a member's rows end at the step it stopped
            last_step = first_step + int(updates[member]) - (status[member] != CONVERGED)
            last_finite = None
            if last_step >= first_step:
                last_finite = self._frame(np.array([last_step]), last_row[member][None, :])
            chunks.append(
                Chunk(
                    history=self._frame(steps[kept], rows[kept, member]),
                    updates=int(updates[member]),
                    status=STATUS_NAMES[int(status[member])],
                    last_finite=last_finite,
                )
            )
        return chunks

    def current_row(self, member: int) -> pd.DataFrame | None:
        """A member's row at its current state as a one-row frame, or None if it isn't finite."""
        if self._end is None:
            self._call_chunk(0)
        row = self._end[0][member]
        return self._frame(np.array([self.steps[member]]), row[None, :]) if np.all(np.isfinite(row)) else None

    def final_chunk(self, member: int, status: str) -> Chunk:
        """A member's row of its final state, which no update follows, and its end `status` ("diverged" instead
        if that state isn't finite)."""
        row = self.current_row(member)
        if row is None:
            empty = self._frame(np.zeros(0, np.int64), np.zeros((0, len(self.columns) - 1), np.float32))
            return Chunk(empty, 0, "diverged", None)
        best = self.best_losses
        best[member] = min(best[member], float(row["loss"].iat[0]))
        self._best.assign(best)
        return Chunk(row, 0, status, row)

    def chunks(self, epochs: int) -> Iterator[list[list[Chunk]]]:
        """Run until every member has done `epochs` updates or stopped, in chunks sized to CHUNK_SECONDS.

        Yields, for each compiled call, each member's chunks: the call's chunk, then for a member that ended in
        it (or, after the last call, for each member still running) the chunk of its final row, as
        `tapelab.training.Trainer.chunks` yields a run's. A member that stopped earlier gets none.
        """
        size = min(FIRST_CHUNK_STEPS, self._max_chunk_steps)
        while self.step < epochs and any(status is None for status in self.statuses):
            n_steps = min(size, epochs - self.step, self._max_chunk_steps)
            before = self.step_seconds
            chunks = self.run_chunk(n_steps)
            size = next_chunk_steps(n_steps, self.step_seconds - before)
            last = self.step >= epochs
            members = []
            for member, chunk in enumerate(chunks):
                if chunk is None:
                    members.append([])
                elif chunk.status == "converged" or (chunk.status is None and last):
                    members.append([chunk, self.final_chunk(member, chunk.status or "completed")])
                else:
                    members.append([chunk])
            yield members

    def member_states(self) -> dict[str, Any]:
        """Every member's state, stacked on a first axis of members, in a run alone's layout
        (`Trainer.state_variables`): the parameters in their shapes, the steps, best losses and plateau
        counters, and the optimizer's variables, a slot as its members' rows and a shared value repeated."""
        members = self.members
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
        state = {"params": params, "step": self.steps, "best_loss": self.best_losses}
        state.update(plateau_best=self._plateau_best.numpy(), plateau_steps=self._plateau_steps.numpy())
        return {**state, **({"optimizer": optimizer} if optimizer else {})}

    def _slot_of(self, variable: Any) -> str | None:
        """The parameter whose slot (momentum, velocity, …) an optimizer variable is, or None. Keras names a slot
        after its parameter's variable (`x:0` → `x_0_momentum`): the longest parameter name that prefixes it."""
        if tuple(variable.shape) not in {(self.members, int(np.prod(shape))) for shape in self._shapes.values()}:
            return None
        prefixes = {name: param.name.replace(":", "_") + "_" for name, param in self.variables.items()}
        names = [name for name, prefix in prefixes.items() if variable.name.startswith(prefix)]
        return max(names, key=lambda name: len(prefixes[name]), default=None)
