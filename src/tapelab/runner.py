"""One run: build the problem and optimizer, train in chunks, and feed every sink from one history."""

from __future__ import annotations

import gc
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from tapelab.config import Experiment, to_experiment
from tapelab.errors import ConfigError
from tapelab.interrupts import Interrupted, StopRequests
from tapelab.multistart import check_elementwise, draw_starts, member_problems, search_box
from tapelab.objectives import Problem
from tapelab.overrides import parse_overrides
from tapelab.record import RunRecord
from tapelab.resume import CHECKPOINTS, FINISHED, read_summary
from tapelab.rundir import SUMMARY, check_unused
from tapelab.sinks.hparams import trial_id, write_session
from tapelab.sinks.summary import given_hparams, write_json_atomically
from tapelab.stopwatch import Stopwatch
from tapelab.tensorflow_start import import_tensorflow

log = logging.getLogger(__name__)


def run(
    cfg: DictConfig, run_dir: Path, resume: bool = False, progress: bool = False, trial: str | None = None
) -> float:
    """Check `cfg`, train (continuing the run in `run_dir` if `resume`), and return the final loss
    (inf if diverged). Raises `Interrupted` after saving everything if a signal stopped the run.
    `progress` shows a progress bar on a terminal; `trial` is the run's HParams trial ID (default: `trial_id`)."""
    return train(to_experiment(cfg), run_dir, resume, progress, trial)


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` (or OmegaConf's error) where `run` would refuse `cfg`, writing nothing: every check of
    its values and of the problem they build (a Python objective's imports TensorFlow and calls its function)."""
    checked_problem(to_experiment(cfg))


def train(
    experiment: Experiment, run_dir: Path, resume: bool = False, progress: bool = False, trial: str | None = None
) -> float:
    """Train `experiment`, writing metrics.csv, TensorBoard events, a checkpoint and summary.json into `run_dir`."""
    previous = read_summary(run_dir) if resume else None
    if previous is None:
        check_unused(run_dir)
    problem, flat_starts = checked_problem(experiment)
    members = [problem] if flat_starts is None else member_problems(problem, flat_starts)
    log_every = (previous or {}).get("log_every", experiment.log_every())  # a resumed run keeps its grid
    if log_every != experiment.log.every and previous is None:
        log.info("log.every raised to %d so that at most log.max_rows=%d rows are written", log_every,
                 experiment.log.max_rows)  # fmt: skip
    import_tensorflow()
    from tapelab.training import quiet_tensorflow_logs, trainer_for, wants_xla

    auto_xla = wants_xla(experiment.jit_compile, experiment.epochs, problem, len(members))
    xla = (previous or {}).get("xla", auto_xla)  # kept, too
    timings = Stopwatch((previous or {}).get("timings_s"))

    with StopRequests() as stop_requests, quiet_tensorflow_logs():
        import tensorflow as tf

        started = time.perf_counter(), time.time()
        each = lambda value: [value] * len(members)  # noqa: E731  (the starts of a multi-start run share them)
        loop = trainer_for(members, each(experiment.optimizer), each(experiment.lr), log_every, each(experiment.stop),
                           xla, pooled=flat_starts is not None)  # fmt: skip
        with loop as trainer:
            (trained,) = trainer.runs()
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoints = tf.train.CheckpointManager(trainer.checkpoint(), run_dir / CHECKPOINTS, max_to_keep=1)
            if previous is not None:
                restore(checkpoints, trainer, run_dir)
                log.info("continuing %s from step %d to %d", run_dir, trainer.step, experiment.epochs)
            timings.add("trace", trainer.trace())
            timings.add("compile", trainer.compile())
            save = lambda step: checkpoints.save(checkpoint_number=step)  # noqa: E731
            record = RunRecord(experiment, problem, trained, run_dir, previous, log_every, timings, save, started)
            with progress_bar(experiment.epochs, trainer.step, progress) as bar:
                for (chunks,) in trainer.chunks(experiment.epochs):
                    for chunk in chunks:
                        record.take(chunk)
                        bar.update(chunk.updates)
                    if not record.ended and stop_requests.received is not None:
                        break
            summary = record.finish(trial or trial_id(run_dir, in_sweep=False))
        status = record.status
    if status == "interrupted":
        raise Interrupted(stop_requests.received or signal.SIGINT, summary["steps"])
    return math.inf if status == "diverged" else summary["final_loss"]


def checked_problem(experiment: Experiment) -> tuple[Problem, np.ndarray | None]:
    """The objective's problem and, for a multi-start run, its flat starts, after every check that needs no
    TensorFlow: the values, the optimizer's own ranges and size limit, and the multi-start rules."""
    problem = experiment.objective.build(experiment.seed)
    experiment.optimizer.check(int(problem.flat_start().size))
    if experiment.objective.starts == 1:
        return problem, None
    check_elementwise(experiment.optimizer)
    box = search_box(experiment.objective, problem)
    return problem, draw_starts(box, experiment.objective.starts, experiment.seed)


def restore(checkpoints: Any, trainer: Any, run_dir: Path) -> None:
    """Load the run's latest checkpoint in `run_dir` into the trainer (a batch member that saved none of its own:
    its batch's), or raise ConfigError if it doesn't fit.

    A run killed while it saved its first checkpoint has none that is complete; it starts again from its first
    step, which gives the same history, and its rows already written are kept."""
    from tapelab.batch_run import restore_member

    if checkpoints.latest_checkpoint is None:
        try:
            restored = restore_member(trainer.state_variables(), run_dir)
        except (AssertionError, ValueError) as error:
            raise unfit_checkpoint(run_dir, error) from None
        if not restored:
            log.info("%s holds no complete checkpoint: continuing from the first step", run_dir)
        trainer.restored()
        return
    unfit = restored_or_unfit(trainer, checkpoints.latest_checkpoint, run_dir)
    if unfit is not None:
        raise unfit
    trainer.restored()


def restored_or_unfit(trainer: Any, path: str, run_dir: Path) -> ConfigError | None:
    """Load the checkpoint at `path` into the trainer; None, or the refusal if it doesn't fit this run's loop.

    A restore that fails midway leaves objects that log a warning for each value they didn't restore when they are
    freed, which could be long after the refusal's one line: they are made here, and freed here unheard."""

    def restore() -> ConfigError | None:
        status = None
        try:
            status = trainer.checkpoint().restore(path)
            status.assert_consumed()
        except (AssertionError, ValueError) as error:  # another structure, or an older tapelab's layout
            if status is not None:
                status.expect_partial()  # TensorFlow would log each unmatched value again; the error names them
            return unfit_checkpoint(run_dir, error)
        return None

    tensorflow_log = logging.getLogger("tensorflow")
    tensorflow_log.addFilter(not_about_unrestored_values)
    try:
        unfit = restore()
        if unfit is not None:
            gc.collect()
        return unfit
    finally:
        tensorflow_log.removeFilter(not_about_unrestored_values)


UNRESTORED_VALUES = (  # TensorFlow's warnings as the objects of a restore that left values unused are freed
    "Detecting that an object or model or tf.train.Checkpoint is being deleted with unrestored values",
    "Value in checkpoint could not be found in the restored object",
    "An attribute in the restored object could not be found in the checkpoint",
)


def not_about_unrestored_values(record: logging.LogRecord) -> bool:
    """A logging filter that drops TensorFlow's warnings of values a restore left unused."""
    return not record.getMessage().startswith(UNRESTORED_VALUES)


def unfit_checkpoint(run_dir: Path, error: Exception) -> ConfigError:
    """The mistake of resuming a run whose checkpoint doesn't fit its loop, with TensorFlow's reason in brief."""
    problem = " ".join(str(error).split())[:200]
    return ConfigError("resume", f"the checkpoint in {run_dir} does not fit this run's loop: {problem}")


@contextmanager
def progress_bar(epochs: int, done: int, wanted: bool) -> Iterator[Any]:
    """A tqdm bar of steps, on a terminal only, shown once a run has taken a few seconds."""
    from tqdm import tqdm

    shown = wanted and sys.stderr.isatty()
    with tqdm(total=epochs, initial=done, unit="step", unit_scale=True, delay=3, disable=not shown) as bar:
        yield bar


def stored_result(run_dir: Path) -> float:
    """What a finished run returned: its final loss, or inf if it diverged."""
    summary = read_summary(run_dir) or {}
    final_loss = summary.get("final_loss")
    return math.inf if summary.get("status") == "diverged" or final_loss is None else final_loss


def record_failure(
    run_dir: Path, error: Exception, trial: str, overrides: list[str] | None, choices: Mapping[str, Any] | None = None
) -> float:
    """Record a job that raised as `failed` in summary.json, and return inf for sweepers.

    A finished run's summary (another job's, in a directory clash) is left as it is; the steps of an
    unfinished one are kept beside the error. With the job's `overrides`, its HParams session says that it
    failed, with the values it was given and the objective and optimizer in Hydra's `choices` for it.
    """
    previous = read_summary(run_dir)
    if previous is None or previous.get("status") not in FINISHED:
        run_dir.mkdir(parents=True, exist_ok=True)
        failure = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        if previous is not None and "steps" in previous:
            failure["steps"] = previous["steps"]
        write_json_atomically(run_dir / SUMMARY, failure)
        if overrides is not None:
            given = given_hparams({o.key_or_group: o.value() for o in parse_overrides(overrides)}, choices or {})
            write_session(run_dir, given, trial, "failed", time.time())
    return math.inf
