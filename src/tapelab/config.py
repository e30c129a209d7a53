"""The typed top-level config, its registration with Hydra, and the checks types can't express."""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from tapelab.errors import ConfigError, unknown_key
from tapelab.objectives import Objective
from tapelab.objectives.base import FLOAT32_MAX
from tapelab.optimizers import OptimizerConfig


@dataclass
class LogConfig:
    """What a run writes besides summary.json."""

    every: int = 1  # write every N-th step to CSV and TensorBoard; the final step always
    max_rows: int | None = 10_000  # raise `every` so that a run writes at most about this many rows; null: no cap
    tensorboard: bool = True  # event files: scalars, histograms, graph, hparams
    graph: bool = True  # export the train loop's graph to TensorBoard's Graphs tab
    plots: bool = True  # loss.png, trajectory.png (two parameters), and the same as TensorBoard images


@dataclass
class StopConfig:
    """Early stopping with status `converged`; every rule is off while its key is null."""

    grad_tol: float | None = None  # stop once the gradient's global norm is <= grad_tol
    loss_tol: float | None = None  # progress means the loss falls below the best so far by more than loss_tol
    patience: int | None = None  # stop after this many steps without progress

    def active(self) -> bool:
        """Whether any rule is on."""
        return self.grad_tol is not None or self.plateau_active()

    def plateau_active(self) -> bool:
        """Whether the no-progress rule is on (loss_tol alone means patience 1, patience alone loss_tol 0)."""
        return self.loss_tol is not None or self.patience is not None

    def min_progress(self) -> float:
        """How far the loss must fall below the best so far to count as progress."""
        return self.loss_tol or 0.0

    def steps_without_progress(self) -> int:
        """How many steps without progress end the run."""
        return self.patience or 1


@dataclass
class Config:
    """The primary config (conf/config.yaml extends it)."""

    objective: Any = MISSING
    optimizer: Any = MISSING
    lr: float = MISSING
    epochs: int = MISSING
    seed: int = MISSING
    jit_compile: Any = "auto"  # auto, true or false (OmegaConf has no union of str and bool)
    dtype: str = "float32"  # of the parameters, the optimizer's slots and hyperparameters, and the loss
    resume: bool = False
    stop: StopConfig = field(default_factory=StopConfig)
    log: LogConfig = field(default_factory=LogConfig)
    study: Any = None  # an option of conf/study: a study instead of one run (tapelab.study)


@dataclass(frozen=True)
class Experiment:
    """A checked config, with the objective and optimizer schemas as objects."""

    objective: Objective
    optimizer: OptimizerConfig
    lr: float
    epochs: int
    seed: int
    jit_compile: bool | None  # None: auto, decided from the run's size (tapelab.engine.compiled.wants_xla)
    stop: StopConfig
    log: LogConfig
    dtype: str = "float32"

    def log_every(self) -> int:
        """The effective `log.every`: raised, if needed, so that at most about `log.max_rows` rows are written."""
        if self.log.max_rows is None:
            return self.log.every
        return max(self.log.every, -(-self.epochs // self.log.max_rows))

    def describe(self) -> dict[str, Any]:
        """The run's hyperparameters as plain values, as summary.json records them."""
        return {
            "objective": self.objective.name,
            "optimizer": self.optimizer.name,
            "lr": self.lr,
            "epochs": self.epochs,
            "seed": self.seed,
            "dtype": self.dtype,
            "stop": dataclasses.asdict(self.stop),
            "objective_params": plain_values(self.objective),
            "optimizer_params": self.optimizer.hyperparameters(),
        }


def plain_values(schema: Any) -> dict[str, Any]:
    """A config dataclass's fields as JSON-ready values (enums by their value)."""
    return {key: value.value if isinstance(value, Enum) else value for key, value in dataclasses.asdict(schema).items()}


# tapelab's own Hydra plugins (src/hydra_plugins), by module and class.
PLUGINS = {
    "hydra_plugins.tapelab_sweeper.grid_sweeper": "GridSweeper",
    "hydra_plugins.tapelab_ray_launcher.ray_launcher": "PrivateClusterRayLauncher",
    "hydra_plugins.tapelab_batched_launcher.batched_launcher": "BatchedLauncher",
}


def register_configs() -> None:
    """What Hydra needs before it composes tapelab's config: the primary schema (importing the objectives and
    optimizers stores theirs), the resolvers of `hydra.output_subdir`, `hydra.sweep.subdir` and `hydra.help`
    (conf/config.yaml) and tapelab's plugins.

    Hydra's plugin scan finds the plugins of an installed tapelab, but it can't see into an editable install,
    whose packages setuptools serves through an import hook: those are registered here.
    """
    from hydra.core.plugins import Plugins

    from tapelab.extras import options_not_installed
    from tapelab.resume import saved_config_subdir
    from tapelab.study import schema  # noqa: F401 (stores the study group's schema)

    ConfigStore.instance().store(name="schema_config", node=Config)
    plugins = Plugins.instance()  # the scan
    for module, name in PLUGINS.items():
        if f"{module}.{name}" not in plugins.class_name_to_class:
            plugins.register(getattr(importlib.import_module(module), name))
    # Keep a run's saved config when it continues, and a skipped job's files.
    OmegaConf.register_new_resolver("tapelab_saved_config_dir", saved_config_subdir, replace=True)
    OmegaConf.register_new_resolver("tapelab_job_dir", job_dir_name, replace=True)
    # --help: the program's own name, and tapelab's options that need an extra not installed here.
    OmegaConf.register_new_resolver("tapelab_command", command_name, replace=True)
    OmegaConf.register_new_resolver("tapelab_options_not_installed", options_not_installed, replace=True)


def command_name() -> str:
    """How the user started this program: `python run.py`, or `tapelab` (the console script)."""
    program = Path(sys.argv[0]).name
    return f"python {program}" if program.endswith(".py") else program


def job_dir_name(override_dirname: str, job_number: int) -> str:
    """A sweep job's directory name: its swept values and its number (`lr=0.1,optimizer=adam_3`), or the number
    alone when the sweep varies nothing."""
    return f"{override_dirname}_{job_number}" if override_dirname else str(job_number)


DTYPES = ("float32", "float64")
MAX_STEPS = 2**62  # step numbers are int64 inside the graph
MAX_STARTS = 1_000_000


def check_added_keys(config: DictConfig) -> None:
    """Refuse an override that adds a key tapelab's schema doesn't know (`+epoch=10`, `++log.nope=1`, and sweeps
    of them), naming the known keys beside it.

    `config` is the config Hydra composed, with its `hydra` node. A node that is a schema (a dataclass) takes
    no new key; one that is open on purpose does (an expression's `init`, a Python objective's). `+group=option`
    adds an option of a config group, such as a user's own. Overrides of `hydra.` are Hydra's, not among the
    task's (`hydra.overrides.task`) that this checks.
    """
    from tapelab.overrides import parse_overrides

    is_group = config_groups(config)
    overrides = parse_overrides(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    # A sweep's config holds the first option of a group it sweeps (`-m optimizer=adam,nadam` composes sgd's
    # schema): keys under such a group are each job's to check, when its own option is composed.
    swept_groups = {o.key_or_group for o in overrides if o.is_sweep_override() and is_group(o.key_or_group)}
    for override in overrides:
        if not (override.is_add() or override.is_force_add()):
            continue
        # Hydra's rule (hydra._internal.defaults_list.Overrides): a group's option, unless the value is a dict.
        key = override.key_or_group
        if override.package is not None or (is_group(key) and not isinstance(override.value(), dict)):
            continue
        if key.split(".")[0] in swept_groups:
            continue
        check_known_key(config, key)


def config_groups(config: DictConfig) -> Callable[[str], bool]:
    """Whether a name is a config group where Hydra composed `config` (tapelab's, or a user's own from
    `--config-dir` or `hydra.searchpath`)."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    primary = config.hydra.job.config_name
    overrides = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)  # as typed: hydra.sweep.subdir
    return lambda name: bool(loader.get_group_options(name, config_name=primary, overrides=overrides))


def schema_keys(node: Any) -> list[str] | None:
    """The keys of `node`'s schema, if it is a config node typed by a dataclass; None for an open node, a list
    or a value."""
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if not dataclasses.is_dataclass(schema):
        return None
    return [schema_field.name for schema_field in dataclasses.fields(schema)]


def check_known_key(config: DictConfig, key: str) -> None:
    """Refuse `key` (dotted) where one of the nodes on its path is a schema that doesn't have the next part."""
    node: Any = config
    path: list[str] = []
    for part in key.split("."):
        known = schema_keys(node)
        if "[" in part or known is None:
            return  # an open node, a list or a value: Hydra says if the key can't go there
        path.append(part)
        if part not in known:
            raise unknown_key(".".join(path), known)
        node = OmegaConf.select(node, part, throw_on_resolution_failure=False)


def check_schema_keys(cfg: DictConfig) -> None:
    """Refuse a key that `++` (or `+`) put into a schema node of the objective, the optimizer, `stop` or `log`,
    such as `++optimizer.beta_1` in a sweep job whose optimizer is SGD (`check_added_keys` can't see a sweep's
    jobs' own options)."""
    for section in ("objective", "optimizer", "stop", "log"):
        node = cfg.get(section)
        known = schema_keys(node)
        if known is None:
            continue
        for key in node:
            if key not in known:
                raise unknown_key(f"{section}.{key}", known)


def check_count(key: str, value: int) -> None:
    """A step count: an integer from 1 to MAX_STEPS."""
    if not 1 <= value <= MAX_STEPS:
        raise ConfigError(key, f"must be an integer from 1 to 2**62, got {value}")


def check_finite_numbers(prefix: str, values: Any) -> None:
    """Every float in a config node (nested lists included) must be finite and fit in float32."""
    if isinstance(values, dict):
        for key, value in values.items():
            check_finite_numbers(f"{prefix}.{key}", value)
    elif isinstance(values, (list, tuple)):
        for value in values:
            check_finite_numbers(prefix, value)
    elif isinstance(values, float) and not (math.isfinite(values) and abs(values) <= FLOAT32_MAX):
        raise ConfigError(prefix, f"must be a finite number within float32's range, got {values}")


def to_experiment(cfg: DictConfig) -> Experiment:
    """Turn a composed config into an `Experiment`, or raise `ConfigError` naming the bad key."""
    check_schema_keys(cfg)
    if cfg.dtype not in DTYPES:
        raise ConfigError("dtype", f"must be float32 or float64, got {cfg.dtype!r}")
    smallest = float(np.finfo(cfg.dtype).smallest_subnormal)
    if not (0 < cfg.lr <= FLOAT32_MAX and np.dtype(cfg.dtype).type(cfg.lr) > 0):
        raise ConfigError(
            "lr", f"must be a finite number > 0 (in {cfg.dtype}, so {smallest:.0e} to 3.4e38), got {cfg.lr}"
        )
    check_count("epochs", cfg.epochs)
    check_count("log.every", cfg.log.every)
    if cfg.log.max_rows is not None:
        check_count("log.max_rows", cfg.log.max_rows)
    stop = OmegaConf.to_object(cfg.stop)
    for key in ("grad_tol", "loss_tol"):
        value = getattr(stop, key)
        if value is not None and not (0 <= value <= FLOAT32_MAX):
            raise ConfigError(f"stop.{key}", f"must be null (off) or a finite number >= 0, got {value}")
    if stop.patience is not None:
        check_count("stop.patience", stop.patience)
    if cfg.seed < 0:
        raise ConfigError("seed", f"must be an integer >= 0, got {cfg.seed}")
    if not (isinstance(cfg.jit_compile, bool) or cfg.jit_compile == "auto"):
        raise ConfigError("jit_compile", f"must be auto, true or false, got {cfg.jit_compile!r}")
    objective = OmegaConf.to_object(cfg.objective)
    optimizer = OmegaConf.to_object(cfg.optimizer)
    if not isinstance(objective, Objective):
        raise ConfigError("objective", "must be chosen from conf/objective (see --help)")
    if not isinstance(optimizer, OptimizerConfig):
        raise ConfigError("optimizer", "must be chosen from conf/optimizer (see --help)")
    if not 1 <= objective.starts <= MAX_STARTS:
        raise ConfigError("objective.starts", f"must be an integer from 1 to {MAX_STARTS}, got {objective.starts}")
    check_finite_numbers("objective", plain_values(objective))
    check_finite_numbers("optimizer", optimizer.hyperparameters())
    return Experiment(
        objective,
        optimizer,
        float(cfg.lr),
        int(cfg.epochs),
        int(cfg.seed),
        None if cfg.jit_compile == "auto" else cfg.jit_compile,
        stop,
        OmegaConf.to_object(cfg.log),
        cfg.dtype,
    )
