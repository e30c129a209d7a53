"""Hydra callbacks: checks that must happen before Hydra writes anything into the run directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tapelab.errors import ConfigError
from tapelab.rundir import check_unused


class RefuseUsedRunDir(Callback):
    """Stop a single run whose `hydra.run.dir` already holds results, before Hydra writes its .hydra/ files."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_unused(Path(config.hydra.run.dir))
        except ConfigError as error:
            print(f"Error in config: {error}", file=sys.stderr)
            sys.exit(2)
