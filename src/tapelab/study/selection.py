"""Which runs and columns a study's measures stand on: the runtime columns of the targets, the runtimes on the
primary target, the evaluation runs at the chosen rates, and the reference's runs at Keras's default rate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tapelab.study.plan import EVALUATION


def hit_columns(targets: np.ndarray) -> list[str]:
    """The runs table's column of each target: the first step whose gap meets it."""
    return [f"runtime@{target:.3g}" for target in targets]


def primary_runtimes(runs: pd.DataFrame, primary: str) -> pd.DataFrame:
    """The runs with `runtime` (censored at the budget) and `solved` for the primary target."""
    solved = runs[primary].notna().to_numpy()
    runtime = np.where(solved, runs[primary].fillna(0).to_numpy(np.float64), runs["budget"].to_numpy(np.float64))
    with np.errstate(divide="ignore"):  # a gap of 0: -inf
        final_log10_gap = np.log10(runs["best_gap"].to_numpy(np.float64))  # Δf at the last step, a running minimum
    return runs.assign(runtime=runtime, solved=solved, final_log10_gap=final_log10_gap)


def at_chosen_rates(runs: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The evaluation seeds' runs at each (problem, optimizer)'s chosen learning rate."""
    evaluation = runs[(runs["role"] == EVALUATION) & runs["on_grid"]]
    return evaluation.merge(chosen[["problem", "optimizer", "lr"]])


OVERALL = "all problems"  # the start of the name of the ECDF over every problem


def overall_group(problem_groups: pd.Series) -> str:
    """The name of the ECDF over all problems, with the problem groups it spans where they are more than one."""
    groups = sorted(problem_groups.unique())
    return OVERALL + (f" ({', '.join(groups)})" if len(groups) > 1 else "")


def reference_runs(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The reference's evaluation runs at Keras's default learning rate, as the optimizer `reference_name`."""
    baseline = runs[(runs["role"] == EVALUATION) & (runs["optimizer"] == reference) & runs["keras_default"]]
    return baseline.assign(optimizer=reference_name(reference))


def reference_name(reference: str) -> str:
    """The reference at Keras's default learning rate, as the leaderboard and the statistics name it."""
    return f"{reference} at Keras's default lr"
