"""Your own loss as a Python function: `objective=python objective.function=pkg.module.function`.

The function takes a mapping name -> tf.Variable (the parameters of `init`, in that order) and returns
the scalar loss tensor, built from TensorFlow ops. It is looked up with `hydra.utils.get_method`, so its
module must be importable: installed, or on PYTHONPATH (`python run.py` does not add the working directory).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hydra.utils import get_method
from omegaconf import MISSING

from tapelab.errors import ConfigError
from tapelab.objectives.base import Objective, Problem, finite_vector, register_objective
from tapelab.objectives.expression import check_column_names
from tapelab.tensorflow_start import import_tensorflow

INIT_EXAMPLE = "objective.init={w: [1.0, -3.0], b: 0.5}"


class _Quiet(logging.Filter):
    """get_method logs the error it raises; tapelab reports it once, as a ConfigError."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet_hydra_utils() -> Iterator[None]:
    logger, quiet = logging.getLogger("hydra.utils"), _Quiet()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def resolve_function(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """The callable at the dotted `path`, or ConfigError("objective.function") saying what is wrong."""
    if not isinstance(path, str) or not path.strip() or "." not in path:
        raise ConfigError(
            "objective.function",
            f"must be the dotted path of your loss function, like my_package.losses.bowl, got {path!r}",
        )
    import_tensorflow()  # before the user's module imports it, so that it starts quietly
    try:
        with _quiet_hydra_utils():
            return get_method(path.strip())
    except (ImportError, ValueError) as error:
        problem = " ".join(str(error).split())  # the lookup's message spans lines
        module_name, _, attribute = path.strip().rpartition(".")
        module = sys.modules.get(module_name)
        if module is not None and not hasattr(module, attribute):  # the module loaded: only the name is wrong
            problem = f"module {module_name} ({getattr(module, '__file__', None)}) has no attribute {attribute!r}"
        elif "No module named" in problem:
            problem += " (install it, or put its folder on PYTHONPATH, e.g. PYTHONPATH=. for the current directory)"
        raise ConfigError("objective.function", f"cannot use {path!r} as the loss function: {problem}") from None


def start_values(init: Any) -> dict[str, np.ndarray]:
    """`init` as name -> float64 scalar or vector, in the given order."""
    if not isinstance(init, Mapping) or not init:
        raise ConfigError("objective.init", f"must map each parameter name to a number or a list, e.g. {INIT_EXAMPLE}")
    start: dict[str, np.ndarray] = {}
    for name, value in init.items():
        key = f"objective.init.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError("objective.init", f"parameter names must be Python identifiers, got {name!r}")
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        is_list = isinstance(value, (list, tuple)) and all(
            isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
        )
        if not (is_number or is_list):
            raise ConfigError(key, f"must be a number or a list of numbers, got {value!r}")
        vector = finite_vector(key, value)
        start[name] = vector[0] if is_number else vector
    check_column_names("objective.init", start)
    return start


@register_objective("python")
@dataclass
class PythonFunction(Objective):
    """Any loss written in Python: `function(params)` with params a mapping name -> tf.Variable."""

    inputs = ("init",)
    function: str = MISSING
    init: Any = MISSING  # name -> float or list of floats (a union OmegaConf can't type)

    def build(self, seed: int) -> Problem:
        start = start_values(self.init)
        function = resolve_function(self.function)
        check_returns_a_scalar(self.function, function, start)
        return self.problem(start)

    def formula(self, params, constants):
        return resolve_function(self.function)(params)


def check_returns_a_scalar(path: str, function: Callable[[Mapping[str, Any]], Any], start: dict[str, Any]) -> None:
    """Call the function once, eagerly, at the start values: it must give a floating-point scalar.

    This catches a wrong signature or return value with a clear message before anything is written; errors
    raised by the function itself are left as they are, with their traceback.
    """
    import tensorflow as tf

    try:
        inspect.signature(function).bind(start)
    except TypeError:
        raise ConfigError(
            "objective.function", f"{path} must take one argument, the mapping name -> tf.Variable"
        ) from None
    except ValueError:  # some built-ins have no signature to check; calling them will tell
        pass

    # In float32, the default dtype: build does not know the run's (a float64 run traces the function again).
    variables = {name: tf.Variable(np.asarray(value, np.float32), name=name) for name, value in start.items()}
    value = function(variables)
    try:
        tensor = tf.convert_to_tensor(value)
    except (TypeError, ValueError):
        raise ConfigError(
            "objective.function", f"{path} must return a scalar loss tensor, got {type(value).__name__}"
        ) from None
    if tensor.shape.rank != 0 or not tensor.dtype.is_floating:
        raise ConfigError(
            "objective.function",
            f"{path} must return a floating-point scalar loss, got shape {tensor.shape.as_list()} "
            f"and dtype {tensor.dtype.name}; reduce it, e.g. with tf.reduce_sum",
        )
