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
from omegaconf.errors import OmegaConfBaseException

from tapelab.config import Experiment, to_experiment
from tapelab.errors import ConfigError
from tapelab.objectives import Objective, Problem
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
    experiment: Experiment = dataclasses.field(compare=False, repr=False)  # the overrides', at a learning rate of 1


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


def keras_default_lr(optimizer: Any) -> float | None:
    """The default learning rate of the Keras class behind an optimizer, or None for tapelab's own (gd, newton)."""
    import inspect

    from tapelab.tensorflow_start import import_tensorflow

    keras_class = getattr(type(optimizer), "keras_class", None)
    if keras_class is None:
        return None
    import_tensorflow()
    import keras

    return float(inspect.signature(getattr(keras.optimizers, keras_class)).parameters["learning_rate"].default)


def problem_overrides(problem: DictConfig, dtype: str) -> list[str]:
    """run.py's overrides for a problem's runs, but the optimizer's, the lr, the seed and the start."""
    overrides = [f"objective={problem.objective}"]
    overrides += [f"objective.{key}={override_value(value)}" for key, value in plain(problem.settings).items()]
    return [*overrides, f"dtype={dtype}", f"epochs={problem.budget}", *EXACT]


def optimizer_overrides(optimizer: OptimizerEntry) -> list[str]:
    """run.py's overrides for an optimizer of the study, with its fixed keys."""
    settings = [f"optimizer.{key}={override_value(value)}" for key, value in optimizer.keys.items()]
    return [f"optimizer={optimizer.option}", *settings]


def plan_groups(study: DictConfig, compose: Callable[[list[str]], DictConfig]) -> list[Group]:
    """Every group of the study, in the config's order, each checked as run.py would check its runs."""
    grid = learning_rates(study.lr.low, study.lr.high, study.lr.per_decade)
    seeds = [(seed, TUNING) for seed in range(study.seeds.tuning)]
    seeds += [(study.seeds.tuning + n, EVALUATION) for n in range(study.seeds.evaluation)]
    if study.seeds.tuning < 1 or study.seeds.evaluation < 1:
        raise ConfigError("study.seeds", f"needs at least one tuning and one evaluation seed, got {study.seeds}")
    if study.dtype not in ("float32", "float64"):
        raise ConfigError("study.dtype", f"must be float32 or float64, got {study.dtype!r}")
    measured = {key: study.targets[key] for key in ("count", "high", "low")}  # the primary one changes no run
    primary_target_index(study)  # refused here, before anything trains, if it isn't a target
    optimizers = optimizer_entries(plain(study.optimizers))
    problems = {name: problem_config(name, node) for name, node in study.problems.items()}
    # Every check before TensorFlow is imported; one compose per problem and per optimizer, not per group.
    problem_cfgs = {name: composed(compose, problem_overrides(problem, study.dtype), name, None)
                    for name, problem in problems.items()}  # fmt: skip
    optimizer_nodes = {entry.name: composed(compose, optimizer_overrides(entry), None, entry).optimizer
                       for entry in optimizers}  # fmt: skip
    groups = []
    for name, problem in problems.items():
        for optimizer in optimizers:
            cfg = problem_cfgs[name].copy()
            cfg.optimizer = optimizer_nodes[optimizer.name]
            experiment = checked_experiment(cfg, name, optimizer)
            default = keras_default_lr(experiment.optimizer) if study.lr.keras_default else None
            lrs = sorted({*grid, *([default] if default is not None else [])})
            members = tuple(Member(lr, seed, role, lr in grid, lr == default) for lr in lrs for seed, role in seeds)
            overrides = [*problem_overrides(problem, study.dtype), *optimizer_overrides(optimizer)]
            described = {"problem": name, "spec": plain(problem), "optimizer": dataclasses.asdict(optimizer),
                         "members": [dataclasses.astuple(m) for m in members], "targets": measured,
                         "config": plain(cfg.objective) | {"optimizer": plain(cfg.optimizer)}}  # fmt: skip
            key = hashlib.sha1(json.dumps([described, overrides], sort_keys=True).encode()).hexdigest()[:12]
            group = Group(name, optimizer, problem.budget, problem.group, tuple(overrides), members, key, experiment)
            groups.append(group)
    return groups


def problem_config(name: str, node: Any) -> DictConfig:
    """A study's problem, checked against `ProblemConfig`."""
    from omegaconf.errors import OmegaConfBaseException

    from tapelab.study.schema import ProblemConfig

    try:
        return OmegaConf.merge(OmegaConf.structured(ProblemConfig), node)
    except OmegaConfBaseException as mistake:
        raise ConfigError(f"study.problems.{name}", ConfigError.of(mistake).args[0]) from None


def plain(node: Any) -> Any:
    """A config node as plain Python values."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def composed(compose: Callable[[list[str]], DictConfig], overrides: list[str], problem: str | None,
             optimizer: OptimizerEntry | None) -> DictConfig:  # fmt: skip
    """The config of `overrides` at a learning rate of 1; a mistake names the study's key it comes from."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose([*overrides, "lr=1.0"])
    except (OmegaConfBaseException, HydraException) as error:
        raise study_mistake(ConfigError.of(error), problem, optimizer) from None


def problem_shape(objective: Objective) -> Problem:
    """The objective's problem at its own start, for the names and shapes of its parameters; where that start
    doesn't fit the objective's size (Styblinski–Tang with a new `dim`), at the middle of its box."""
    try:
        return objective.build(0)
    except ConfigError as mistake:
        box = objective.box()
        if mistake.key != "objective.init" or box is None or len(box) == 1:
            raise
        return dataclasses.replace(objective, init=box.mean(axis=1).tolist()).build(0)


def checked_experiment(cfg: DictConfig, problem: str, optimizer: OptimizerEntry) -> Experiment:
    """A group's config checked as run.py checks a run's, and for a domain to draw start points from."""
    try:
        experiment = to_experiment(cfg)
        experiment.optimizer.check(int(problem_shape(experiment.objective).flat_start().size))
        box = experiment.objective.box()
    except (ConfigError, OmegaConfBaseException) as error:
        raise study_mistake(ConfigError.of(error), problem, optimizer) from None
    if box is None:
        raise ConfigError(f"study.problems.{problem}.settings.domain",
                          "a study draws its start points from the objective's domain: give one [low, high] pair, "
                          "or one per parameter element")  # fmt: skip
    return experiment


def primary_target_index(study: DictConfig) -> int:
    """Which of the study's targets is the primary one; ConfigError if it is none of them."""
    found = np.flatnonzero(np.isclose(study_targets(study), study.targets.primary, rtol=1e-9, atol=0))
    if len(found) != 1:
        raise ConfigError("study.targets.primary", f"must be one of the targets, got {study.targets.primary}")
    return int(found[0])


def study_mistake(mistake: ConfigError, problem: str | None, optimizer: OptimizerEntry | None) -> ConfigError:
    """A run's config mistake, named by the study key it comes from."""
    if mistake.key == "epochs" and problem is not None:
        return ConfigError(f"study.problems.{problem}.budget", mistake.problem)
    if mistake.key.startswith("optimizer") and optimizer is not None:
        return ConfigError(f"study.optimizers ({optimizer.name}: {mistake.key})", mistake.problem)
    return ConfigError(f"study.problems.{problem} ({mistake.key})", mistake.problem)


def start_keys(objective: Any, start: dict[str, np.ndarray]) -> dict[str, Any]:
    """The objective's keys that make it start at `start` (name -> value), by the type of its `init`: a list, a
    number, or a mapping of names (an expression's, a Python function's); or one `init_<name>` per parameter."""
    types = {field.name: str(field.type) for field in dataclasses.fields(objective)}
    values = {name: value.tolist() for name, value in start.items()}
    if types.get("init", "").startswith("list"):
        return {"init": [number for value in values.values() for number in np.ravel(value).tolist()]}
    if types.get("init") == "float":
        (only,) = values.values()
        return {"init": float(np.ravel(only)[0])}
    if "init" in types:
        return {"init": values}
    if all(f"init_{name}" in types for name in values):
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
