"""`hydra/sweeper=grid`: Hydra's basic sweeper, with each job's config composed once, or derived.

tapelab's default search (`hparams_search=grid`, conf/hparams_search/grid.yaml) runs `-m` grids with it.

The basic sweeper composes the config of every job of a batch to check the batch before it launches it, and
the launcher then composes each job's config again: two compositions of ~0.07 s for every job. Here the
check keeps what it composed, and a launcher in the same process (the basic one) takes each job's config
from it. Most jobs of a grid differ from an earlier job only in plain values (`lr=0.01` against `lr=0.1`),
not in a config group: their config is that job's config with the new values set, as Hydra sets a value
override, in a tenth of the time. That is Hydra's config only while no other override of the job edits the
same key, its parent or a child of it (Hydra applies a job's overrides in order, so `++lr=0.05` after
`lr=0.01,0.1` sets 0.05 in both jobs): every other job is composed by Hydra. Launchers that run the jobs in
other processes (joblib, submitit, Ray) compose there, as before.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them in sys.modules,
# where dataclasses look string annotations up.
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override, OverrideType
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from tapelab.overrides import parse_overrides

PLAIN_VALUES = (str, int, float, bool, type(None))  # set alike on any config; a dict or list value merges


class ComposedOnce:
    """A config loader that hands the configs composed by `keep` to the first `load_sweep_config` asking for them.

    Every other call goes to the wrapped loader. Pickled (for a launcher's worker process), it keeps nothing.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        self._composed: dict[tuple[Any, ...], list[tuple[list[Override], DictConfig]]] = {}

    def keep(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> None:
        """Compose the config of one job now (which checks it), and keep it for the launcher."""
        overrides = parse_overrides(sweep_overrides)
        alike = self._composed.setdefault((id(master_config), *(o.key_or_group for o in overrides)), [])
        template = next((found for found in alike if derivable(*found, overrides)), None)
        if template is None:
            config = self.loader.load_sweep_config(master_config=master_config, sweep_overrides=list(sweep_overrides))
            alike.append((overrides, copy.deepcopy(config)))  # the launcher changes the config it is given
        else:
            config = derived(master_config, *template, overrides)
        self._kept[id(master_config), tuple(sweep_overrides)] = config

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self._kept.pop((id(master_config), tuple(sweep_overrides)), None)
        return kept if kept is not None else self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("loader", "_kept", "_composed"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"loader": self.loader, "_kept": {}, "_composed": {}}


def sets_a_value(override: Override, config: DictConfig) -> bool:
    """Whether `override` sets a plain value on `config` (composed with it), rather than choosing a config group,
    adding or deleting a key, merging a dict or list, or changing Hydra's own settings."""
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and not override.is_hydra_override()
        and isinstance(override.value(), PLAIN_VALUES)
        and override.key_or_group not in config.hydra.runtime.choices
    )


def chooses_a_group(override: Override, config: DictConfig) -> bool:
    """Whether `override` chooses, adds or deletes a config group's option (`optimizer=adam`), which Hydra does in
    the defaults list, before it applies any other override; a dict value merges into the group's node instead."""
    return override.key_or_group in config.hydra.runtime.choices and not isinstance(override.value(), dict)


def sets_alone(position: int, overrides: list[Override], config: DictConfig) -> bool:
    """Whether no other override of `overrides` (but a group's choice) edits the key that the one at `position`
    sets, its parent or a child of it: Hydra applies them in order, so another one changes what that one sets."""
    key = overrides[position].key_or_group.split(".")
    for other_position, other in enumerate(overrides):
        if other_position == position or chooses_a_group(other, config):
            continue
        other_key = other.key_or_group.split(".")
        common = min(len(key), len(other_key))
        if key[:common] == other_key[:common]:
            return False
    return True


def derivable(composed_overrides: list[Override], composed: DictConfig, overrides: list[Override]) -> bool:
    """Whether the config of `overrides` is the config composed for `composed_overrides` with other plain values:
    each override that differs sets a plain value, and no other override edits its key, a parent or a child."""
    return all(
        new.input_line == old.input_line
        or (sets_a_value(new, composed) and sets_a_value(old, composed) and sets_alone(position, overrides, composed))
        for position, (new, old) in enumerate(zip(overrides, composed_overrides, strict=True))
    )


def derived(
    master_config: DictConfig, composed_overrides: list[Override], composed: DictConfig, overrides: list[Override]
) -> DictConfig:
    """The config Hydra composes for `overrides`, made from the one it composed for `composed_overrides`: the
    values that differ set as Hydra sets a value override, and the job's overrides recorded as Hydra records them."""
    config = copy.deepcopy(composed)
    changed = [new for new, old in zip(overrides, composed_overrides, strict=True) if new.input_line != old.input_line]
    ConfigLoaderImpl._apply_overrides_to_config(changed, config)
    task = [override for override in overrides if not override.is_hydra_override()]
    job = config.hydra.job
    with open_dict(config.hydra):
        config.hydra.overrides.task = [override.input_line for override in task]
        job.override_dirname = get_overrides_dirname(
            overrides=task,
            exclude_keys=job.config.override_dirname.exclude_keys,
            item_sep=job.config.override_dirname.item_sep,
            kv_sep=job.config.override_dirname.kv_sep,
        )
    OmegaConf.copy_cache(from_config=master_config, to_config=config)
    return config


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper (every combination of the swept values, in batches), composing each job once."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.composed = ComposedOnce(hydra_context.config_loader)
        composed_once = HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=composed_once, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.config is not None
        for overrides in batch:
            self.composed.keep(self.config, overrides)


@dataclass
class GridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.tapelab_sweeper.grid_sweeper.GridSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="tapelab")
