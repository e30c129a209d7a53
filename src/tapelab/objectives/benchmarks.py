"""Standard 2-D optimisation test functions with their published global minima.

Formulas and minima follow the Virtual Library of Simulation Experiments
(https://www.sfu.ca/~ssurjano/optimization.html).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from omegaconf import MISSING

from tapelab.errors import ConfigError
from tapelab.objectives.base import Objective, Problem, finite_vector, minima_vectors, register_objective


@dataclass
class Benchmark2D(Objective):
    """A function of x = (x[0], x[1]) with known global minima."""

    init: list[float] = MISSING
    domain: list[list[float]] = MISSING  # [[x0 low, x0 high], [x1 low, x1 high]]: the usual search box
    minima_key: ClassVar[str] = "objective.minima"  # the key an unusable minimum is blamed on

    def value(self, x0, x1):
        """The function at (x0, x1), built from TensorFlow ops."""
        raise NotImplementedError

    def known_minima(self) -> list[list[float]]:
        """The global minima."""
        raise NotImplementedError

    def box(self) -> np.ndarray:
        """`domain` as a checked 2×2 array of [low, high] rows."""
        rows = [finite_vector("objective.domain", row, length=2) for row in self.domain]
        if len(rows) != 2 or not all(low < high for low, high in rows):
            raise ConfigError("objective.domain", f"needs two [low, high] pairs with low < high, got {self.domain}")
        return np.array(rows)

    def build(self, seed: int) -> Problem:
        start = finite_vector("objective.init", self.init, length=2)
        self.box()

        def loss(params):
            return self.value(params["x"][0], params["x"][1])

        return Problem({"x": start}, loss, minima_vectors(self.minima_key, self.known_minima(), 2))


@dataclass
class RecordedMinima2D(Benchmark2D):
    """A 2-D function whose YAML records its published global minima under `minima`."""

    minima: list[list[float]] = MISSING

    def known_minima(self) -> list[list[float]]:
        return [list(point) for point in self.minima]


@register_objective("rosenbrock")
@dataclass
class Rosenbrock(Benchmark2D):
    """(a − x)² + b·(y − x²)²; the global minimum (a, a²) follows from `a`."""

    a: float = MISSING
    b: float = MISSING
    minima_key: ClassVar[str] = "objective.a"

    def value(self, x0, x1):
        return (self.a - x0) ** 2 + self.b * (x1 - x0**2) ** 2

    def known_minima(self) -> list[list[float]]:
        return [[self.a, self.a**2]]


@register_objective("himmelblau")
@dataclass
class Himmelblau(RecordedMinima2D):
    """(x² + y − 11)² + (x + y² − 7)²: four global minima, all with f = 0."""

    def value(self, x0, x1):
        return (x0**2 + x1 - 11.0) ** 2 + (x0 + x1**2 - 7.0) ** 2


@register_objective("beale")
@dataclass
class Beale(RecordedMinima2D):
    """(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²: minimum f(3, 0.5) = 0."""

    def value(self, x0, x1):
        return (1.5 - x0 + x0 * x1) ** 2 + (2.25 - x0 + x0 * x1**2) ** 2 + (2.625 - x0 + x0 * x1**3) ** 2


@register_objective("booth")
@dataclass
class Booth(RecordedMinima2D):
    """(x + 2y − 7)² + (2x + y − 5)²: minimum f(1, 3) = 0."""

    def value(self, x0, x1):
        return (x0 + 2.0 * x1 - 7.0) ** 2 + (2.0 * x0 + x1 - 5.0) ** 2
