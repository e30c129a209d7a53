"""summary.json: one file that says how a run ended, and the hyperparameters it records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tapelab.atomic import replacing

CHOSEN_GROUPS = ("objective", "optimizer")  # every run's HParams row and every sweep's experiment name them


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON, replacing `path` in one step."""
    with replacing(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def hparam_value(value: Any) -> bool | int | float | str:
    """A config value as TensorBoard's HParams can hold it: lists become their JSON text."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def flat_hparams(record: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The hyperparameters of a run record (summary.json) as flat `key: value` pairs.

    Keys are as on the command line (`lr`, `objective.a`, `optimizer.beta_1`). None values are left out:
    TensorBoard would turn a numeric column that holds one into strings.
    """
    flat = {key: record[key] for key in ("objective", "optimizer", "lr", "epochs", "seed")}
    for group in ("objective", "optimizer"):
        flat.update({f"{group}.{key}": value for key, value in record[f"{group}_params"].items()})
    return {key: hparam_value(value) for key, value in flat.items() if value is not None}


def given_hparams(overrides: Mapping[str, Any], choices: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """A job's overrides (key -> value, as Hydra parses them) as hparams, for a job that failed before its
    config was known, with the objective and the optimizer that Hydra chose for it (`hydra.runtime.choices`);
    None values are left out, as in `flat_hparams`."""
    given = {group: choices.get(group) for group in CHOSEN_GROUPS}
    given.update(overrides)
    return {key: hparam_value(value) for key, value in given.items() if value is not None}
