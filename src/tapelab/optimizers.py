"""Optimizer schemas: the Keras optimizers by name, the seeds' plain gradient descent, and Newton's method.

Each schema builds an `Update`, which the trainer calls inside its compiled loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from tapelab.errors import ConfigError


class Update:
    """Applies one step of an optimizer to variables, given their gradients."""

    def prepare(self, variables: Sequence[Any], loss: Callable[[], Any]) -> None:
        """Create any optimizer state eagerly, before the loop is traced.

        `loss` evaluates the objective at the current variables, for rules that need more than the gradient.
        """

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        """Update `variables` in place (called inside tf.function)."""
        raise NotImplementedError

    def learning_rate(self) -> Any:
        """The learning rate the next step uses, as a float32 tensor."""
        raise NotImplementedError

    def state(self) -> Any:
        """What a checkpoint must save to continue this rule exactly (a trackable), or None if stateless."""
        return None


class KerasUpdate(Update):
    """A Keras optimizer's `apply_gradients`."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer

    def prepare(self, variables: Sequence[Any], loss: Callable[[], Any]) -> None:
        self.optimizer.build(list(variables))

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))

    def learning_rate(self) -> Any:
        import tensorflow as tf

        return tf.cast(self.optimizer.learning_rate, tf.float32)

    def state(self) -> Any:
        return self.optimizer  # its slots (momentum, velocity, …) and iteration count


class PlainDescent(Update):
    """The seeds' `variable.assign_sub(lr * grad)`, with no optimizer object."""

    def __init__(self, lr: float) -> None:
        import tensorflow as tf

        self.lr = tf.constant(lr, tf.float32)

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        for gradient, variable in zip(gradients, variables, strict=True):
            variable.assign_sub(self.lr * gradient)

    def learning_rate(self) -> Any:
        return self.lr


@dataclass
class Optimizer:
    """Base of every optimizer schema."""

    name: ClassVar[str]

    def build(self, lr: float) -> Update:
        """The update rule with learning rate `lr`."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """The optimizer's own keys and values."""
        return dataclasses.asdict(self)

    def coupling(self) -> str | None:
        """What makes one element's step depend on other elements, or None for an elementwise rule."""
        return None


OptimizerT = TypeVar("OptimizerT", bound=type[Optimizer])


def register_optimizer(name: str) -> Callable[[OptimizerT], OptimizerT]:
    """Name an optimizer schema and store it for `conf/optimizer/<name>.yaml` to extend."""

    def decorate(cls: OptimizerT) -> OptimizerT:
        cls.name = name
        ConfigStore.instance().store(name=f"schema_optimizer_{name}", node=cls)
        return cls

    return decorate


@register_optimizer("gd")
@dataclass
class GradientDescent(Optimizer):
    """x ← x − lr·∇f, exactly as the seeds write it."""

    def build(self, lr: float) -> Update:
        return PlainDescent(lr)


class NewtonStep(Update):
    """x ← x − lr·H⁻¹g, with the exact Hessian H of the loss over all trainable elements as one vector.

    H is the Jacobian of the gradient (nested tapes, `tapelab.derivatives`), solved in float64 through the
    pseudo-inverse, with singular values below 10·n·ε_float32·σ_max (what a float32 H resolves) as zero: a
    singular Hessian gives the minimum-norm step (nothing along directions of zero curvature), an indefinite
    one gives pure Newton's step towards the saddle or maximum of the local quadratic model, and a
    non-finite one gives a non-finite step, which the trainer's divergence check turns into `diverged`.
    """

    RCOND_PER_ELEMENT = 10 * float(np.finfo(np.float32).eps)  # as tf.linalg.pinv's default, for float32 inputs

    def __init__(self, lr: float, max_params: int) -> None:
        import tensorflow as tf

        self.lr = tf.constant(lr, tf.float32)
        self.max_params = max_params
        self._loss: Callable[[], Any] | None = None

    def prepare(self, variables: Sequence[Any], loss: Callable[[], Any]) -> None:
        from tapelab.derivatives import element_count

        size = element_count(variables)
        if size > self.max_params:
            raise ConfigError(
                "optimizer.max_params",
                f"the objective has {size} trainable elements, more than optimizer.max_params={self.max_params}: "
                f"Newton's method builds and solves a {size}×{size} Hessian at every step. Raise "
                "optimizer.max_params, or choose a first-order optimizer",
            )
        self._loss = loss

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        import tensorflow as tf

        from tapelab.derivatives import flatten, gradient_and_hessian, unflatten

        if self._loss is None:
            raise RuntimeError("NewtonStep.prepare must run before apply")
        _, _, hessian = gradient_and_hessian(self._loss, variables)
        gradient = tf.cast(flatten(gradients), tf.float64)  # the gradient the trainer logged for this step
        size = tf.cast(tf.size(gradient), tf.float64)
        inverse = tf.linalg.pinv(tf.cast(hessian, tf.float64), rcond=self.RCOND_PER_ELEMENT * size)
        step = tf.cast(tf.linalg.matvec(inverse, gradient), tf.float32)
        # Not left to pinv: under XLA its SVD turns an infinite Hessian into a zero step instead of NaN.
        step = tf.where(tf.reduce_all(tf.math.is_finite(hessian)), step, tf.constant(np.nan, tf.float32))
        for variable, part in zip(variables, unflatten(step, variables), strict=True):
            variable.assign_sub(self.lr * part)

    def learning_rate(self) -> Any:
        return self.lr


@register_optimizer("newton")
@dataclass
class Newton(Optimizer):
    """Newton's method with the exact Hessian; `lr` damps the step (1 = pure Newton)."""

    max_params: int = MISSING

    def coupling(self) -> str | None:
        return "newton's Hessian over all elements"

    def build(self, lr: float) -> Update:
        if self.max_params < 1:
            raise ConfigError("optimizer.max_params", f"must be an integer >= 1, got {self.max_params}")
        return NewtonStep(lr, self.max_params)


@dataclass
class KerasOptimizer(Optimizer):
    """A `keras.optimizers` class, looked up by name in that namespace; the fields are its keyword arguments.

    (`keras.optimizers.get` would be the natural lookup, but its table misses `Lamb` in Keras 3.15.)
    """

    keras_class: ClassVar[str]
    weight_decay: float | None = MISSING
    clipnorm: float | None = MISSING
    clipvalue: float | None = MISSING
    global_clipnorm: float | None = MISSING

    def coupling(self) -> str | None:
        for key in ("clipnorm", "global_clipnorm"):
            if getattr(self, key) is not None:
                return f"optimizer.{key} (a norm over many elements)"
        return None

    def build(self, lr: float) -> Update:
        import keras

        optimizer_class = getattr(keras.optimizers, self.keras_class)
        try:
            return KerasUpdate(optimizer_class(learning_rate=lr, **self.hyperparameters()))
        except (ValueError, TypeError) as error:  # Keras checks its own ranges, e.g. 0 <= momentum <= 1
            raise ConfigError(f"optimizer ({self.name})", str(error).strip()) from None


def keras_optimizer(name: str, keras_class: str) -> Callable[[OptimizerT], OptimizerT]:
    """Register a schema for the Keras optimizer class `keras_class` under `name`."""

    def decorate(cls: OptimizerT) -> OptimizerT:
        cls.keras_class = keras_class
        return register_optimizer(name)(cls)

    return decorate


@keras_optimizer("sgd", "SGD")
@dataclass
class SGD(KerasOptimizer):
    momentum: float = MISSING
    nesterov: bool = MISSING


@keras_optimizer("adam", "Adam")
@dataclass
class Adam(KerasOptimizer):
    beta_1: float = MISSING
    beta_2: float = MISSING
    epsilon: float = MISSING
    amsgrad: bool = MISSING


@keras_optimizer("adamw", "AdamW")
@dataclass
class AdamW(Adam):
    pass


@keras_optimizer("adamax", "Adamax")
@dataclass
class Adamax(KerasOptimizer):
    beta_1: float = MISSING
    beta_2: float = MISSING
    epsilon: float = MISSING


@keras_optimizer("nadam", "Nadam")
@dataclass
class Nadam(Adamax):
    pass


@keras_optimizer("lamb", "Lamb")
@dataclass
class Lamb(Adamax):
    def coupling(self) -> str | None:
        return "lamb's trust ratio (the norm of a whole variable)"


@keras_optimizer("adagrad", "Adagrad")
@dataclass
class Adagrad(KerasOptimizer):
    initial_accumulator_value: float = MISSING
    epsilon: float = MISSING


@keras_optimizer("adadelta", "Adadelta")
@dataclass
class Adadelta(KerasOptimizer):
    rho: float = MISSING
    epsilon: float = MISSING


@keras_optimizer("rmsprop", "RMSprop")
@dataclass
class RMSprop(KerasOptimizer):
    rho: float = MISSING
    momentum: float = MISSING
    epsilon: float = MISSING
    centered: bool = MISSING


@keras_optimizer("ftrl", "Ftrl")
@dataclass
class Ftrl(KerasOptimizer):
    learning_rate_power: float = MISSING
    initial_accumulator_value: float = MISSING
    l1_regularization_strength: float = MISSING
    l2_regularization_strength: float = MISSING
    l2_shrinkage_regularization_strength: float = MISSING
    beta: float = MISSING


@keras_optimizer("lion", "Lion")
@dataclass
class Lion(KerasOptimizer):
    beta_1: float = MISSING
    beta_2: float = MISSING
