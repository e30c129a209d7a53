"""An objective evaluated at many parameter points at once: for contour plots and the value at the minima."""

from __future__ import annotations

import numpy as np

from tapelab.objectives import Problem

EAGER_POINTS = 16


def loss_at(problem: Problem, points: np.ndarray) -> np.ndarray:
    """The loss at each row of `points` (one flat parameter vector per row, in column order)."""
    import tensorflow as tf

    def loss_of_flat(flat):
        return problem.loss(problem.split(flat, tf.reshape))

    size = problem.flat_start().size
    flat_points = tf.constant(np.asarray(points, np.float32).reshape(len(points), size))
    if len(points) <= EAGER_POINTS:  # a few points (the minima): cheaper than tracing a graph
        return np.array([loss_of_flat(point).numpy() for point in flat_points], np.float32)
    # pfor turns the per-point loss into batched ops: one graph call for the whole grid.
    return tf.function(lambda batch: tf.vectorized_map(loss_of_flat, batch))(flat_points).numpy()
