"""The pictures of one run: loss.png, trajectory.png (for two parameters), and their copies in TensorBoard."""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.engine.layout import element_columns
from tapelab.landscape import loss_at, loss_elements
from tapelab.objectives import Problem
from tapelab.plots import ContourPicture, LossPicture, contour_box, diverged_box
from tapelab.rundir import METRICS

LOSS_PNG = "loss.png"
TRAJECTORY_PNG = "trajectory.png"
STARTS_PNG = "starts.png"
GRID_POINTS = 160  # per axis of the contour, for objectives that read few numbers
MIN_GRID_POINTS = 24
MAX_CONTOUR_FLOATS = 2**28  # grid points × the loss's elements: a regression on 10⁵ points gets a 36×36 grid
MAX_PATH_POINTS = 5000
MAX_CACHED_CONTOURS = 8
_contours: OrderedDict[str, ContourPicture] = OrderedDict()  # the contours a process drew last


def contour_picture(problem: Problem, box: np.ndarray) -> ContourPicture:
    """The contour of the objective over `box` (one [low, high] row per parameter).

    The jobs of a sweep mostly draw the same objective over the same region: its values are computed, and
    the contour rendered, once per loss, constants and region in a process.
    """
    labels = tuple(element_columns(problem.start))
    digest = hashlib.sha256(repr((problem.structure, labels)).encode() + box.tobytes())
    for name, value in problem.constants.items():
        digest.update(name.encode() + np.ascontiguousarray(value).tobytes())
    key = digest.hexdigest()
    if key not in _contours:
        points_per_axis = int(
            np.clip(np.sqrt(MAX_CONTOUR_FLOATS / loss_elements(problem)), MIN_GRID_POINTS, GRID_POINTS)
        )
        grid_x, grid_y = np.meshgrid(np.linspace(*box[0], points_per_axis), np.linspace(*box[1], points_per_axis))
        values = loss_at(problem, np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)).reshape(grid_x.shape)
        _contours[key] = ContourPicture(grid_x, grid_y, values, list(problem.minima), labels)
        while len(_contours) > MAX_CACHED_CONTOURS:
            _contours.popitem(last=False)
    _contours.move_to_end(key)
    return _contours[key]


@functools.cache
def loss_picture() -> LossPicture:
    """The process's loss.png figure, drawn again for each run."""
    return LossPicture()


def picture_title(summary: Mapping[str, Any], run_dir: Path) -> str:
    """The title of a run's pictures: the objective, the optimizer, the learning rate and the run directory's
    name (the job's name in a sweep, the time of a single run), e.g. `rosenbrock · adam · lr 0.01 —
    lr=0.01,optimizer=adam_1`; for a diverged run (`summary`'s status), the step it diverged at."""
    title = f"{summary['objective']} · {summary['optimizer']} · lr {summary['lr']:g} — {run_dir.name}"
    return f"{title}, diverged at step {summary['steps']}" if summary["status"] == "diverged" else title


def thinned(history: pd.DataFrame) -> pd.DataFrame:
    """Every k-th row of `history`, about MAX_PATH_POINTS of them, and always the last: where the run ended."""
    rows = np.arange(len(history))
    return history.iloc[np.union1d(rows[:: max(1, len(history) // MAX_PATH_POINTS)], rows[-1:])]


def draw_run(
    run_dir: Path, problem: Problem, param_columns: list[str], domain: np.ndarray | None, summary: Mapping[str, Any]
) -> list[Path]:
    """Draw the run's pictures from its metrics.csv, titled after its `summary` (`picture_title`); return their
    files, which the PNG writer writes (`tapelab.plots.pngs_written(files)` waits for them).

    The loss is drawn less the objective's minimum value where it is known (`loss_at_min`). A diverged run's
    path is framed so that the blow-up does not hide the objective (see `diverged_box`).
    """
    history = thinned(pd.read_csv(run_dir / METRICS, usecols=["step", "loss", *param_columns]))
    title, diverged = picture_title(summary, run_dir), summary["status"] == "diverged"
    loss_picture().save(history, title, summary.get("loss_at_min"), run_dir / LOSS_PNG)
    written = [run_dir / LOSS_PNG]
    if len(param_columns) == 2:
        path = history[param_columns].to_numpy(np.float64)
        frame = diverged_box if diverged else contour_box
        box = frame(path, list(problem.minima), domain)
        contour_picture(problem, box).save_path(path, run_dir / TRAJECTORY_PNG, title, diverged)
        written.append(run_dir / TRAJECTORY_PNG)
    return written


def draw_starts(
    run_dir: Path, problem: Problem, starts: np.ndarray, ends: np.ndarray, domain: np.ndarray, title: str
) -> Path:
    """starts.png: every start joined to its end over the contour of a two-parameter objective, under `title`
    (written as `draw_run`'s pictures are)."""
    finite_ends = ends[np.all(np.isfinite(ends), axis=1)]
    box = contour_box(np.vstack([starts, finite_ends]), list(problem.minima), domain)
    contour_picture(problem, box).save_starts(starts, ends, run_dir / STARTS_PNG, title)
    return run_dir / STARTS_PNG
