"""A study's leaderboard: one row per optimizer at its chosen learning rates and one for the reference at Keras's
default rate, on the evaluation seeds, with each column's definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tapelab.atomic import replacing
from tapelab.study import measures, selection

DEFINITIONS: dict[str, str] = {
    "optimizer": "The optimizer at the learning rate the tuning rule chose on each problem; the reference row at "
    "Keras's default learning rate.",
    "profile_score": "AlgoPerf's score (1/3)∫₁⁴ρ(τ)dτ of the performance profile over the leaderboard's rows, on "
    "each problem's median runtime to the primary target over the evaluation seeds: 1 is the fastest on every "
    "problem, 0 never within 4 times the fastest.",
    "solved_share": "The share of (problem, target, evaluation seed) whose target the run met within its budget.",
    "solved_primary": "The share of (problem, evaluation seed) whose run met the primary target within its budget.",
    "speedup": "The geometric mean over problems of the reference row's median runtime to the primary target ÷ "
    "this row's, a median that is a miss (half the seeds or more missed) counted as the budget + 1: above 1 is faster "
    "than the reference.",
    "lr:<problem>": "The learning rate on that problem: the tuning rule's choice on the tuning seeds (the "
    "reference row: Keras's default).",
}
COLUMNS = ("profile_score", "solved_share", "solved_primary", "speedup")  # the leaderboard's numbers besides rates


def leaderboard(
    runs: pd.DataFrame, chosen: pd.DataFrame, targets: np.ndarray, reference: str, primary: str
) -> pd.DataFrame:
    """The leaderboard (see DEFINITIONS), best profile score first: columns optimizer, profile_score, solved_share,
    solved_primary, speedup and lr:<problem> for each problem. `primary` is the primary target's column of `runs`.

    The reference row is `selection.reference_name(reference)`; without Keras-default runs there is none, and no
    speedup. Every row needs runs on every problem.
    """
    timed = selection.primary_runtimes(runs, primary)
    rows = leaderboard_runs(timed, chosen, reference)
    medians = measures.median_runtimes(rows)
    hits = rows[selection.hit_columns(targets)].notna().sum(axis=1).groupby(rows["optimizer"])
    board = pd.DataFrame(
        {
            "profile_score": measures.profile_scores(medians),
            "solved_share": hits.sum() / (hits.size() * len(targets)),
            "solved_primary": rows.groupby("optimizer")["solved"].mean(),
        }
    )
    if not rows["optimizer"].eq(selection.reference_name(reference)).any():
        board["speedup"] = np.nan
    else:
        budgets = timed.groupby("problem")["budget"].max()
        board["speedup"] = measures.geometric_mean_speedup(medians, selection.reference_name(reference), budgets)
    rates = rows.groupby(["optimizer", "problem"])["lr"].first().unstack("problem").add_prefix("lr:")
    board = board.join(rates).rename_axis("optimizer").reset_index()
    return board.sort_values(["profile_score", "optimizer"], ascending=[False, True], ignore_index=True)


def leaderboard_runs(timed: pd.DataFrame, chosen: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The runs the leaderboard's rows stand on: each optimizer's evaluation runs at its chosen rates, and the
    reference's at Keras's default rate named as its row; `timed` is the runs with `selection.primary_runtimes`."""
    return pd.concat(
        [selection.at_chosen_rates(timed, chosen), selection.reference_runs(timed, reference)], ignore_index=True
    )


def definition(column: str) -> str:
    """The definition of a leaderboard column (every lr:<problem> column shares one)."""
    return DEFINITIONS["lr:<problem>" if column.startswith("lr:") else column]


def write_leaderboard_csv(board: pd.DataFrame, path: Path) -> None:
    """The leaderboard as a CSV file, written whole or not at all."""
    with replacing(path) as temporary:
        board.to_csv(temporary, index=False)
