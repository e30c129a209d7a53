"""First and second derivatives by nested `tf.GradientTape`, over all parameter elements as one flat vector.

Shared by the Newton optimizer, `scripts/sensitivity.py` and `scripts/gradcheck.py`. TensorFlow is imported
inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def element_count(values: Sequence[Any]) -> int:
    """How many elements the tensors, variables or arrays in `values` hold together."""
    return sum(int(np.prod(value.shape, dtype=np.int64)) for value in values)


def flatten(tensors: Sequence[Any]) -> Any:
    """The tensors' elements as one vector, in order."""
    import tensorflow as tf

    return tf.concat([tf.reshape(tensor, [-1]) for tensor in tensors], axis=0)


def unflatten(vector: Any, like: Sequence[Any]) -> list[Any]:
    """`vector` split back into tensors shaped like `like` (the inverse of `flatten`)."""
    import tensorflow as tf

    sizes = [int(np.prod(value.shape, dtype=np.int64)) for value in like]
    parts = tf.split(vector, sizes)
    return [tf.reshape(part, value.shape) for part, value in zip(parts, like, strict=True)]


def gradient_and_hessian(loss: Callable[[], Any], sources: Sequence[Any]) -> tuple[Any, Any, Any]:
    """The loss, its flat gradient (n,) and its Hessian (n, n) at the current values of `sources`.

    `loss` takes no argument and reads `sources` (tf.Variables or tensors). The Hessian is the Jacobian of
    the gradient, taken by an outer tape around the inner one. A source the loss does not depend on gets
    zero rows and columns. Works eagerly and inside tf.function (also inside a tf.range loop).
    """
    import tensorflow as tf

    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(sources)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(sources)
            value = loss()
        gradient = flatten(inner.gradient(value, sources, unconnected_gradients=zero))
    blocks = outer.jacobian(gradient, sources, unconnected_gradients=zero)
    size = tf.size(gradient)
    hessian = tf.concat([tf.reshape(block, [size, -1]) for block in blocks], axis=1)
    return value, gradient, hessian


def point_derivatives(loss: Callable[[Mapping[str, Any]], Any], point: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """f, the flat gradient and the Hessian of `loss` at `point` (name -> value), as NumPy float32 values."""
    import tensorflow as tf

    tensors = {name: tf.constant(value, tf.float32) for name, value in point.items()}
    value, gradient, hessian = gradient_and_hessian(lambda: loss(tensors), list(tensors.values()))
    return {"f": np.float32(value), "gradient": gradient.numpy(), "hessian": hessian.numpy()}
