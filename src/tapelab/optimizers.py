"""Optimizers: the Keras optimizers by name, the seeds' plain gradient descent, and Newton's method.

Each optimizer's schema (an `OptimizerConfig`) checks its own values before TensorFlow is imported, and builds
its update rule (an `UpdateRule`), which the engine calls inside its compiled loop.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from tapelab.errors import ConfigError


class UpdateRule:
    """Applies one step of an optimizer to variables of `dtype`, given their gradients.

    The learning rate and the optimizer's `inputs` live in variables of the same dtype (Keras casts them to the
    parameters' anyway), and `load` sets them for each run, so that one traced loop serves runs that differ in
    those values. `state()` lists what the rule carries from step to step (slots, an iteration count), and
    `slot_parameters()` which parameter each of them belongs to; `load` returns the state to its values
    before the first step.
    """

    def __init__(self, dtype: str) -> None:
        import tensorflow as tf

        self.dtype = dtype
        self.lr = tf.Variable(1.0, dtype=dtype, trainable=False, name="lr")
        self.hyperparameters: dict[str, Any] = {}  # key -> the tf.Variable that holds it
        self.member_keys: tuple[str, ...] = ()  # those that `for_members` gives each member of its own
        self._initial_state: list[Any] = []

    def prepare(self, variables: Sequence[Any], loss: Callable[[], Any]) -> None:
        """Create the rule's state eagerly, before the loop is traced, and note its starting values.

        `loss` evaluates the objective at the current variables, for rules that need more than the gradient.
        """
        self._initial_state = [value.numpy() for value in self.state()]

    def for_members(self, members: int) -> None:
        """Give each of a batch's `members` its own learning rate and `member_keys`: each becomes an [members, 1]
        variable, which broadcasts over [members, n] parameters. Call it before `prepare`."""
        import tensorflow as tf

        self.lr = tf.Variable(tf.ones([members, 1], self.dtype), trainable=False, name="lr")
        for key in self.member_keys:
            self.hyperparameters[key] = tf.Variable(tf.zeros([members, 1], self.dtype), trainable=False, name=key)

    def load(self, lr: float | np.ndarray, hyperparameters: Mapping[str, Any]) -> None:
        """Set the learning rate and the inputs for a new run, and reset the state to before the first step."""
        self.lr.assign(lr)
        for key, variable in self.hyperparameters.items():
            variable.assign(hyperparameters[key])
        for variable, value in zip(self.state(), self._initial_state, strict=True):
            variable.assign(value)

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        """Update `variables` in place (called inside tf.function)."""
        raise NotImplementedError

    def learning_rate(self) -> Any:
        """The learning rate the next step uses, as a tensor of the rule's dtype."""
        return self.lr.read_value()

    def state(self) -> list[Any]:
        """The variables a checkpoint must save to continue this rule exactly; none for a stateless rule."""
        return []

    def slot_parameters(self) -> list[int | None]:
        """For each variable of `state()`, the index (in `prepare`'s variables) of the parameter it is a slot of,
        or None for a value the parameters share (an iteration count)."""
        return [None] * len(self.state())


class KerasUpdate(UpdateRule):
    """A Keras optimizer's `apply_gradients`, reading its learning rate and `inputs` from variables.

    Keras takes a callable learning rate; the other inputs replace the floats it was built with. Keras tests
    some keys in Python (`if self.momentum != 0`, `if self.centered`): those stay out of `inputs` and so
    belong to the loop's structure.
    """

    def __init__(
        self,
        optimizer_class: Any,
        keys: Mapping[str, Any],
        inputs: Sequence[str],
        member_inputs: Sequence[str] = (),
        dtype: str = "float32",
    ) -> None:
        import tensorflow as tf

        super().__init__(dtype)
        self._class, self._keys = optimizer_class, dict(keys)
        self._slot_parameters: list[int | None] = []
        for key in inputs:
            if keys[key] is not None:  # None switches a feature off (weight_decay): that is structure
                self.hyperparameters[key] = tf.Variable(keys[key], dtype=dtype, trainable=False, name=key)
        self.member_keys = tuple(key for key in member_inputs if key in self.hyperparameters)
        self.optimizer = self._keras_optimizer(optimizer_class)

    def _keras_optimizer(self, optimizer_class: Any) -> Any:
        """`optimizer_class` built with the keys, reading the learning rate and the inputs from their variables."""
        optimizer = optimizer_class(learning_rate=lambda: self.lr, **self._keys)
        for key, variable in self.hyperparameters.items():
            setattr(optimizer, key, variable)
        return optimizer

    def for_members(self, members: int) -> None:
        """Also take every norm over one member's elements (`per_member`), so that members don't couple."""
        super().for_members(members)
        self.optimizer = self._keras_optimizer(per_member(self._class))

    def prepare(self, variables: Sequence[Any], loss: Callable[[], Any]) -> None:
        """Build the Keras optimizer, noting the parameter each slot is made for: Keras makes every slot through
        `add_variable_from_reference` but keeps no link back to the parameter."""
        make_slot, parameter_of = self.optimizer.add_variable_from_reference, {}
        index = {id(variable): number for number, variable in enumerate(variables)}

        def slot_noted(reference_variable: Any, *args: Any, **kwargs: Any) -> Any:
            slot = make_slot(reference_variable, *args, **kwargs)
            parameter_of[id(slot)] = index.get(id(reference_variable))
            return slot

        self.optimizer.add_variable_from_reference = slot_noted
        try:
            self.optimizer.build(list(variables))
        finally:
            del self.optimizer.add_variable_from_reference
        self._slot_parameters = [parameter_of.get(id(variable)) for variable in self.state()]
        super().prepare(variables, loss)

    def slot_parameters(self) -> list[int | None]:
        return list(self._slot_parameters)

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))

    def state(self) -> list[Any]:
        return list(self.optimizer.variables)  # the iteration count and the slots (momentum, velocity, …)


class MemberNorms:
    """Mixed into a Keras optimizer for a batch's stacked variables ([members, elements], a member a row): the
    norms Keras takes over a whole gradient (`clipnorm`) or over all of them (`global_clipnorm`) are taken over
    each member's row, in Keras's own arithmetic, so that each member steps as Keras steps it alone."""

    def _clip_gradients(self, grads: list[Any]) -> list[Any]:
        if self.clipnorm and self.clipnorm > 0:
            return [self._clip_by_norm(gradient, axes=[1]) for gradient in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            return clip_by_member_norms(grads, self.global_clipnorm)
        return super()._clip_gradients(grads)


def clip_by_member_norms(gradients: list[Any], clip_norm: float) -> list[Any]:
    """Keras's `clip_by_global_norm`, with each member's norm over its rows of all the gradients."""
    from keras import ops

    squared_norms = [ops.sum(ops.square(gradient), axis=1) for gradient in gradients]
    use_norm = ops.expand_dims(ops.sqrt(ops.sum(ops.stack(squared_norms), axis=0)), 1)
    scale_for_finite = clip_norm * ops.minimum(1.0 / use_norm, 1.0 / clip_norm)
    scale = scale_for_finite + (use_norm - use_norm)  # NaN for a member whose norm is not finite
    return [gradient * scale for gradient in gradients]


class MemberTrustRatio(MemberNorms):
    """Keras's `Lamb.update_step` for a batch's stacked variables, with the trust ratio's norms over each
    member's row."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        from keras import ops

        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        m_t_hat = ops.divide(m, (1.0 - beta_1_power))
        v_sqrt = ops.add(ops.sqrt(ops.divide(v, (1.0 - beta_2_power))), self.epsilon)
        update = ops.divide(m_t_hat, v_sqrt)
        w_norm = ops.sqrt(ops.sum(ops.power(variable, 2), axis=1, keepdims=True))
        g_norm = ops.sqrt(ops.sum(ops.power(update, 2), axis=1, keepdims=True))
        ratio = ops.where(ops.greater(w_norm, 0), ops.where(ops.greater(g_norm, 0), (w_norm / g_norm), 1.0), 1.0)
        self.assign_sub(variable, ratio * lr * update)


@functools.cache
def per_member(optimizer_class: Any) -> Any:
    """`optimizer_class` for a batch's stacked variables: with `MemberTrustRatio` for Lamb, else `MemberNorms`."""
    import keras

    norms = MemberTrustRatio if issubclass(optimizer_class, keras.optimizers.Lamb) else MemberNorms
    return type(f"Member{optimizer_class.__name__}", (norms, optimizer_class), {})


class PlainDescent(UpdateRule):
    """The seeds' `variable.assign_sub(lr * grad)`, with no optimizer object."""

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        for gradient, variable in zip(gradients, variables, strict=True):
            variable.assign_sub(self.lr * gradient)


@dataclass
class OptimizerConfig:
    """Base of every optimizer schema.

    `inputs` names the float keys that the compiled loop reads from variables: runs that differ only in
    them (and in `lr`) share one trace. Every other key is part of the loop's structure. `member_inputs` names
    those of them in which the members of a batch may differ (`tapelab.engine.batch.Batch`): each member's value
    in an [members, 1] variable, as its learning rate is.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    member_inputs: ClassVar[tuple[str, ...]] = ()

    def build(self, dtype: str = "float32") -> UpdateRule:
        """The update rule for parameters of `dtype`, before `UpdateRule.load` gives it a run's learning rate and
        inputs."""
        raise NotImplementedError

    def check(self, elements: int) -> None:
        """Refuse values the rule can't run with, for a problem of `elements` trainable elements.

        Runs before TensorFlow is imported, and for every run, also those that reuse a loop that was built
        (and checked by Keras) for other values.
        """

    def hyperparameters(self) -> dict[str, Any]:
        """The optimizer's own keys and values."""
        return dataclasses.asdict(self)

    def structure(self) -> str:
        """What the update rule is built from: the keys that are not inputs, and which inputs are set."""
        keys = self.hyperparameters()
        built_from = {key: keys[key] is not None if key in self.inputs else keys[key] for key in keys}
        return f"{self.name} {built_from}"

    def coupling(self) -> str | None:
        """What would make a batch's members depend on each other, or None: an elementwise rule, or one whose norms
        `KerasUpdate.for_members` takes over each member's own elements."""
        return None


def require(condition: bool, key: str, allowed: str, value: Any) -> None:
    """Raise `ConfigError` for `optimizer.<key>` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"optimizer.{key}", f"{allowed}, got {value}")


OptimizerT = TypeVar("OptimizerT", bound=type[OptimizerConfig])


def register_optimizer(name: str) -> Callable[[OptimizerT], OptimizerT]:
    """Name an optimizer schema and store it for `conf/optimizer/<name>.yaml` to extend."""

    def decorate(cls: OptimizerT) -> OptimizerT:
        cls.name = name
        ConfigStore.instance().store(name=f"schema_optimizer_{name}", node=cls)
        return cls

    return decorate


@register_optimizer("gd")
@dataclass
class GradientDescent(OptimizerConfig):
    """x ← x − lr·∇f, exactly as the seeds write it."""

    def build(self, dtype: str = "float32") -> UpdateRule:
        return PlainDescent(dtype)


class NewtonStep(UpdateRule):
    """x ← x − lr·H⁻¹g, with the exact Hessian H of the loss over all trainable elements as one vector.

    H is the Jacobian of the gradient (nested tapes, `tapelab.derivatives`), solved in float64 through the
    pseudo-inverse, with singular values below 10·n·ε·σ_max as zero, ε of the rule's dtype (what its H resolves): a
    singular Hessian gives the minimum-norm step (nothing along directions of zero curvature), an indefinite
    one gives pure Newton's step towards the saddle or maximum of the local quadratic model, and a
    non-finite one gives a non-finite step, which the engine's divergence check turns into `diverged`.
    """

    def __init__(self, dtype: str) -> None:
        super().__init__(dtype)
        self.rcond_per_element = 10 * float(np.finfo(dtype).eps)  # as tf.linalg.pinv's default for H's dtype
        self._loss: Callable[[], Any] | None = None

    def prepare(self, variables: Sequence[Any], loss: Callable[[], Any]) -> None:
        self._loss = loss
        super().prepare(variables, loss)

    def apply(self, gradients: Sequence[Any], variables: Sequence[Any]) -> None:
        import tensorflow as tf

        from tapelab.derivatives import flatten, gradient_and_hessian, unflatten

        if self._loss is None:
            raise RuntimeError("NewtonStep.prepare must run before apply")
        _, _, hessian = gradient_and_hessian(self._loss, variables)
        gradient = tf.cast(flatten(gradients), tf.float64)  # the gradient the engine logged for this step
        size = tf.cast(tf.size(gradient), tf.float64)
        inverse = tf.linalg.pinv(tf.cast(hessian, tf.float64), rcond=self.rcond_per_element * size)
        step = tf.cast(tf.linalg.matvec(inverse, gradient), self.dtype)
        # Not left to pinv: under XLA its SVD turns an infinite Hessian into a zero step instead of NaN.
        step = tf.where(tf.reduce_all(tf.math.is_finite(hessian)), step, tf.constant(np.nan, self.dtype))
        for variable, part in zip(variables, unflatten(step, variables), strict=True):
            variable.assign_sub(self.lr * part)


@register_optimizer("newton")
@dataclass
class Newton(OptimizerConfig):
    """Newton's method with the exact Hessian; `lr` damps the step (1 = pure Newton)."""

    max_params: int = MISSING

    def coupling(self) -> str | None:
        return "newton's Hessian over all elements"

    def check(self, elements: int) -> None:
        require(self.max_params >= 1, "max_params", "must be an integer >= 1", self.max_params)
        if elements > self.max_params:
            raise ConfigError(
                "optimizer.max_params",
                f"the objective has {elements} trainable elements, more than optimizer.max_params={self.max_params}: "
                f"Newton's method builds and solves a {elements}×{elements} Hessian at every step. Raise "
                "optimizer.max_params, or choose a first-order optimizer",
            )

    def build(self, dtype: str = "float32") -> UpdateRule:
        return NewtonStep(dtype)


CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")  # Keras takes one at most


@dataclass
class KerasOptimizer(OptimizerConfig):
    """A `keras.optimizers` class, looked up by name in that namespace; the fields are its keyword arguments.

    (`keras.optimizers.get` would be the natural lookup, but its table misses `Lamb` in Keras 3.15.)
    """

    keras_class: ClassVar[str]
    inputs = member_inputs = ("weight_decay",)
    weight_decay: float | None = MISSING
    clipnorm: float | None = MISSING
    clipvalue: float | None = MISSING
    global_clipnorm: float | None = MISSING

    def check(self, elements: int) -> None:
        """Keras's own checks of these keys (its constructors raise ValueError), made before TensorFlow loads."""
        clipping = [key for key in CLIP_KEYS if getattr(self, key) is not None]
        if len(clipping) > 1:
            given = ", ".join(f"{key}={getattr(self, key)}" for key in clipping)
            allowed = f"only one of {', '.join(CLIP_KEYS)} can be set"
            raise ConfigError(f"optimizer.{clipping[-1]}", f"{allowed}, got {given}")

    def build(self, dtype: str = "float32") -> UpdateRule:
        import keras

        optimizer_class = getattr(keras.optimizers, self.keras_class)
        try:
            return KerasUpdate(optimizer_class, self.hyperparameters(), self.inputs, self.member_inputs, dtype)
        except (ValueError, TypeError) as error:  # a check of Keras's that `check` does not make
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

    def check(self, elements: int) -> None:
        super().check(elements)
        require(0 <= self.momentum <= 1, "momentum", "must be a float between 0 and 1", self.momentum)


@keras_optimizer("adam", "Adam")
@dataclass
class Adam(KerasOptimizer):
    inputs = member_inputs = ("weight_decay", "beta_1", "beta_2", "epsilon")
    beta_1: float = MISSING
    beta_2: float = MISSING
    epsilon: float = MISSING
    amsgrad: bool = MISSING


@keras_optimizer("adamw", "AdamW")
@dataclass
class AdamW(Adam):
    def check(self, elements: int) -> None:
        super().check(elements)
        require(self.weight_decay is not None, "weight_decay", "must be a float for adamw", self.weight_decay)


@keras_optimizer("adamax", "Adamax")
@dataclass
class Adamax(KerasOptimizer):
    inputs = member_inputs = ("weight_decay", "beta_1", "beta_2", "epsilon")
    beta_1: float = MISSING
    beta_2: float = MISSING
    epsilon: float = MISSING


@keras_optimizer("nadam", "Nadam")
@dataclass
class Nadam(Adamax):
    member_inputs = ("weight_decay", "beta_2", "epsilon")  # beta_1 also feeds Keras's scalar variable _u_product


@keras_optimizer("lamb", "Lamb")
@dataclass
class Lamb(Adamax):
    """Its trust ratio takes the norm of a whole variable: in a batch, each member's own (`per_member`)."""


@keras_optimizer("adagrad", "Adagrad")
@dataclass
class Adagrad(KerasOptimizer):
    inputs = member_inputs = ("weight_decay", "epsilon")  # initial_accumulator_value initialises the slots: structure
    initial_accumulator_value: float = MISSING
    epsilon: float = MISSING


@keras_optimizer("adadelta", "Adadelta")
@dataclass
class Adadelta(KerasOptimizer):
    inputs = member_inputs = ("weight_decay", "rho", "epsilon")
    rho: float = MISSING
    epsilon: float = MISSING


@keras_optimizer("rmsprop", "RMSprop")
@dataclass
class RMSprop(KerasOptimizer):
    inputs = member_inputs = ("weight_decay", "rho", "epsilon")  # Keras tests momentum > 0 in Python
    rho: float = MISSING
    momentum: float = MISSING
    epsilon: float = MISSING
    centered: bool = MISSING


@keras_optimizer("ftrl", "Ftrl")
@dataclass
class Ftrl(KerasOptimizer):
    inputs = member_inputs = (
        "weight_decay",
        "learning_rate_power",
        "l1_regularization_strength",
        "l2_regularization_strength",
        "l2_shrinkage_regularization_strength",
        "beta",
    )
    learning_rate_power: float = MISSING
    initial_accumulator_value: float = MISSING
    l1_regularization_strength: float = MISSING
    l2_regularization_strength: float = MISSING
    l2_shrinkage_regularization_strength: float = MISSING
    beta: float = MISSING

    def check(self, elements: int) -> None:
        super().check(elements)
        require(self.learning_rate_power <= 0, "learning_rate_power", "must be <= 0", self.learning_rate_power)
        for key in ("initial_accumulator_value", "l1_regularization_strength", "l2_regularization_strength",
                    "l2_shrinkage_regularization_strength"):  # fmt: skip
            require(getattr(self, key) >= 0, key, "must be >= 0", getattr(self, key))


@keras_optimizer("lion", "Lion")
@dataclass
class Lion(KerasOptimizer):
    inputs = member_inputs = ("weight_decay", "beta_1", "beta_2")
    beta_1: float = MISSING
    beta_2: float = MISSING

    def check(self, elements: int) -> None:
        super().check(elements)
        require(0 < self.beta_1 <= 1, "beta_1", "must be in (0, 1] (0 would make Lion SignSGD)", self.beta_1)
