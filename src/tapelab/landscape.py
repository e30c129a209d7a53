"""An objective evaluated at many parameter points at once: for contour plots and the value at the minima."""

from __future__ import annotations

import numpy as np

from tapelab.objectives import Problem

EAGER_POINTS = 16


def loss_at(problem: Problem, points: np.ndarray) -> np.ndarray:
    """The loss at each row of `points` (one flat parameter vector per row, in column order)."""
    import tensorflow as tf

    shapes = {name: np.shape(value) for name, value in problem.start.items()}
    sizes = [int(np.prod(shape, dtype=int)) for shape in shapes.values()]

    def loss_of_flat(flat):
        parts = tf.split(flat, sizes)
        named = zip(shapes.items(), parts, strict=True)
        return problem.loss({name: tf.reshape(part, shape) for (name, shape), part in named})

    flat_points = tf.constant(np.asarray(points, np.float32).reshape(len(points), sum(sizes)))
    if len(points) <= EAGER_POINTS:  # a few points (the minima): cheaper than tracing a graph
        return np.array([loss_of_flat(point).numpy() for point in flat_points], np.float32)
    # pfor turns the per-point loss into batched ops: one graph call for the whole grid.
    return tf.function(lambda batch: tf.vectorized_map(loss_of_flat, batch))(flat_points).numpy()
