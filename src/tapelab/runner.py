"""One run: build the problem and optimizer, train in chunks, and feed every sink from one history."""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from tapelab.config import Experiment, to_experiment
from tapelab.errors import ConfigError
from tapelab.interrupts import Interrupted, StopRequests
from tapelab.multistart import STARTS_CSV, batched, check_elementwise, draw_starts, search_box, starts_table
from tapelab.objectives import Problem
from tapelab.resume import CHECKPOINTS, FINISHED, last_logged_step, read_summary
from tapelab.rundir import METRICS, SUMMARY, check_unused
from tapelab.sinks.csv_sink import CsvSink
from tapelab.sinks.hparams import trial_id, write_session
from tapelab.sinks.summary import flat_hparams, given_hparams, write_json_atomically
from tapelab.sinks.tensorboard_sink import TensorBoardSink
from tapelab.stopwatch import Stopwatch
from tapelab.sweep import parse_overrides, write_table
from tapelab.tensorflow_start import import_tensorflow

if TYPE_CHECKING:
    from tapelab.training import Trainer

log = logging.getLogger(__name__)


def run(
    cfg: DictConfig, run_dir: Path, resume: bool = False, progress: bool = False, trial: str | None = None
) -> float:
    """Check `cfg`, train (continuing the run in `run_dir` if `resume`), and return the final loss
    (inf if diverged). Raises `Interrupted` after saving everything if a signal stopped the run.
    `progress` shows a progress bar on a terminal; `trial` is the run's HParams trial ID (default: `trial_id`)."""
    return train(to_experiment(cfg), run_dir, resume, progress, trial)


def train(
    experiment: Experiment, run_dir: Path, resume: bool = False, progress: bool = False, trial: str | None = None
) -> float:
    """Train `experiment`, writing metrics.csv, TensorBoard events, a checkpoint and summary.json into `run_dir`."""
    previous = read_summary(run_dir) if resume else None
    if previous is None:
        check_unused(run_dir)
    problem, flat_starts = checked_problem(experiment)
    trained = problem if flat_starts is None else batched(problem, flat_starts)
    log_every = (previous or {}).get("log_every", experiment.log_every())  # a resumed run keeps its grid
    if log_every != experiment.log.every and previous is None:
        log.info("log.every raised to %d so that at most log.max_rows=%d rows are written", log_every,
                 experiment.log.max_rows)  # fmt: skip
    import_tensorflow()
    from tapelab.training import quiet_tensorflow_logs, trainer_for, wants_xla

    xla = (previous or {}).get("xla", wants_xla(experiment.jit_compile, experiment.epochs, trained))  # kept, too
    timings = Stopwatch((previous or {}).get("timings_s"))

    with StopRequests() as stop_requests, quiet_tensorflow_logs():
        import tensorflow as tf

        started, started_at = time.perf_counter(), time.time()
        elapsed = lambda: time.perf_counter() - started + (previous or {}).get("wall_time_s", 0.0)  # noqa: E731
        loop = trainer_for(trained, experiment.optimizer, experiment.lr, log_every, experiment.stop, xla)
        with loop as trainer:
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoints = tf.train.CheckpointManager(trainer.checkpoint(), run_dir / CHECKPOINTS, max_to_keep=1)
            if previous is not None:
                restore(checkpoints, run_dir)
                log.info("continuing %s from step %d to %d", run_dir, trainer.step, experiment.epochs)
            timings.add("trace", trainer.trace())
            timings.add("compile", trainer.compile())
            sinks = open_sinks(experiment, trained, trainer, run_dir, new=previous is None, timings=timings)
            last_logged = last_logged_step(run_dir)
            status, last_finite = "interrupted", None
            with progress_bar(experiment.epochs, trainer.step, progress) as bar:
                for chunk in trainer.chunks(experiment.epochs):
                    history = chunk.history
                    last_finite = chunk.last_finite if chunk.last_finite is not None else last_finite
                    if chunk.status == "diverged" and last_finite is not None:
                        history = pd.concat([history, last_finite])  # keep the last finite state, logged or not
                    history = history[history["step"] > last_logged].drop_duplicates("step")
                    for sink in sinks:
                        with timings.measure(sink.kind):
                            sink.write(history)
                    if not history.empty:
                        last_logged = int(history["step"].iat[-1])
                    if chunk.updates:  # the state moved: save it, and mark a run a SIGKILL would leave resumable
                        running = {"status": "running", "steps": trainer.step, "log_every": log_every,
                                   "xla": trainer.jit_compile, "wall_time_s": elapsed()}  # fmt: skip
                        with timings.measure("summary"):  # first: a checkpoint is never without its summary
                            write_json_atomically(run_dir / SUMMARY, {**running, **experiment.describe()})
                        with timings.measure("checkpoint"):
                            checkpoints.save(checkpoint_number=trainer.step)
                    bar.update(chunk.updates)
                    if chunk.status is not None:
                        status = chunk.status
                    elif stop_requests.received is not None:
                        break
            if status == "interrupted":
                last_finite = trainer.current_row()
            timings.add("steps", trainer.step_seconds)
            wall_time = elapsed()  # this session's time plus the earlier sessions' of a resumed run

            starts = None
            if flat_starts is not None:
                starts = starts_table(problem, flat_starts, trainer.start_values(), trainer.current_losses())
                write_table(starts, run_dir / STARTS_CSV)
            summary = summarise(experiment, problem, trainer, last_finite, starts, status, wall_time)
        summary["log_every"] = log_every
        pictures = []
        if experiment.log.plots and last_finite is not None and status != "interrupted":
            with timings.measure("pictures"):
                pictures = draw_pictures(experiment, problem, trainer.param_columns, starts, run_dir, status)
        tensorboard = next((sink for sink in sinks if isinstance(sink, TensorBoardSink)), None)
        if tensorboard is not None:
            with timings.measure("tensorboard"):
                tensorboard.write_images(pictures, step=summary["steps"])
                if summary["final_loss"] is not None and status != "interrupted":
                    metrics = {
                        f"summary/{key}": summary[key]
                        for key in ("final_loss", "best_loss", "steps")
                        if summary[key] is not None
                    }
                    tensorboard.write_metrics(metrics, step=summary["steps"])
                tensorboard.close()
                hparams = flat_hparams(experiment.describe())
                write_session(run_dir, hparams, trial or trial_id(run_dir, in_sweep=False), status, started_at)
        summary["timings_s"] = timings.seconds
        write_json_atomically(run_dir / SUMMARY, summary)
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


def restore(checkpoints: Any, run_dir: Path) -> None:
    """Load the latest checkpoint in `run_dir` into the trainer, or raise ConfigError if it doesn't fit.

    A run killed while it saved its first checkpoint has none that is complete; it starts again from its first
    step, which gives the same history, and its rows already written are kept."""
    if checkpoints.latest_checkpoint is None:
        log.info("%s holds no complete checkpoint: continuing from the first step", run_dir)
        return
    status = checkpoints.checkpoint.restore(checkpoints.latest_checkpoint)
    try:
        status.assert_consumed()
    except (AssertionError, ValueError) as error:  # another structure, or an older tapelab's layout
        status.expect_partial()  # TensorFlow would log each unmatched value again; the error names them
        problem = " ".join(str(error).split())[:200]
        raise ConfigError("resume", f"the checkpoint in {run_dir} does not fit this run's loop: {problem}") from None


def open_sinks(
    experiment: Experiment, problem: Problem, trainer: Trainer, run_dir: Path, new: bool, timings: Stopwatch
) -> list[Any]:
    """metrics.csv and, unless turned off, TensorBoard; a new run also records its graphs."""
    sinks: list[Any] = [CsvSink(run_dir / METRICS, append=not new)]
    if experiment.log.tensorboard:
        from tapelab.training import vector_slices

        with timings.measure("tensorboard"):
            vectors = vector_slices(problem.start) if problem.starts is None else {}
            tensorboard = TensorBoardSink(run_dir, trainer.columns, trainer.param_columns, vectors)
            if new and experiment.log.graph:
                tensorboard.write_graphs(trainer.step_graph_def(), trainer.graph_def())
        sinks.append(tensorboard)
    return sinks


@contextmanager
def progress_bar(epochs: int, done: int, wanted: bool) -> Iterator[Any]:
    """A tqdm bar of steps, on a terminal only, shown once a run has taken a few seconds."""
    from tqdm import tqdm

    shown = wanted and sys.stderr.isatty()
    with tqdm(total=epochs, initial=done, unit="step", unit_scale=True, delay=3, disable=not shown) as bar:
        yield bar


def draw_pictures(
    experiment: Experiment,
    problem: Problem,
    param_columns: list[str],
    starts: pd.DataFrame | None,
    run_dir: Path,
    status: str,
) -> list[Path]:
    """loss.png, and trajectory.png (one start) or starts.png (a batch) for two parameters; a run that ended
    `status` "diverged" says so in them."""
    from tapelab.pictures import draw_run, draw_starts

    box = experiment.objective.box()
    pictures = draw_run(run_dir, problem, param_columns, box, diverged=status == "diverged")
    if starts is not None and problem.flat_start().size == 2:
        flat = [starts.filter(like=f"{side}_").to_numpy(np.float64) for side in ("start", "end")]
        pictures.append(draw_starts(run_dir, problem, *flat, search_box(experiment.objective, problem)))
    return pictures


def stored_result(run_dir: Path) -> float:
    """What a finished run returned: its final loss, or inf if it diverged."""
    summary = read_summary(run_dir) or {}
    final_loss = summary.get("final_loss")
    return math.inf if summary.get("status") == "diverged" or final_loss is None else final_loss


def record_failure(run_dir: Path, error: Exception, trial: str, overrides: list[str] | None) -> float:
    """Record a job that raised as `failed` in summary.json, and return inf for sweepers.

    A finished run's summary (another job's, in a directory clash) is left as it is; the steps of an
    unfinished one are kept beside the error. With the job's `overrides`, its HParams session says that it
    failed, with the values it was given.
    """
    previous = read_summary(run_dir)
    if previous is None or previous.get("status") not in FINISHED:
        run_dir.mkdir(parents=True, exist_ok=True)
        failure = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        if previous is not None and "steps" in previous:
            failure["steps"] = previous["steps"]
        write_json_atomically(run_dir / SUMMARY, failure)
        if overrides is not None:
            given = given_hparams({o.key_or_group: o.value() for o in parse_overrides(overrides)})
            write_session(run_dir, given, trial, "failed", time.time())
    return math.inf


def summarise(
    experiment: Experiment,
    problem: Problem,
    trainer: Trainer,
    last_finite: pd.DataFrame | None,
    starts: pd.DataFrame | None,
    status: str,
    wall_time: float,
) -> dict[str, Any]:
    """The content of summary.json, from the last finite row (None when not even the start was finite).

    For a batch of starts, the parameters are the best start's, which `best_start` numbers.
    """
    if last_finite is None:
        steps, final_loss, best, flat = 0, None, None, problem.flat_start()
    else:
        row = last_finite.iloc[0]
        steps, final_loss, best = int(row["step"]), shortest(row["loss"]), shortest(trainer.best_loss)
        flat = row[trainer.param_columns].to_numpy(np.float32)
    summary: dict[str, Any] = {"status": status, "steps": steps, "final_loss": final_loss, "best_loss": best}
    if starts is not None:  # a batch: the best start that ended finite, at the step the batch stopped
        finite = starts[np.isfinite(starts.drop(columns="start").to_numpy()).all(axis=1)]
        summary["best_start"] = None if finite.empty else int(finite["final_loss"].idxmin())
        summary["steps"] = trainer.step
        if finite.empty:
            summary["final_loss"], flat = None, problem.flat_start()
        else:
            chosen = finite.loc[summary["best_start"]]
            summary["final_loss"] = shortest(chosen["final_loss"])
            flat = chosen.filter(like="end_").to_numpy(np.float32)
    summary.update(
        params=parameter_values(problem, flat),
        wall_time_s=wall_time,
        steps_per_s=steps / wall_time,
        xla=trainer.jit_compile,
        **experiment.describe(),
    )
    if problem.minima:
        distances = [np.linalg.norm(flat.astype(np.float64) - point) for point in problem.minima]
        summary["distance_to_min"] = float(min(distances))
        if final_loss is not None:
            from tapelab.landscape import loss_at

            lowest = float(loss_at(problem, np.array(problem.minima)).min())  # f* at the known minima
            summary["gap_to_min"] = shortest(final_loss - lowest)
    return summary


def shortest(value: float) -> float:
    """A float32 value as the shortest decimal that reads back to it (0.99999857, not 0.9999985694885254)."""
    return float(str(np.float32(value)))


def parameter_values(problem: Problem, flat: np.ndarray) -> dict[str, float | list[float]]:
    """A flat parameter row as name -> number or list (for a vector), in shortest float32 text."""
    return {
        name: [shortest(element) for element in value] if np.ndim(value) == 1 else shortest(value)
        for name, value in problem.split(flat).items()
    }
