"""The command line: `python run.py` and the `tapelab` console script.

Hydra composes the config from the package's configs (pkg://tapelab.conf, conf/ in a checkout) and a
user's `--config-dir`; a user mistake ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig

from tapelab import batching
from tapelab.config import register_configs
from tapelab.errors import config_errors_exit_with_usage_error
from tapelab.failures import exits_as_the_command_line

CONFIG_MODULE = "tapelab.conf"  # conf/ of the checkout, shipped in the wheel
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
log = logging.getLogger("tapelab")


def main() -> None:
    """The command line: run `experiment` with the overrides in sys.argv.

    A mistake Hydra finds while it composes the config (an unknown option or key, a wrong type, an override
    it cannot parse) ends like tapelab's own checks: one line on stderr and exit 2. Hydra's decorated
    function returns None here; `experiment` returns each job's loss to Hydra's sweepers.
    """
    configure_process()
    register_configs()
    sys.argv[1:] = quiet_flag_as_override(sys.argv[1:])
    with config_errors_exit_with_usage_error():
        experiment()


QUIET_FLAGS = ("-q", "--quiet")
QUIET_OVERRIDE = "hydra.callbacks.job_lines.quiet=true"


def quiet_flag_as_override(arguments: list[str]) -> list[str]:
    """`-q`/`--quiet` (a sweep prints only its failed jobs' lines) as the Hydra override it stands for."""
    if not any(argument in QUIET_FLAGS for argument in arguments):
        return arguments
    return [argument for argument in arguments if argument not in QUIET_FLAGS] + [QUIET_OVERRIDE]


def configure_process() -> None:
    """What the command line's own process needs, set before TensorFlow is imported."""
    # No INFO lines from TensorFlow's C++ (CPU features, XLA's service); its warnings and errors still show.
    # Its start-up notices, which come before this level applies, are dropped by tapelab.tensorflow_start.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # conf/hydra/launcher/ray.yaml replaces the plugin's config of the same name on purpose.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")


class CommandLineBatching:
    """`tapelab.batching` for `hydra/launcher=batched`, with the command line's exits around each batch."""

    @staticmethod
    def group_key(task_cfg: DictConfig) -> str:
        return batching.group_key(task_cfg)

    @staticmethod
    def run_group(jobs: Sequence[batching.BatchJob], upcoming: Sequence[batching.BatchJob] = ()) -> list[Any]:
        with exits_as_the_command_line():
            return batching.run_group(jobs, upcoming)


def batchable(task_function: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Announce to `hydra/launcher=batched` that the jobs of `task_function` can train in batches."""
    task_function.batching = CommandLineBatching  # type: ignore[attr-defined]
    return task_function


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@batchable
def experiment(cfg: DictConfig) -> float:
    """Run one job (`tapelab.job.run_job`) and return its final loss, for sweepers; see
    `exits_as_the_command_line` for how a mistake or a stop ends the process."""
    from tapelab.job import run_job

    with exits_as_the_command_line():
        return run_job(cfg)
