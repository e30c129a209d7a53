"""A study's measures: gaps, runtimes to targets, aRT, the tuning rule, ECDFs, performance profiles and speedups.

Plain functions over NumPy arrays and pandas tables, tested against hand-computed cases.

- Step t is the point after t updates, step 0 the start point: a runtime counts updates, and a run that starts at
  the target has runtime 0.
- A run that misses a target is censored at its budget: its runtime is the budget and `solved` is False. A miss
  enters aRT with its whole budget above the line and nothing below it; the ECDF with its entry in the total, never
  solved; a median as +inf; a performance ratio as inf; the speedup as budget + 1.
- A median is numpy's (and pandas'): with an even count, the mean of the two middle values. With misses as +inf, a
  median is finite only when more than half the runs hit the target: 2 hits of 3 runs give the slower hit, 2 hits
  of 4 runs give inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

TARGET_DIGITS = 12  # significant digits of a target: the whole decades come out exact
TAU_MAX = 4.0  # AlgoPerf's profile score integrates ρ(τ) over 1 ≤ τ ≤ 4


def targets(count: int = 51, high: float = 1e2, low: float = 1e-8) -> np.ndarray:
    """COCO's target precisions: `count` gaps log-uniform from `high` down to `low`, descending, in float64.

    Each is 10**e rounded to 12 significant digits, so that the decades are exact (1e-05, where 10.0**-5.0 can be
    9.999999999999999e-06 in NumPy) and a primary target such as 1e-6 is one of them.
    """
    exponents = np.linspace(np.log10(high), np.log10(low), count)
    return np.array([float(f"{10.0**exponent:.{TARGET_DIGITS}g}") for exponent in exponents], dtype=np.float64)


TARGETS = targets()


def gaps(losses: np.ndarray, f_star: float) -> np.ndarray:
    """The gap Δf_t = min over s ≤ t of f(x_s) − f*, along the last axis, in float64 and at least 0.

    A non-finite loss (a diverged run's NaN or inf) doesn't lower the running minimum, as in `np.fmin.accumulate`;
    before the first finite loss the gap is +inf (where fmin would leave NaN). A loss below f* by rounding is gap 0.
    """
    values = np.asarray(losses, dtype=np.float64)
    finite = np.where(np.isfinite(values), values, np.inf)
    return np.maximum(np.minimum.accumulate(finite, axis=-1) - np.float64(f_star), 0.0)


def first_hits(best_gaps: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per target, the first step at which a curve of best gaps (steps 0..T, non-increasing) is at most the target,
    or -1 where it never is."""
    curve = np.asarray(best_gaps, dtype=np.float64)
    # Reversed, the curve is non-decreasing: searchsorted counts its steps at or below each target. The steps above
    # a target are the curve's first ones, so their count is the step that reaches it.
    at_or_below = np.searchsorted(curve[::-1], np.asarray(targets, dtype=np.float64), side="right")
    return np.where(at_or_below > 0, curve.size - at_or_below, -1).astype(np.int64)


def runtimes(hits: np.ndarray, budget: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(runtime, solved) from first hits: the hit's step where solved, else the budget (the run censored there)."""
    hits = np.asarray(hits, dtype=np.int64)
    solved = hits >= 0
    return np.where(solved, hits, np.asarray(budget, dtype=np.int64)), solved


def average_runtime(runtime: np.ndarray, solved: np.ndarray) -> float:
    """COCO's aRT over the runs of one cell: the steps of every run (a miss's whole budget) ÷ the runs that hit the
    target; inf when none did."""
    hits = int(np.count_nonzero(solved))
    return float(np.sum(runtime, dtype=np.float64)) / hits if hits else math.inf


def missed_as_inf(runtime: np.ndarray | pd.Series, solved: np.ndarray | pd.Series) -> np.ndarray:
    """Runtimes with a miss as +inf: the form in which medians take them."""
    return np.where(np.asarray(solved, dtype=bool), np.asarray(runtime, dtype=np.float64), np.inf)


def median_runtime(runs: pd.DataFrame) -> float:
    """The median runtime of runs (columns runtime, solved), a miss as +inf."""
    return float(np.median(missed_as_inf(runs["runtime"], runs["solved"])))


def median_runtimes(runs: pd.DataFrame, by: Sequence[str] = ("problem", "optimizer")) -> pd.DataFrame:
    """The median runtime of each group of runs (columns runtime, solved and the keys), a miss as +inf: rows of
    (keys, runtime, solved), solved where the median is finite, as `performance_profile` takes them."""
    keys = list(by)
    medians = runs.assign(runtime=missed_as_inf(runs["runtime"], runs["solved"])).groupby(keys)["runtime"].median()
    return medians.reset_index().assign(solved=lambda table: np.isfinite(table["runtime"]))


def choose_learning_rates(tuning: pd.DataFrame, by: Sequence[str] = ("problem", "optimizer")) -> pd.DataFrame:
    """The tuning rule: per group, the learning rate with the lowest median runtime to the primary target over the
    seeds, ties by the lowest median final log10 gap, then by the smaller rate.

    `tuning` has a row per run: the keys, lr, seed, runtime, solved and final_log10_gap. A miss counts as +inf in
    the median runtime, so a rate that misses on most seeds loses to one that hits; a NaN final gap (a run that
    diverged) counts as +inf. One row per group: the keys, lr, median_runtime and median_final_log10_gap.
    """
    keys = list(by)
    runs = tuning.assign(
        runtime=missed_as_inf(tuning["runtime"], tuning["solved"]),
        final_log10_gap=tuning["final_log10_gap"].astype(np.float64).fillna(np.inf),
    )
    per_rate = (
        runs.groupby([*keys, "lr"])
        .agg(median_runtime=("runtime", "median"), median_final_log10_gap=("final_log10_gap", "median"))
        .reset_index()
    )
    ranked = per_rate.sort_values([*keys, "median_runtime", "median_final_log10_gap", "lr"], kind="stable")
    return ranked.groupby(keys).head(1).reset_index(drop=True)


def ecdf(runtime: np.ndarray, solved: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The share of the entries (one per problem, target and seed) solved within each of `steps` (runtime ≤ step
    and solved): a non-decreasing curve that ends at the share solved, since a miss counts in the total."""
    runtime = np.asarray(runtime, dtype=np.float64).ravel()
    if runtime.size == 0:
        raise ValueError("ecdf: no entries (one per problem, target and seed) to count")
    hit_steps = np.sort(runtime[np.asarray(solved, dtype=bool).ravel()])
    return np.searchsorted(hit_steps, np.asarray(steps, dtype=np.float64), side="right") / runtime.size


def ecdf_table(runs: pd.DataFrame, steps: np.ndarray, by: Sequence[str] = ("optimizer",)) -> pd.DataFrame:
    """The ECDF of each group of entries of a long table (columns problem, target, seed, runtime, solved and the
    keys, one row per entry), in long format: the keys, step, share."""
    keys = list(by)
    entry = list(dict.fromkeys([*keys, "problem", "target", "seed"]))
    if runs.duplicated(entry).any():
        raise ValueError(f"ecdf_table: more than one row for some ({', '.join(entry)}): one row per entry")
    steps = np.asarray(steps)
    curves = []
    for group, rows in runs.groupby(keys):
        share = ecdf(rows["runtime"], rows["solved"], steps)
        curves.append(pd.DataFrame({**dict(zip(keys, group, strict=True)), "step": steps, "share": share}))
    return pd.concat(curves, ignore_index=True)


def _steps_by_problem(median_runtime: pd.DataFrame, missed: float | np.ndarray) -> pd.DataFrame:
    """Runtimes as a problem × optimizer table: at least 1 step where solved, else `missed` (one value, or one
    per row of `median_runtime`)."""
    runtime = median_runtime["runtime"].to_numpy(np.float64)
    steps = np.where(median_runtime["solved"].to_numpy(bool), np.maximum(runtime, 1.0), missed)
    table = median_runtime.assign(steps=steps).pivot(index="problem", columns="optimizer", values="steps")
    missing = table.isna().stack()
    if missing.any():
        absent = [f"{problem}/{optimizer}" for problem, optimizer in missing[missing].index]
        raise ValueError(f"no median runtime for {', '.join(absent)}: every optimizer needs a row on every problem")
    return table


def performance_ratios(median_runtime: pd.DataFrame) -> pd.DataFrame:
    """Dolan–Moré's ratios r = runtime ÷ the best runtime on the problem, from rows (problem, optimizer, runtime,
    solved) of the per-problem median runtime: one row per problem, one column per optimizer.

    A miss has r = inf, and so has every optimizer on a problem that nobody solved. A runtime of 0 (a start already
    at the target) counts as 1 step: 0/0 can't arise, and such a start ties with a hit at the first step.
    """
    steps = _steps_by_problem(median_runtime, np.inf)
    best = steps.min(axis=1)
    return steps.div(best.where(np.isfinite(best), 1.0), axis=0)


def performance_profile(median_runtime: pd.DataFrame, taus: np.ndarray) -> pd.DataFrame:
    """Dolan–Moré's performance profile: per optimizer, ρ(τ), the share of problems on which its ratio (see
    `performance_ratios`) is at most τ. Long format: optimizer, tau, rho."""
    ratios = performance_ratios(median_runtime)
    taus = np.asarray(taus, dtype=np.float64)
    shares = (ratios.to_numpy()[None] <= taus[:, None, None]).mean(axis=1)  # taus × optimizers
    profile = pd.DataFrame(shares, index=pd.Index(taus, name="tau"), columns=ratios.columns)
    return profile.melt(value_name="rho", ignore_index=False).reset_index()[["optimizer", "tau", "rho"]]


def profile_score(ratios: np.ndarray | pd.Series) -> float:
    """AlgoPerf's score (1/3)∫₁⁴ρ(τ)dτ of one optimizer's ratios over the problems, exactly: ρ is a step function,
    and each problem adds to the integral the length of [max(r, 1), 4], so the score is the mean over problems of
    max(0, 4 − max(r, 1)) / 3.

    AlgoPerf's scoring code (scoring/performance_profile.py, score_submissions.py) samples ρ at 100 evenly spaced τ
    in [1, 4] and integrates them with the trapezoidal rule, which can differ from the exact integral by up to
    half a sampling step per problem (a score within 1/198); it also divides ρ by its fixed number of workloads, and
    takes its times to target from the trials that reached it. Here the input is the median over seeds.
    """
    r = np.maximum(np.asarray(ratios, dtype=np.float64), 1.0)
    return float(np.mean(np.maximum(0.0, TAU_MAX - r)) / (TAU_MAX - 1.0))


def profile_scores(median_runtime: pd.DataFrame) -> pd.Series:
    """`profile_score` of each optimizer, from rows (problem, optimizer, runtime, solved) of the per-problem median
    runtime."""
    return performance_ratios(median_runtime).apply(profile_score).rename("score")


def geometric_mean_speedup(median_runtime: pd.DataFrame, reference: str, budget: pd.Series) -> pd.Series:
    """Per optimizer, the geometric mean over problems of the reference's median runtime ÷ the optimizer's (above
    1: faster than the reference). A miss counts as its problem's budget + 1 (`budget` is indexed by problem), a
    runtime of 0 as 1."""
    budgets = median_runtime["problem"].map(budget).to_numpy(np.float64)
    if np.isnan(budgets).any():
        absent = sorted(set(median_runtime["problem"][np.isnan(budgets)]))
        raise ValueError(f"geometric_mean_speedup: no budget for problem {', '.join(map(str, absent))}")
    steps = _steps_by_problem(median_runtime, budgets + 1.0)
    if reference not in steps.columns:
        raise ValueError(f"geometric_mean_speedup: reference {reference!r} is not among {', '.join(steps.columns)}")
    log_speedups = np.log(steps[[reference]].to_numpy()) - np.log(steps.to_numpy())
    return pd.Series(np.exp(log_speedups.mean(axis=0)), index=steps.columns, name="speedup")
