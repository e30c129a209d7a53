"""The command line: `python run.py` and the `tapelab` console script.

Hydra composes the config from `conf/`; a user mistake ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tapelab.config import register_configs
from tapelab.errors import ConfigError, exit_on_user_error

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("tapelab")

# TensorFlow's C++ start-up chatter (CPU features, CUDA probing) hides the run's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The Ray launcher's private loopback cluster (conf/hydra/launcher/ray.yaml) needs no usage reports
# and no token file in ~/.ray; set these yourself to reach a cluster that wants them.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# conf/hydra/launcher/ray.yaml replaces the plugin's config of the same name on purpose.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")
register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's output directory and return its final loss (for sweepers).

    In a sweep, a job that fails is recorded as failed (loss inf) so that the other jobs still run.
    """
    from tapelab.runner import record_failure, run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    user_mistake = (ConfigError, OmegaConfBaseException)
    try:
        return run(cfg, run_dir)
    except Exception as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            if isinstance(error, user_mistake):
                log.error("Error in config: %s", error)
            else:
                log.exception("the job failed")
            return record_failure(run_dir, error)
        if isinstance(error, user_mistake):
            exit_on_user_error(error)
        raise
