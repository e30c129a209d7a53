"""One run's outputs, fed by its chunks as they come: the sinks and summary.json while it trains; the final
summary, pictures, TensorBoard's last events and the HParams session when it ends.

The rows flow one way: the engine's batch → the run's chunk → its record → its sinks (`tapelab.sinks.Sink`).
A run alone, a multi-start run and each member of a batched sweep are one report of a batch
(`tapelab.engine.batch.RunView`), and have a record of their own (`tapelab.driver` feeds them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.config import Experiment
from tapelab.engine.batch import Chunk, RunView
from tapelab.engine.layout import vector_slices
from tapelab.multistart import STARTS_CSV, search_box, starts_table
from tapelab.objectives import Problem
from tapelab.plots import pngs_written
from tapelab.resume import last_logged_row
from tapelab.run_summary import flat_hparams, write_json_atomically
from tapelab.rundir import METRICS, SUMMARY
from tapelab.sinks import RunEnd, Sink
from tapelab.sinks.csv_sink import CsvSink
from tapelab.sinks.tensorboard_sink import TensorBoardSink
from tapelab.stopwatch import Stopwatch
from tapelab.sweep import write_table


class RunRecord:
    """The outputs of the run of `experiment` in `run_dir`; `previous` is the summary of the run it continues."""

    def __init__(
        self,
        experiment: Experiment,
        problem: Problem,
        trained: RunView,
        run_dir: Path,
        previous: dict[str, Any] | None,
        log_every: int,
        timings: Stopwatch,
        started: tuple[float, float],
        batch: dict[str, int] | None = None,
    ) -> None:
        """`started` is when this session of the run began, as `time.perf_counter()` and `time.time()`; `batch`
        the `{group, size}` of the batch the run is a member of, for its summary."""
        self.experiment, self.problem, self.trained, self.run_dir = experiment, problem, trained, run_dir
        self.log_every, self.timings = log_every, timings
        self.started, self.started_at = started
        self.earlier_seconds = (previous or {}).get("wall_time_s", 0.0)  # the earlier sessions of a resumed run
        self.sinks = open_sinks(experiment, problem, trained, run_dir, new=previous is None, timings=timings)
        # A resumed run starts from its last logged row, which is also its last finite one so far.
        self.last_finite: pd.DataFrame | None = None if previous is None else last_logged_row(run_dir)
        self.last_logged = -1 if self.last_finite is None else int(self.last_finite["step"].iat[0])
        self.status: str = "interrupted"
        self.batch = batch
        self._drawn: tuple[dict[str, Any], list[Path]] | None = None  # what `draw` made

    @property
    def ended(self) -> bool:
        """Whether the run has its end status (completed, converged or diverged)."""
        return self.status != "interrupted"

    def elapsed(self, until: float | None = None) -> float:
        """This session's time, to now or to `until` (a `time.perf_counter()` time), plus the earlier sessions'
        of a resumed run."""
        return (time.perf_counter() if until is None else until) - self.started + self.earlier_seconds

    def take(self, chunk: Chunk) -> None:
        """Write a chunk's new rows; after updates, save the running summary (before the driver saves the
        checkpoint: a checkpoint is never without its summary)."""
        history = chunk.history
        self.last_finite = chunk.last_finite if chunk.last_finite is not None else self.last_finite
        if chunk.status == "diverged" and self.last_finite is not None:
            history = pd.concat([history, self.last_finite])  # keep the last finite state, logged or not
        history = history[history["step"] > self.last_logged].drop_duplicates("step")
        for sink in self.sinks:
            with self.timings.measure(sink.kind):
                sink.write(history)
        if not history.empty:
            self.last_logged = int(history["step"].iat[-1])
        if chunk.updates:  # the state moved: mark a run a SIGKILL would leave resumable
            running = {"status": "running", "steps": self.trained.step, "log_every": self.log_every,
                       "xla": self.trained.jit_compile, "wall_time_s": self.elapsed()}  # fmt: skip
            with self.timings.measure("summary"):
                write_json_atomically(self.run_dir / SUMMARY, {**running, **self.experiment.describe()})
        if chunk.status is not None:
            self.status = chunk.status

    def draw(self) -> tuple[dict[str, Any], list[Path]]:
        """The first half of `finish`: the run's summary and its pictures, whose files the PNG writer writes
        meanwhile. A batch draws every member's pictures before it finishes any, so that each member's files
        are written while the next member's pictures are drawn."""
        if self._drawn is not None:
            return self._drawn
        trained, status, run_dir = self.trained, self.status, self.run_dir
        if status == "interrupted":
            self.last_finite = trained.current_row()
        self.timings.add("steps", trained.step_seconds)
        # A batch's member takes from the batch's start to its own last step, not to the batch's end.
        wall_time = self.elapsed(trained.last_step_time if self.batch is not None else None)
        table = None
        if trained.pooled:
            starts, ends, losses, steps, statuses = trained.member_ends()
            still = "interrupted" if status == "interrupted" else "completed"  # the members that ran to the end
            statuses = [member or still for member in statuses]
            table = starts_table(self.problem, starts, ends, losses, steps, statuses)
            write_table(table, run_dir / STARTS_CSV)
        summary = summarise(self.experiment, self.problem, trained, self.last_finite, table, status, wall_time)
        summary["log_every"] = self.log_every
        if self.batch is not None:
            summary["batch"] = self.batch
        pictures = []
        if self.experiment.log.plots and self.last_finite is not None and status != "interrupted":
            with self.timings.measure("pictures"):
                pictures = draw_pictures(self.experiment, self.problem, trained.param_columns, table, run_dir, summary)
        self._drawn = summary, pictures
        return self._drawn

    def finish(self, trial: str) -> dict[str, Any]:
        """Write what a run writes when it ends (or is interrupted), and return its summary."""
        summary, pictures = self.draw()
        if pictures:
            with self.timings.measure("pictures"):
                pngs_written(pictures)
        end = RunEnd(summary, pictures, flat_hparams(self.experiment.describe()), trial, self.started_at)
        for sink in self.sinks:
            with self.timings.measure(sink.kind):
                sink.finish(end)
        summary["timings_s"] = self.timings.seconds
        write_json_atomically(self.run_dir / SUMMARY, summary)
        return summary


def open_sinks(
    experiment: Experiment, problem: Problem, trained: RunView, run_dir: Path, new: bool, timings: Stopwatch
) -> list[Sink]:
    """metrics.csv and, unless turned off, TensorBoard; a new run also records its graphs."""
    sinks: list[Sink] = [CsvSink(run_dir / METRICS, append=not new)]
    if experiment.log.tensorboard:
        with timings.measure("tensorboard"):
            vectors = {} if trained.pooled else vector_slices(problem.start)
            tensorboard = TensorBoardSink(run_dir, trained.columns, trained.param_columns, vectors)
            if new and experiment.log.graph:
                tensorboard.write_graphs(trained.step_graph_def(), trained.graph_def())
        sinks.append(tensorboard)
    return sinks


def draw_pictures(
    experiment: Experiment,
    problem: Problem,
    param_columns: list[str],
    starts: pd.DataFrame | None,
    run_dir: Path,
    summary: dict[str, Any],
) -> list[Path]:
    """loss.png, and trajectory.png (one start) or starts.png (a batch) for two parameters, titled after the
    run's `summary` (`tapelab.pictures.picture_title`)."""
    from tapelab.pictures import draw_run, draw_starts, picture_title

    box = experiment.objective.box()
    pictures = draw_run(run_dir, problem, param_columns, box, summary)
    if starts is not None and problem.flat_start().size == 2:
        flat = [starts.filter(like=f"{side}_").to_numpy(np.float64) for side in ("start", "end")]
        search = search_box(experiment.objective, problem)
        pictures.append(draw_starts(run_dir, problem, *flat, search, picture_title(summary, run_dir)))
    return pictures


def summarise(
    experiment: Experiment,
    problem: Problem,
    trained: RunView,
    last_finite: pd.DataFrame | None,
    starts: pd.DataFrame | None,
    status: str,
    wall_time: float,
) -> dict[str, Any]:
    """The content of summary.json, from the last finite row (None when not even the start was finite).

    For a batch of starts, the parameters are the best start's, which `best_start` numbers. Numbers are
    written in the run's dtype, as the shortest decimal that reads back to it.
    """
    dtype = experiment.dtype
    if last_finite is None:
        steps, final_loss, best, flat = 0, None, None, problem.flat_start()
    else:
        row = last_finite.iloc[0]
        steps, final_loss, best = int(row["step"]), shortest(row["loss"], dtype), shortest(trained.best_loss, dtype)
        flat = row[trained.param_columns].to_numpy(dtype)
    summary: dict[str, Any] = {"status": status, "steps": steps, "final_loss": final_loss, "best_loss": best}
    if starts is not None:  # a batch: the best start that ended finite, at the step the batch stopped
        finite = starts[np.isfinite(starts.filter(regex="^(start_|end_|final_loss)").to_numpy()).all(axis=1)]
        summary["starts"] = {key: int(count) for key, count in starts["status"].value_counts().sort_index().items()}
        summary["best_start"] = None if finite.empty else int(finite["final_loss"].idxmin())
        summary["steps"] = trained.step
        if finite.empty:
            summary["final_loss"], flat = None, problem.flat_start()
        else:
            chosen = finite.loc[summary["best_start"]]
            summary["final_loss"] = shortest(chosen["final_loss"], dtype)
            flat = chosen.filter(like="end_").to_numpy(dtype)
    summary.update(
        params=parameter_values(problem, flat, dtype),
        wall_time_s=wall_time,
        steps_per_s=steps / wall_time,
        xla=trained.jit_compile,
        **experiment.describe(),
    )
    if problem.minima:
        from tapelab.landscape import lowest_at_minima

        distances = [np.linalg.norm(flat.astype(np.float64) - point) for point in problem.minima]
        summary["distance_to_min"] = float(min(distances))
        lowest = lowest_at_minima(problem, dtype)
        if np.isfinite(lowest):  # summary.json holds no NaN or infinity
            summary["loss_at_min"] = shortest(lowest, dtype)
            if final_loss is not None:
                summary["gap_to_min"] = shortest(final_loss - lowest, dtype)
    return summary


def shortest(value: float, dtype: str = "float32") -> float:
    """A value of `dtype` as the shortest decimal that reads back to it (float32: 0.99999857, not
    0.9999985694885254)."""
    return float(str(np.dtype(dtype).type(value)))


def parameter_values(problem: Problem, flat: np.ndarray, dtype: str = "float32") -> dict[str, float | list[float]]:
    """A flat parameter row as name -> number or list (for a vector), in shortest text of `dtype`."""
    return {
        name: [shortest(element, dtype) for element in value] if np.ndim(value) == 1 else shortest(value, dtype)
        for name, value in problem.split(flat).items()
    }
