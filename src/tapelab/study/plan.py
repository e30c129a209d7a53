"""A study's plan: its groups (one problem and one optimizer each, trained as one batch), each group's members
(a learning rate and a seed each), and the `run.py` command that reproduces each member alone."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tapelab.config import Experiment, to_experiment
from tapelab.errors import ConfigError
from tapelab.objectives import Problem
from tapelab.study.measures import targets

TUNING, EVALUATION = "tuning", "evaluation"
# What reproduces a member alone bit for bit: a batch's members train under XLA, and every step is written.
EXACT = ("jit_compile=true", "log.max_rows=null")


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer of the study: its name in the tables, its option of conf/optimizer and its fixed keys."""

    name: str
    option: str
    keys: dict[str, Any]


@dataclass(frozen=True)
class Member:
    """One run of a group: a learning rate and a seed."""

    lr: float
    seed: int
    role: str  # TUNING or EVALUATION, by the seed
    on_grid: bool  # the learning rate is a point of the study's grid
    keras_default: bool  # the learning rate is the Keras optimizer's default


@dataclass(frozen=True)
class Group:
    """One problem and one optimizer: its members train as one batch. `key` names its results, from everything
    they depend on (not from the order of the study's problems and optimizers)."""

    problem: str
    optimizer: OptimizerEntry
    budget: int
    problem_group: str | None
    overrides: tuple[str, ...]  # run.py's overrides that every member shares
    members: tuple[Member, ...]
    key: str


def override_value(value: Any) -> str:
    """A plain value in Hydra's override grammar, so that it reads back exactly (floats by their repr)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value)) if isinstance(value, (float, np.floating)) else str(int(value))
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no override syntax for {value!r}")


def learning_rates(low: float, high: float, per_decade: int) -> list[float]:
    """The grid 10^(k / per_decade) from `low` to `high`, both included when they fall on it."""
    if not (0 < low <= high and per_decade >= 1):
        raise ConfigError("study.lr", f"needs 0 < low <= high and per_decade >= 1, got {low}, {high}, {per_decade}")
    first, last = math.ceil(math.log10(low) * per_decade - 1e-9), math.floor(math.log10(high) * per_decade + 1e-9)
    return [10.0 ** (k / per_decade) for k in range(first, last + 1)]


def optimizer_entries(entries: list[Any]) -> list[OptimizerEntry]:
    """The study's optimizers: a name of conf/optimizer, or {name, optimizer, settings}."""
    found = []
    for entry in entries:
        if isinstance(entry, str):
            found.append(OptimizerEntry(entry, entry, {}))
        elif isinstance(entry, dict) and "optimizer" in entry and set(entry) <= {"name", "optimizer", "settings"}:
            found.append(
                OptimizerEntry(entry.get("name", entry["optimizer"]), entry["optimizer"], entry.get("settings", {}))
            )
        else:
            raise ConfigError("study.optimizers", f"each is a name or {{name, optimizer, settings}}, got {entry}")
    names = [entry.name for entry in found]
    if len(set(names)) < len(names) or not names:
        raise ConfigError("study.optimizers", f"needs distinct names, at least one, got {names}")
    return found


def keras_default_lr(option: str, optimizer: Any) -> float | None:
    """The default learning rate of the Keras class behind an optimizer, or None for tapelab's own (gd, newton)."""
    import inspect

    keras_class = getattr(type(optimizer), "keras_class", None)
    if keras_class is None:
        return None
    import keras

    return float(inspect.signature(getattr(keras.optimizers, keras_class)).parameters["learning_rate"].default)


def shared_overrides(problem: DictConfig, optimizer: OptimizerEntry, dtype: str) -> list[str]:
    """run.py's overrides for every member of a (problem, optimizer) group, but its lr, seed and start."""
    overrides = [f"objective={problem.objective}"]
    overrides += [f"objective.{key}={override_value(value)}" for key, value in plain(problem.settings).items()]
    overrides += [f"optimizer={optimizer.option}"]
    overrides += [f"optimizer.{key}={override_value(value)}" for key, value in optimizer.keys.items()]
    return [*overrides, f"dtype={dtype}", f"epochs={problem.budget}", *EXACT]


def plan_groups(study: DictConfig, compose: Callable[[list[str]], DictConfig]) -> list[Group]:
    """Every group of the study, in the config's order, each checked as run.py would check its runs."""
    grid = learning_rates(study.lr.low, study.lr.high, study.lr.per_decade)
    seeds = [(seed, TUNING) for seed in range(study.seeds.tuning)]
    seeds += [(study.seeds.tuning + n, EVALUATION) for n in range(study.seeds.evaluation)]
    if study.seeds.tuning < 1 or study.seeds.evaluation < 1:
        raise ConfigError("study.seeds", f"needs at least one tuning and one evaluation seed, got {study.seeds}")
    if study.dtype not in ("float32", "float64"):
        raise ConfigError("study.dtype", f"must be float32 or float64, got {study.dtype!r}")
    measured = plain(study.targets)
    groups = []
    for name, problem in study.problems.items():
        for optimizer in optimizer_entries(plain(study.optimizers)):
            overrides = shared_overrides(problem, optimizer, study.dtype)
            base = base_experiment(compose, overrides, f"study.problems.{name}")
            default = keras_default_lr(optimizer.option, base.optimizer) if study.lr.keras_default else None
            lrs = sorted({*grid, *([default] if default is not None else [])})
            members = tuple(Member(lr, seed, role, lr in grid, lr == default) for lr in lrs for seed, role in seeds)
            described = {"problem": name, "spec": plain(problem), "optimizer": dataclasses.asdict(optimizer),
                         "members": [dataclasses.astuple(m) for m in members], "targets": measured}  # fmt: skip
            key = hashlib.sha1(json.dumps([described, overrides], sort_keys=True).encode()).hexdigest()[:12]
            groups.append(Group(name, optimizer, problem.budget, problem.group, tuple(overrides), members, key))
    return groups


def plain(node: Any) -> Any:
    """A config node as plain Python values."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def base_experiment(compose: Callable[[list[str]], DictConfig], overrides: list[str], key: str) -> Experiment:
    """The group's experiment at the first learning rate, checked as run.py checks it; a mistake names the
    study's key."""
    try:
        return to_experiment(compose([*overrides, "lr=1.0"]))
    except ConfigError as mistake:
        raise ConfigError(f"{key} ({mistake.key})", mistake.problem) from None


def start_keys(objective: Any, start: dict[str, np.ndarray]) -> dict[str, Any]:
    """The objective's keys that make it start at `start` (name -> value): `init` as a list, a number or a
    mapping, or one `init_<name>` per parameter."""
    fields = {field.name for field in dataclasses.fields(objective)}
    values = {name: value.tolist() for name, value in start.items()}
    if "init" in fields:
        current = objective.init
        if isinstance(current, dict) or current is None and len(values) > 1:
            return {"init": values}
        (only,) = values.values()
        return {"init": only}
    if all(f"init_{name}" in fields for name in values):
        return {f"init_{name}": value for name, value in values.items()}
    raise ConfigError("study.problems", f"objective {objective.name} has no start key a study can set")


def member_problem(objective: Any, flat_start: np.ndarray, seed: int, like: Problem) -> tuple[Problem, dict]:
    """The problem of one member, built as run.py builds it from the member's command; and its start keys."""
    keys = start_keys(objective, like.split(flat_start))
    return dataclasses.replace(objective, **keys).build(seed), keys


def draw_start(box: np.ndarray, seed: int, dtype: str) -> np.ndarray:
    """A seed's start point, uniform in the problem's box: the same for every optimizer of the study."""
    return np.random.default_rng([seed, 0x57D]).uniform(box[:, 0], box[:, 1]).astype(dtype)


def study_targets(study: DictConfig) -> np.ndarray:
    """The study's target precisions."""
    return targets(study.targets.count, study.targets.high, study.targets.low)
