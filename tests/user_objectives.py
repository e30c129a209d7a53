"""Loss functions for the `objective=python` tests: each takes name -> tf.Variable, returns a scalar tensor."""

import tensorflow as tf

TARGET = (1.0, -2.0)
NOT_CALLABLE = 3.0


def shifted_bowl(params):
    """Σ (wᵢ − tᵢ)² with t = (1, −2): gradient 2(w − t), minimum at t."""
    return tf.reduce_sum((params["w"] - tf.constant(TARGET)) ** 2)


def neuron_and_vector(params):
    """(3a − 6)² + Σ vᵢ²: a scalar and a vector parameter in one loss."""
    return (params["a"] * 3.0 - 6.0) ** 2 + tf.reduce_sum(params["v"] ** 2)


def vector_loss(params):
    """Not a scalar: objective=python must refuse it."""
    return params["w"] ** 2


def not_a_tensor(params):
    """Returns a string: objective=python must refuse it."""
    return "loss"


def bowl_through_python(params):
    """Σ (wᵢ − tᵢ)², the same bowl, with the squares taken by a Python function: XLA can't compile that."""
    squares = tf.py_function(lambda offset: offset**2, [params["w"] - tf.constant(TARGET)], tf.float32)
    return tf.reduce_sum(tf.ensure_shape(squares, [2]))
