"""The command line: `python run.py` and the `tapelab` console script.

Hydra composes the config from `conf/`; a user mistake ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapelab.config import register_configs
from tapelab.errors import ConfigError, config_errors_exit_with_usage_error, exit_on_user_error, one_line
from tapelab.resume import saved_config_subdir

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
# hydra.output_subdir (conf/config.yaml): keep a run's saved config when it continues, and a skipped job's files.
OmegaConf.register_new_resolver("tapelab_saved_config_dir", saved_config_subdir)


def main() -> None:
    """The command line: run `experiment` with the overrides in sys.argv.

    A mistake Hydra finds while it composes the config (an unknown option or key, a wrong type, an override
    it cannot parse) ends like tapelab's own checks: one line on stderr and exit 2. Hydra's decorated
    function returns None here; `experiment` returns each job's loss to Hydra's sweepers.
    """
    with config_errors_exit_with_usage_error():
        experiment()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def experiment(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's output directory and return its final loss (for sweepers).

    In a sweep, a job that fails is recorded as failed (loss inf) so that the other jobs still run; a job
    that finished in an earlier launch into the same sweep directory is skipped, an interrupted one continues.
    A run stopped by SIGINT or SIGTERM exits with 130 or 143 after saving everything (the sweep stops too).
    """
    from tapelab.interrupts import Interrupted
    from tapelab.resume import CHECKPOINTS, check_same_job, forget_failure, is_finished, resumed_config
    from tapelab.runner import record_failure, run, stored_result

    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    multirun = hydra_config.mode == RunMode.MULTIRUN
    overrides = list(OmegaConf.to_container(hydra_config.overrides.task, resolve=False))  # as typed
    user_mistake = (ConfigError, OmegaConfBaseException)
    try:
        if multirun:
            try:
                check_same_job(run_dir, overrides)
            except ConfigError as clash:  # another job's directory: write nothing into it
                log.error("Error in config: %s", one_line(clash))
                return math.inf
            if is_finished(run_dir):
                return stored_result(run_dir)  # done in an earlier launch: its files stay as they are
            forget_failure(run_dir)  # an earlier launch's failure before any checkpoint: run it again
        resume = cfg.resume or (multirun and (run_dir / CHECKPOINTS).is_dir())
        if resume:
            cfg = resumed_config(run_dir, overrides, lambda keys: compose(config_name="config", overrides=keys))
        return run(cfg, run_dir, resume=resume, progress=not multirun)
    except Interrupted as stop:
        log.warning("%s; continue with resume=true hydra.run.dir=%s (or re-launch the sweep)", stop, run_dir)
        raise SystemExit(stop.exit_code) from None
    except Exception as error:
        if multirun:
            if isinstance(error, user_mistake):
                log.error("Error in config: %s", one_line(error))
            else:
                log.exception("the job failed")
            return record_failure(run_dir, error)
        if isinstance(error, user_mistake):
            exit_on_user_error(error)
        raise
