"""The leaderboard against a case worked out by hand: profile scores over its rows (the reference's included),
shares solved, speedups and chosen rates; study.json's aggregates are its numbers; its CSV."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tapelab.study import tables
from tapelab.study.leaderboard import DEFINITIONS, definition, leaderboard, write_leaderboard_csv

TARGETS = np.array([1e-1, 1e-6])
PRIMARY = "runtime@1e-06"
REFERENCE = "a at Keras's default lr"
MISS = None
# (problem, optimizer, lr): each evaluation seed's first steps at 1e-1 and 1e-6; budget 100. The reference is a at
# Keras's default rate 0.001. Median runtimes to 1e-6 on P: a 10, b 20, the reference 40; on Q: a misses (inf),
# b 30, the reference 30 (20, 30, a miss).
CELLS = {
    ("P", "a", 0.01): [(1, 8), (1, 10), (1, 12)],
    ("Q", "a", 0.1): [(5, MISS), (5, MISS), (MISS, MISS)],
    ("P", "b", 0.1): [(2, 20), (2, 20), (2, 25)],
    ("Q", "b", 0.01): [(3, 30), (3, 30), (3, 40)],
    ("P", "a", 0.001): [(4, 40), (4, 40), (4, 40)],
    ("Q", "a", 0.001): [(2, 20), (2, 30), (2, MISS)],
}


def study_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs (each cell's evaluation seeds 1-3, and a tuning seed 0 that the leaderboard leaves out) and the
    chosen rates."""
    rows = []
    for (problem, optimizer, lr), seeds in CELLS.items():
        for seed, (coarse, fine) in enumerate([(0, 0), *seeds]):
            rows.append(
                {"problem": problem, "optimizer": optimizer, "lr": lr, "seed": seed, "runtime@0.1": coarse}
                | {PRIMARY: fine, "role": "tuning" if seed == 0 else "evaluation", "keras_default": lr == 0.001}
            )
    runs = pd.DataFrame(rows).astype({"runtime@0.1": "Int64", PRIMARY: "Int64"})
    runs = runs.assign(on_grid=~runs["keras_default"], budget=100, best_gap=1.0)
    chosen = runs.loc[~runs["keras_default"], ["problem", "optimizer", "lr"]].drop_duplicates()
    return runs, chosen


def test_the_leaderboard_s_numbers_are_the_hand_worked_ones():
    runs, chosen = study_runs()
    board = leaderboard(runs, chosen, TARGETS, "a", PRIMARY)
    numbers = ["profile_score", "solved_share", "solved_primary", "speedup"]
    assert board.columns.tolist() == ["optimizer", *numbers, "lr:P", "lr:Q"]
    # best profile score first, ties by name
    assert board["optimizer"].tolist() == ["b", "a", REFERENCE]
    board = board.set_index("optimizer")
    # ratios on P: a 1, b 2, the reference 4; on Q: a inf, b 1, the reference 1; a problem adds max(0, 4 − r)/3
    assert board["profile_score"].tolist() == pytest.approx([(2 / 3 + 1) / 2, (1 + 0) / 2, (0 + 1) / 2], rel=1e-15)
    # (problem, target, seed) met: a 6 on P and 2 on Q of 12; b all 12; the reference all but one
    assert board["solved_share"].tolist() == [1.0, 8 / 12, 11 / 12]
    assert board["solved_primary"].tolist() == [1.0, 3 / 6, 5 / 6]
    # the reference's median ÷ the row's: b 40/20 and 30/30; a 40/10 and 30/(100 + 1), a miss as the budget + 1
    expected = [math.sqrt(2.0), math.sqrt(4 * 30 / 101), 1.0]
    assert board["speedup"].tolist() == pytest.approx(expected, rel=1e-14)
    assert board[["lr:P", "lr:Q"]].values.tolist() == [[0.1, 0.01], [0.01, 0.1], [0.001, 0.001]]
    assert all(definition(column) for column in board.reset_index().columns) and "lr:<problem>" in DEFINITIONS


def test_study_json_s_aggregates_are_the_leaderboard_s_numbers():
    runs, chosen = study_runs()
    found = tables.aggregates(runs, chosen, TARGETS, "a", PRIMARY)
    assert found["profile_score"] == pytest.approx({"b": 5 / 6, "a": 0.5, REFERENCE: 0.5}, rel=1e-15)
    assert found["solved_share"] == {"b": 1.0, "a": 8 / 12, REFERENCE: 11 / 12}
    assert found["solved_primary"] == {"b": 1.0, "a": 0.5, REFERENCE: 5 / 6}
    assert found["speedup"] == pytest.approx({"b": math.sqrt(2), "a": math.sqrt(120 / 101), REFERENCE: 1.0})


def test_without_keras_default_runs_there_is_no_reference_row_and_no_speedup():
    runs, chosen = study_runs()
    board = leaderboard(runs[~runs["keras_default"]], chosen, TARGETS, "a", PRIMARY).set_index("optimizer")
    assert board.index.tolist() == ["b", "a"] and board["speedup"].isna().all()
    # without the reference, b's ratios are 2 on P and 1 on Q, a's 1 and inf
    assert board["profile_score"].tolist() == pytest.approx([(2 / 3 + 1) / 2, 1 / 2], rel=1e-15)
    assert "speedup" not in tables.aggregates(runs[~runs["keras_default"]], chosen, TARGETS, "a", PRIMARY)


def test_the_leaderboard_csv_holds_its_rows_and_replaces_an_older_file(tmp_path):
    runs, chosen = study_runs()
    path = tmp_path / "leaderboard.csv"
    path.write_text("an older leaderboard\n")
    write_leaderboard_csv(leaderboard(runs, chosen, TARGETS, "a", PRIMARY), path)
    lines = path.read_text().splitlines()
    assert lines[0] == "optimizer,profile_score,solved_share,solved_primary,speedup,lr:P,lr:Q"
    assert lines[1].split(",")[:4] == ["b", "0.8333333333333334", "1.0", "1.0"] and lines[1].endswith(",0.1,0.01")
    assert len(lines) == 4 and lines[3].startswith(f"{REFERENCE},0.5,") and list(tmp_path.iterdir()) == [path]
