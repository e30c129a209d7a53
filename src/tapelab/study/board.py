"""A study in TensorBoard: one HParams row per problem, optimizer and learning rate, and the report's figures.

They go under `<study dir>/tensorboard/`, so that `tensorboard --logdir <study dir>` (or any directory above it)
shows them:

    tensorboard/figures/events.out.tfevents.board                                  the experiment and the figures
    tensorboard/hparams/<problem>/<optimizer>/lr=<lr>/events.out.tfevents.board   a row: its session and metrics

A row is a (problem, optimizer, learning rate) over its tuning and evaluation seeds. Its hparams are `problem`,
`optimizer`, `lr`, `rate` (`chosen`, the tuning rule's rate; else `keras default`, Keras's default rate; else
`grid`) and `status` (`diverged` when any of its seeds diverged, else `completed`: Failure and Success in the
tab's Status filter). Its metrics, scalars at step 0, over the seeds: `median_final_gap`, the median gap at the
budget (Δf, the running minimum of f − f*: the `best_gap` column), `solved_share`, the share that met the
primary target, and `median_runtime`, the median steps to it with a miss as inf, written as the budget + 1
where that median is inf (half the seeds or more missed), so that the tab's plots can draw it. TensorBoard's
scalars are float32 (7 digits; a gap below 1e-45 reads 0). A row's trial ID names the cell, the study directory
and a code made from its absolute path (`rosenbrock/adam/lr=0.001 · quick · 3e0f1c`): TensorBoard merges the
sessions of one trial ID into one row, so two studies under one logdir never share a row.

A study of at most `MAX_ROWS` rows gets them all. Measured on 2 busy cores, TensorBoard answers the tab's
request for every row (`/data/plugin/hparams/session_groups`) in 1.8 s for `study=classic`'s 5,760 rows and
in 5.7 s for 17,280, and its table shows 3.9 s and 6.9 s after the page opens: 15,000 rows load within 10 s.
A larger study gets only each (problem, optimizer)'s chosen rate and its Keras default rate.

The figures run holds the HParams experiment (the columns and the metrics, with their definitions) and each of
the report's figures (PNG) as the image `report/<name>`. The Images tab ticks no run when it lists more than 40:
filter the Images tab's runs by `figures` (or open `#images&regexInput=figures`). Everything is written with
TensorBoard's own protocol buffers, without TensorFlow. Written again, the folder holds only what the tables
give: each file is replaced in one step, and the files and runs it no longer has are removed (a running
TensorBoard shows the earlier rows until it restarts).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.sinks.hparams import session_summaries, write_events
from tapelab.sinks.tensorboard_sink import add_png
from tapelab.study import measures
from tapelab.study.selection import primary_runtimes

BOARD = "tensorboard"
EVENTS = "events.out.tfevents.board"
FIGURES_RUN, ROWS = "figures", "hparams"  # "figures" comes first in TensorBoard's run lists
MAX_ROWS = 15_000  # the rows the HParams tab loads within 10 s (measured: see above)
CELL = ["problem", "optimizer", "lr"]  # a row
RATES = ["chosen", "keras default", "grid"]
STATUSES = ["completed", "diverged"]
METRICS = {
    "median_final_gap": "median over the seeds of the gap at the budget, Δf = min over the steps of f − f*",
    "solved_share": "share of the seeds that met the primary target within the budget",
    "median_runtime": "median over the seeds of the steps to the primary target, a miss as inf; budget + 1 where"
    " that median is inf (half the seeds or more missed)",
}


def write_board(
    study_dir: Path,
    runs: pd.DataFrame,
    chosen: pd.DataFrame,
    primary: str,
    images: Mapping[str, Path] | None = None,
) -> Path:
    """Write the study's TensorBoard folder from its tables, replacing what it held; return the folder.

    `runs` and `chosen` are the study's tables (a partial study's too; with no runs, only the figures),
    `primary` the runs' column of the primary target (`runtime@1e-06`), `images` each figure's name and PNG file.
    """
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    board = study_dir / BOARD
    study = study_dir.resolve()
    code = hashlib.sha256(str(study).encode()).hexdigest()[:6]
    rows = board_rows(runs, chosen, primary)
    now = time.time()
    written = {_write_figures(board / FIGURES_RUN, rows, images or {}, now)}
    names = _lr_names(rows["lr"])
    for row in rows.itertuples(index=False):
        place = f"{row.problem}/{row.optimizer}/lr={names[row.lr]}"
        hparams = {"problem": row.problem, "optimizer": row.optimizer, "lr": row.lr, "rate": row.rate}
        summaries = session_summaries(hparams, f"{place} · {study.name} · {code}", row.status, now, now)
        summaries += [scalar_pb(tag, getattr(row, tag)) for tag in METRICS]
        path = board / ROWS / place / EVENTS
        path.parent.mkdir(parents=True, exist_ok=True)
        write_events(path, summaries, now, durable=False)  # rebuilt from the tables at will
        written.add(path)
    _remove_all_but(board, written)
    return board


def board_rows(runs: pd.DataFrame, chosen: pd.DataFrame, primary: str) -> pd.DataFrame:
    """The HParams rows: per (problem, optimizer, lr), its `rate`, `status` and metrics over all its seeds;
    only the chosen and Keras default rates where there are more than `MAX_ROWS`."""
    columns = [*CELL, "rate", "status", *METRICS]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    timed = primary_runtimes(runs, primary)
    timed = timed.assign(
        runtime=measures.missed_as_inf(timed["runtime"], timed["solved"]), diverged=timed["status"] == "diverged"
    )
    cells = (
        timed.groupby(CELL)
        .agg(
            keras_default=("keras_default", "any"),
            diverged=("diverged", "any"),
            budget=("budget", "max"),
            median_final_gap=("best_gap", "median"),
            solved_share=("solved", "mean"),
            median_runtime=("runtime", "median"),
        )
        .reset_index()
    )
    picked = pd.MultiIndex.from_frame(cells[CELL]).isin(pd.MultiIndex.from_frame(chosen[CELL]))
    cells = cells.assign(
        rate=np.where(picked, "chosen", np.where(cells["keras_default"], "keras default", "grid")),
        status=np.where(cells["diverged"], "diverged", "completed"),
        median_runtime=cells["median_runtime"].where(np.isfinite(cells["median_runtime"]), cells["budget"] + 1),
    )
    if len(cells) > MAX_ROWS:
        cells = cells[cells["rate"] != "grid"]
    return cells[columns].reset_index(drop=True)


def _write_figures(run_dir: Path, rows: pd.DataFrame, images: Mapping[str, Path], now: float) -> Path:
    """The figures run: the HParams experiment of `rows` (where there are any) and the figures' PNG files as
    images; return its event file."""
    from tensorboard.compat.proto import summary_pb2

    figures = summary_pb2.Summary()
    for name, picture in images.items():
        add_png(figures, f"report/{name}", Path(picture))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_events(run_dir / EVENTS, ([_experiment(rows, now)] if len(rows) else []) + [figures], now)
    return run_dir / EVENTS


def _experiment(rows: pd.DataFrame, created: float) -> Any:
    """The HParams experiment: the columns and the metrics, with their definitions. The problems and optimizers
    listed are this study's: the tab's filters keep another study's rows too, until a value is unticked."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    columns = [
        hp.HParam("problem", hp.Discrete(sorted(rows["problem"].unique()))),
        hp.HParam("optimizer", hp.Discrete(sorted(rows["optimizer"].unique()))),
        hp.HParam("lr", hp.RealInterval(float(rows["lr"].min()), float(rows["lr"].max()))),
        hp.HParam("rate", hp.Discrete(RATES)),
        hp.HParam("status", hp.Discrete(STATUSES)),
    ]
    metrics = [hp.Metric(tag, display_name=tag.replace("_", " "), description=text) for tag, text in METRICS.items()]
    return hp.hparams_config_pb(hparams=columns, metrics=metrics, time_created_secs=created)


def _lr_names(rates: pd.Series) -> dict[float, str]:
    """Each learning rate's name: 3 significant digits, or as many more as tell the rates apart."""
    unique = set(rates.tolist())
    digits = next(n for n in range(3, 18) if len({f"{rate:.{n}g}" for rate in unique}) == len(unique))
    return {rate: f"{rate:.{digits}g}" for rate in unique}


def _remove_all_but(board: Path, kept: set[Path]) -> None:
    """Remove every file under `board` but `kept`, and the folders left empty."""
    for path in sorted(board.rglob("*"), reverse=True):
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif path not in kept:
            path.unlink()
