"""A study's report, built from its tables alone: report.html, one self-contained page (inline SVG figures and
script, nothing loaded from the network); the same figures as SVG and PNG in figures/; the leaderboard as
leaderboard.csv; and the study in TensorBoard (tensorboard/, see `tapelab.study.board`).

The page answers which optimizer, at which learning rate, and how sure: the leaderboard, the runtime ECDFs, the
performance profiles, the learning-rate sensitivity, the convergence at the chosen rates, the paired tests, and
where every number comes from.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tapelab.atomic import replacing
from tapelab.console import plural
from tapelab.study import figures, leaderboard, measures, statistics
from tapelab.study.plan import EVALUATION, TUNING, primary_target_index
from tapelab.study.selection import OVERALL, hit_columns, primary_runtimes, reference_name
from tapelab.study.tables import CONFIG, CURVES, RUNS, SUMMARY, chosen_rates, source_commit

REPORT, FIGURES, LEADERBOARD = "report.html", "figures", "leaderboard.csv"
TAUS = np.linspace(1.0, 8.0, 281)  # the profile's τ axis: AlgoPerf's [1, 4] and beyond
ALPHA = 0.05  # the tests' family-wise error rate (Holm)


@dataclass(frozen=True)
class StudyTables:
    """What a report is built from: the runs, their kept points, the study's config and its summary."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    study: DictConfig
    summary: dict[str, Any]

    @classmethod
    def read(cls, study_dir: Path) -> StudyTables:
        """A study directory's tables."""
        return cls(
            runs=pd.read_parquet(study_dir / RUNS),
            curves=pd.read_parquet(study_dir / CURVES),
            study=OmegaConf.load(study_dir / CONFIG),
            summary=json.loads((study_dir / SUMMARY).read_text()),
        )

    @property
    def targets(self) -> np.ndarray:
        return measures.targets(self.study.targets.count, self.study.targets.high, self.study.targets.low)

    @property
    def primary(self) -> str:
        """The runs table's column of the primary target."""
        return hit_columns(self.targets)[primary_target_index(self.study)]


@dataclass(frozen=True)
class Findings:
    """The report's numbers, each a table computed from the study's tables."""

    chosen: pd.DataFrame
    board: pd.DataFrame
    profile: pd.DataFrame
    ecdf: pd.DataFrame
    sensitivity: pd.DataFrame
    convergence: pd.DataFrame
    comparisons: pd.DataFrame
    problems: list[str]  # the problems every leaderboard row has evaluation runs on: those the aggregates compare


def write_report(study_dir: Path, tables: StudyTables | None = None, into: Path | None = None) -> Path:
    """Build the study's report from its tables (or from `tables`, e.g. filtered in pandas) into `into` (the
    study directory by default): report.html, figures/, leaderboard.csv and tensorboard/. Return report.html."""
    from tapelab.study.board import write_board

    study_dir = Path(study_dir)
    tables = tables or StudyTables.read(study_dir)
    roles = set(tables.runs["role"]) if len(tables.runs) else set()
    if roles != {TUNING, EVALUATION}:
        raise ValueError(f"a report needs runs of both roles, tuning and evaluation; got {sorted(roles) or 'none'}")
    into = Path(into or study_dir)
    found = find(tables)
    styles = figures.styles(study_optimizers(tables.study), reference_name(tables.study.reference))
    drawn = draw(found, styles)
    for stale in (into / FIGURES).glob("*.*") if (into / FIGURES).is_dir() else []:
        if stale.stem not in drawn and stale.suffix in (".svg", ".png"):
            stale.unlink()  # a figure this report has no data for
    pngs = {name: figures.save(figure, into / FIGURES, name)["png"] for name, figure in drawn.items()}
    svgs = {name: figures.inline_svg(figure) for name, figure in drawn.items()}
    leaderboard.write_leaderboard_csv(found.board, into / LEADERBOARD)
    path = into / REPORT
    with replacing(path) as temporary:
        temporary.write_text(render(tables, found, svgs, study_dir.resolve().name), encoding="utf-8")
    write_board(into, tables.runs, found.chosen, tables.primary, pngs)
    return path


def study_optimizers(study: DictConfig) -> list[str]:
    """The study's optimizers by name, in the config's order (which fixes their colours)."""
    return [entry if isinstance(entry, str) else entry.name for entry in study.optimizers]


def compared_problems(timed: pd.DataFrame, chosen: pd.DataFrame, reference: str) -> list[str]:
    """The problems on which every row of the leaderboard has its evaluation runs: profiles and ECDFs compare the
    optimizers on the same problems, so a partial study's hold the problems done for all."""
    if chosen.empty:
        return []
    rows = leaderboard.leaderboard_runs(timed, chosen, reference)
    names = set(rows["optimizer"])
    per_problem = rows.groupby("problem", sort=False)["optimizer"].agg(set)
    return [problem for problem, done in per_problem.items() if done == names]


def find(tables: StudyTables) -> Findings:
    """The report's numbers, from the tables alone."""
    timed = primary_runtimes(tables.runs, tables.primary)
    chosen = chosen_rates(timed)
    reference = tables.study.reference
    problems = compared_problems(timed, chosen, reference)
    compared = timed[timed["problem"].isin(problems)]
    board, profile, ecdf = pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    if problems:
        board = leaderboard.leaderboard(compared, chosen, tables.targets, reference, tables.primary)
        medians = measures.median_runtimes(leaderboard.leaderboard_runs(compared, chosen, reference))
        profile = measures.performance_profile(medians, TAUS)
        ecdf = one_panel_per_group(statistics.ecdf_bands(compared, chosen, tables.targets))
    return Findings(
        chosen=chosen,
        board=board,
        profile=profile,
        ecdf=ecdf,
        sensitivity=sensitivity(timed, chosen),
        convergence=statistics.gap_bands(tables.runs, tables.curves, chosen),
        comparisons=statistics.paired_comparisons(timed, chosen, reference, alpha=ALPHA),
        problems=problems,
    )


def one_panel_per_group(bands: pd.DataFrame) -> pd.DataFrame:
    """The ECDF bands without the problem group's own where there is one group: it equals the overall one."""
    if bands.empty or bands["problem_group"].nunique() > 2:
        return bands
    return bands[bands["problem_group"].str.startswith(OVERALL)]


def sensitivity(timed: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Per problem, optimizer and grid rate, the log10 gap at the budget over the tuning seeds (median, lowest and
    highest; -inf for a gap of exactly 0), whether a seed diverged, and whether the tuning rule chose the rate.

    The gap is the one the tuning rule breaks ties by, `final_log10_gap` (Δf at the budget, the lowest so far; a
    run that diverged, its lowest before it did), so where no rate meets the primary target the chosen one is the
    lowest median."""
    tuning = timed[(timed["role"] == TUNING) & timed["on_grid"]]
    cells = (
        tuning.assign(log_gap=tuning["final_log10_gap"], diverged=tuning["status"] == "diverged")
        .groupby(["problem", "optimizer", "lr"], sort=False)
        .agg(
            median=("log_gap", "median"),
            low=("log_gap", "min"),
            high=("log_gap", "max"),
            diverged=("diverged", "any"),
        )
        .reset_index()
    )
    picked = cells.merge(chosen[["problem", "optimizer", "lr"]].assign(chosen=True), how="left")
    return picked.assign(chosen=picked["chosen"].fillna(False).astype(bool))


def draw(found: Findings, styles: dict[str, figures.Style]) -> dict[str, Any]:
    """The report's figures (matplotlib), by name."""
    drawn = {}
    if len(found.ecdf):
        drawn["ecdf"] = figures.ecdf_figure(found.ecdf, styles)
    if len(found.profile):
        drawn["profile"] = figures.profile_figure(found.profile, styles)
    if len(found.sensitivity):
        drawn["sensitivity"] = figures.sensitivity_figure(found.sensitivity, styles)
    if len(found.convergence):
        drawn["convergence"] = figures.convergence_figure(found.convergence, styles)
    return drawn


CAPTIONS = {
    "ecdf": "Runtime ECDFs: the share of (problem, target, evaluation seed) that each optimizer solves within a "
    "number of steps, at its chosen learning rates, per problem group and over all problems. Shaded: a bootstrap "
    "95% band (percentile method, resampling runs).",
    "profile": "Performance profiles on the primary target: ρ(τ) is the share of problems on which an optimizer's "
    "median runtime over the evaluation seeds is within τ times the best optimizer's. The profile score is "
    "(1/3)∫ρ(τ)dτ over 1 ≤ τ ≤ 4.",
    "sensitivity": "Learning-rate sensitivity: the gap at the budget (the lowest reached; for a run that diverged, "
    "before it did) against the learning rate, median and range over the tuning seeds. Marked: the rate the tuning "
    "rule chose, and rates where a seed diverged.",
    "convergence": "Convergence at the chosen learning rate: the median gap over the evaluation seeds against "
    "steps, with a bootstrap 95% band (percentile method).",
}
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1200px; margin: 0 auto; padding: 1em 2em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td[data-value], th[data-sort=number] { text-align: right; }
th[data-sort] { cursor: pointer; user-select: none; white-space: nowrap; }
th[data-sort]::after { content: " ⇅"; color: #aaa; }
th[aria-sort=ascending]::after { content: " ▲"; color: #222; }
th[aria-sort=descending]::after { content: " ▼"; color: #222; }
figure.chart { margin: 1.5em 0; width: fit-content; max-width: 100%; }
figure.chart svg { max-width: 100%; height: auto; }
figcaption { color: #555; max-width: 60em; }
#partial { background: #fff4d6; border-left: 4px solid #e6a700; padding: 0.6em 1em; }
.note { color: #555; max-width: 60em; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.faster { color: #0b6e4f; font-weight: bold; } .slower { color: #b3261e; font-weight: bold; }
code { font-size: 90%; } .wide { overflow-x: auto; } details { margin: 0.5em 0; }
"""
SCRIPT = """
document.querySelectorAll("table th[data-sort]").forEach((header) => {
  header.addEventListener("click", () => {
    const table = header.closest("table"), body = table.tBodies[0], column = header.cellIndex;
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[aria-sort]").forEach((other) => other.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const key = (row) => {
      const cell = row.cells[column];
      return header.dataset.sort === "number" ? Number(cell.dataset.value) : cell.textContent.trim();
    };
    const order = (a, b) => {
      const x = key(a), y = key(b);
      if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);  // NaN last
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    };
    Array.from(body.rows).sort(order).forEach((row) => body.appendChild(row));
  });
});
"""


def render(tables: StudyTables, found: Findings, svgs: dict[str, str], name: str) -> str:
    """The report's page, titled with the study's (directory's) name."""
    sections = [
        f"<h1>Study report: {escape(name)}</h1>",
        overview(tables),
        partial_note(tables.summary),
        leaderboard_section(found, tables),
        *(figure_section(figure, svg) for figure, svg in svgs.items()),
        statistics_section(found, tables),
        provenance_section(tables, found),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Study report: {escape(name)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def overview(tables: StudyTables) -> str:
    """What was compared, in a sentence or two, counted from the runs reported."""
    study, runs = tables.study, tables.runs
    seeds = runs.groupby("role")["seed"].nunique()
    has_reference = bool((runs["keras_default"] & (runs["optimizer"] == study.reference)).any())
    reference = f" The reference is {escape(study.reference)} at Keras's default learning rate." * has_reference
    return (
        f'<p class="note">{plural(runs["optimizer"].nunique(), "optimizer")} on '
        f"{plural(runs['problem'].nunique(), 'problem')}, {plural(len(runs), 'run')} in {escape(study.dtype)}, "
        f"over the learning rates {study.lr.low:g} to {study.lr.high:g} ({study.lr.per_decade} per decade). Per "
        f"problem and optimizer, the rate with the lowest median runtime to the primary target "
        f"{study.targets.primary:g} on {plural(seeds.get(TUNING, 0), 'tuning seed')} is chosen; the leaderboard, "
        f"the ECDFs, the profiles, the convergence and the tests report its runs on "
        f"{plural(seeds.get(EVALUATION, 0), 'evaluation seed')}.{reference}</p>"
    )


def partial_note(summary: dict[str, Any]) -> str:
    """A partial study's notice with its missing groups."""
    if summary.get("status") != "partial":
        return ""
    missing = "".join(f"<li>{escape(group)}</li>" for group in summary["missing"])
    failed = "".join(f"<li>{escape(group)}: {escape(error)}</li>" for group, error in summary["failed"].items())
    return (
        f'<div id="partial"><p><strong>Partial study:</strong> {summary["groups_done"]} of {summary["groups"]} '
        "groups are done. This report shows what is done; the leaderboard and the profiles compare the problems "
        f"that every optimizer has finished. Missing groups:</p><ul>{missing}</ul>"
        + (f"<p>Failed (retried when the study runs again):</p><ul>{failed}</ul>" if failed else "")
        + "</div>"
    )


def number_cell(value: Any, shown: str) -> str:
    """A numeric cell: the exact value in data-value (for sorting and checking), `shown` as its text."""
    number = float(value) if value is not None and not pd.isna(value) else math.nan
    exact = "Infinity" if number == math.inf else "-Infinity" if number == -math.inf else repr(number)
    return f'<td data-value="{exact}">{escape(shown)}</td>'


def leaderboard_section(found: Findings, tables: StudyTables) -> str:
    """The leaderboard: one row per optimizer and one for the reference, sortable, with each column defined."""
    if found.board.empty:
        return '<h2>Leaderboard</h2><p class="note">No problem is done for every optimizer yet.</p>'
    columns = list(found.board.columns)
    definitions = {column: leaderboard.definition(column) for column in columns}
    footnotes = list(dict.fromkeys(definitions.values()))  # the rate columns share one
    head = "".join(
        f'<th data-sort="{"text" if column == "optimizer" else "number"}" title="{escape(definitions[column])}">'
        f"{escape(column)}<sup>{footnotes.index(definitions[column]) + 1}</sup></th>"
        for column in columns
    )
    rows = []
    for _, row in found.board.iterrows():
        cells = [f"<td>{escape(row['optimizer'])}</td>"]
        cells += [number_cell(row[column], shown(column, row[column])) for column in columns[1:]]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    notes = "".join(f"<li>{escape(footnote)}</li>" for footnote in footnotes)
    scope = ""
    if len(found.problems) < tables.runs["problem"].nunique():
        scope = f'<p class="note">Over the problems every optimizer has done: {escape(", ".join(found.problems))}.</p>'
    return (
        "<h2>Leaderboard</h2>\n"
        + scope
        + f'<div class="wide"><table id="leaderboard"><thead><tr>{head}</tr></thead>'
        + f"<tbody>{''.join(rows)}</tbody></table></div>"
        + '<p class="note">Click a column to sort. Definitions (also on hover):</p>'
        + f'<ol class="definitions">{notes}</ol><p class="note">Also in leaderboard.csv.</p>'
    )


def shown(column: str, value: float) -> str:
    """A leaderboard number as the page shows it."""
    if pd.isna(value):
        return "–"
    if column.startswith("lr:"):
        return f"{value:.3g}"
    if column in ("solved_share", "solved_primary"):
        return f"{value:.0%}"
    if column == "speedup":
        return f"{value:.2f}×"
    return f"{value:.3f}"


def figure_section(name: str, svg: str) -> str:
    """One figure, inline, with its caption and its files."""
    files = f'<a href="{FIGURES}/{name}.svg">SVG</a>, <a href="{FIGURES}/{name}.png">PNG</a>'
    caption = f"<figcaption>{escape(CAPTIONS[name])} ({files})</figcaption>"
    return f'<figure class="chart" id="fig-{name}">{svg}{caption}</figure>'


def statistics_section(found: Findings, tables: StudyTables) -> str:
    """Per problem, the paired tests of each optimizer against the reference and against the problem's best."""
    comparisons = found.comparisons
    if comparisons.empty:
        return ""
    parts = [
        "<h2>Statistics</h2>",
        '<p class="note">Per problem, each optimizer at its chosen rate against the reference (at Keras\'s default '
        "rate) and against that problem's best optimizer, on the evaluation seeds' runtimes to the primary target, "
        "paired by seed (the same start point). Two-sided Wilcoxon signed-rank tests (scipy), with Holm's step-down "
        f"over each problem's tests at α = {ALPHA:g}. A miss counts as slower than any hit; two misses are a tie. "
        "Effect: the matched-pairs rank-biserial correlation, from −1 (always slower) to 1 (always faster). "
        '<span class="faster">faster</span> and <span class="slower">slower</span> mark differences shown after '
        "Holm's correction.</p>",
    ]
    table = ['<table id="statistics"><thead><tr>']
    columns = ["problem", "optimizer", "against", "pairs", "ties", "wins", "losses", "effect", "p", "p_holm", "verdict"]
    table.append("".join(f'<th data-sort="{statistics_sort(column)}">{escape(column)}</th>' for column in columns))
    table.append("</tr></thead><tbody>")
    for _, row in comparisons.iterrows():
        cells = [f"<td>{escape(row['problem'])}</td>", f"<td>{escape(row['optimizer'])}</td>",
                 f"<td>{escape(row['against'])}: {escape(row['other'])}</td>"]  # fmt: skip
        cells += [number_cell(row[column], f"{row[column]:d}") for column in ("pairs", "ties", "wins", "losses")]
        cells += [number_cell(row["effect"], f"{row['effect']:+.2f}")]
        cells += [number_cell(row[column], f"{row[column]:.3g}") for column in ("p", "p_holm")]
        verdict = str(row["verdict"])
        cells.append(f'<td class="{verdict.replace(" ", "-")}">{escape(verdict)}</td>')
        table.append(f"<tr>{''.join(cells)}</tr>")
    table.append("</tbody></table>")
    parts.append("".join(table))
    parts.append(seeds_note(comparisons))
    return "\n".join(parts)


def statistics_sort(column: str) -> str:
    return "text" if column in ("problem", "optimizer", "against", "verdict") else "number"


def seeds_note(comparisons: pd.DataFrame) -> str:
    """Where the evaluation seeds are too few for a test to show any difference, and how many would do."""
    few = comparisons[comparisons["verdict"] == "too few seeds"]
    if few.empty:
        return ""
    untied = few["pairs"] - few["ties"]
    # As many ties in the same share of pairs: the seeds that give `seeds_needed` pairs that differ.
    suggested = int(np.ceil(few["seeds_needed"] * few["pairs"] / untied).max())
    problems = ", ".join(dict.fromkeys(few["problem"]))
    return (
        f'<p class="note" id="too-few-seeds"><strong>Too few seeds for a claim</strong> on {escape(problems)}. '
        "The signed-rank test drops the pairs that tie (both missed, or equal runtimes), and with n pairs left no "
        f"two-sided p is below 2/2ⁿ: here down to {int(untied.min())} pairs, whose p can't go below "
        f"{few['smallest_p'].max():.3g}, above α = {ALPHA:g}, so no step of Holm's procedure can show a difference. "
        f"{int(few['seeds_needed'].max())} pairs that differ would let a test show one even as the first of its "
        f"problem's tests (at α/m): with ties in the same share of pairs as here, "
        f"<code>study.seeds.evaluation={suggested}</code>.</p>"
    )


def provenance_section(tables: StudyTables, found: Findings) -> str:
    """Where the numbers come from: the config, the versions, the machine, the date, and a command per cell."""
    summary = tables.summary
    trained = ", ".join(
        f"tapelab {entry['tapelab']}, TensorFlow {entry['tensorflow']}" for entry in summary.get("versions", [])
    ) + (f" (commits {', '.join(summary['commits'])})" if summary.get("commits") else "")
    built_by, commit = report_version()
    facts = {
        "trained by": trained,
        "report built by": f"tapelab {built_by}" + (f" (commit {commit})" if commit else ""),
        "dtype": tables.study.dtype,
        "machines": ", ".join(summary.get("machines", [])) or "not recorded",
        "trained": summary.get("finished", "not recorded"),
    }
    rows = "".join(f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in facts.items())
    commands = reproduce_commands(tables.runs, found.chosen)
    command_rows = "".join(
        f"<tr><td>{escape(problem)}</td><td>{escape(optimizer)}</td><td><code>{escape(command)}</code></td></tr>"
        for problem, optimizer, command in commands
    )
    config = OmegaConf.to_yaml(tables.study)
    return (
        '<section id="provenance"><h2>Provenance</h2>'
        f'<table class="facts">{rows}</table>'
        "<details><summary>A run alone, per problem and optimizer (the first evaluation seed at the chosen rate; "
        "every run's command is in runs.parquet's <code>command</code>)</summary>"
        f'<table id="commands"><thead><tr><th>problem</th><th>optimizer</th><th>command</th></tr></thead>'
        f"<tbody>{command_rows}</tbody></table></details>"
        f"<details open><summary>The study's config (study.yaml)</summary><pre>{escape(config)}</pre></details>"
        "</section>"
    )


def reproduce_commands(runs: pd.DataFrame, chosen: pd.DataFrame) -> Iterable[tuple[str, str, str]]:
    """Per (problem, optimizer), the command of its first evaluation seed's run at the chosen rate."""
    if chosen.empty:
        return []
    evaluation = runs[(runs["role"] == EVALUATION) & runs["on_grid"]].merge(chosen[["problem", "optimizer", "lr"]])
    first = evaluation.sort_values("seed", kind="stable").groupby(["problem", "optimizer"], sort=False).head(1)
    return first[["problem", "optimizer", "command"]].itertuples(index=False, name=None)


def report_version() -> tuple[str, str | None]:
    """tapelab's version, and its git commit when it runs from a checkout."""
    from importlib.metadata import version

    return version("tapelab"), source_commit()
