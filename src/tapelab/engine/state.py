"""Each member's bookkeeping between compiled calls: its steps, status, best loss, plateau counter and the
thresholds of its stop rules, in variables that the loop reads and writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tapelab.config import StopConfig

RUNNING, DIVERGED, CONVERGED = 0, 1, 2
STATUS_NAMES = {RUNNING: None, DIVERGED: "diverged", CONVERGED: "converged"}


class MemberState:
    """The variables of `members` members' bookkeeping; losses and thresholds in `dtype`."""

    def __init__(self, members: int, dtype: str) -> None:
        import tensorflow as tf

        def per_member(value: Any, value_dtype: Any, name: str) -> Any:
            return tf.Variable(tf.fill([members], tf.constant(value, value_dtype)), trainable=False, name=name)

        self.members = members
        self.clock = tf.Variable(0, dtype=tf.int64, trainable=False, name="clock")  # the batch's steps
        self.steps = per_member(0, tf.int64, "step")  # each member's updates
        self.status = per_member(RUNNING, tf.int32, "status")
        self.best = per_member(np.inf, dtype, "best_loss")
        self.plateau_best = per_member(np.inf, dtype, "plateau_best")
        self.plateau_steps = per_member(0, tf.int64, "plateau_steps")
        self.grad_tol = per_member(0.0, dtype, "grad_tol")
        self.min_progress = per_member(0.0, dtype, "min_progress")
        self.patience = per_member(1, tf.int64, "patience")
        self.log_every = tf.Variable(1, dtype=tf.int64, trainable=False, name="log_every")

    def load(self, stops: Sequence[StopConfig], log_every: int) -> None:
        """Each member's stop thresholds, the logging grid, and the state before the first step."""
        self.clock.assign(0)
        for variable, value in ((self.steps, 0), (self.status, RUNNING), (self.best, np.inf),
                                (self.plateau_best, np.inf), (self.plateau_steps, 0)):  # fmt: skip
            variable.assign(np.full(self.members, value, variable.dtype.as_numpy_dtype))
        as_dtype = self.grad_tol.dtype.as_numpy_dtype
        self.grad_tol.assign(np.array([stop.grad_tol or 0.0 for stop in stops], as_dtype))
        self.min_progress.assign(np.array([stop.min_progress() for stop in stops], as_dtype))
        self.patience.assign(np.array([stop.steps_without_progress() for stop in stops], np.int64))
        self.log_every.assign(log_every)

    def statuses(self) -> list[str | None]:
        """Each member's status: None while it runs, else "diverged" or "converged"."""
        return [STATUS_NAMES[int(code)] for code in self.status.numpy()]

    def saved(self) -> dict[str, Any]:
        """The variables a checkpoint saves, by their keys in the checkpoint."""
        return {"step": self.steps, "status": self.status, "best_loss": self.best,
                "plateau_best": self.plateau_best, "plateau_steps": self.plateau_steps}  # fmt: skip

    def restored(self) -> None:
        """After a checkpoint was loaded: the batch's clock is its furthest member's."""
        self.clock.assign(int(self.steps.numpy().max()))


def pooled_status(codes: np.ndarray) -> str | None:
    """A pooled batch's status: None while a member runs, else converged if one converged, else diverged."""
    if (codes == RUNNING).any():
        return None
    return "converged" if (codes == CONVERGED).any() else "diverged"
