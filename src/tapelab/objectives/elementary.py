"""The seeds' small objectives: quadratic, polynomial, sum of squares, the single neuron and tanh."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from omegaconf import MISSING

from tapelab.errors import ConfigError
from tapelab.objectives.base import FLOAT32_MAX, Objective, Problem, finite_scalar, finite_vector, register_objective


@register_objective("quadratic")
@dataclass
class Quadratic(Objective):
    """f(x) = a·x² + b·x + c, written as the seeds write it."""

    inputs = ("a", "b", "c", "init")
    a: float = MISSING
    b: float = MISSING
    c: float = MISSING
    init: float = MISSING

    def build(self, seed: int) -> Problem:
        constants = {key: finite_scalar(f"objective.{key}", getattr(self, key)) for key in "abc"}
        a, b = float(constants["a"]), float(constants["b"])
        vertex = -b / (2 * a) if a > 0 else math.inf  # a ≤ 0: no minimum
        minima = (np.array([vertex]),) if abs(vertex) <= FLOAT32_MAX else ()
        return self.problem({"x": finite_scalar("objective.init", self.init)}, constants, minima)

    def formula(self, params, constants):
        import tensorflow as tf

        x = params["x"]
        return constants["a"] * tf.pow(x, 2) + constants["b"] * x + constants["c"]


@register_objective("polynomial")
@dataclass
class Polynomial(Objective):
    """f(x) = Σᵢ coeffs[i]·xⁱ, lowest power first (so 4w + w³ is [0, 4, 0, 1])."""

    inputs = ("coeffs", "init")
    coeffs: list[float] = MISSING
    init: float = MISSING

    def build(self, seed: int) -> Problem:
        highest_first = finite_vector("objective.coeffs", self.coeffs)[::-1].copy()
        return self.problem({"x": finite_scalar("objective.init", self.init)}, {"coeffs": highest_first})

    def formula(self, params, constants):
        import tensorflow as tf

        coeffs = constants["coeffs"]  # highest power first, as tf.math.polyval wants them
        return tf.math.polyval([coeffs[i] for i in range(coeffs.shape[0])], params["x"])


@register_objective("sum_of_squares")
@dataclass
class SumOfSquares(Objective):
    """f(w) = Σ wᵢ², for a vector w of any length."""

    inputs = ("init",)
    init: list[float] = MISSING

    def build(self, seed: int) -> Problem:
        start = finite_vector("objective.init", self.init)
        return self.problem({"w": start}, minima=(start * 0,))

    def formula(self, params, constants):
        import tensorflow as tf

        return tf.math.reduce_sum(params["w"] ** 2)


@register_objective("neuron")
@dataclass
class Neuron(Objective):
    """loss = (w·x − y)²: one linear neuron. Train the weight, the input, or both."""

    inputs = ("w", "x", "y")
    w: float = MISSING
    x: float = MISSING
    y: float = MISSING
    trainable: list[str] = MISSING

    def build(self, seed: int) -> Problem:
        values = {key: finite_scalar(f"objective.{key}", getattr(self, key)) for key in ("w", "x", "y")}
        allowed = ("w", "x")
        unknown = [name for name in self.trainable if name not in allowed]
        if unknown or not self.trainable or len(set(self.trainable)) != len(self.trainable):
            raise ConfigError(
                "objective.trainable",
                f"must list distinct names from {list(allowed)}, got {list(self.trainable)}",
            )
        start = {name: values[name] for name in allowed if name in self.trainable}
        return self.problem(start, {name: value for name, value in values.items() if name not in start})

    def formula(self, params, constants):
        values = {**constants, **params}
        return (values["w"] * values["x"] - values["y"]) ** 2


@register_objective("tanh")
@dataclass
class Tanh(Objective):
    """f(w) = tanh(w): the curve of seed 003's sensitivity plot. It has no minimum (f → −1 as w → −∞)."""

    inputs = ("init",)
    init: float = MISSING

    def build(self, seed: int) -> Problem:
        return self.problem({"w": finite_scalar("objective.init", self.init)})

    def formula(self, params, constants):
        import tensorflow as tf

        return tf.math.tanh(params["w"])
