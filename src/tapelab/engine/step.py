"""The graph of the training loop: one step (the loss, the tape's gradient, the row, the update) and the
`tf.while_loop` of a chunk of steps, a batch's over a named `LoopState`, a run alone's over an `AloneState`.

Inside a chunk every step writes its reports' rows into a fixed-size buffer, at the slot after the rows kept
so far, and a row on the `log.every` grid is kept; so the loop compiles with XLA (no conditional write) and
the history is written after the call. In a batch, a member that diverges or converges stops at its own step:
from then on its update is undone at every step (`tf.where` on its parameters and optimizer slots, not a
conditional update, which is slow under XLA; what the members share, such as the iteration count, moves while
any member does), its rows end, and the others go on. A run alone's loop ends at the step its run stops.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tapelab.engine.layout import MemberLayout
from tapelab.engine.state import CONVERGED, DIVERGED, RUNNING, MemberState
from tapelab.optimizers import UpdateRule


class LoopState(NamedTuple):
    """The values a batch's chunk loop carries from pass to pass."""

    moves: Any  # whether a member moved in the last pass (the loop's condition)
    done: Any  # the chunk's steps so far
    status: Any  # each member's RUNNING, DIVERGED or CONVERGED
    member_steps: Any  # each member's updates
    kept_rows: Any  # the rows kept in `rows` so far
    last_row: Any  # each report's last finite row
    last_step: Any  # and its step (-1: none in this chunk)
    rows: Any  # the buffer of rows (a TensorArray)
    end_rows: Any  # each member's row of the state the last pass evaluated
    best: Any  # each member's lowest finite loss
    plateau_best: Any  # the plateau rule's best loss
    plateau_steps: Any  # and the steps since it improved


class AloneState(NamedTuple):
    """The values a run alone's chunk loop carries: fewer than a batch's, so that a step costs little more than
    in a bare loop of the update. Each pass but the last moves on, so what a batch tracks per step (each
    member's steps, the last finite row's step) is found after the loop."""

    status: Any  # the run's RUNNING, DIVERGED or CONVERGED (the loop runs while RUNNING)
    done: Any  # the chunk's updates so far
    kept_rows: Any  # the rows kept in `rows` so far
    next_kept: Any  # the log.every grid's next step: compared, not found by an int64 modulo a step
    rows: Any  # the buffer of rows (a TensorArray)
    last_row: Any  # the last finite row
    best: Any  # the lowest finite loss
    plateau_best: Any
    plateau_steps: Any


class StepGraph:
    """The step and the chunk loop of a batch, over its variables (`layout`, `state`) and update rule."""

    def __init__(self, layout: MemberLayout, state: MemberState, update: UpdateRule, pooled: bool,
                 stop_rules: tuple[bool, bool], capacity: int) -> None:  # fmt: skip
        """`stop_rules`: whether the gradient rule and the plateau rule are on; `capacity`: the row buffer's."""
        self.layout, self.state, self.update, self.pooled = layout, state, update, pooled
        self.members, self.dtype = layout.members, layout.dtype
        self.reports = 1 if pooled else layout.members
        self.checks_gradient, self.checks_plateau = stop_rules
        self.capacity = capacity
        self.member_width = 3 + 2 * layout.elements  # a member's row: loss, grad_norm, lr, elements, gradients
        self.report_width = 5 if pooled else self.member_width

    def evaluate(self) -> tuple[Any, list[Any], Any]:
        """Each member's row (without `step`) at the current state, the gradients, and the losses."""
        import tensorflow as tf

        variables = list(self.layout.params.values())
        with tf.GradientTape() as tape:
            with tf.name_scope("loss"):
                losses = tf.cast(self.layout.losses(), self.dtype)
                total = tf.reduce_sum(losses)  # a member's gradient is its own
        with tf.name_scope("gradients"):
            gradients = tape.gradient(total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = [tf.convert_to_tensor(gradient) for gradient in gradients]  # one member's may be sparse
        with tf.name_scope("row"):
            scalars = tf.stack([losses, self.gradient_norms(gradients), self.learning_rates()], axis=1)
            rows = tf.concat([scalars, *self.layout.by_member(variables), *self.layout.by_member(gradients)], axis=1)
        return rows, gradients, losses

    def gradient_norms(self, gradients: list[Any]) -> Any:
        """Each member's gradient's global norm, summed in float64: large finite gradients don't overflow into a
        false divergence."""
        import tensorflow as tf

        wide = [tf.cast(gradient, tf.float64) for gradient in gradients]
        if self.members == 1:
            return tf.reshape(tf.cast(tf.linalg.global_norm(wide), self.dtype), [1])
        return tf.cast(tf.sqrt(tf.add_n([tf.reduce_sum(g * g, axis=1) for g in wide])), self.dtype)

    def learning_rates(self) -> Any:
        import tensorflow as tf

        return tf.reshape(self.update.learning_rate(), [self.members])

    def report(self, rows: Any, status: Any) -> Any:
        """The reports' rows: each member's own, or (pooled) the best member's loss, gradient norm and learning
        rate, and the mean and worst loss, over the members that have not diverged."""
        import tensorflow as tf

        if not self.pooled:
            return rows
        kept = tf.not_equal(status, DIVERGED)
        losses = tf.where(kept, rows[:, 0], tf.constant(np.inf, self.dtype))
        best = tf.argmin(losses)
        # The mean in float64: the sum of large finite losses would overflow float32. NaN once all diverged.
        total = tf.reduce_sum(tf.cast(tf.where(kept, rows[:, 0], tf.zeros_like(losses)), tf.float64))
        mean = tf.cast(total / tf.reduce_sum(tf.cast(kept, tf.float64)), self.dtype)
        worst = tf.reduce_max(tf.where(kept, rows[:, 0], tf.constant(-np.inf, self.dtype)))
        return tf.stack([losses[best], rows[best, 1], rows[best, 2], mean, worst])[None, :]

    def one_step(self) -> Any:
        """One training step without the loop's bookkeeping: the graph TensorBoard shows as the run graph."""
        return self.apply(self.evaluate()[1])

    def apply(self, gradients: list[Any]) -> Any:
        """One update of every member; returns a dummy tensor so that it can be a branch of tf.cond."""
        import tensorflow as tf

        with tf.name_scope("update"):
            self.update.apply(gradients, list(self.layout.params.values()))
        return tf.constant(True)

    def stop_rules(self, rows: Any, running: Any, plateau_best: Any, plateau_steps: Any) -> tuple[Any, Any, Any]:
        """The stop rules on each member's row: (converged, plateau best, steps without progress)."""
        import tensorflow as tf

        state = self.state
        converged = tf.zeros([self.members], tf.bool)
        if self.checks_gradient:
            converged = rows[:, 1] <= state.grad_tol
        if self.checks_plateau:
            progress = rows[:, 0] < plateau_best - state.min_progress
            plateau_best = tf.where(running & progress, rows[:, 0], plateau_best)
            counted = tf.where(progress, tf.zeros_like(plateau_steps), plateau_steps + 1)
            plateau_steps = tf.where(running, counted, plateau_steps)
            converged = converged | (plateau_steps >= state.patience)
        return converged, plateau_best, plateau_steps

    def update_moving(self, gradients: list[Any], moving: Any) -> None:
        """Update the members that move on; the others keep their state, their optimizer slots too.

        A batch updates every member and restores the others by a `tf.where` on each variable (a conditional
        update is slow under XLA). A run alone with stop rules updates in a `tf.cond`, so that a converged run
        ends on the state it converged at; without, it updates every step: a diverging step's update leaves a
        state that is never reported (the run ends, and its last row is the one before)."""
        import tensorflow as tf

        if self.members == 1:
            if self.checks_gradient or self.checks_plateau:
                tf.cond(moving[0], lambda: self.apply(gradients), lambda: tf.constant(False))
            else:
                self.apply(gradients)
            return
        held = [*self.layout.params.values(), *self.update.state()]
        before = [tf.identity(variable) for variable in held]
        self.apply(gradients)
        for variable, value in zip(held, before, strict=True):
            # A parameter or its slot keeps its members' rows; what the members share moves while any member does.
            keep = moving[:, None] if self.layout.holds_member_rows(variable) else tf.reduce_any(moving)
            variable.assign(tf.where(keep, tf.identity(variable), value))

    def initial(self) -> LoopState:
        """The loop's values before a chunk's first step."""
        import tensorflow as tf

        state = self.state
        return LoopState(
            moves=tf.constant(True),
            done=tf.constant(0, tf.int64),
            status=state.status.read_value(),
            member_steps=state.steps.read_value(),
            kept_rows=tf.constant(0),
            last_row=tf.fill([self.reports, self.report_width], tf.constant(np.nan, self.dtype)),
            last_step=tf.fill([self.reports], tf.constant(-1, tf.int64)),
            rows=tf.TensorArray(self.dtype, size=self.capacity, element_shape=[self.reports, self.report_width]),
            end_rows=tf.fill([self.members, self.member_width], tf.constant(np.nan, self.dtype)),
            best=state.best.read_value(),
            plateau_best=state.plateau_best.read_value(),
            plateau_steps=state.plateau_steps.read_value(),
        )

    def take_step(self, loop: LoopState, n_steps: Any, first_step: Any, log_every: Any) -> LoopState:
        """One pass of a batch: evaluate every member, apply the stop rules, keep the row, update the members
        that move. The last pass only evaluates the states the chunk leaves (the loop holds its only
        evaluation)."""
        import tensorflow as tf

        row, gradients, _ = self.evaluate()
        counting = loop.done < n_steps
        alive = tf.equal(loop.status, RUNNING)
        running = alive & counting
        finite = tf.reduce_all(tf.math.is_finite(row), axis=1)
        status = tf.where(alive & ~finite, DIVERGED, loop.status)  # the end state too: out of a pool's report
        plateau_best, plateau_steps = loop.plateau_best, loop.plateau_steps
        if self.checks_gradient or self.checks_plateau:
            converged, plateau_best, plateau_steps = self.stop_rules(row, running, plateau_best, plateau_steps)
            status = tf.where(running & finite & converged, CONVERGED, status)
        moving = tf.equal(status, RUNNING) & counting
        moves = tf.reduce_any(moving)
        report = self.report(row, status)
        # Every row is written, to the slot after the kept ones; it is kept (the count moves on) if it is on the
        # log.every grid and an update follows it. Not a conditional write: that is slow under XLA.
        step = first_step + loop.done
        rows = loop.rows.write(loop.kept_rows, report)
        kept_rows = loop.kept_rows + tf.cast(tf.equal(step % log_every, 0) & moves, tf.int32)
        # A report's last finite row: a member's while it runs, the pool's while any member runs.
        fresh = running & finite
        if self.pooled:
            fresh = tf.reduce_any(running, keepdims=True) & tf.reduce_all(tf.math.is_finite(report), axis=1)
        last_row = tf.where(fresh[:, None], report, loop.last_row)
        last_step = tf.where(fresh, step, loop.last_step)
        best = tf.where(running & finite, tf.minimum(loop.best, row[:, 0]), loop.best)
        # In their static shape, which a loss through tf.py_function leaves unknown.
        end_rows = tf.reshape(row, [self.members, self.member_width])
        self.update_moving(gradients, moving)
        return LoopState(moves, loop.done + tf.cast(moves, tf.int64), status,
                         loop.member_steps + tf.cast(moving, tf.int64), kept_rows, last_row, last_step, rows,
                         end_rows, best, plateau_best, plateau_steps)  # fmt: skip

    def run_steps(self, n_steps: Any) -> tuple[Any, ...]:
        """The chunk: up to `n_steps` updates of every member. Returns the kept rows, their count, each member's
        steps and status, each report's last finite row and its step, and the rows, report rows and losses of
        the state the chunk leaves."""
        return self.run_alone(n_steps) if self.members == 1 else self.run_batch(n_steps)

    def run_batch(self, n_steps: Any) -> tuple[Any, ...]:
        """A batch's chunk: passes until no member moves; the last only evaluates the states the chunk leaves."""
        import tensorflow as tf

        state = self.state
        first_step, log_every = state.clock.read_value(), state.log_every.read_value()
        # No `break`: stopping is in the loop's condition (a conditional in the body makes XLA ~10x slower).
        loop = tf.while_loop(
            lambda loop: loop.moves,
            lambda loop: (self.take_step(loop, n_steps, first_step, log_every),),
            (self.initial(),),
        )[0]
        state.clock.assign_add(loop.done)
        self.save_state(loop.member_steps, loop.status, loop.best, loop.plateau_best, loop.plateau_steps)
        return (loop.rows.stack(), loop.kept_rows, loop.member_steps, loop.status, loop.last_row, loop.last_step,
                loop.end_rows, self.report(loop.end_rows, loop.status), loop.end_rows[:, 0])  # fmt: skip

    def save_state(self, member_steps: Any, status: Any, best: Any, plateau_best: Any, plateau_steps: Any) -> None:
        """The members' bookkeeping as a chunk leaves it, for the next chunk and the checkpoint."""
        state = self.state
        state.steps.assign(member_steps)
        state.status.assign(status)
        state.best.assign(best)
        state.plateau_best.assign(plateau_best)
        state.plateau_steps.assign(plateau_steps)

    def run_alone(self, n_steps: Any) -> tuple[Any, ...]:
        """A run alone's chunk: `n_steps` unconditional updates (30 times faster a step under XLA than a held
        update), or fewer if it diverges or converges; its end state is evaluated after the loop."""
        import tensorflow as tf

        state = self.state
        first_step, log_every = state.clock.read_value(), state.log_every.read_value()
        start = AloneState(state.status.read_value()[0], tf.constant(0, tf.int64), tf.constant(0),
                           -(-first_step // log_every) * log_every,  # the grid's first step from here on
                           tf.TensorArray(self.dtype, size=self.capacity, element_shape=[1, self.member_width]),
                           tf.fill([1, self.member_width], tf.constant(np.nan, self.dtype)), state.best.read_value(),
                           state.plateau_best.read_value(), state.plateau_steps.read_value())  # fmt: skip
        loop = tf.while_loop(
            lambda loop: tf.equal(loop.status, RUNNING) & (loop.done < n_steps),
            lambda loop: (self.take_alone_step(loop, first_step, log_every),),
            (start,),
        )[0]
        member_steps = state.steps.read_value() + loop.done
        state.clock.assign_add(loop.done)
        self.save_state(member_steps, loop.status[None], loop.best, loop.plateau_best, loop.plateau_steps)
        # The last finite row's step: the converging pass's, else the last update's (none if no update ran).
        converged_here = tf.equal(loop.status, CONVERGED) & tf.equal(start.status, RUNNING)
        last_step = first_step + loop.done - tf.cast(~converged_here, tf.int64)
        last_step = tf.where(converged_here | (loop.done > 0), last_step, tf.constant(-1, tf.int64))
        end_rows = self.evaluate()[0]  # the state the chunk leaves
        return (loop.rows.stack(), loop.kept_rows, member_steps, loop.status[None], loop.last_row, last_step[None],
                end_rows, end_rows, end_rows[:, 0])  # fmt: skip

    def take_alone_step(self, loop: AloneState, first_step: Any, log_every: Any) -> AloneState:
        """One step of a run alone. Its row goes to a slot known before the step is evaluated: under XLA a slot
        chosen by the row itself (by its finiteness) delays the step's later memory reads, ~25% a step."""
        import tensorflow as tf

        row, gradients, _ = self.evaluate()
        finite = tf.reduce_all(tf.math.is_finite(row))
        status = tf.where(finite, RUNNING, DIVERGED)
        plateau_best, plateau_steps = loop.plateau_best, loop.plateau_steps
        if self.checks_gradient or self.checks_plateau:
            converged, plateau_best, plateau_steps = self.stop_rules(row, tf.constant([True]), plateau_best,
                                                                     plateau_steps)  # fmt: skip
            status = tf.where(finite & converged[0], CONVERGED, status)
        moves = tf.equal(status, RUNNING)
        rows = loop.rows.write(loop.kept_rows, row)
        kept = moves & tf.equal(first_step + loop.done, loop.next_kept)  # on the grid, and an update follows
        next_kept = tf.where(kept, loop.next_kept + log_every, loop.next_kept)
        last_row = tf.where(finite, row, loop.last_row)
        best = tf.where(finite, tf.minimum(loop.best, row[:, 0]), loop.best)
        self.update_moving(gradients, moves[None])
        return AloneState(status, loop.done + tf.cast(moves, tf.int64), loop.kept_rows + tf.cast(kept, tf.int32),
                          next_kept, rows, last_row, best, plateau_best, plateau_steps)  # fmt: skip
