"""Linear regression ŷ = w·x + b on synthetic points, with a Keras loss."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from omegaconf import MISSING

from tapelab.errors import ConfigError
from tapelab.objectives.base import Objective, Problem, finite_scalar, finite_vector, register_objective

MAX_POINTS = 10_000_000  # the data lives in memory (and is read at every step): refuse sizes that can't fit


class RegressionLoss(Enum):
    """The Keras losses a regression can use (each is a mean over the points)."""

    mse = "mse"
    mae = "mae"
    huber = "huber"


@register_objective("linear_regression")
@dataclass
class LinearRegression(Objective):
    """Fit w and b to y = true_w·x + true_b + noise·N(0, 1).

    Randomness comes from `seed`, in this order: the noise, then the start values left null. The data are
    constants of the loss, so only `loss` (and the number of points) shapes the compiled loop. They are float32
    in every run, so that a float64 run fits the same points as a float32 one.
    """

    inputs = ("x", "n_points", "x_range", "true_w", "true_b", "noise", "huber_delta", "init_w", "init_b")
    x: list[float] = MISSING
    n_points: int | None = MISSING
    x_range: list[float] = MISSING
    true_w: float = MISSING
    true_b: float = MISSING
    noise: float = MISSING
    loss: RegressionLoss = MISSING
    huber_delta: float = MISSING
    init_w: float | None = MISSING
    init_b: float | None = MISSING

    def points(self) -> np.ndarray:
        """The inputs x in float32: the listed ones, or `n_points` spread evenly over `x_range`."""
        if self.n_points is None:
            if not self.x:
                raise ConfigError("objective.x", "the data set is empty; list at least one point or set n_points")
            return finite_vector("objective.x", self.x).astype(np.float32)
        if not 1 <= self.n_points <= MAX_POINTS:
            raise ConfigError("objective.n_points", f"must be >= 1 and <= {MAX_POINTS:,}, got {self.n_points}")
        low, high = finite_vector("objective.x_range", self.x_range, length=2).astype(np.float32)
        if not low < high:
            raise ConfigError("objective.x_range", f"needs low < high, got {list(self.x_range)}")
        return np.linspace(low, high, self.n_points, dtype=np.float32)

    def build(self, seed: int) -> Problem:
        if self.huber_delta <= 0:
            raise ConfigError("objective.huber_delta", f"must be > 0, got {self.huber_delta}")
        x = self.points()
        rng = np.random.default_rng(seed)
        noise = self.noise * rng.standard_normal(x.size)
        targets = self.true_w * x + self.true_b + noise
        y = finite_vector("objective (targets true_w·x + true_b + noise)", targets).astype(np.float32)
        start = {
            name: finite_scalar(f"objective.init_{name}", rng.uniform() if value is None else value)
            for name, value in (("w", self.init_w), ("b", self.init_b))
        }
        minima = self.least_squares(x, y) if self.loss is RegressionLoss.mse else ()
        constants = {"x": x, "y": y, "huber_delta": finite_scalar("objective.huber_delta", self.huber_delta)}
        return self.problem(start, constants, minima)

    def formula(self, params, constants):
        """The Keras loss (a mean over the points) of ŷ = w·x + b against y."""
        import keras

        targets, predictions = constants["y"], params["w"] * constants["x"] + params["b"]
        if self.loss is RegressionLoss.huber:
            return keras.losses.huber(targets, predictions, delta=constants["huber_delta"])
        if self.loss is RegressionLoss.mae:
            return keras.losses.mean_absolute_error(targets, predictions)
        return keras.losses.mean_squared_error(targets, predictions)

    @staticmethod
    def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """The (w, b) that minimise the mean squared error, when it is unique, in float64."""
        design = np.stack([x, np.ones_like(x)], axis=1).astype(np.float64)
        if np.linalg.matrix_rank(design) < 2:
            return ()
        solution, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
        return (solution,)
