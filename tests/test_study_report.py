"""A study's report: the page's numbers against those computed here from the study's tables, the same page rebuilt
from the tables alone, a partial study's page, a report of runs filtered in pandas, and a page with nothing to load.

The browser's view of the page is tests/test_report_browser.py; TensorBoard's, tests/test_study_board.py.
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import tapelab
from conftest import TINY_STUDY

TAU_MAX = 4.0


class Tables(HTMLParser):
    """The page's tables by id: per row, each cell's (text, data-value or None)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None
        self._row: list[tuple[str, str | None]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id"):
            self._table = attributes["id"]
            self.tables[self._table], self.headers[self._table] = [], []
        elif self._table and tag == "tr":
            self._row = []
        elif self._table and tag in ("td", "th"):
            self._cell, self._value = [], attributes.get("data-value")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if tag == "th" and self._table:
                self.headers[self._table].append(re.sub(r"\d+$", "", text))  # without the footnote's number
            else:
                self._row.append((text, self._value))
            self._cell = None
        elif tag == "tr" and self._table and self._row:
            self.tables[self._table].append(self._row)
        elif tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tapelab.Study:
    return tapelab.run_study(*TINY_STUDY, run_dir=tmp_path_factory.mktemp("tiny"))


def leaderboard_rows(page: str) -> pd.DataFrame:
    """The page's leaderboard: the optimizer, and each number exactly as its data-value holds it."""
    read = Tables(page)
    rows = [[row[0][0], *(float(value) for _, value in row[1:])] for row in read.tables["leaderboard"]]
    return pd.DataFrame(rows, columns=read.headers["leaderboard"]).set_index("optimizer")


def at_chosen_rates(study: tapelab.Study) -> pd.DataFrame:
    """The evaluation runs at each optimizer's chosen rate, and the reference's at Keras's default rate named as
    the leaderboard names it."""
    runs, chosen = study.runs, study.chosen
    evaluation = runs[runs["role"] == "evaluation"]
    tuned = evaluation[evaluation["on_grid"]].merge(chosen[["problem", "optimizer", "lr"]])
    reference = evaluation[(evaluation["optimizer"] == "adam") & evaluation["keras_default"]]
    return pd.concat([tuned, reference.assign(optimizer="adam at Keras's default lr")], ignore_index=True)


def test_the_leaderboard_holds_the_numbers_the_tables_give(tiny) -> None:
    page = (tiny.dir / "report.html").read_text()
    board = leaderboard_rows(page)
    runs = at_chosen_rates(tiny)
    primary = "runtime@1e-06"
    # Per problem, the median runtime over the seeds, a miss as inf; ratios to the best; AlgoPerf's exact score.
    runtime = runs[primary].astype("Float64").fillna(np.inf).astype(float)
    medians = runs.assign(runtime=runtime).pivot_table("runtime", "problem", "optimizer", aggfunc="median")
    ratios = medians.div(medians.min(axis=1).replace(np.inf, 1.0), axis=0)
    score = ratios.apply(lambda r: np.mean(np.maximum(0.0, TAU_MAX - np.maximum(r, 1.0))) / (TAU_MAX - 1.0))
    targets = [column for column in runs if column.startswith("runtime@")]
    solved = runs.groupby("optimizer")[targets].agg(lambda hits: hits.notna().mean()).mean(axis=1)
    budget = runs.groupby("problem")["budget"].max()
    steps = medians.where(np.isfinite(medians), budget + 1.0, axis=0).clip(lower=1.0)
    speedup = np.exp((np.log(steps["adam at Keras's default lr"].to_numpy()[:, None]) - np.log(steps)).mean())
    primary_solved = runs.groupby("optimizer")[primary].agg(lambda hits: hits.notna().mean())
    assert sorted(board.index) == sorted(medians.columns)
    assert board["profile_score"].to_dict() == pytest.approx(score.to_dict(), rel=1e-12)
    assert board["solved_primary"].to_dict() == pytest.approx(primary_solved.to_dict(), rel=1e-12)
    assert board["solved_share"].to_dict() == pytest.approx(solved.to_dict(), rel=1e-12)
    assert board["speedup"].to_dict() == pytest.approx(speedup.to_dict(), rel=1e-12)
    for row in tiny.chosen.itertuples():
        assert board.loc[row.optimizer, f"lr:{row.problem}"] == row.lr
    assert set(board.loc["adam at Keras's default lr", ["lr:booth", "lr:rosenbrock"]]) == {0.001}  # Keras's Adam


def test_the_page_shows_each_number_as_its_value_rounded(tiny) -> None:
    read = Tables((tiny.dir / "report.html").read_text())
    for row in read.tables["leaderboard"]:
        for column, (text, value) in zip(read.headers["leaderboard"][1:], row[1:], strict=True):
            number = float(value)
            if column.endswith("share") or column == "solved_primary":
                assert text == f"{round(100 * number)}%", (column, text, value)
            elif column == "speedup":
                assert float(text.rstrip("×")) == round(number, 2), (column, text, value)
            elif column.startswith("lr:"):
                assert float(text) == float(f"{number:.3g}"), (column, text, value)
            else:
                assert float(text) == round(number, 3), (column, text, value)


def test_the_tests_on_the_page_are_scipys_on_the_paired_runs(tiny) -> None:
    read = Tables((tiny.dir / "report.html").read_text())
    header = read.headers["statistics"]
    assert len(read.tables["statistics"]) > 0
    runs = at_chosen_rates(tiny)
    primary = "runtime@1e-06"
    runtime = runs[primary].astype("Float64").fillna(runs["budget"] + 1).astype(float)  # a miss: beyond the budget
    paired = runs.assign(runtime=runtime).pivot_table("runtime", ["problem", "seed"], "optimizer")
    found = pd.DataFrame(
        [{column: cell for column, cell in zip(header, row, strict=True)} for row in read.tables["statistics"]]
    )
    for problem, family in found.groupby(found["problem"].map(lambda cell: cell[0])):  # Holm's step-down, by hand
        p = np.array([float(cell[1]) for cell in family["p"]])
        order = np.argsort(p, kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
        assert [float(cell[1]) for cell in family["p_holm"].iloc[order]] == pytest.approx(adjusted, rel=1e-12), problem
    for row in read.tables["statistics"]:
        cells = dict(zip(header, row, strict=True))
        problem, optimizer = cells["problem"][0], cells["optimizer"][0]
        other = cells["against"][0].split(": ", 1)[1]
        mine, theirs = paired.loc[problem][optimizer], paired.loc[problem][other]
        differences = (theirs - mine).to_numpy()
        assert float(cells["pairs"][1]) == len(differences)
        assert float(cells["ties"][1]) == np.count_nonzero(differences == 0)
        assert float(cells["wins"][1]) == np.count_nonzero(differences > 0)
        assert float(cells["losses"][1]) == np.count_nonzero(differences < 0)
        if np.any(differences != 0):
            expected = scipy.stats.wilcoxon(mine, theirs).pvalue
            assert float(cells["p"][1]) == pytest.approx(expected, rel=1e-12)
        else:
            assert float(cells["p"][1]) == 1.0


def test_the_report_rebuilds_the_same_page_from_the_tables(tiny, tmp_path) -> None:
    copy = Path(shutil.copytree(tiny.dir, tmp_path / tiny.dir.name))  # the page is titled by its name
    written = (copy / "report.html").read_bytes()
    shutil.rmtree(copy / "figures")
    (copy / "report.html").unlink()
    rebuilt = tapelab.load_study(copy).report()
    assert rebuilt == copy / "report.html"
    assert rebuilt.read_bytes() == written
    assert sorted(path.name for path in (copy / "figures").iterdir()) == sorted(
        f"{name}.{kind}" for name in ("convergence", "ecdf", "profile", "sensitivity") for kind in ("png", "svg")
    )
    board = pd.read_csv(copy / "leaderboard.csv").set_index("optimizer")
    on_page = leaderboard_rows(written.decode())
    assert board.index.tolist() == on_page.index.tolist()
    assert np.array_equal(board[on_page.columns].to_numpy(), on_page.to_numpy())  # CSV keeps every digit


def test_the_page_loads_nothing(tiny) -> None:
    page = (tiny.dir / "report.html").read_text()
    assert (
        re.findall(r"<(?:link|img|iframe|object|embed)\b|<script[^>]*\ssrc=|@import|url\((?!#)", page) == []
    )  # url(#id) is within the page
    outside = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert outside <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, outside  # XML namespaces
    figures = ("ecdf", "profile", "sensitivity", "convergence")
    assert re.findall(r'href="([^"#][^"]*)"', page) == [
        f"figures/{name}.{kind}" for name in figures for kind in ("svg", "png")
    ]


def test_a_partial_study_reports_what_is_done_and_lists_the_rest(tmp_path) -> None:
    study = tapelab.run_study(
        *TINY_STUDY, f"study.dir={tmp_path}", "study.units=2", "study.unit=0", run_dir=tmp_path / "job"
    )
    assert not (study.dir / "report.html").exists()  # a unit leaves the report to its sweep's end
    page = study.report().read_text()
    read = Tables(page)
    missing = study.summary["missing"]
    assert len(missing) == 2
    partial = re.search(r'<div id="partial">(.*?)</div>', page, re.S).group(1)
    assert "2 of 4 groups" in partial
    assert all(group in partial for group in missing)
    done = study.runs.groupby("problem")["optimizer"].nunique()
    compared = sorted(done[done == study.runs["optimizer"].nunique()].index)
    assert ("leaderboard" in read.tables) == bool(compared)
    if compared:  # the leaderboard compares the problems every optimizer has done, and only those
        rates = [column.removeprefix("lr:") for column in read.headers["leaderboard"] if column.startswith("lr:")]
        assert sorted(rates) == compared


def test_a_report_of_runs_filtered_in_pandas(tiny, tmp_path) -> None:
    before = (tiny.dir / "report.html").read_bytes()
    runs = tiny.runs
    with pytest.raises(ValueError, match="into="):
        tiny.report(runs=runs[runs["optimizer"] == "adam"])
    page = tiny.report(runs=runs[runs["optimizer"] == "adam"], into=tmp_path / "adam").read_text()
    assert leaderboard_rows(page).index.tolist() == ["adam", "adam at Keras's default lr"]
    with pytest.raises(ValueError, match="both roles"):
        tiny.report(runs=runs[runs["role"] == "tuning"], into=tmp_path / "tuning")
    # gd's evaluation runs on booth left out: the leaderboard compares rosenbrock only, the rest still reports.
    partly = runs[~((runs["problem"] == "booth") & (runs["optimizer"] == "gd") & (runs["role"] == "evaluation"))]
    page = tiny.report(runs=partly, into=tmp_path / "partly").read_text()
    assert [column for column in leaderboard_rows(page).columns if column.startswith("lr:")] == ["lr:rosenbrock"]
    assert (tiny.dir / "report.html").read_bytes() == before


def test_the_sensitivity_is_the_tuning_seeds_median_gap_and_the_chosen_rate_its_lowest_where_none_solved(tiny):
    from tapelab.study.report import StudyTables, find

    table = find(StudyTables.read(tiny.dir)).sensitivity.set_index(["problem", "optimizer", "lr"]).sort_index()
    runs = tiny.runs[(tiny.runs["role"] == "tuning") & tiny.runs["on_grid"]]
    with np.errstate(divide="ignore"):
        log_gap = np.log10(runs["best_gap"])
    medians = runs.assign(log_gap=log_gap).groupby(["problem", "optimizer", "lr"])["log_gap"].median()
    assert table["median"].to_dict() == medians.to_dict()
    unsolved = tiny.chosen[np.isinf(tiny.chosen["median_runtime"])]
    assert len(unsolved) > 0  # the test means something: in tiny's 60 steps, some (problem, optimizer) never solve
    for row in unsolved.itertuples():
        rates = table.loc[(row.problem, row.optimizer)]
        assert rates["median"].idxmin() == row.lr == rates.index[rates["chosen"]].item()
