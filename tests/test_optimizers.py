"""Every optimizer config drives the same Keras class the same way Keras does when driven eagerly."""

from __future__ import annotations

import dataclasses
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose_config

KERAS_CLASSES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adamax": "Adamax",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "nadam": "Nadam",
    "rmsprop": "RMSprop",
    "ftrl": "Ftrl",
    "lion": "Lion",
    "lamb": "Lamb",
}
STEPS = 5


def eager_rosenbrock_path(optimizer: keras.optimizers.Optimizer, start, steps: int) -> np.ndarray:
    """The reference: the seeds' eager loop with a Keras optimizer on (1 − x)² + 100(y − x²)²."""
    x = tf.Variable(start, dtype=tf.float32)
    path = [x.numpy().copy()]
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2
        optimizer.apply_gradients([(tape.gradient(loss, x), x)])
        path.append(x.numpy().copy())
    return np.array(path)


def test_every_optimizer_has_a_config():
    names = {path.stem for path in (CONF_DIR / "optimizer").glob("*.yaml")}
    assert names == set(KERAS_CLASSES) | {"gd", "newton"}


@pytest.mark.parametrize("name", sorted(KERAS_CLASSES))
def test_config_defaults_are_the_keras_defaults(name):
    optimizer = compose_config(f"optimizer={name}").optimizer
    signature = inspect.signature(getattr(keras.optimizers, KERAS_CLASSES[name]).__init__)
    for key, value in optimizer.items():
        assert signature.parameters[key].default == value, key


@pytest.mark.parametrize("name", sorted(KERAS_CLASSES))
def test_runner_matches_eager_keras_optimizer(train, name):
    overrides = [f"optimizer={name}", "objective=rosenbrock", "lr=0.001", f"epochs={STEPS}"]
    if name == "sgd":
        overrides += ["optimizer.momentum=0.9", "optimizer.nesterov=true"]
    result = train(*overrides)
    keys = {key: value for key, value in compose_config(*overrides).optimizer.items()}
    reference = getattr(keras.optimizers, KERAS_CLASSES[name])(learning_rate=0.001, **keys)
    expected = eager_rosenbrock_path(reference, [-1.2, 1.0], STEPS)
    actual = result.metrics[["x[0]", "x[1]"]].to_numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(actual[0], actual[-1]), "the optimizer must move the point"


def test_lr_sets_the_keras_learning_rate(train):
    result = train("optimizer=adam", "lr=0.125", "epochs=2")
    assert result.metrics["lr"].tolist() == [0.125, 0.125, 0.125]


def test_sgd_momentum_key_changes_the_path(train):
    plain = train("objective=rosenbrock", "lr=0.0001", "epochs=3")
    momentum = train("objective=rosenbrock", "lr=0.0001", "epochs=3", "optimizer.momentum=0.9")
    assert plain.metrics["x[0]"].iloc[1] == momentum.metrics["x[0]"].iloc[1]
    assert plain.metrics["x[0]"].iloc[3] != momentum.metrics["x[0]"].iloc[3]


# Values on both sides of every range Keras checks, for every float key of every Keras optimizer.
PROBED_VALUES = [-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


def keras_refuses(name: str, keys: dict) -> bool:
    """Whether Keras's own constructor refuses `keys` (the reference for tapelab's checks)."""
    try:
        getattr(keras.optimizers, KERAS_CLASSES[name])(learning_rate=0.01, **keys)
    except ValueError:
        return True
    return False


def tapelab_refuses(schema, keys: dict) -> bool:
    """Whether tapelab's own check, made before TensorFlow is imported, refuses these values of `schema`."""
    from tapelab.errors import ConfigError

    try:
        dataclasses.replace(schema, **keys).check(elements=2)
    except ConfigError:
        return True
    return False


@pytest.mark.parametrize("name", sorted(KERAS_CLASSES))
def test_tapelab_refuses_exactly_the_float_values_keras_refuses(name):
    config = compose_config(f"optimizer={name}").optimizer
    schema, defaults = OmegaConf.to_object(config), dict(config)
    floats = [key for key, value in defaults.items() if isinstance(value, float)]
    assert floats, "every Keras optimizer has float keys"
    for key in floats:
        for value in PROBED_VALUES:
            assert tapelab_refuses(schema, {key: value}) == keras_refuses(name, {**defaults, key: value}), (key, value)


@pytest.mark.parametrize("name", sorted(KERAS_CLASSES))
def test_tapelab_refuses_exactly_the_clipping_and_decay_keras_refuses(name):
    config = compose_config(f"optimizer={name}").optimizer
    schema, defaults = OmegaConf.to_object(config), dict(config)
    cases = [{"clipnorm": 1.0, "global_clipnorm": 1.0}, {"clipnorm": 1.0, "clipvalue": 1.0}, {"clipvalue": 0.5},
             {"weight_decay": None}, {"weight_decay": 0.01}]  # fmt: skip
    for keys in cases:
        assert tapelab_refuses(schema, keys) == keras_refuses(name, {**defaults, **keys}), keys
