"""The objective interface: a config dataclass that builds a trainable problem.

An objective's values (start values, constants, data) reach the loss as inputs, and its loss is built from
the rest of its config, its *structure*. So one traced and compiled training loop serves every run whose
objective has the same structure, whatever its values (see `tapelab.engine`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
from hydra.core.config_store import ConfigStore

from tapelab.errors import ConfigError

FLOAT32_MAX = float(np.finfo(np.float32).max)
BOX_DTYPE = np.float32  # a search box's bounds, as multi-start has always drawn its starts from them

LossFn = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
"""Maps (parameters, constants), each name -> tensor (tf.Variables while training), to the loss tensor."""


@dataclass(frozen=True)
class Problem:
    """What the engine needs from an objective.

    `start` holds the trainable parameters' start values (scalar or 1-D), in column order; `constants` the
    values the loss reads but does not train (an objective's constants, its data). Both hold the config's values
    in float64 (data an objective generates in float32 stays so), and a run casts them to its own dtype.
    `minima` holds the known global minima as flat float64 vectors over the parameter elements. `structure` names
    what `loss` is built from besides those values: two problems with the same structure and the same
    shapes share one compiled loop, so different losses must never have the same structure.
    """

    start: dict[str, np.ndarray]
    loss: LossFn
    structure: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    minima: tuple[np.ndarray, ...] = ()

    def value(self, params: Mapping[str, Any]) -> Any:
        """The loss at `params` (tensors), with this problem's constants in the parameters' dtype."""
        import tensorflow as tf

        dtype = tf.as_dtype(next(iter(params.values())).dtype) if params else tf.float32
        return self.loss(params, {name: tf.constant(value, dtype) for name, value in self.constants.items()})

    def flat_start(self) -> np.ndarray:
        """The start values as one flat vector, in column order."""
        return np.concatenate([np.ravel(value) for value in self.start.values()])

    def split(self, flat: Any, reshape: Callable[[Any, tuple[int, ...]], Any] = np.reshape) -> dict[str, Any]:
        """A flat vector back into name -> value shaped like `start` (pass tf.reshape for a tensor)."""
        values, offset = {}, 0
        for name, value in self.start.items():
            size = int(np.size(value))
            values[name] = reshape(flat[offset : offset + size], np.shape(value))
            offset += size
        return values


@dataclass
class Objective:
    """Base of every objective schema. Subclasses add their keys and implement `build` and `formula`.

    `inputs` names the keys whose values reach the loss only through `Problem.start` and `Problem.constants`.
    `formula` is called on the objective `without_inputs()`, where those keys are None, so it cannot bake one
    run's value into a loop that later runs reuse.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    starts: int = 1  # more than 1: optimise that many starts drawn from `domain` (from `seed`), as one batch
    domain: list[list[float]] | None = None  # the search box: one [low, high] pair per parameter element, or one

    def build(self, seed: int) -> Problem:
        """Check the values and return the start values, constants and loss; `seed` drives any randomness.

        Needs no TensorFlow (except for a Python objective, whose function is called once to check it).
        """
        raise NotImplementedError

    def formula(self, params: Mapping[str, Any], constants: Mapping[str, Any]) -> Any:
        """The loss from TensorFlow ops, given the parameters and constants as name -> tensor."""
        raise NotImplementedError

    def without_inputs(self) -> Objective:
        """This config with every input key (and the search box) set to None: what the loss is built from."""
        return dataclasses.replace(self, **{key: None for key in ("domain", *self.inputs)})

    def problem(
        self,
        start: dict[str, np.ndarray],
        constants: dict[str, np.ndarray] | None = None,
        minima: tuple[np.ndarray, ...] = (),
    ) -> Problem:
        """The `Problem` of these values, with the loss of this objective's structure."""
        structure = self.without_inputs()
        return Problem(start, structure.formula, repr(structure), constants or {}, minima)

    def box(self) -> np.ndarray | None:
        """`domain` checked, as float32 rows of [low, high] (one row stands for every element); None if unset."""
        if self.domain is None:
            return None
        rows = np.array([finite_vector("objective.domain", row, length=2) for row in self.domain], BOX_DTYPE)
        if rows.size == 0 or not np.all(rows[:, 0] < rows[:, 1]):
            raise ConfigError("objective.domain", f"needs [low, high] pairs with low < high, got {self.domain}")
        return rows


ObjectiveT = TypeVar("ObjectiveT", bound=type[Objective])


def register_objective(name: str) -> Callable[[ObjectiveT], ObjectiveT]:
    """Name an objective schema and store it for `conf/objective/<name>.yaml` to extend.

    The schema is stored outside any config group (as `schema_objective_<name>`), so that
    `--help` and Hydra's "available options" list only the YAML files.
    """

    def decorate(cls: ObjectiveT) -> ObjectiveT:
        cls.name = name
        ConfigStore.instance().store(name=f"schema_objective_{name}", node=cls)
        return cls

    return decorate


def finite_vector(key: str, values: float | Iterable[float], length: int | None = None) -> np.ndarray:
    """`values` as a float64 vector, refusing non-finite entries, values beyond float32 and a wrong length."""
    try:
        array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):  # ragged nesting such as [[1], [2, 3]], or a non-number
        array = None
    if array is None or array.ndim != 1:
        raise ConfigError(key, f"needs a number or a flat list of numbers, got {values!r}")
    if array.size == 0:
        raise ConfigError(key, "needs at least one number")
    if length is not None and array.size != length:
        raise ConfigError(key, f"needs exactly {length} values, got {array.size}")
    if not np.all(np.isfinite(array)) or np.any(np.abs(array) > FLOAT32_MAX):
        raise ConfigError(key, f"must be finite and within float32's range, got {array.tolist()}")
    return array


def finite_scalar(key: str, value: float) -> np.float64:
    """`value` as a float64 scalar, refusing NaN, infinities and values beyond float32."""
    return finite_vector(key, value)[0]


def minima_vectors(key: str, minima: Sequence[Sequence[float]] | None, size: int) -> tuple[np.ndarray, ...]:
    """The recorded minima as float64 vectors of the parameter size."""
    return tuple(finite_vector(key, point, size) for point in minima or ())
