"""The report's statistics against cases worked out by hand: ECDF and median-gap bands, the exact Wilcoxon null,
Holm's published examples, and the paired comparisons' counts, effects and verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tapelab.study import measures, selection, tables
from tapelab.study.statistics import ecdf_bands, gap_bands, holm, paired_comparisons

TARGETS = np.array([1e-1, 1e-6])  # columns runtime@0.1 and runtime@1e-06
PRIMARY = "runtime@1e-06"


def runs_table(hits: dict[tuple[str, str], list[tuple[int | None, ...]]], targets=TARGETS, **columns) -> pd.DataFrame:
    """Evaluation runs at lr 0.01, one per (problem, optimizer) and seed 1, 2, …: each seed's first steps at the
    targets (None: missed); `columns` overrides the other columns (budget 4, group 2-D, ...)."""
    names = selection.hit_columns(targets)
    rows = []
    for (problem, optimizer), seeds in hits.items():
        for seed, first in enumerate(seeds, start=1):
            rows.append(
                {"problem": problem, "optimizer": optimizer, "seed": seed, **dict(zip(names, first, strict=True))}
            )
    runs = pd.DataFrame(rows)
    defaults = {"problem_group": "2-D", "lr": 0.01, "on_grid": True, "keras_default": False, "role": "evaluation"}
    runs = runs.assign(**(defaults | {"budget": 4, "best_gap": 1.0, "f_star_estimated": False} | columns))
    runs["run"] = runs["problem"] + "-" + runs["optimizer"] + "-" + runs["seed"].astype(str)
    return runs.astype(dict.fromkeys(names, "Int64"))


def chosen_of(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[["problem", "optimizer", "lr"]].drop_duplicates()


def test_the_ecdf_band_is_the_hand_counted_share_with_runs_resampled_whole():
    # One cell (the measures tests' cell): seed 1 starts below both targets, seed 2 hits them at steps 1 and 3,
    # seed 3 hits 1e-1 at step 3 and misses 1e-6; budget 4. Entries solved by steps 0..4: 2, 3, 3, 5, 5 of 6.
    runs = runs_table({("p", "a"): [(0, 0), (1, 3), (3, None)]})
    bands = ecdf_bands(runs, chosen_of(runs), TARGETS)
    cell = bands[bands["problem_group"] == "2-D"]
    assert cell["step"].tolist() == [0, 1, 2, 3, 4]
    assert cell["share"].tolist() == [2 / 6, 3 / 6, 3 / 6, 5 / 6, 5 / 6]
    assert ((cell["low"] <= cell["share"]) & (cell["share"] <= cell["high"])).all()
    # COCO's 51 targets, each run hits all or none: a resample of the two runs, not of the 102 entries, has a share
    # of 0, 1/2 or 1, and draws the missing run twice in a quarter of the resamples, the other twice in a quarter.
    runs = runs_table({("p", "a"): [(0,) * 51, (None,) * 51]}, targets=measures.TARGETS)
    bands = ecdf_bands(runs, chosen_of(runs), measures.TARGETS)
    assert bands[["share", "low", "high"]].drop_duplicates().values.tolist() == [[0.5, 0.0, 1.0]]


def test_the_ecdf_band_is_one_when_every_run_solves_at_the_start_and_undefined_for_one_run():
    runs = runs_table({("p", "a"): [(0, 0)] * 4, ("p", "b"): [(2, 2)]})
    bands = ecdf_bands(runs, chosen_of(runs), TARGETS).set_index(["optimizer", "problem_group", "step"])
    assert bands.loc["a", ["share", "low", "high"]].eq(1.0).all().all()
    only = bands.loc["b"]  # one run: no spread to resample
    assert only["share"].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert only[["low", "high"]].isna().all().all()


def test_the_ecdf_bands_share_is_ecdf_parquet_s_exactly_per_group_and_over_all_problems():
    rng = np.random.default_rng(7)
    budgets = {"p": 30, "q": 30, "r": 20}
    cells = {}
    for problem, optimizer in [(p, o) for p in budgets for o in ("a", "b", "c")]:
        seeds = np.sort(rng.integers(0, 40, size=(5, 2)), axis=1).tolist()  # 1e-1 met no later than 1e-6
        cells[problem, optimizer] = [tuple(hit if hit <= budgets[problem] else None for hit in two) for two in seeds]
    runs = runs_table(cells)
    runs["budget"] = runs["problem"].map(budgets)
    runs.loc[runs["problem"] == "r", "problem_group"] = "10-D"
    tuning = runs.assign(role="tuning", seed=0, run=runs["run"] + "-tuning", **{PRIMARY: 0})  # not counted
    runs = pd.concat([runs, tuning], ignore_index=True)
    chosen = chosen_of(runs)
    bands = ecdf_bands(runs, chosen, TARGETS)
    ecdf = tables.runtime_ecdf(runs, chosen, TARGETS)
    assert set(bands["problem_group"]) == {"2-D", "10-D", "all problems (10-D, 2-D)"}
    merged = ecdf.merge(bands, on=["optimizer", "problem_group", "step"], how="outer", validate="1:1")
    assert len(merged) == len(ecdf) == len(bands) and (merged["share_x"] == merged["share_y"]).all()
    assert ((bands["low"] <= bands["share"]) & (bands["share"] <= bands["high"])).all()
    again, other = ecdf_bands(runs, chosen, TARGETS), ecdf_bands(runs, chosen, TARGETS, seed=1)
    pd.testing.assert_frame_equal(again, bands)
    assert not other["low"].equals(bands["low"])


def test_the_gap_band_is_the_median_over_seeds_of_running_minima_at_the_problem_s_kept_steps():
    runs = runs_table({("p", "a"): [(None, None)] * 3, ("q", "a"): [(None, None)] * 2})
    runs.loc[runs["problem"] == "q", "budget"] = 30
    run = runs.set_index(["problem", "seed"])["run"]
    points = [
        (run["p", 1], [0, 1, 2, 3, 4], [8.0, 4.0, 2.0, 1.0, 0.5]),
        (run["p", 2], [0, 1], [8.0, 6.0]),  # stopped (diverged) after step 1: keeps its last gap
        (run["p", 3], [0, 2, 4], [8.0, 1.0, 0.0]),  # steps 1 and 3 not kept: the gap of the step before
        (run["q", 1], [0, 30], [9.0, 3.0]),
        (run["q", 2], [0, 30], [7.0, 1.0]),
    ]
    curves = pd.DataFrame(
        [
            {"run": name, "step": step, "gap": gap}
            for name, steps, gaps in points
            for step, gap in zip(steps, gaps, strict=True)
        ]
    )
    bands = gap_bands(runs, curves, chosen_of(runs))
    p = bands[bands["problem"] == "p"]
    # gaps by step: 0: 8, 8, 8; 1: 4, 6, 8; 2: 2, 6, 1; 3: 1, 6, 1; 4: 0.5, 6, 0
    assert p["step"].tolist() == [0, 1, 2, 3, 4] and p["median_gap"].tolist() == [8.0, 6.0, 2.0, 1.0, 0.5]
    assert p.iloc[0][["low", "high"]].tolist() == [8.0, 8.0]  # every seed has the same gap
    assert ((p["low"] <= p["median_gap"]) & (p["median_gap"] <= p["high"])).all()
    assert (p["low"] >= [8.0, 4.0, 1.0, 1.0, 0.0]).all() and (p["high"] <= [8.0, 8.0, 6.0, 6.0, 6.0]).all()
    q = bands[bands["problem"] == "q"]  # budget 30: every step to 22, then 40 a decade rounded, and 30
    assert q["step"].tolist() == [*range(23), 24, 25, 27, 28, 30]
    assert q["median_gap"].tolist() == [8.0] * 27 + [2.0]  # two seeds: the mean of the two


def test_holm_matches_published_examples():
    # Wikipedia's Holm–Bonferroni example: p1..p4 = 0.01, 0.04, 0.03, 0.005 at α = 0.05 rejects H1 and H4; by hand
    # the adjusted p-values are 4·0.005, 3·0.01, max(2·0.03, ...) and max(1·0.04, 0.06).
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-15)
    assert (adjusted <= 0.05).tolist() == [True, False, False, True]
    # MultipleTesting.jl's documented example
    np.testing.assert_allclose(holm([0.001, 0.01, 0.03, 0.5]), [0.004, 0.03, 0.06, 0.5], rtol=1e-15)
    assert holm([0.5, 0.4, 0.9]).tolist() == [1.0, 1.0, 1.0]  # capped at 1, monotone
    assert holm([]).size == 0


def comparisons(hits: dict[str, list[int | None]], reference: list[int | None] | None = None, budget: int = 100):
    """paired_comparisons on one problem: each optimizer's primary-target runtimes by seed (None: missed), and the
    reference (optimizer "a") at Keras's default lr."""
    runs = runs_table({("p", name): [(0, hit) for hit in seeds] for name, seeds in hits.items()}, budget=budget)
    chosen = chosen_of(runs)
    if reference is not None:
        default = runs_table({("p", "a"): [(0, hit) for hit in reference]}, budget=budget, lr=0.001)
        runs = pd.concat([runs, default.assign(keras_default=True, on_grid=False)], ignore_index=True)
    found = paired_comparisons(selection.primary_runtimes(runs, PRIMARY), chosen, "a")
    return found.set_index(["optimizer", "against"])


def test_ten_seeds_all_faster_give_the_exact_null_s_smallest_p_and_a_verdict_after_holm():
    fast, slow = list(range(10, 20)), list(range(30, 50, 2))  # differences 20, 21, ..., 29: no ties
    found = comparisons({"a": fast, "b": slow}, reference=slow)
    # a is best; the family: a and b against the reference, b against a (m = 3)
    assert sorted(found.index) == [("a", "reference"), ("b", "best"), ("b", "reference")]
    a = found.loc["a", "reference"]
    # all 10 differences positive: P(T+ = 55) = 1/1024 under the exact null, two-sided 2/1024
    assert a["p"] == 2 / 1024 and a["method"] == "exact" and a["effect"] == 1.0
    assert (a["pairs"], a["ties"], a["wins"], a["losses"]) == (10, 0, 10, 0)
    assert (a["median_runtime"], a["other_median_runtime"]) == (14.5, 39.0)
    assert a["smallest_p"] == 2 / 1024 and a["seeds_needed"] == 7  # 2/2**7 ≤ 0.05/3 < 2/2**6
    b_best = found.loc["b", "best"]
    assert (b_best["p"], b_best["effect"], b_best["other"]) == (2 / 1024, -1.0, "a")
    b_ref = found.loc["b", "reference"]  # the same runtimes: every pair ties
    assert (b_ref["ties"], b_ref["p"], b_ref["effect"], b_ref["other"]) == (10, 1.0, 0.0, "a at Keras's default lr")
    assert found["p_holm"].tolist() == [3 * 2 / 1024, 1.0, 3 * 2 / 1024]  # m·p for the two smallest, p = 1 stays 1
    assert found["verdict"].tolist() == ["faster", "no difference shown", "slower"]  # every pair ties


def test_a_miss_is_slower_than_a_hit_at_the_budget_two_misses_tie_and_five_seeds_are_too_few():
    # a against b: at the budget vs missed (a faster by 1), missed vs missed (tie), 3 vs 1, 5 vs 9, 2 vs 8
    found = comparisons({"a": [100, None, 3, 5, 2], "b": [None, None, 1, 9, 8]}, budget=100)
    row = found.loc["b", "best"]  # a's median runtime, 5, beats b's (9)
    assert (row["pairs"], row["ties"], row["wins"], row["losses"]) == (5, 1, 1, 3)
    # a's runtime − b's, from b's side (b faster where > 0, a miss as 101): −1, 0, +2, −4, −6; untied ranks 1, 2,
    # 3, 4: R+ = 2, R− = 8, effect (2 − 8) / 10 = −0.6; of the 16 sign patterns, T+ ≤ 2 in 3: p = 2 · 3/16
    assert row["effect"] == pytest.approx(-0.6, rel=1e-15) and row["p"] == pytest.approx(6 / 16, rel=1e-15)
    assert row["smallest_p"] == 2 / 2**4 and row["seeds_needed"] == 6  # m = 1: 2/2**6 ≤ 0.05 < 2/2**5
    assert row["verdict"] == "too few seeds"  # 2/16 > 0.05
    assert (row["median_runtime"], row["other_median_runtime"]) == (9.0, 5.0)  # b's 1, 8, 9, miss, miss


def test_tied_differences_take_the_exact_permutation_null():
    # from b's side: −1, −1, −1, +1, −2: ranks 2.5 (four times) and 5, T+ = 2.5 of 15; of the 32 sign patterns,
    # T+ ≤ 2.5 in 5 (none or one of the 1s, not the 2): two-sided p = 10/32
    found = comparisons({"a": [10, 10, 10, 12, 10], "b": [11, 11, 11, 11, 12]})
    row = found.loc["b", "best"]
    assert row["method"] == "permutation" and row["p"] == pytest.approx(10 / 32, rel=1e-12)
    assert row["effect"] == pytest.approx(-(12.5 - 2.5) / 15, rel=1e-15)


def test_too_few_seeds_only_where_no_step_of_holm_can_reject_and_no_best_among_misses():
    # 6 untied pairs: smallest p 2/64 ≈ 0.031, above Holm's first threshold 0.05/3 but within α = 0.05, where a
    # later step of Holm's procedure could reject it: "no difference shown", not "too few seeds".
    fast, slow = [10, 11, 12, 13, 14, 15], [20, 22, 24, 26, 28, 30]
    found = comparisons({"a": fast, "b": [runtime + 1 for runtime in slow]}, reference=slow)
    assert found.loc["a", "reference"]["smallest_p"] == 2 / 64
    assert found["verdict"].tolist() == ["no difference shown"] * 3  # p = 2/64 each, p_holm = 3 · 2/64 > 0.05
    # Nobody meets the primary target on most seeds: no optimizer is "best", only the reference comparisons stay.
    missed = comparisons({"a": [None, None, 3], "b": [None, None, None]}, reference=[None, 5, None], budget=50)
    assert sorted(missed.index) == [("a", "reference"), ("b", "reference")]
