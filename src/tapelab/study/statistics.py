"""A study's statistics, on the evaluation seeds at the chosen rates: bootstrap bands on the runtime ECDFs and on
the median gap, and paired tests between optimizers with Holm's step-down adjustment.

Bands are scipy's percentile bootstrap (`scipy.stats.bootstrap`, method "percentile"), which stays defined when many
runs are censored, where BCa does not. Tests are scipy's Wilcoxon signed-rank test (`scipy.stats.wilcoxon`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from tapelab.study import measures, selection
from tapelab.study.curves import kept_steps

BATCH_VALUES = 2**21  # values a batch of bootstrap resamples holds at once (16 MiB of float64)
EXACT_PERMUTATIONS = 13  # up to 2**13 sign flips, a test with tied differences enumerates them all

COMPARISON_COLUMNS = (
    *("problem", "optimizer", "against", "other", "pairs", "ties", "wins", "losses", "median_runtime"),
    *("other_median_runtime", "effect", "p", "method", "p_holm", "verdict", "smallest_p", "seeds_needed"),
)
Statistic = Callable[..., np.ndarray]


def ecdf_bands(
    runs: pd.DataFrame,
    chosen: pd.DataFrame,
    targets: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The runtime ECDF of ecdf.parquet (`tables.runtime_ecdf`: per optimizer, per problem group and over all problems,
    at the kept steps of the longest budget), with a percentile bootstrap band: columns optimizer, problem_group,
    step, share, low, high.

    The bootstrap resamples runs (a problem and an evaluation seed, with its hits of every target), not single
    (problem, target, seed) entries, since a run's targets are hit or missed together. A resample's share at a step
    is its targets hit by then ÷ (its runs × the targets). A band needs two runs (NaN with one). The same `seed` gives
    the same bands.
    """
    if chosen.empty:
        return pd.DataFrame(columns=["optimizer", "problem_group", "step", "share", "low", "high"])
    at_rate = selection.at_chosen_rates(runs, chosen)
    hits = at_rate[selection.hit_columns(targets)].astype("Float64").fillna(np.inf).to_numpy(np.float64)
    steps = kept_steps(int(runs["budget"].max()))
    counts = (hits[:, :, None] <= steps[None, None, :]).sum(axis=1)  # runs × steps: the targets hit by each step
    count_targets = len(targets)

    def share(hit: np.ndarray, axis: int) -> np.ndarray:
        return hit.sum(axis=axis) / (hit.shape[axis] * count_targets)

    parts = at_rate.groupby(["optimizer", "problem_group"]).indices
    overall = selection.overall_group(at_rate["problem_group"])
    parts |= {(optimizer, overall): rows for optimizer, rows in at_rate.groupby("optimizer").indices.items()}
    bands = []
    for (optimizer, group), rows in sorted(parts.items()):
        estimate, low, high = band(counts[rows], share, resamples, confidence, seed)
        bands.append(band_table({"optimizer": optimizer, "problem_group": group}, steps, "share", estimate, low, high))
    return pd.concat(bands, ignore_index=True)


def gap_bands(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    chosen: pd.DataFrame,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per problem and optimizer, the median gap over the evaluation seeds at the chosen rate at each kept step of
    the problem's budget (`curves.kept_steps`), with a percentile bootstrap band of the median over the seeds:
    columns problem, optimizer, step, median_gap, low, high.

    A run's gap at a step is that of its last kept point at or before it: the gap is a running minimum, so a run
    that stopped early keeps its last gap. A band needs two seeds (NaN with one). The same `seed` gives the same
    bands.
    """
    if chosen.empty:
        return pd.DataFrame(columns=["problem", "optimizer", "step", "median_gap", "low", "high"])
    at_rate = selection.at_chosen_rates(runs, chosen)
    points = curves[curves["run"].isin(at_rate["run"])]
    bands = []
    for problem, problem_runs in at_rate.groupby("problem"):
        steps = kept_steps(int(problem_runs["budget"].max()))
        gaps = points[points["run"].isin(problem_runs["run"])].pivot(index="step", columns="run", values="gap")
        gaps = gaps.reindex(gaps.index.union(steps)).ffill().loc[steps]  # steps × runs
        for optimizer, cell in problem_runs.groupby("optimizer"):
            estimate, low, high = band(gaps[cell["run"]].to_numpy().T, np.median, resamples, confidence, seed)
            keys = {"problem": problem, "optimizer": optimizer}
            bands.append(band_table(keys, steps, "median_gap", estimate, low, high))
    return pd.concat(bands, ignore_index=True)


def band_table(
    keys: dict[str, str], steps: np.ndarray, name: str, estimate: np.ndarray, low: np.ndarray, high: np.ndarray
) -> pd.DataFrame:
    """A band as rows: the keys, each step, the estimate as `name`, and its bounds `low` and `high`."""
    return pd.DataFrame({**keys, "step": steps, name: estimate, "low": low, "high": high})


def band(
    values: np.ndarray, statistic: Statistic, resamples: int, confidence: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The statistic over the rows of `values` (samples × points) and its percentile bootstrap interval at each
    point, resampling whole rows; NaN bounds with fewer than two rows."""
    estimate = statistic(values, axis=0)
    if len(values) < 2:
        return estimate, np.full_like(estimate, np.nan, np.float64), np.full_like(estimate, np.nan, np.float64)
    interval = scipy.stats.bootstrap(
        (values,),
        statistic,
        n_resamples=resamples,
        batch=max(1, BATCH_VALUES // values.size),
        vectorized=True,
        axis=0,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return estimate, interval.low, interval.high


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order: with the m p-values sorted ascending, the k-th
    (from 1) becomes the largest of (m − j + 1)·p_(j) over j ≤ k, capped at 1. A hypothesis is rejected at level α
    where its adjusted p-value is at most α."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    return adjusted


def paired_comparisons(
    timed: pd.DataFrame, chosen: pd.DataFrame, reference: str, *, alpha: float = 0.05
) -> pd.DataFrame:
    """Per problem, each optimizer at its chosen rate against the reference at Keras's default rate ("reference")
    and against the problem's best optimizer ("best": the lowest median runtime on the evaluation seeds, ties by
    the lower mean runtime, then by name; not against itself), on the runtimes to the primary target of the
    evaluation seeds, paired by seed (the same start point); `timed` is the runs with `selection.primary_runtimes`.

    - A miss counts as the budget + 1, slower than any hit; two misses, like any equal runtimes, are a tie. Ties are
      dropped (Wilcoxon's zero_method "wilcox"): `pairs` = ties + wins + losses, and the test is on the others.
    - The test is the two-sided Wilcoxon signed-rank test: scipy's exact null distribution when the untied
      differences have distinct sizes (up to 50 pairs), else all 2**n sign flips (up to 13 pairs), else the normal
      approximation; `method` says which. p is 1 when every pair ties.
    - `effect` is the matched-pairs rank-biserial correlation (R+ − R−) / (R+ + R−) of the untied pairs, from −1 to
      1: positive when the optimizer is faster.
    - `p_holm` is Holm's adjustment over the problem's family (all its comparisons, m of them).
    - `smallest_p` = 2/2**n, the smallest p the exact test can give n untied pairs; `seeds_needed` is the fewest
      untied pairs whose smallest p is at most α/m, Holm's first threshold, so that the test could show a
      difference whatever the problem's other tests show.
    - `verdict`: "faster" or "slower" where p_holm ≤ α; else "no difference shown" where every pair ties; else
      "too few seeds" where smallest_p > α, which no step of Holm's procedure can reject; else "no difference
      shown".
    - "best" comparisons are left out on a problem whose best median runtime is a miss: no optimizer met the
      primary target on most seeds, and ties between misses would decide which one is "best".

    Medians count a miss as +inf.
    """
    if chosen.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    at_rate = selection.at_chosen_rates(timed, chosen)
    baseline = selection.reference_runs(timed, reference)
    rows = []
    for problem, cell in pd.concat([at_rate, baseline]).groupby("problem"):
        score = cell["runtime"].where(cell["solved"], cell["budget"] + 1).astype(np.float64)
        scores = {name: runs.set_index("seed") for name, runs in cell.assign(score=score).groupby("optimizer")}
        optimizers = sorted(set(chosen.loc[chosen["problem"] == problem, "optimizer"]) & set(scores))
        medians = {name: measures.median_runtime(scores[name]) for name in optimizers}
        best = min(optimizers, key=lambda name: (medians[name], scores[name]["score"].mean(), name))
        family = [(name, "best", best) for name in optimizers if name != best] if np.isfinite(medians[best]) else []
        if selection.reference_name(reference) in scores:
            family = [(name, "reference", selection.reference_name(reference)) for name in optimizers] + family
        if not family:
            continue
        tests = [compare(scores[name], scores[other]) for name, _, other in family]
        threshold = alpha / len(family)  # Holm's first
        needed = math.ceil(math.log2(2 / threshold))  # the fewest n with 2/2**n ≤ α/m
        for (name, against, other), test, p_holm in zip(family, tests, holm([t["p"] for t in tests]), strict=True):
            verdict = verdict_of(test, p_holm, alpha)
            rows.append({"problem": problem, "optimizer": name, "against": against, "other": other, **test})
            rows[-1] |= {"p_holm": p_holm, "verdict": verdict, "seeds_needed": needed}
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def compare(own: pd.DataFrame, other: pd.DataFrame) -> dict[str, float | int | str]:
    """The paired test of two optimizers' runs on one problem (indexed by seed, with score, runtime and solved)."""
    seeds = own.index.intersection(other.index)
    own, other = own.loc[seeds], other.loc[seeds]
    difference = (other["score"] - own["score"]).to_numpy()  # > 0: the optimizer took fewer steps
    untied = difference[difference != 0]
    count = len(untied)
    found = {
        "pairs": len(seeds),
        "ties": len(seeds) - count,
        "wins": int(np.count_nonzero(untied > 0)),
        "losses": int(np.count_nonzero(untied < 0)),
        "median_runtime": measures.median_runtime(own),
        "other_median_runtime": measures.median_runtime(other),
        "smallest_p": min(1.0, 2.0 / 2**count),
    }
    if count == 0:
        return found | {"effect": 0.0, "p": 1.0, "method": "none"}
    ranks = scipy.stats.rankdata(np.abs(untied))
    effect = (ranks[untied > 0].sum() - ranks[untied < 0].sum()) / ranks.sum()
    distinct = len(np.unique(np.abs(untied))) == count
    if distinct and count <= 50:
        method: str | scipy.stats.PermutationMethod = "exact"
    elif count <= EXACT_PERMUTATIONS:
        method = scipy.stats.PermutationMethod(n_resamples=np.inf)
    else:
        method = "asymptotic"
    p = scipy.stats.wilcoxon(untied, zero_method="wilcox", alternative="two-sided", method=method).pvalue
    name = method if isinstance(method, str) else "permutation"
    return found | {"effect": float(effect), "p": float(p), "method": name}


def verdict_of(test: dict[str, float | int | str], p_holm: float, alpha: float) -> str:
    """A comparison's verdict: a difference shown at level α after Holm, or why not."""
    if p_holm <= alpha:
        return "faster" if float(test["effect"]) > 0 else "slower"
    if test["ties"] < test["pairs"] and float(test["smallest_p"]) > alpha:
        return "too few seeds"
    return "no difference shown"
