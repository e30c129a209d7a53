"""One run: build the problem and optimizer, train in chunks, and feed every sink from one history."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from tapelab.config import Experiment, to_experiment
from tapelab.objectives import Problem
from tapelab.rundir import METRICS, SUMMARY, check_unused
from tapelab.sinks.csv_sink import CsvSink
from tapelab.sinks.summary import flat_hparams, write_json_atomically

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path) -> float:
    """Check `cfg`, train, write the run directory, and return the final loss (inf if diverged)."""
    return train(to_experiment(cfg), run_dir)


def train(experiment: Experiment, run_dir: Path) -> float:
    """Train `experiment`, writing metrics.csv, TensorBoard events and summary.json into `run_dir`."""
    check_unused(run_dir)
    problem = experiment.objective.build(experiment.seed)
    update = experiment.optimizer.build(experiment.lr)

    from tapelab.training import Trainer, vector_slices  # imports TensorFlow

    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trainer = Trainer(problem, update, experiment.log.every)
    sinks: list[Any] = [CsvSink(run_dir / METRICS)]
    tensorboard = None
    if experiment.log.tensorboard:
        from tapelab.sinks.tensorboard_sink import TensorBoardSink

        tensorboard = TensorBoardSink(run_dir, trainer.columns, trainer.param_columns, vector_slices(problem.start))
        tensorboard.write_hparams(flat_hparams(experiment.describe()), trial_id=run_dir.resolve().as_posix())
        sinks.append(tensorboard)

    best_loss, diverged, last_logged = math.inf, False, -1
    last_finite: pd.DataFrame | None = None
    trace = tensorboard.trace_graph if tensorboard is not None and experiment.log.graph else None
    for chunk in trainer.chunks(experiment.epochs, trace):
        last_finite = chunk.last_finite if chunk.last_finite is not None else last_finite
        history = chunk.history
        if not history.empty:
            last_logged = int(history["step"].iat[-1])
        if chunk.diverged and last_finite is not None and int(last_finite["step"].iat[0]) != last_logged:
            history = pd.concat([history, last_finite], ignore_index=True)  # keep the last finite state
        for sink in sinks:
            sink.write(history)
        best_loss = min(best_loss, chunk.best_loss)
        diverged = chunk.diverged
    wall_time = time.perf_counter() - started

    summary = summarise(experiment, problem, trainer.param_columns, last_finite, best_loss, diverged, wall_time)
    if experiment.log.plots and last_finite is not None:
        from tapelab.pictures import draw_run

        pictures = draw_run(run_dir, problem, trainer.param_columns, domain_of(experiment.objective))
        if tensorboard is not None:
            tensorboard.write_images(pictures, step=summary["steps"])
    if tensorboard is not None:
        if summary["final_loss"] is not None:
            metrics = {key: summary[key] for key in ("final_loss", "best_loss", "steps")}
            tensorboard.write_metrics(metrics, step=summary["steps"])
        tensorboard.close()
    write_json_atomically(run_dir / SUMMARY, summary)
    log.info(
        "%s after %d steps in %.2f s: final loss %s, %s",
        summary["status"],
        summary["steps"],
        wall_time,
        summary["final_loss"],
        ", ".join(f"{name}={value}" for name, value in summary["params"].items()),
    )
    return math.inf if diverged else summary["final_loss"]


def domain_of(objective: Any) -> np.ndarray | None:
    """The objective's usual search box ([low, high] per parameter), where it has one."""
    box = getattr(objective, "box", None)
    return box() if callable(box) else None


def record_failure(run_dir: Path, error: Exception) -> float:
    """Write a `failed` summary.json for a job that raised (unless one exists), and return inf for sweepers."""
    if not (run_dir / SUMMARY).exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(run_dir / SUMMARY, {"status": "failed", "error": f"{type(error).__name__}: {error}"})
    return math.inf


def summarise(
    experiment: Experiment,
    problem: Problem,
    param_columns: list[str],
    last_finite: pd.DataFrame | None,
    best_loss: float,
    diverged: bool,
    wall_time: float,
) -> dict[str, Any]:
    """The content of summary.json, from the last finite row (None when not even the start was finite)."""
    if last_finite is None:
        steps, final_loss, best, flat = 0, None, None, problem.flat_start()
    else:
        row = last_finite.iloc[0]
        steps, final_loss = int(row["step"]), shortest(row["loss"])
        best, flat = shortest(best_loss), row[param_columns].to_numpy(np.float32)
    summary: dict[str, Any] = {
        "status": "diverged" if diverged else "completed",
        "steps": steps,
        "final_loss": final_loss,
        "best_loss": best,
        "params": parameter_values(problem, flat),
        "wall_time_s": wall_time,
        "steps_per_s": steps / wall_time,
        **experiment.describe(),
    }
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
