"""A study's files: each group's tables as it ends, and the study's tables merged from every finished group
(runs, curves, the chosen learning rates) with its summary.

    <study dir>/study.yaml                    the resolved study config
    <study dir>/groups/<problem>__<optimizer>__<key>/   runs.parquet, curves.parquet, group.json (or failed.json)
    <study dir>/runs.parquet, curves.parquet, chosen.parquet, ecdf.parquet, study.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tapelab.atomic import replacing
from tapelab.errors import one_line
from tapelab.study import measures
from tapelab.study.curves import kept_steps
from tapelab.study.leaderboard import COLUMNS, leaderboard
from tapelab.study.plan import TUNING, Group, primary_target_index, study_targets
from tapelab.study.selection import OVERALL, at_chosen_rates, hit_columns, overall_group, primary_runtimes

GROUPS, DONE, FAILED = "groups", "group.json", "failed.json"
RUNS, CURVES, CHOSEN, ECDF = "runs.parquet", "curves.parquet", "chosen.parquet", "ecdf.parquet"
SUMMARY, CONFIG = "study.json", "study.yaml"


def group_dir(study_dir: Path, group: Group) -> Path:
    """Where a group's own tables and its done (or failed) marker go."""
    return study_dir / GROUPS / f"{group.problem}__{group.optimizer.name}__{group.key}"


def is_done(study_dir: Path, group: Group) -> bool:
    """Whether the group's tables were saved whole (a failed group is tried again)."""
    return (group_dir(study_dir, group) / DONE).is_file()


def versions() -> dict[str, str]:
    """What a group's numbers may depend on: tapelab's and TensorFlow's versions."""
    from importlib.metadata import version

    import tensorflow as tf

    return {"tapelab": version("tapelab"), "tensorflow": tf.__version__}


def source_commit() -> str | None:
    """The git commit tapelab runs from, when it runs from a checkout (an editable install); else None."""
    checkout = Path(__file__).resolve().parents[3]
    if not (checkout / ".git").exists():
        return None
    try:
        found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"],
                               capture_output=True, text=True, check=False)  # fmt: skip
    except OSError:  # no git on this machine
        return None
    return found.stdout.strip() or None


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """`frame` as a parquet file, written whole or not at all."""
    with replacing(path) as temporary:
        frame.to_parquet(temporary, index=False)


def write_json(value: Any, path: Path) -> None:
    """`value` as an indented JSON file, written whole or not at all."""
    with replacing(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, default=str) + "\n")


def write_config(study_dir: Path, cfg: DictConfig) -> None:
    """study.yaml: the study's config, resolved."""
    study_dir.mkdir(parents=True, exist_ok=True)
    with replacing(study_dir / CONFIG) as temporary:
        temporary.write_text(OmegaConf.to_yaml(cfg.study, resolve=True))


def save_group(study_dir: Path, group: Group, runs: pd.DataFrame, curves: pd.DataFrame) -> None:
    """Save a trained group's tables (one row per member, and their kept points); group.json, written last,
    marks it done."""
    directory = group_dir(study_dir, group)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FAILED).unlink(missing_ok=True)
    write_parquet(runs, directory / RUNS)
    write_parquet(curves, directory / CURVES)
    finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    info = {"key": group.key, "problem": group.problem, "optimizer": group.optimizer.name, **versions()}
    machine = f"{platform.node()} ({platform.platform()}, {os.cpu_count()} CPUs)"
    write_json({**info, "machine": machine, "commit": source_commit(), "finished": finished}, directory / DONE)


def save_failure(study_dir: Path, group: Group, error: Exception) -> None:
    """Record a group's failure (the study trains it again next time)."""
    directory = group_dir(study_dir, group)
    directory.mkdir(parents=True, exist_ok=True)
    write_json({"key": group.key, "error": f"{type(error).__name__}: {one_line(error)}"}, directory / FAILED)


def merge(study_dir: Path, groups: Sequence[Group], study: DictConfig) -> dict[str, Any]:
    """Merge every finished group of the study into its tables and summary (partial while groups are missing);
    return the summary."""
    targets = study_targets(study)
    primary = hit_columns(targets)[primary_target_index(study)]
    done = [group for group in groups if is_done(study_dir, group)]
    failed = {
        f"{group.problem} × {group.optimizer.name}": json.loads(failure.read_text())["error"]
        for group in groups
        if group not in done and (failure := group_dir(study_dir, group) / FAILED).is_file()
    }
    group_versions = {group.key: json.loads((group_dir(study_dir, group) / DONE).read_text()) for group in done}
    runs, curves = read_groups(study_dir, done)
    runs, curves = with_gaps(runs, curves, targets)
    write_parquet(runs, study_dir / RUNS)
    write_parquet(curves, study_dir / CURVES)
    timed = primary_runtimes(runs, primary) if len(runs) else runs
    chosen = chosen_rates(timed)
    write_parquet(chosen, study_dir / CHOSEN)
    write_parquet(runtime_ecdf(runs, chosen, targets), study_dir / ECDF)
    seen = {(info["tapelab"], info["tensorflow"]) for info in group_versions.values()}
    complete = len(done) == len(groups)
    summary = {
        "status": "complete" if complete else "partial",
        "groups": len(groups),
        "groups_done": len(done),
        "missing": [f"{group.problem} × {group.optimizer.name}" for group in groups if group not in done],
        "failed": failed,
        "runs": len(runs),
        "dtype": study.dtype,
        "primary_target": study.targets.primary,
        "estimated_f_star": sorted(runs.loc[runs["f_star_estimated"], "problem"].unique()) if len(runs) else [],
        "versions": [{"tapelab": tapelab, "tensorflow": tensorflow} for tapelab, tensorflow in sorted(seen)],
        **trained_where(group_versions.values()),
        # Profiles and speedups compare the optimizers on the same problems: a partial study has none yet.
        **(aggregates(runs, chosen, targets, study.reference, primary) if complete else {}),
    }
    if len(seen) > 1:
        summary["warning"] = "the groups were trained by different versions of tapelab or TensorFlow: see versions"
    write_json(summary, study_dir / SUMMARY)
    return summary


def trained_where(groups: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """From the finished groups' group.json: the machines and the commits that trained them, and when the last
    one finished."""
    groups = list(groups)
    return {
        "machines": sorted({group["machine"] for group in groups if "machine" in group}),
        "commits": sorted({group["commit"] for group in groups if group.get("commit")}),
        "finished": max((group["finished"] for group in groups), default=None),
    }


def read_groups(study_dir: Path, groups: Sequence[Group]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished groups' tables, one `run` id per member (`<group key>-<member>`)."""
    runs, curves = [], []
    for group in groups:
        directory = group_dir(study_dir, group)
        group_runs, group_curves = pd.read_parquet(directory / RUNS), pd.read_parquet(directory / CURVES)
        runs.append(group_runs.assign(run=group.key + "-" + group_runs["member"].astype(str), group_key=group.key))
        curves.append(group_curves.assign(run=group.key + "-" + group_curves["member"].astype(str)))
    if not runs:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(runs, ignore_index=True), pd.concat(curves, ignore_index=True)


def with_gaps(runs: pd.DataFrame, curves: pd.DataFrame, targets: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The gaps of every run and curve point. A problem with no recorded minimum gets f* = the lowest loss the
    study found on it, marked `f_star_estimated`, and its runtimes from the kept curve points."""
    if runs.empty:
        return runs, curves
    columns = hit_columns(targets)
    estimated = runs["f_star"].isna()
    lowest = runs.groupby("problem")["best_loss"].min()
    runs = runs.assign(f_star=runs["f_star"].fillna(runs["problem"].map(lowest)), f_star_estimated=estimated)
    star = curves["run"].map(runs.set_index("run")["f_star"])
    curves = curves.assign(gap=np.maximum(curves["best_loss"] - star, 0.0))
    if estimated.any():
        hits = estimated_hits(curves[curves["run"].isin(runs.loc[estimated, "run"])], targets)
        runs.loc[estimated, columns] = hits.reindex(runs.loc[estimated, "run"]).to_numpy()
    final = np.maximum(runs["final_loss"] - runs["f_star"], 0.0)
    runs = runs.assign(final_gap=final.fillna(np.inf), best_gap=np.maximum(runs["best_loss"] - runs["f_star"], 0.0))
    for column in columns:  # -1: missed, as a missing value
        runs[column] = runs[column].astype("Int64").mask(runs[column] < 0)
    return runs, curves


def estimated_hits(curves: pd.DataFrame, targets: np.ndarray) -> pd.DataFrame:
    """Per run, the first kept step whose gap meets each target (-1 if none)."""
    rows = {}
    for run, points in curves.groupby("run", sort=False):
        found = measures.first_hits(points["gap"].to_numpy(), targets)
        rows[run] = np.where(found >= 0, points["step"].to_numpy()[np.maximum(found, 0)], -1)
    return pd.DataFrame.from_dict(rows, orient="index", columns=hit_columns(targets))


def chosen_rates(timed: pd.DataFrame) -> pd.DataFrame:
    """Each (problem, optimizer)'s learning rate by the tuning rule on the tuning seeds, with its results on the
    evaluation seeds (median runtime, share solved, aRT); `timed` is the runs with `primary_runtimes`."""
    if timed.empty:
        return pd.DataFrame()
    chosen = measures.choose_learning_rates(timed[(timed["role"] == TUNING) & timed["on_grid"]])
    at_rate = (
        at_chosen_rates(timed, chosen)
        .groupby(["problem", "optimizer"])
        .apply(
            lambda cell: pd.Series(
                {
                    "evaluation_median_runtime": measures.median_runtime(cell),
                    "evaluation_solved": float(cell["solved"].mean()),
                    "evaluation_aRT": measures.average_runtime(cell["runtime"].to_numpy(), cell["solved"].to_numpy()),
                }
            ),
            include_groups=False,
        )
    )
    estimated = timed.groupby("problem")["f_star_estimated"].any()
    chosen = chosen.merge(at_rate.reset_index(), on=["problem", "optimizer"], how="left")
    return chosen.assign(f_star_estimated=chosen["problem"].map(estimated))


def runtime_ecdf(runs: pd.DataFrame, chosen: pd.DataFrame, targets: np.ndarray) -> pd.DataFrame:
    """The ECDF of runtimes over (problem, target, evaluation seed) at each optimizer's chosen rates, per problem
    group and over all problems (named with the dimensions it spans), at the kept steps of the longest budget."""
    if chosen.empty:
        return pd.DataFrame()
    at_rate = at_chosen_rates(runs, chosen)
    columns = hit_columns(targets)
    entries = at_rate.melt(["optimizer", "problem", "problem_group", "seed", "budget"], columns, "target", "hit")
    entries["target"] = entries["target"].map(dict(zip(columns, targets, strict=True)))
    entries["solved"] = entries["hit"].notna()
    entries["runtime"] = entries["hit"].astype("Float64").fillna(entries["budget"]).astype(np.float64)
    steps = kept_steps(int(runs["budget"].max()))
    overall = entries.assign(problem_group=overall_group(entries["problem_group"]))
    by = ("optimizer", "problem_group")
    ecdf = pd.concat([measures.ecdf_table(part, steps, by) for part in (entries, overall)], ignore_index=True)
    estimated = runs.loc[runs["f_star_estimated"], "problem_group"].unique()  # a group with an estimated f*
    return ecdf.assign(
        f_star_estimated=ecdf["problem_group"].isin(estimated)
        | (ecdf["problem_group"].str.startswith(OVERALL) & (len(estimated) > 0))
    )


def aggregates(
    runs: pd.DataFrame, chosen: pd.DataFrame, targets: np.ndarray, reference: str, primary: str
) -> dict[str, Any]:
    """The summary's aggregates: the leaderboard's numbers (profile score, shares solved, speedup over the reference,
    which needs the reference's runs at Keras's default rate), each a dict by the leaderboard's row, so that
    study.json and the report never disagree."""
    if chosen.empty:
        return {}
    board = leaderboard(runs, chosen, targets, reference, primary).set_index("optimizer")
    return {column: values for column in COLUMNS if (values := board[column].dropna().to_dict())}
