"""`hydra/sweeper=grid`: Hydra's basic sweeper, with each job's config composed once.

tapelab's default search (`hparams_search=grid`, conf/hparams_search/grid.yaml) runs `-m` grids with it.

The basic sweeper composes the config of every job of a batch to check the batch before it launches it, and
the launcher then composes each job's config again: two compositions of ~0.1 s for every job. Here the
check keeps what it composed, and a launcher in the same process (the basic one) takes each job's config
from it. Launchers that run the jobs in other processes (joblib, submitit, Ray) compose there, as before.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them in sys.modules,
# where dataclasses look string annotations up.
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ComposedOnce:
    """A config loader that hands the configs composed by `keep` to the first `load_sweep_config` asking for them.

    Every other call goes to the wrapped loader. Pickled (for a launcher's worker process), it keeps nothing.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def keep(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> None:
        """Compose the config of one job now (which checks it), and keep it for the launcher."""
        config = self.loader.load_sweep_config(master_config=master_config, sweep_overrides=list(sweep_overrides))
        self._kept[id(master_config), tuple(sweep_overrides)] = config

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self._kept.pop((id(master_config), tuple(sweep_overrides)), None)
        return kept if kept is not None else self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("loader", "_kept"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"loader": self.loader, "_kept": {}}


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
