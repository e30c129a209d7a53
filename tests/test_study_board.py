"""A study in TensorBoard (`tapelab.study.board`), as the real `tensorboard` serves it: the HParams rows with
their medians, computed here from the runs table, two studies under one logdir, and the report's figures."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tapelab
from conftest import TINY_STUDY
from tapelab.study import board
from tensorboard_client import TensorBoard

PRIMARY = "runtime@1e-06"
CELL = ["problem", "optimizer", "lr"]
# Two copies of one study under one logdir, in directories of the same name: only the trial IDs' code, made from
# each study directory's absolute path, tells their rows apart.
COPIES = ["a/tiny", "b/tiny"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tapelab.Study:
    return tapelab.run_study(*TINY_STUDY, run_dir=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, Path]:
    """Two PNG files drawn by matplotlib, of different sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = tmp_path_factory.mktemp("figures")
    paths = {}
    for name, size in [("ecdf", (4, 3)), ("sensitivity", (5, 2))]:
        figure, axes = plt.subplots(figsize=size)
        axes.plot([1, 10, 100], [0.1, 0.5, 0.9])
        axes.set_title(name)
        paths[name] = directory / f"{name}.png"
        figure.savefig(paths[name], dpi=60)
        plt.close(figure)
    return paths


@pytest.fixture(scope="module")
def expected(study) -> pd.DataFrame:
    """Each (problem, optimizer, lr) of the runs table over all its seeds, with plain pandas: the median gap at
    the budget, the share of seeds that met the primary target, the median steps to it (a miss as inf; an
    infinite median as the budget + 1), whether any seed diverged, and which rate it is."""
    runs = study.runs
    steps = runs[PRIMARY].astype("float64").fillna(np.inf)
    cells = (
        runs.assign(steps=steps, solved=runs[PRIMARY].notna(), diverged=runs["status"] == "diverged")
        .groupby(CELL)
        .agg(
            gap=("best_gap", "median"),
            share=("solved", "mean"),
            steps=("steps", "median"),
            budget=("budget", "max"),
            diverged=("diverged", "any"),
            keras_default=("keras_default", "any"),
        )
    )
    cells["steps"] = cells["steps"].where(cells["steps"] < np.inf, cells["budget"] + 1)
    chosen = set(study.chosen[CELL].itertuples(index=False, name=None))
    cells["rate"] = [
        "chosen" if cell in chosen else "keras default" if keras else "grid"
        for cell, keras in zip(cells.index, cells["keras_default"], strict=True)
    ]
    return cells


@pytest.fixture(scope="module")
def served(study, figures, tmp_path_factory):
    """Each copy's board written twice: first from tables with a rate and a figure more, then from the study's
    own, as a rebuilt report rewrites it. Served by a real tensorboard once it has read every run."""
    logdir = tmp_path_factory.mktemp("logdir")
    runs = study.runs
    more = runs[runs["lr"] == runs["lr"].max()].assign(lr=lambda frame: frame["lr"] * 2)
    for copy in COPIES:
        (logdir / copy).mkdir(parents=True)
        board.write_board(
            logdir / copy, pd.concat([runs, more]), study.chosen, PRIMARY, {**figures, "old": figures["ecdf"]}
        )
        board.write_board(logdir / copy, runs, study.chosen, PRIMARY, figures)
    row_runs = {
        path.parent.relative_to(logdir).as_posix() for path in logdir.glob("*/*/tensorboard/hparams/**/*.board")
    }
    server = TensorBoard(logdir)
    try:
        deadline = time.monotonic() + 90
        while True:  # every row's metrics and every copy's figures served
            assert server.process.poll() is None, "tensorboard exited"
            try:
                seen = set(server.get("/data/plugin/scalars/tags")), set(server.get("/data/plugin/images/tags"))
            except OSError:
                seen = set(), set()
            if seen[0] >= row_runs and len(seen[1]) == len(COPIES):
                break
            assert time.monotonic() < deadline, "tensorboard did not serve every run within 90 s"
            time.sleep(0.5)
        yield server, logdir
    finally:
        server.stop()


def rows_of(server: TensorBoard, copy: str) -> list[dict]:
    """The HParams rows whose session is in the copy's folder."""
    groups = server.session_groups()["sessionGroups"]
    return [group for group in groups if group["sessions"][0]["name"].startswith(f"{copy}/tensorboard/")]


@pytest.mark.e2e
def test_each_cell_is_one_row_with_its_medians_over_the_seeds(served, expected):
    server, _ = served
    assert (expected["steps"] <= expected["budget"]).any() and (expected["steps"] > expected["budget"]).any()
    assert expected["diverged"].any() and set(expected["rate"]) == {"chosen", "keras default", "grid"}
    rows = rows_of(server, COPIES[0])
    assert len(rows) == len(expected)  # the rewrite's rate more is gone, and no row is twice
    seen = set()
    for row in rows:
        hparams = row["hparams"]
        cell = (hparams["problem"], hparams["optimizer"], hparams["lr"])
        seen.add(cell)
        want = expected.loc[cell]
        metrics = {value["name"]["tag"]: value["value"] for value in row["metricValues"]}
        # TensorBoard's scalars are float32: 7 significant digits.
        assert metrics["median_final_gap"] == pytest.approx(want["gap"], rel=1e-6)
        assert metrics["solved_share"] == pytest.approx(want["share"], rel=1e-6)
        assert metrics["median_runtime"] == want["steps"]
        assert hparams["rate"] == want["rate"]
        assert hparams["status"] == ("diverged" if want["diverged"] else "completed")
        (session,) = row["sessions"]
        assert session["status"] == ("STATUS_FAILURE" if want["diverged"] else "STATUS_SUCCESS")
    assert seen == set(expected.index)


@pytest.mark.e2e
def test_two_studies_under_one_logdir_keep_their_own_rows(served, expected):
    server, logdir = served
    groups = server.session_groups()["sessionGroups"]
    assert len(groups) == 2 * len(expected)
    assert all(len(group["sessions"]) == 1 for group in groups)  # no row merges two sessions
    for copy in COPIES:
        code = hashlib.sha256(str((logdir / copy).resolve()).encode()).hexdigest()[:6]
        rows = rows_of(server, copy)
        assert len(rows) == len(expected)
        assert all(row["name"].endswith(f" · tiny · {code}") for row in rows)


@pytest.mark.e2e
def test_the_experiment_names_the_columns_and_the_metrics(served):
    server, _ = served
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {info["name"] for info in experiment["hparamInfos"]} == {"problem", "optimizer", "lr", "rate", "status"}
    tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert tags == {"median_final_gap", "solved_share", "median_runtime"}


@pytest.mark.e2e
def test_the_images_tab_shows_the_report_s_figures_as_their_png_files(served, figures):
    server, _ = served
    tags = server.get("/data/plugin/images/tags")
    assert set(tags) == {f"{copy}/tensorboard/figures" for copy in COPIES}
    for run, run_tags in tags.items():
        assert set(run_tags) == {f"report/{name}" for name in figures}  # the rewrite's figure more is gone
        for name, png in figures.items():
            (image,) = server.get("/data/plugin/images/images", run=run, tag=f"report/{name}")
            assert server.get_bytes("/data/plugin/images/individualImage", image["query"]) == png.read_bytes()


def test_a_study_with_more_rows_than_load_in_time_keeps_the_chosen_and_keras_default_rates(
    study, expected, monkeypatch
):
    monkeypatch.setattr(board, "MAX_ROWS", len(expected) - 1)
    rows = board.board_rows(study.runs, study.chosen, PRIMARY)
    kept = expected[expected["rate"] != "grid"]
    assert len(kept) < len(expected)
    assert set(rows[CELL].itertuples(index=False, name=None)) == set(kept.index)
