"""How a batch's members sit in TensorFlow variables: a run alone in its own shapes, a batch stacked.

A run alone keeps each parameter in its own shape, so that its loop computes exactly what the seeds compute.
A batch of several keeps each parameter as one [members, elements] variable, and its constants stacked on a
first axis of members, or (pooled: a multi-start run, whose starts share one problem) as one shared copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tapelab.objectives import Problem


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


class MemberLayout:
    """The parameter and constant variables of `members` runs of `problem`'s structure, in `dtype`."""

    def __init__(self, problem: Problem, members: int, pooled: bool, dtype: str) -> None:
        import tensorflow as tf

        self.members, self.dtype = members, dtype
        self.shapes = {name: np.shape(value) for name, value in problem.start.items()}
        self.sizes = {name: int(np.size(value)) for name, value in problem.start.items()}
        self.elements = sum(self.sizes.values())
        self.stacked_constants = members > 1 and not pooled
        self.params = {name: tf.Variable(np.zeros(self._param_shape(name), dtype), name=name) for name in problem.start}
        self.constants = {
            name: tf.Variable(np.zeros(self._constant_shape(value), dtype), trainable=False, name=name)
            for name, value in problem.constants.items()
        }
        self._loss = problem.loss

    def _param_shape(self, name: str) -> list[int]:
        return [self.members, self.sizes[name]] if self.members > 1 else list(self.shapes[name])

    def _constant_shape(self, value: Any) -> list[int]:
        return [self.members, *np.shape(value)] if self.stacked_constants else list(np.shape(value))

    def load(self, problems: Sequence[Problem]) -> np.ndarray:
        """Set each member's start values and constants, cast to the layout's dtype; return the members' flat
        starts, a row each."""
        stacked = lambda values: np.stack(values) if self.members > 1 else values[0]  # noqa: E731
        for name, variable in self.params.items():
            starts = stacked([np.ravel(problem.start[name]) for problem in problems])
            variable.assign(starts.reshape(variable.shape).astype(self.dtype))
        for name, variable in self.constants.items():
            values = [problem.constants[name] for problem in problems]
            variable.assign(np.asarray(np.stack(values) if self.stacked_constants else values[0], self.dtype))
        return np.stack([problem.flat_start() for problem in problems]).astype(self.dtype)

    def losses(self) -> Any:
        """Each member's loss at the current parameters (in the graph): the objective mapped over the members."""
        import tensorflow as tf

        if self.members == 1:
            return tf.reshape(self._loss(self.params, self.constants), [1])
        shapes, loss = self.shapes, self._loss
        shaped = lambda params: {name: tf.reshape(value, shapes[name]) for name, value in params.items()}  # noqa: E731
        if not self.stacked_constants:
            return tf.vectorized_map(lambda params: loss(shaped(params), self.constants), dict(self.params))
        constants = {name: variable.read_value() for name, variable in self.constants.items()}
        # One member's parameters in their own shapes, and its constants.
        return tf.vectorized_map(lambda member: loss(shaped(member[0]), member[1]), (dict(self.params), constants))

    def total_loss(self) -> Any:
        """The sum of the members' losses (in the graph), whose gradient for one member is that member's own."""
        import tensorflow as tf

        return tf.reduce_sum(self.losses())

    def by_member(self, tensors: Sequence[Any]) -> list[Any]:
        """Tensors of the parameters' shapes as [members, elements] rows (in the graph)."""
        import tensorflow as tf

        return [tf.reshape(tensor, [self.members, -1]) for tensor in tensors]

    def holds_member_rows(self, variable: Any) -> bool:
        """Whether a batch's variable (a parameter, or an optimizer slot of one) has a row per member."""
        return tuple(variable.shape) in {(self.members, size) for size in self.sizes.values()}

    def flat_params(self) -> np.ndarray:
        """The members' current parameters, a flat row each."""
        return np.concatenate([np.reshape(variable.numpy(), (self.members, -1)) for variable in self.params.values()],
                              axis=1)  # fmt: skip

    def unstacked(self, name: str, value: np.ndarray) -> np.ndarray:
        """A parameter's (or its slot's) value as its members' values in the parameter's own shape."""
        return value.reshape([self.members, *self.shapes[name]])
