"""Objectives: each is a config schema (a dataclass) that builds a trainable `Problem`.

Importing this package registers every schema with Hydra's ConfigStore.
"""

from tapelab.objectives import benchmarks, elementary, expression, python_function, regression
from tapelab.objectives.base import Objective, Problem, register_objective

__all__ = [
    "Objective",
    "Problem",
    "register_objective",
    "benchmarks",
    "elementary",
    "expression",
    "python_function",
    "regression",
]
