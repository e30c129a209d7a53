"""objective.starts=N: N start points drawn from the search box, trained as one pooled batch of N members.

Each start is a member with its own status and stop rules (`tapelab.engine.batch.Batch`); the members share
one report: the batch's best, mean and worst loss per step, and starts.csv and starts.png at the end. An
elementwise optimizer makes the batch exactly N independent runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tapelab.engine.layout import element_columns
from tapelab.errors import ConfigError
from tapelab.objectives import Objective, Problem
from tapelab.optimizers import OptimizerConfig

STARTS_CSV = "starts.csv"


def check_elementwise(optimizer: OptimizerConfig) -> None:
    """Refuse an optimizer whose step for one element depends on others: it would couple the starts."""
    coupling = optimizer.coupling()
    if coupling is not None:
        raise ConfigError(
            "objective.starts",
            f"needs an elementwise optimizer, so that the batch is N independent runs, but {coupling} mixes the "
            "starts. Every optimizer but newton keeps them apart",
        )


def search_box(objective: Objective, problem: Problem) -> np.ndarray:
    """One [low, high] row per parameter element, from `objective.domain` or the function's usual domain."""
    box = objective.box()
    size = int(problem.flat_start().size)
    if box is None:
        raise ConfigError("objective.domain", "objective.starts > 1 needs a search box: [[low, high]] per element")
    if len(box) == 1:
        box = np.repeat(box, size, axis=0)
    if len(box) != size:
        raise ConfigError("objective.domain", f"needs one [low, high] pair or {size} of them, got {len(box)}")
    return box


def draw_starts(box: np.ndarray, starts: int, seed: int, dtype: str = "float32") -> np.ndarray:
    """`starts` flat start vectors drawn uniformly from `box`, reproducibly from `seed`, rounded to `dtype`."""
    rng = np.random.default_rng([seed, starts])
    return rng.uniform(box[:, 0], box[:, 1], size=(starts, len(box))).astype(dtype)


def member_problems(problem: Problem, flat_starts: np.ndarray) -> list[Problem]:
    """`problem` once from each row of `flat_starts`: the members of a multi-start batch."""
    return [dataclasses.replace(problem, start=problem.split(row)) for row in flat_starts]


def starts_table(
    problem: Problem,
    flat_starts: np.ndarray,
    flat_ends: np.ndarray,
    losses: np.ndarray,
    steps: np.ndarray,
    statuses: list[str],
) -> pd.DataFrame:
    """starts.csv: per start, its number, `start_<column>` and `end_<column>` for each parameter column,
    `final_loss` (the loss at the end), and the start's own `status` and `steps`."""
    columns = element_columns(problem.start)
    table = pd.DataFrame(flat_starts, columns=[f"start_{column}" for column in columns])
    table[[f"end_{column}" for column in columns]] = flat_ends
    table["final_loss"] = losses
    table["status"] = statuses
    table["steps"] = steps
    table.insert(0, "start", np.arange(len(table)))
    return table
