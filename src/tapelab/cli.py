"""The command line: `python run.py` and the `tapelab` console script.

Hydra composes the config from `conf/`; a user mistake ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tapelab.config import register_configs
from tapelab.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
USAGE_ERROR = 2

# TensorFlow's C++ start-up chatter (CPU features, CUDA probing) hides the run's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's output directory and return its final loss (for sweepers)."""
    from tapelab.runner import run

    try:
        return run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, OmegaConfBaseException) as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"Error in config: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
