"""Hydra's override strings (`lr=0.01`, `optimizer=adam`) and the files that hold them.

A sweep parses the same strings again and again (each job's `.hydra/overrides.yaml` repeats every value it
shares with the other jobs): each string is parsed once per process, by Hydra's own parser.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's where PyYAML has it: ~10 times faster


def parse_overrides(lines: Sequence[str]) -> list[Any]:
    """Command-line override strings as Hydra's parser reads them, as `Override`s (shared: don't change them)."""
    return [parse_override(line) for line in lines]


@functools.lru_cache(maxsize=8192)
def parse_override(line: str) -> Any:
    """One override string as Hydra's parser reads it; raises Hydra's OverrideParseException if it can't."""
    (override,) = parser().parse_overrides([line])
    return override


@functools.cache
def parser() -> Any:
    """Hydra's override parser, built once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def load_yaml(path: Path) -> Any:
    """A YAML file Hydra saved (`.hydra/hydra.yaml`): plain mappings, lists and scalars, as written (an
    interpolation such as `${oc.env:HOME}` stays a string)."""
    return yaml.load(path.read_text(), Loader=YAML_LOADER)


def read_overrides(path: Path) -> list[str]:
    """The override strings of a job's `.hydra/overrides.yaml`, as the command line gave them (unresolved); none
    for an empty file (a job killed while Hydra wrote it)."""
    return list(load_yaml(path) or [])


def task_overrides(hydra_node: DictConfig) -> list[str]:
    """A job's task overrides as typed, from its `hydra` node (HydraConfig's, or a JobReturn's `hydra_cfg.hydra`)."""
    return list(OmegaConf.to_container(hydra_node.overrides.task, resolve=False))
