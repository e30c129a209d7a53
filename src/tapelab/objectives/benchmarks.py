"""Standard optimisation test functions (2-D, and the n-D Styblinski–Tang) with their published global minima.

Formulas and minima follow the Virtual Library of Simulation Experiments
(https://www.sfu.ca/~ssurjano/optimization.html).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from omegaconf import MISSING

from tapelab.errors import ConfigError
from tapelab.objectives.base import (
    BOX_DTYPE,
    Objective,
    Problem,
    finite_scalar,
    finite_vector,
    minima_vectors,
    register_objective,
)


@dataclass
class Benchmark2D(Objective):
    """A function of x = (x[0], x[1]) with known global minima.

    Keys listed in `constant_keys` are the function's own constants (Rosenbrock's a and b): they reach
    `value` as tensors, so runs that differ only in them share one compiled loop.
    """

    constant_keys: ClassVar[tuple[str, ...]] = ()
    inputs = ("init",)
    init: list[float] = MISSING
    domain: list[list[float]] = MISSING  # [[x0 low, x0 high], [x1 low, x1 high]]: the usual search box
    minima_key: ClassVar[str] = "objective.minima"  # the key an unusable minimum is blamed on

    def value(self, x0, x1, constants):
        """The function at (x0, x1), built from TensorFlow ops; `constants` holds the `constant_keys`."""
        raise NotImplementedError

    def known_minima(self) -> list[list[float]]:
        """The global minima."""
        raise NotImplementedError

    def box(self) -> np.ndarray:
        """`domain` as a checked 2×2 float32 array of [low, high] rows."""
        rows = [finite_vector("objective.domain", row, length=2).astype(BOX_DTYPE) for row in self.domain]
        if len(rows) != 2 or not all(low < high for low, high in rows):
            raise ConfigError("objective.domain", f"needs two [low, high] pairs with low < high, got {self.domain}")
        return np.array(rows, BOX_DTYPE)

    def build(self, seed: int) -> Problem:
        start = finite_vector("objective.init", self.init, length=2)
        self.box()
        constants = {key: finite_scalar(f"objective.{key}", getattr(self, key)) for key in self.constant_keys}
        return self.problem({"x": start}, constants, minima_vectors(self.minima_key, self.known_minima(), 2))

    def formula(self, params, constants):
        return self.value(params["x"][0], params["x"][1], constants)


@dataclass
class RecordedMinima2D(Benchmark2D):
    """A 2-D function whose YAML records its published global minima under `minima`."""

    inputs = ("init", "minima")
    minima: list[list[float]] = MISSING

    def known_minima(self) -> list[list[float]]:
        return [list(point) for point in self.minima]


@register_objective("rosenbrock")
@dataclass
class Rosenbrock(Benchmark2D):
    """(a − x)² + b·(y − x²)²; the global minimum (a, a²) follows from `a`."""

    constant_keys = ("a", "b")
    inputs = ("init", "a", "b")
    a: float = MISSING
    b: float = MISSING
    minima_key: ClassVar[str] = "objective.a"

    def value(self, x0, x1, constants):
        return (constants["a"] - x0) ** 2 + constants["b"] * (x1 - x0**2) ** 2

    def known_minima(self) -> list[list[float]]:
        return [[self.a, self.a**2]]


@register_objective("himmelblau")
@dataclass
class Himmelblau(RecordedMinima2D):
    """(x² + y − 11)² + (x + y² − 7)²: four global minima, all with f = 0."""

    def value(self, x0, x1, constants):
        return (x0**2 + x1 - 11.0) ** 2 + (x0 + x1**2 - 7.0) ** 2


@register_objective("beale")
@dataclass
class Beale(RecordedMinima2D):
    """(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²: minimum f(3, 0.5) = 0."""

    def value(self, x0, x1, constants):
        return (1.5 - x0 + x0 * x1) ** 2 + (2.25 - x0 + x0 * x1**2) ** 2 + (2.625 - x0 + x0 * x1**3) ** 2


@register_objective("booth")
@dataclass
class Booth(RecordedMinima2D):
    """(x + 2y − 7)² + (2x + y − 5)²: minimum f(1, 3) = 0."""

    def value(self, x0, x1, constants):
        return (x0 + 2.0 * x1 - 7.0) ** 2 + (2.0 * x0 + x1 - 5.0) ** 2


@register_objective("matyas")
@dataclass
class Matyas(RecordedMinima2D):
    """0.26·(x² + y²) − 0.48·x·y: a flat, tilted bowl. Minimum f(0, 0) = 0."""

    def value(self, x0, x1, constants):
        return 0.26 * (x0**2 + x1**2) - 0.48 * x0 * x1


@register_objective("three_hump_camel")
@dataclass
class ThreeHumpCamel(RecordedMinima2D):
    """2x² − 1.05x⁴ + x⁶/6 + xy + y²: two local minima beside the global minimum f(0, 0) = 0."""

    def value(self, x0, x1, constants):
        return 2.0 * x0**2 - 1.05 * x0**4 + x0**6 / 6.0 + x0 * x1 + x1**2


@register_objective("six_hump_camel")
@dataclass
class SixHumpCamel(RecordedMinima2D):
    """(4 − 2.1x² + x⁴/3)·x² + xy + (−4 + 4y²)·y²: two global minima, f ≈ −1.0316."""

    def value(self, x0, x1, constants):
        return (4.0 - 2.1 * x0**2 + x0**4 / 3.0) * x0**2 + x0 * x1 + (-4.0 + 4.0 * x1**2) * x1**2


@register_objective("rastrigin")
@dataclass
class Rastrigin(RecordedMinima2D):
    """2A + Σᵢ (xᵢ² − A·cos(2π·xᵢ)): a local minimum near every integer point; global minimum f(0, 0) = 0."""

    constant_keys = ("A",)
    inputs = ("init", "minima", "A")
    A: float = MISSING

    def build(self, seed: int) -> Problem:
        if self.A < 0:  # A < 0 turns the cosine dip at the origin into a bump, so the minimum may move away
            raise ConfigError("objective.A", f"must be >= 0 (the minimum at the origin needs it), got {self.A}")
        return super().build(seed)

    def value(self, x0, x1, constants):
        import tensorflow as tf

        A = constants["A"]  # noqa: N806 (the function's own name for it)
        ripple = tf.cos(2.0 * np.pi * x0) + tf.cos(2.0 * np.pi * x1)
        return 2.0 * A + x0**2 + x1**2 - A * ripple


@register_objective("ackley")
@dataclass
class Ackley(RecordedMinima2D):
    """−a·exp(−b·√(½Σxᵢ²)) − exp(½Σcos(c·xᵢ)) + a + e: a ripple on a cone; minimum f(0, 0) = 0."""

    constant_keys = ("a", "b", "c")
    inputs = ("init", "minima", "a", "b", "c")
    a: float = MISSING
    b: float = MISSING
    c: float = MISSING

    def build(self, seed: int) -> Problem:
        for key in ("a", "b"):  # a, b > 0 make the cone term strictly smallest at the origin, whatever c is
            if getattr(self, key) <= 0:
                raise ConfigError(f"objective.{key}", f"must be > 0, got {getattr(self, key)}")
        return super().build(seed)

    def value(self, x0, x1, constants):
        import tensorflow as tf

        a, b, c = constants["a"], constants["b"], constants["c"]
        mean_square = (x0**2 + x1**2) / 2.0
        # √ has an infinite slope at 0, so at the origin (the minimum) tf.sqrt's gradient is inf · 0 = NaN.
        # The double tf.where keeps the value exact (√0 = 0) and takes the gradient from a branch that never
        # sees 0: it is 0 at the origin (a valid subgradient of the cone there) and the true one elsewhere.
        positive = mean_square > 0.0
        radius = tf.where(positive, tf.sqrt(tf.where(positive, mean_square, 1.0)), 0.0)
        mean_cos = (tf.cos(c * x0) + tf.cos(c * x1)) / 2.0
        return -a * tf.exp(-b * radius) - tf.exp(mean_cos) + a + np.e


@register_objective("goldstein_price")
@dataclass
class GoldsteinPrice(RecordedMinima2D):
    """[1 + (x + y + 1)²·(19 − 14x + 3x² − 14y + 6xy + 3y²)]·[30 + (2x − 3y)²·(18 − 32x + 12x² + 48y − 36xy
    + 27y²)]: several local minima; global minimum f(0, −1) = 3."""

    def value(self, x0, x1, constants):
        first = 1.0 + (x0 + x1 + 1.0) ** 2 * (19.0 - 14.0 * x0 + 3.0 * x0**2 - 14.0 * x1 + 6.0 * x0 * x1 + 3.0 * x1**2)
        second = 30.0 + (2.0 * x0 - 3.0 * x1) ** 2 * (
            18.0 - 32.0 * x0 + 12.0 * x0**2 + 48.0 * x1 - 36.0 * x0 * x1 + 27.0 * x1**2
        )
        return first * second


@register_objective("mccormick")
@dataclass
class McCormick(RecordedMinima2D):
    """sin(x + y) + (x − y)² − 1.5x + 2.5y + 1: minimum f(−0.54719, −1.54719) ≈ −1.9133."""

    def value(self, x0, x1, constants):
        import tensorflow as tf

        return tf.sin(x0 + x1) + (x0 - x1) ** 2 - 1.5 * x0 + 2.5 * x1 + 1.0


@register_objective("branin")
@dataclass
class Branin(Benchmark2D):
    """a·(y − b·x² + c·x − r)² + s·(1 − t)·cos(x) + s with the standard constants: three global minima.

    The minima are where cos(x) = −1 (x = −π, π, 3π) and the square vanishes: y = r + b·x² − c·x, which gives
    the published (−π, 12.275), (π, 2.275), (3π, 2.475), each with f = s·t = 5/(4π) ≈ 0.397887.
    """

    a: ClassVar[float] = 1.0
    b: ClassVar[float] = 5.1 / (4.0 * np.pi**2)
    c: ClassVar[float] = 5.0 / np.pi
    r: ClassVar[float] = 6.0
    s: ClassVar[float] = 10.0
    t: ClassVar[float] = 1.0 / (8.0 * np.pi)

    def value(self, x0, x1, constants):
        import tensorflow as tf

        square = (x1 - self.b * x0**2 + self.c * x0 - self.r) ** 2
        return self.a * square + self.s * (1.0 - self.t) * tf.cos(x0) + self.s

    def known_minima(self) -> list[list[float]]:
        return [[x, self.r + self.b * x**2 - self.c * x] for x in (-np.pi, np.pi, 3.0 * np.pi)]


@register_objective("easom")
@dataclass
class Easom(Benchmark2D):
    """−cos(x)·cos(y)·exp(−(x − π)² − (y − π)²): flat almost everywhere; minimum f(π, π) = −1."""

    def value(self, x0, x1, constants):
        import tensorflow as tf

        return -tf.cos(x0) * tf.cos(x1) * tf.exp(-((x0 - np.pi) ** 2) - (x1 - np.pi) ** 2)

    def known_minima(self) -> list[list[float]]:
        return [[np.pi, np.pi]]


STYBLINSKI_TANG_X = -2.903534  # each coordinate of the published minimum (f = −39.16599, or −39.166166, per one)


@register_objective("styblinski_tang")
@dataclass
class StyblinskiTang(Objective):
    """½·Σᵢ (xᵢ⁴ − 16xᵢ² + 5xᵢ) over `dim` coordinates: minimum at xᵢ = −2.903534, f ≈ −39.16599·dim."""

    inputs = ("init",)
    dim: int = MISSING
    init: list[float] = MISSING  # one start value per coordinate: exactly `dim` of them
    domain: list[float] = MISSING  # [low, high]: the usual search interval, the same for every coordinate

    def build(self, seed: int) -> Problem:
        if self.dim < 1:
            raise ConfigError("objective.dim", f"must be an integer >= 1, got {self.dim}")
        if len(self.init) != self.dim:
            raise ConfigError("objective.init", f"needs objective.dim = {self.dim} values, got {len(self.init)}")
        start = finite_vector("objective.init", self.init, length=self.dim)
        self.box()
        return self.problem({"x": start}, minima=(np.full(self.dim, STYBLINSKI_TANG_X),))

    def formula(self, params, constants):
        import tensorflow as tf

        x = params["x"]
        return 0.5 * tf.math.reduce_sum(x**4 - 16.0 * x**2 + 5.0 * x)

    def box(self) -> np.ndarray:
        """`domain` checked, as a dim×2 float32 array of [low, high] rows like the 2-D functions' `box`."""
        low, high = finite_vector("objective.domain", self.domain, length=2).astype(BOX_DTYPE)
        if not low < high:
            raise ConfigError("objective.domain", f"needs [low, high] with low < high, got {list(self.domain)}")
        return np.tile([low, high], (self.dim, 1))
