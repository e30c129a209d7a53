"""The `study` config group's schema: the problems, optimizers, learning-rate grid, seeds and targets of a study."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ProblemConfig:
    """One problem: an objective (an option of conf/objective, or of your `--config-dir`) with its keys, and the
    steps every run of it gets."""

    objective: str = MISSING
    budget: int = MISSING  # steps (gradient evaluations) per run
    settings: dict[str, Any] = field(default_factory=dict)  # the objective's keys: constants, dim, domain, …
    group: str | None = None  # the aggregates' problem group; null: by the number of parameters ("2-D")


@dataclass
class LearningRates:
    """A log-spaced grid, the same for every optimizer, plus each Keras optimizer's default as a reference."""

    low: float = 1e-5
    high: float = 10.0
    per_decade: int = 5
    keras_default: bool = True  # add the optimizer's own default learning rate (Keras's) as a reference row


@dataclass
class Seeds:
    """Start points (and data noise) drawn per seed, the same for every optimizer; tuning and evaluation seeds
    are disjoint."""

    tuning: int = 3  # choose each optimizer's learning rate per problem on seeds 0 … tuning-1
    evaluation: int = 10  # report at the chosen rate on the next `evaluation` seeds


@dataclass
class Targets:
    """COCO's target precisions on the gap f − f*: `count` of them, log-uniform from `high` down to `low`."""

    count: int = 51
    high: float = 1e2
    low: float = 1e-8
    primary: float = 1e-6  # the target that chooses the learning rate and that the profiles use


@dataclass
class StudyConfig:
    """A study: every optimizer on every problem over the learning-rate grid and the seeds."""

    problems: dict[str, Any] = MISSING  # name -> a ProblemConfig (checked by tapelab.study.plan; add one with +)
    optimizers: list[Any] = MISSING  # names from conf/optimizer, or {name, optimizer, settings} for fixed keys
    lr: LearningRates = field(default_factory=LearningRates)
    seeds: Seeds = field(default_factory=Seeds)
    targets: Targets = field(default_factory=Targets)
    dtype: str = "float64"
    reference: str = "adam"  # the speedups' reference: this optimizer at its Keras default learning rate
    dir: str | None = None  # where the study's files go; null: the run's directory (hydra.run.dir)
    unit: int | None = None  # with `units`: compute only the groups of this unit (0 … units-1) into `dir`
    units: int = 1
    report: bool = True  # build report.html, figures/, leaderboard.csv and tensorboard/ from the tables at the end


ConfigStore.instance().store(name="schema_study", node=StudyConfig)
