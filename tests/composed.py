"""Configs composed by Hydra once per process, and the same configs with other plain values.

A composition takes about as long as a short run under XLA; tests that train many runs differing in a value or two
(a learning rate, a start point) compose the rest once.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from conftest import compose_config


@functools.cache
def composed(*overrides: str) -> DictConfig:
    """`compose_config(*overrides)`, composed once per process (callers get copies: see `derived`)."""
    return compose_config(*overrides)


def derived(overrides: Sequence[str], *values: str) -> DictConfig:
    """The config Hydra composes for `overrides` followed by `values`, value overrides ("key=value") of keys the
    config has: the config composed for `overrides`, with each of `values` set as Hydra sets a value override
    after composing (`OmegaConf.update(..., merge=True)`)."""
    config = copy.deepcopy(composed(*overrides))
    for override in OverridesParser.create().parse_overrides(list(values)):
        assert not (override.is_add() or override.is_force_add() or override.is_delete()), override.input_line
        assert not override.is_sweep_override(), override.input_line
        OmegaConf.update(config, override.key_or_group, override.value(), merge=True)
    return config
