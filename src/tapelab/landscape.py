"""An objective evaluated at many parameter points at once: for contours and the value at the minima."""

from __future__ import annotations

from typing import Any

import numpy as np

from tapelab.objectives import Problem

EAGER_POINTS = 16
MAX_BATCH_FLOATS = 2**24  # points × the loss's elements per call: pfor holds every point's intermediates at once
_grid_functions: dict[str, Any] = {}  # one traced batch evaluation per loss structure and process


def loss_elements(problem: Problem) -> int:
    """How many numbers one evaluation of the loss reads: the parameters' elements and the constants' (data)."""
    return int(sum(np.size(value) for value in (*problem.start.values(), *problem.constants.values())))


def loss_at(problem: Problem, points: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """The loss at each row of `points` (one flat parameter vector per row, in column order), computed in `dtype`
    (the points, the constants and the loss)."""
    import tensorflow as tf

    size = problem.flat_start().size
    flat_points = tf.constant(np.asarray(points, dtype).reshape(len(points), size))
    if len(points) <= EAGER_POINTS:  # a few points (the minima): cheaper than tracing a graph
        return np.array([problem.value(problem.split(point, tf.reshape)).numpy() for point in flat_points], dtype)
    constants = {name: tf.constant(value, dtype) for name, value in problem.constants.items()}
    evaluate, batch = batch_function(problem), max(1, MAX_BATCH_FLOATS // loss_elements(problem))
    return np.concatenate(
        [evaluate(flat_points[i : i + batch], constants).numpy() for i in range(0, len(points), batch)]
    )


def lowest_at_minima(problem: Problem, dtype: str = "float32") -> float:
    """The lowest loss at the problem's recorded minima, evaluated in `dtype` (its f*); NaN if it records none."""
    if not problem.minima:
        return float("nan")
    return float(loss_at(problem, np.array(problem.minima), dtype).min())


def batch_function(problem: Problem) -> Any:
    """A tf.function of (flat points, constants) -> the loss at every point; pfor turns the per-point loss
    into batched ops. Traced once per loss structure, parameter shapes and process."""
    import tensorflow as tf

    shapes = tuple((name, np.shape(value)) for name, value in (*problem.start.items(), *problem.constants.items()))
    key = repr((problem.structure, shapes))  # the tf.function traces each dtype of the points apart
    if key not in _grid_functions:
        loss, split = problem.loss, problem.split

        def losses(flat_points, constants):
            return tf.vectorized_map(lambda flat: loss(split(flat, tf.reshape), constants), flat_points)

        _grid_functions[key] = tf.function(losses, autograph=False, reduce_retracing=True)
    return _grid_functions[key]
