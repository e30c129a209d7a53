"""The study's measures against cases worked out by hand: a few constructed curves, their gaps, runtimes, aRT,
ECDF values, chosen learning rates, performance profiles, scores and speedups."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tapelab.study.measures import (
    TARGETS,
    average_runtime,
    choose_learning_rates,
    ecdf,
    ecdf_table,
    first_hits,
    gaps,
    geometric_mean_speedup,
    median_runtimes,
    performance_profile,
    performance_ratios,
    profile_score,
    profile_scores,
    runtimes,
    targets,
)

INF = math.inf
NAN = math.nan

# One cell of three seeds, f* = 0, a budget of 4 steps (losses at steps 0..4), targets 1e-1 and 1e-6:
# seed 0 starts below both targets; seed 1 hits 1e-1 at step 1 and, past a NaN, 1e-6 at step 3; seed 2 reaches
# 1e-1 at step 3 and misses 1e-6.
CELL_LOSSES = np.array(
    [
        [1e-7, 1e-7, 1e-8, 1e-8, 1e-8],
        [1.0, 0.1, NAN, 1e-6, 1e-9],
        [1.0, 0.5, 0.2, 0.1, 0.05],
    ]
)
CELL_TARGETS = np.array([1e-1, 1e-6])
CELL_BUDGET = 4
# runtime[seed, target]: a miss censored at the budget
CELL_RUNTIME = np.array([[0, 0], [1, 3], [3, 4]])
CELL_SOLVED = np.array([[True, True], [True, True], [True, False]])


def test_targets_are_cocos_51_log_uniform_from_1e2_to_1e_8_with_exact_decades() -> None:
    assert TARGETS.dtype == np.float64 and TARGETS.shape == (51,)
    # five targets a decade, 10 decades: 10^2, 10^1.8, ..., 10^-8; every fifth a whole decade, exactly
    assert [TARGETS[i] for i in range(0, 51, 5)] == [1e2, 1e1, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    assert TARGETS[1] == pytest.approx(63.0957344480193, rel=1e-12)  # 10^1.8 = 10 · 10^0.8 = 10 · 6.30957344480193
    assert TARGETS[-2] == pytest.approx(1.58489319246111e-8, rel=1e-12)  # 10^-7.8 = 10^-8 · 10^0.2
    assert np.all(np.diff(TARGETS) < 0)
    assert targets(3, high=1.0, low=1e-2).tolist() == [1.0, 1e-1, 1e-2]


def test_gaps_are_the_running_best_above_f_star_past_nan_and_inf_floored_at_zero() -> None:
    losses = np.array(
        [
            [5.0, 3.0, NAN, 4.0, 0.9999999],  # f − f* = 4, 2, –, 3, −1e-7: best 4, 2, 2, 2, 0 (below f* by rounding)
            [NAN, 2.5, -INF, 1.5, 1.75],  # nothing finite yet (+inf), 1.5, −inf ignored, 0.5, 0.5
        ]
    )
    assert gaps(losses, 1.0).tolist() == [[4.0, 2.0, 2.0, 2.0, 0.0], [INF, 1.5, 1.5, 0.5, 0.5]]
    # float32 losses, f* and the gap in float64: 1 − 1e-9 is 1.0 in float32, 0.999999999 in float64; 0.5 − 0.1 is
    # 0.4 in float64, 0.39999999851 with f* in float32 (0.100000001490116)
    for loss, f_star, gap in [(1.0, 1e-9, 0.999999999), (0.5, 0.1, 0.4)]:
        computed = gaps(np.array([loss], np.float32), f_star)
        assert computed.dtype == np.float64 and computed.tolist() == [gap]


def test_first_hits_is_the_first_step_at_or_below_each_target_or_minus_one() -> None:
    curve = np.array([4.0, 2.0, 2.0, 0.5, 0.5, 0.0])  # steps 0..5
    # 10 and 4 are met at the start (4 ≤ 4); 3 and 2 at step 1 (2 ≤ 2); 1 and 0.5 at step 3; 1e-3 and 0 at step 5
    hits = first_hits(curve, np.array([10.0, 4.0, 3.0, 2.0, 1.0, 0.5, 1e-3, 0.0]))
    assert hits.dtype == np.int64 and hits.tolist() == [0, 0, 1, 1, 3, 3, 5, 5]
    # a curve that starts before any finite loss (+inf) and never gets below 0.5
    assert first_hits(np.array([INF, 1.5, 1.5, 0.5, 0.5]), np.array([2.0, 1.0, 0.5, 0.1])).tolist() == [1, 3, 3, -1]


def test_runtimes_censor_a_miss_at_the_budget() -> None:
    runtime, solved = runtimes(np.array([0, 3, -1]), 5)
    assert runtime.tolist() == [0, 3, 5] and solved.tolist() == [True, True, False]
    runtime, _ = runtimes(np.array([0, 3, -1]), np.array([5, 7, 9]))  # a budget per run
    assert runtime.tolist() == [0, 3, 9]


def test_average_runtime_is_all_steps_over_the_hits() -> None:
    # a start at the target (0), two hits (30, 50) and a miss at its budget of 100: (0 + 30 + 100 + 50) / 3 = 60
    assert average_runtime(np.array([0, 30, 100, 50]), np.array([True, True, False, True])) == 60.0
    assert average_runtime(np.array([100, 100]), np.array([False, False])) == INF


def test_a_cell_of_curves_gives_its_runtimes_and_art() -> None:
    hits = np.array([first_hits(curve, CELL_TARGETS) for curve in gaps(CELL_LOSSES, 0.0)])
    runtime, solved = runtimes(hits, CELL_BUDGET)
    assert runtime.tolist() == CELL_RUNTIME.tolist() and solved.tolist() == CELL_SOLVED.tolist()
    # aRT to 1e-1: (0 + 1 + 3) / 3 hits; to 1e-6: (0 + 3 + 4, the miss's budget) / 2 hits
    art = [average_runtime(runtime[:, target], solved[:, target]) for target in range(2)]
    assert art == [pytest.approx(4 / 3, rel=1e-15), 3.5]


def test_ecdf_counts_the_entries_solved_within_each_step() -> None:
    # six entries (3 seeds × 2 targets); solved at 0, 0, 1, 3, 3 and one miss (runtime 4 = the budget):
    # within 0: 2/6, 1: 3/6, 2: 3/6, 3: 5/6, 4: 5/6 (the miss never counts)
    shares = ecdf(CELL_RUNTIME, CELL_SOLVED, np.arange(5))
    assert shares.tolist() == pytest.approx([2 / 6, 3 / 6, 3 / 6, 5 / 6, 5 / 6], rel=1e-15)


def test_ecdf_table_gives_each_group_its_curve_in_long_format() -> None:
    cell = pd.DataFrame(
        {
            "problem": "p",
            "target": np.tile(CELL_TARGETS, 3),
            "seed": np.repeat([0, 1, 2], 2),
            "runtime": CELL_RUNTIME.ravel(),
            "solved": CELL_SOLVED.ravel(),
        }
    )
    other = pd.DataFrame({"problem": "p", "target": 0.1, "seed": [0, 1], "runtime": [2, 4], "solved": [True, False]})
    runs = pd.concat([cell.assign(optimizer="a"), other.assign(optimizer="b")]).assign(group="2-D")
    table = ecdf_table(runs, np.arange(5), by=("group", "optimizer"))
    assert table.columns.tolist() == ["group", "optimizer", "step", "share"]
    assert table["optimizer"].tolist() == ["a"] * 5 + ["b"] * 5 and set(table["group"]) == {"2-D"}
    assert table["step"].tolist() == [0, 1, 2, 3, 4] * 2
    # a: as above; b: one of two entries solved at step 2
    expected = [2 / 6, 3 / 6, 3 / 6, 5 / 6, 5 / 6, 0.0, 0.0, 0.5, 0.5, 0.5]
    assert table["share"].tolist() == pytest.approx(expected, rel=1e-15)
    with pytest.raises(ValueError, match="one row per entry"):
        ecdf_table(pd.concat([runs, runs.head(1)]), np.arange(5), by=("group", "optimizer"))


def tuning_runs(problem: str, optimizer: str, lr: float, runtime: list, final: list, budget: int = 100):
    """Rows of one rate's tuning runs, seeds 0, 1, ...; a runtime of None is a miss (censored at the budget)."""
    return [
        {"problem": problem, "optimizer": optimizer, "lr": lr, "seed": seed, "runtime": budget if t is None else t,
         "solved": t is not None, "final_log10_gap": gap}
        for seed, (t, gap) in enumerate(zip(runtime, final, strict=True))
    ]  # fmt: skip


def test_the_tuning_rule_takes_the_lowest_median_runtime_then_final_gap_then_smaller_rate() -> None:
    tuning = pd.DataFrame(
        [
            # 4 seeds (an even count: the median is the mean of the middle two), misses as +inf:
            # 0.1: [10, 20, inf, inf] → inf, though its hits are the fastest (with misses at the budget, 60 would win);
            # 0.01: [50, 70, 80, 90] → 75; 0.001: [60, 70, 90, inf] → 80. Final gap of 0.01: (−7 − 6) / 2 = −6.5
            *tuning_runs("p", "adam", 0.1, [10, 20, None, None], [-9, -9, -2, -2]),
            *tuning_runs("p", "adam", 0.01, [50, 70, 80, 90], [-8, -7, -6, -5]),
            *tuning_runs("p", "adam", 0.001, [60, 70, 90, None], [-7, -7, -7, -3]),
            # a tie at median 30: the lower median final gap (−9 against −8) chooses the larger rate
            *tuning_runs("p", "sgd", 0.1, [20, 30, 40], [-10, -9, -6]),
            *tuning_runs("p", "sgd", 0.01, [25, 30, 35], [-9, -8, -7]),
            # nobody solves q: every median runtime is inf. Rate 1 diverged on two seeds (NaN counts as +inf: median
            # inf, not −9); 0.1 and 0.01 tie at a median final gap of −2, and the smaller rate wins
            *tuning_runs("q", "sgd", 1.0, [None] * 3, [NAN, NAN, -9]),
            *tuning_runs("q", "sgd", 0.1, [None] * 3, [-1, -2, -3]),
            *tuning_runs("q", "sgd", 0.01, [None] * 3, [-2, -2, -2]),
        ]
    )
    chosen = choose_learning_rates(tuning)
    assert chosen.columns.tolist() == ["problem", "optimizer", "lr", "median_runtime", "median_final_log10_gap"]
    assert chosen.to_dict("list") == {
        "problem": ["p", "p", "q"],
        "optimizer": ["adam", "sgd", "sgd"],
        "lr": [0.01, 0.1, 0.01],
        "median_runtime": [75.0, 30.0, INF],
        "median_final_log10_gap": [-6.5, -9.0, -2.0],
    }


def test_median_runtimes_count_a_miss_as_inf() -> None:
    runs = pd.DataFrame(
        {
            "problem": ["p"] * 8 + ["q"] * 3,
            "optimizer": ["a"] * 4 + ["b"] * 4 + ["a"] * 3,
            "runtime": [10, 20, 30, 40, 5, 7, 100, 100, 1, 100, 3],
            "solved": [True] * 6 + [False] * 2 + [True, False, True],
        }
    )
    # p/a: (20 + 30) / 2 = 25; p/b: [5, 7, inf, inf] → (7 + inf) / 2 = inf, unsolved; q/a: [1, 3, inf] → 3
    assert median_runtimes(runs).to_dict("list") == {
        "problem": ["p", "p", "q"],
        "optimizer": ["a", "b", "a"],
        "runtime": [25.0, INF, 3.0],
        "solved": [True, False, True],
    }


# Two optimizers' median runtimes on four problems, budgets 100, 100, 100 and 200. p2: a starts at the target
# (runtime 0, counted as 1); p3: a misses; p4: nobody solves.
MEDIANS = pd.DataFrame(
    [
        ("p1", "a", 10, True), ("p1", "b", 25, True),
        ("p2", "a", 0, True), ("p2", "b", 3, True),
        ("p3", "a", 100, False), ("p3", "b", 50, True),
        ("p4", "a", 200, False), ("p4", "b", 200, False),
    ],
    columns=["problem", "optimizer", "runtime", "solved"],
)  # fmt: skip
BUDGETS = pd.Series({"p1": 100, "p2": 100, "p3": 100, "p4": 200})


def test_performance_ratios_divide_by_the_best_with_misses_inf() -> None:
    # p1: 10/10, 25/10; p2: 1/1, 3/1; p3: a missed, 50/50; p4: nobody solved
    ratios = performance_ratios(MEDIANS)
    assert ratios.index.tolist() == ["p1", "p2", "p3", "p4"] and ratios.columns.tolist() == ["a", "b"]
    assert ratios.to_numpy().tolist() == [[1.0, 2.5], [1.0, 3.0], [INF, 1.0], [INF, INF]]
    with pytest.raises(ValueError, match="p4/b"):
        performance_ratios(MEDIANS.iloc[:-1])


def test_performance_profile_is_the_share_of_problems_within_tau() -> None:
    # ratios a: 1, 1, inf, inf; b: 2.5, 3, 1, inf; over 4 problems
    profile = performance_profile(MEDIANS, np.array([0.5, 1.0, 1.5, 2.5, 3.0, 4.0]))
    assert profile.columns.tolist() == ["optimizer", "tau", "rho"]
    assert profile["optimizer"].tolist() == ["a"] * 6 + ["b"] * 6
    assert profile["rho"].tolist() == [0, 0.5, 0.5, 0.5, 0.5, 0.5] + [0, 0.25, 0.25, 0.5, 0.75, 0.75]


def test_profile_score_is_the_exact_integral_of_the_step_profile() -> None:
    # (1/3)∫₁⁴ρ: ratios 1, 2, inf cover τ in [1, 4] (length 3), [2, 4] (2) and nothing: (3 + 2 + 0) / 3 problems / 3
    assert profile_score(np.array([1.0, 2.0, INF])) == pytest.approx(5 / 9, rel=1e-15)
    assert profile_score(np.array([5.0, INF])) == 0.0  # beyond τ = 4 counts nothing
    # a: (3 + 3 + 0 + 0) / 4 / 3 = 1/2; b: (1.5 + 1 + 3 + 0) / 4 / 3 = 5.5/12
    scores = profile_scores(MEDIANS)
    assert scores.index.tolist() == ["a", "b"]
    assert scores.tolist() == pytest.approx([0.5, 5.5 / 12], rel=1e-15)


def test_geometric_mean_speedup_counts_a_miss_as_budget_plus_one() -> None:
    # runtimes counted: a 10, 1 (0 counts as 1), 101 (miss: 100 + 1), 201; b 25, 3, 50, 201
    # b's speedup over a: (10/25 · 1/3 · 101/50 · 201/201)^(1/4) = (0.4 · 2.02 / 3)^(1/4) = (0.808 / 3)^(1/4)
    speedup = geometric_mean_speedup(MEDIANS, "a", BUDGETS)
    assert speedup.index.tolist() == ["a", "b"]
    assert speedup.tolist() == pytest.approx([1.0, (0.808 / 3) ** 0.25], rel=1e-14)
    with pytest.raises(ValueError, match="p4"):
        geometric_mean_speedup(MEDIANS, "a", BUDGETS.drop("p4"))
