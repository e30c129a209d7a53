"""Check the tape's gradient against finite differences: `python scripts/gradcheck.py [KEY=VALUE ...]`.

The config is composed exactly as for run.py (`conf/config.yaml` and the same overrides); only the objective
and `seed` are used. At the objective's start point, the gradient that training uses (float32 variables,
one tf.GradientTape) is compared, element by element, with a fourth-order central difference of the loss:

    d_i = (f(x − 2h·e_i) − 8 f(x − h·e_i) + 8 f(x + h·e_i) − f(x + 2h·e_i)) / (12 h),  h = ε^(1/5)·max(1, |x_i|)

Its truncation error is O(h⁴) and its rounding error O(ε/h); h = ε^(1/5) balances the two, so the difference
is good to about ε^(4/5) of the scale of f. The loss is evaluated in float64 (ε = 2.2e-16, h ≈ 7e-4, error
~1e-13) when it can be built on float64 tensors, and otherwise in float32 (ε = 1.2e-7, h ≈ 0.04, error
~3e-6), as for a loss that makes float32 constants of its own. (A plain two-point central difference in
float32 would only reach ε^(2/3) ≈ 2e-5, at h ≈ 5e-3.)

An element passes when |tape − fd| <= atol + rtol·max(|tape|, |fd|), like `numpy.isclose`; `rel_error` is
|tape − fd| / max(|tape|, |fd|). At a stationary point, where the gradient is ~0, relative errors mean
nothing and `atol` decides. Exit status: 0 all elements pass, 1 some do not, 2 a config mistake.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from tapelab.errors import USAGE_ERROR, ConfigError, one_line
from tapelab.objectives import Problem
from tapelab.tensorflow_start import import_tensorflow

RTOL = 1e-3  # a wrong gradient is typically off by O(1); float32 tapes and differences agree to ~1e-5
ATOL = 1e-5  # decides only where the gradient itself is about that small
MISMATCH = 1  # the exit status when some element fails


@dataclass(frozen=True)
class GradCheck:
    """The comparison: one row per parameter element, and the settings it was judged with."""

    table: pd.DataFrame  # element, value, tape, finite_difference, abs_error, rel_error, ok
    precision: str  # the dtype the finite differences were computed in: float64 or float32
    rtol: float
    atol: float

    @property
    def passed(self) -> bool:
        return bool(self.table["ok"].all())

    @property
    def max_rel_error(self) -> float:
        """The largest relative error over the elements (NaN if a difference was not finite)."""
        errors = self.table["rel_error"].to_numpy()
        return math.nan if np.isnan(errors).any() else float(errors.max())

    def report(self) -> str:
        """The table and a verdict, as text."""
        worst = self.table["rel_error"].fillna(np.inf).idxmax()
        verdict = "OK" if self.passed else "MISMATCH"
        return (
            f"{self.table.to_string(index=False)}\n"
            f"max relative error {self.max_rel_error:.3g} ({self.table['element'][worst]}), finite differences in "
            f"{self.precision}: {verdict} (rtol {self.rtol:g}, atol {self.atol:g})"
        )


def tape_gradient(problem: Problem) -> np.ndarray:
    """The flat gradient at the start, as the engine computes it: float32 variables and one tape."""
    import tensorflow as tf

    from tapelab.derivatives import flatten

    variables = {name: tf.Variable(np.asarray(value, np.float32), name=name) for name, value in problem.start.items()}
    with tf.GradientTape() as tape:
        loss = tf.cast(problem.value(variables), tf.float32)
    gradients = tape.gradient(loss, list(variables.values()), unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return flatten(gradients).numpy()


def loss_of_flat(problem: Problem) -> tuple[Callable[[np.ndarray], float], np.dtype]:
    """The loss as a function of a flat NumPy point, in float64 if the objective's ops allow it, else float32."""
    import tensorflow as tf

    def evaluate_in(dtype: Any) -> Callable[[np.ndarray], float]:
        def evaluate(flat: np.ndarray) -> float:
            parts = problem.split(np.asarray(flat, dtype.as_numpy_dtype))
            params = {name: tf.constant(part, dtype) for name, part in parts.items()}
            value = tf.convert_to_tensor(problem.value(params))
            if value.dtype != dtype:  # the loss casts or holds constants of another precision
                raise TypeError(f"the loss is {value.dtype.name}, not {dtype.name}")
            return float(value)

        return evaluate

    start = problem.flat_start().astype(np.float32)
    evaluate64 = evaluate_in(tf.float64)
    try:
        evaluate64(start.astype(np.float64))
    except (TypeError, ValueError, tf.errors.OpError):  # float32 constants or variables the loss makes
        return evaluate_in(tf.float32), np.dtype(np.float32)
    return evaluate64, np.dtype(np.float64)


def finite_differences(evaluate: Callable[[np.ndarray], float], x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The fourth-order central difference of `evaluate` at `x`, element by element (see the module doc)."""
    x = np.asarray(x, dtype)
    base = float(np.finfo(dtype).eps) ** 0.2
    gradient = np.empty(x.size, np.float64)
    for i in range(x.size):
        h = dtype.type(base * max(1.0, abs(float(x[i]))))
        values = {}
        for k in (-2, -1, 1, 2):
            shifted = x.copy()
            shifted[i] = x[i] + dtype.type(k) * h
            values[k] = evaluate(shifted)
        gradient[i] = (values[-2] - 8.0 * values[-1] + 8.0 * values[1] - values[2]) / (12.0 * float(h))
    return gradient


def check_gradient(problem: Problem, rtol: float = RTOL, atol: float = ATOL) -> GradCheck:
    """Compare the tape's gradient at the start of `problem` with finite differences."""
    from tapelab.engine.layout import element_columns

    tape = tape_gradient(problem).astype(np.float64)
    evaluate, dtype = loss_of_flat(problem)
    start = problem.flat_start().astype(np.float32)  # where the tape's gradient is taken
    fd = finite_differences(evaluate, start, dtype)
    abs_error = np.abs(tape - fd)
    scale = np.maximum(np.abs(tape), np.abs(fd))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_error = np.where(abs_error == 0, 0.0, abs_error / scale)
    table = pd.DataFrame(
        {
            "element": element_columns(problem.start),
            "value": start.astype(np.float64),
            "tape": tape,
            "finite_difference": fd,
            "abs_error": abs_error,
            "rel_error": rel_error,
            "ok": abs_error <= atol + rtol * scale,  # False for NaN
        }
    )
    return GradCheck(table, dtype.name, rtol, atol)


def check_config(cfg: DictConfig, rtol: float = RTOL, atol: float = ATOL) -> tuple[str, GradCheck]:
    """Check the objective of a composed run.py config at its start (built with the config's seed).

    Returns the objective's name and the comparison.
    """
    from tapelab.config import to_experiment

    experiment = to_experiment(cfg)
    import_tensorflow()
    return experiment.objective.name, check_gradient(experiment.objective.build(experiment.seed), rtol, atol)


def main(argv: Sequence[str] | None = None) -> int:
    """`python scripts/gradcheck.py [--rtol R] [--atol A] [KEY=VALUE ...]`; returns the exit status."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from tapelab.cli import CONFIG_MODULE, configure_process
    from tapelab.config import register_configs

    parser = argparse.ArgumentParser(
        prog="gradcheck.py",
        description="Compare the tape's gradient at the objective's start with finite differences. "
        "Exit status 0: they agree; 1: some element does not; 2: a config mistake.",
    )
    parser.add_argument("overrides", nargs="*", help="run.py's KEY=VALUE overrides, e.g. objective=rosenbrock")
    parser.add_argument("--rtol", type=float, default=RTOL, help=f"relative tolerance (default {RTOL:g})")
    parser.add_argument("--atol", type=float, default=ATOL, help=f"absolute tolerance (default {ATOL:g})")
    args = parser.parse_intermixed_args(argv)
    for name in ("rtol", "atol"):
        if not 0 <= getattr(args, name) < math.inf:
            parser.error(f"--{name} must be a finite number >= 0, got {getattr(args, name)}")
    configure_process()
    register_configs()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3", job_name="gradcheck"):
            cfg = compose(config_name="config", overrides=list(args.overrides))
        name, result = check_config(cfg, args.rtol, args.atol)
    except (ConfigError, HydraException, OmegaConfBaseException) as error:
        print(f"Error in config: {one_line(error)}", file=sys.stderr)
        return USAGE_ERROR
    print(f"gradcheck of {name} at its start:")
    print(result.report())
    return 0 if result.passed else MISMATCH
