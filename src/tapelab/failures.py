"""How a job's failure or a stop request ends, wherever tapelab runs it: the command line exits (one line and
exit 2 for a mistake, 128 + N after signal N), `tapelab.run` raises it to its caller, and a sweep records a
failed job and goes on (the batched launcher gets the error as the job's result)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from tapelab.errors import ConfigError, PastHydra, exit_on_user_error
from tapelab.interrupts import Interrupted
from tapelab.rundir import FINISHED, SUMMARY, read_summary

log = logging.getLogger("tapelab")


@contextmanager
def exits_as_the_command_line() -> Iterator[None]:
    """Around the command line's jobs: a single run's config mistake is one line and exit 2; a run stopped by
    SIGINT or SIGTERM exits with 130 or 143 after saving everything (a sweep stops too), with a line that
    names the directory of the job HydraConfig holds and how to go on (none for a run that had ended)."""

    try:
        yield
    except Interrupted as stop:
        hydra_config = HydraConfig.get()
        if stop.how_to_continue is not None:
            log.warning("%s; %s", stop, stop.how_to_continue)
        elif hydra_config.mode != RunMode.MULTIRUN and stop.ended:
            log.warning("%s, as the run ended: %s holds all its files", stop, hydra_config.runtime.output_dir)
        else:
            sweep = " (or re-launch the sweep)" if hydra_config.mode == RunMode.MULTIRUN else ""
            output_dir = hydra_config.runtime.output_dir
            log.warning("%s; continue with resume=true hydra.run.dir=%s%s", stop, output_dir, sweep)
        raise SystemExit(stop.exit_code) from None
    except (ConfigError, OmegaConfBaseException) as mistake:
        exit_on_user_error(mistake)


@contextmanager
def carried_past_hydra() -> Iterator[None]:
    """An exception of the block carried past Hydra (`PastHydra`), which would print its own report of a failed
    job or turn a callback's exception into a warning: a config mistake as a ConfigError with the command line's
    line, any other (a user's own loss function's) as it is. `tapelab.run` raises it to its caller; the command
    line reports it (`tapelab.errors.config_errors_exit_with_usage_error`)."""
    try:
        yield
    except (ConfigError, OmegaConfBaseException) as mistake:
        raise PastHydra(ConfigError.of(mistake)) from None
    except Exception as error:
        raise PastHydra(error) from None


def result_or_error(job: Callable[[], Any]) -> Any:
    """A batched launcher's job run alone: its result, or the exception it failed with (`Interrupted`
    propagates: the sweep stops)."""
    try:
        return job()
    except Interrupted:
        raise
    except Exception as error:
        return error


def stored_result(run_dir: Path) -> float:
    """What a finished run returned: its final loss, or inf if it diverged."""
    summary = read_summary(run_dir) or {}
    final_loss = summary.get("final_loss")
    return math.inf if summary.get("status") == "diverged" or final_loss is None else final_loss


def record_failure(run_dir: Path, error: Exception, trial: str, hydra_node: Any, tensorboard: bool) -> float:
    """Record a sweep job that raised as `failed` in summary.json, and return inf for sweepers.

    A finished run's summary (another job's, in a directory clash) is left as it is; the steps of an
    unfinished one are kept beside the error. With `tensorboard`, the job's HParams session says that it
    failed, with the values its overrides gave and the objective and optimizer Hydra chose for it.
    """
    from tapelab.overrides import parse_overrides, task_overrides
    from tapelab.run_summary import given_hparams, write_json_atomically
    from tapelab.sinks.hparams import write_session

    previous = read_summary(run_dir)
    if previous is None or previous.get("status") not in FINISHED:
        run_dir.mkdir(parents=True, exist_ok=True)
        failure = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        if previous is not None and "steps" in previous:
            failure["steps"] = previous["steps"]
        write_json_atomically(run_dir / SUMMARY, failure)
        if tensorboard:
            overrides = {o.key_or_group: o.value() for o in parse_overrides(task_overrides(hydra_node))}
            given = given_hparams(overrides, hydra_node.runtime.choices or {})
            write_session(run_dir, given, trial, "failed", time.time())
    return math.inf
