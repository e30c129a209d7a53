"""Studies: the tables of a study, its runtimes against closed forms and against runs alone, and every row
reproduced alone by its command, to the bit."""

from __future__ import annotations

import math
import shlex

import numpy as np
import pandas as pd
import pytest

import tapelab
from conftest import ROOT, TINY_STUDY
from tapelab.study.curves import kept_steps
from tapelab.study.leaderboard import COLUMNS, leaderboard
from tapelab.study.measures import TARGETS

BOOTH_ONLY = [*TINY_STUDY, "~study.problems.rosenbrock"]
OPTIMIZERS = sorted(path.stem for path in (ROOT / "conf" / "optimizer").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tapelab.Study:
    return tapelab.run_study(*TINY_STUDY, run_dir=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def every_optimizer(tmp_path_factory) -> tapelab.Study:
    """Every optimizer on Booth, at one learning rate of the grid (and Keras's default), two seeds, 30 steps."""
    overrides = [*BOOTH_ONLY, f"study.optimizers=[{','.join(OPTIMIZERS)}]", "study.problems.booth.budget=30"]
    overrides += ["study.lr.low=0.01", "study.lr.high=0.01", "study.seeds.evaluation=1", "study.report=false"]
    return tapelab.run_study(*overrides, run_dir=tmp_path_factory.mktemp("every_optimizer"))


def alone(command: str, tmp_path, name: str) -> pd.DataFrame:
    """The metrics.csv of a row's command, run as `python run.py` would (in-process)."""
    overrides = shlex.split(command)[2:]
    return tapelab.run(*overrides, "log.plots=false", "log.tensorboard=false", run_dir=tmp_path / name).history


def test_the_tables_hold_every_run_once_with_the_same_starts_for_every_optimizer(tiny):
    runs = tiny.runs
    # 2 problems × 2 optimizers × 3 rates (1e-3, 1e-2, 1e-1; Adam's default 1e-3 is on the grid) × 3 seeds
    assert len(runs) == 36 and runs["run"].is_unique
    assert sorted(runs.loc[runs["keras_default"], "optimizer"].unique()) == ["adam"]
    assert set(runs.loc[runs["keras_default"], "lr"]) == {0.001}
    assert runs.groupby("seed")["role"].unique().map(list).to_dict() == {
        0: ["tuning"],
        1: ["evaluation"],
        2: ["evaluation"],
    }
    starts = runs.assign(start=runs["command"].str.extract(r"(objective\.init=\S+)")[0])
    assert starts.groupby(["problem", "seed"])["start"].nunique().eq(1).all()  # one draw per problem and seed
    assert starts.groupby("problem")["start"].nunique().eq(3).all()
    assert (runs["dtype"] == "float64").all() and tiny.summary["status"] == "complete"
    assert set(tiny.curves["run"]) == set(runs["run"])


def test_a_row_s_runtimes_are_those_of_its_run_alone(tiny, tmp_path):
    runs = tiny.runs
    targets = [column for column in runs.columns if column.startswith("runtime@")]
    assert len(targets) == 51 and targets[0] == "runtime@100" and targets[-1] == "runtime@1e-08"
    for number, (_, row) in enumerate(runs[runs["status"] == "completed"].sample(4, random_state=0).iterrows()):
        history = alone(row["command"], tmp_path, f"run{number}")
        best = np.minimum.accumulate(history["loss"].to_numpy())  # f* = 0 on Booth and Rosenbrock
        for column in targets:
            target = float(column.split("@")[1])
            reached = np.flatnonzero(best <= target * (1 + 1e-12))  # the column's name rounds to 3 digits
            actual = None if pd.isna(row[column]) else int(row[column])
            assert actual == (int(reached[0]) if len(reached) else None), (row["run"], column)


def test_damped_newton_meets_each_target_when_the_closed_form_says(tmp_path):
    # Newton on a quadratic: x_t − x* = (1 − lr)^t (x_0 − x*), so f_t = (1 − lr)^(2t) f_0 (f* = 0 on Booth).
    study = tapelab.run_study(*BOOTH_ONLY, "study.optimizers=[newton]", "study.lr.low=0.1", "study.lr.high=1",
                              "study.seeds.evaluation=1", run_dir=tmp_path)  # fmt: skip
    runs = study.runs.set_index("lr")
    assert sorted(runs.index.unique()) == [0.1, 1.0]
    damped, pure = runs.loc[0.1], runs.loc[1.0]
    start = study.curves.query("step == 0").set_index("run")["loss"]
    for _, row in damped.iterrows():
        f0 = start[row["run"]]
        for target in (10.0, 1.0, 1e-3, 1e-6):
            steps = math.ceil(math.log(target / f0) / (2 * math.log(0.9))) if f0 > target else 0
            runtime = row[f"runtime@{target:.3g}"]
            assert (None if pd.isna(runtime) else runtime) == (steps if steps <= 60 else None), (f0, target)
        assert row["hessians"] == row["steps"] == 60
    assert (pure["runtime@1e-08"] == 1).all()  # one full step lands on the minimum


def test_a_problem_with_no_recorded_minimum_gets_the_best_value_found_marked_estimated(tmp_path):
    problem = "{objective:expression,budget:40,settings:{expr:'(x - 3)**2 + 1',domain:[[0.0,6.0]]}}"
    study = tapelab.run_study(*BOOTH_ONLY, f"+study.problems.shifted={problem}", run_dir=tmp_path)
    runs = study.runs
    estimated = runs[runs["problem"] == "shifted"]
    assert estimated["f_star_estimated"].all() and not runs.loc[runs["problem"] == "booth", "f_star_estimated"].any()
    assert (estimated["f_star"] == estimated["best_loss"].min()).all()
    assert estimated["f_star"].iloc[0] == pytest.approx(1.0, abs=1e-6)  # (x − 3)² + 1 ≥ 1
    assert estimated["best_gap"].min() == 0 and study.summary["estimated_f_star"] == ["shifted"]


def test_every_optimizer_s_rows_reproduce_alone_to_the_bit(every_optimizer, tmp_path):
    runs, curves = every_optimizer.runs, every_optimizer.curves
    assert sorted(runs["optimizer"].unique()) == OPTIMIZERS
    assert not (every_optimizer.dir / "report.html").exists()  # study.report=false
    for optimizer, rows in runs.groupby("optimizer"):
        row = rows.sample(1, random_state=1).iloc[0]
        history = alone(row["command"], tmp_path, optimizer)
        kept = curves[curves["run"] == row["run"]].merge(history[["step", "loss"]], on="step", suffixes=("", "_alone"))
        finite = curves.loc[curves["run"] == row["run"], "loss"].pipe(np.isfinite).sum()
        assert len(kept) == finite > 0, optimizer  # every finite point the study kept is a row of metrics.csv
        assert np.array_equal(kept["loss"].to_numpy(), kept["loss_alone"].to_numpy()), optimizer


def test_curves_keep_every_step_to_22_then_40_per_decade_and_the_budget():
    steps = kept_steps(1000)
    assert steps[:23].tolist() == list(range(23)) and 23 not in steps and steps[-1] == 1000
    ratios = steps[25:-1][1:] / steps[25:-1][:-1]
    np.testing.assert_allclose(ratios, 10 ** (1 / 40), rtol=0.04)  # rounded to whole steps
    assert len(steps[(steps >= 100) & (steps < 1000)]) == 40


def test_the_ecdf_ends_at_the_share_of_targets_met_at_the_chosen_rates(tiny):
    runs, chosen, ecdf = tiny.runs, tiny.chosen, tiny.ecdf
    at_rate = runs[(runs["role"] == "evaluation") & runs["on_grid"]].merge(chosen[["problem", "optimizer", "lr"]])
    met = at_rate.filter(like="runtime@").notna()
    shares = met.groupby(at_rate["optimizer"]).apply(lambda table: table.to_numpy().mean())
    last = ecdf[(ecdf["step"] == 60) & (ecdf["problem_group"] == "2-D")].set_index("optimizer")["share"]
    pd.testing.assert_series_equal(last.sort_index(), shares.sort_index(), check_names=False)


def test_study_json_holds_the_leaderboard_s_numbers(tiny):
    runs, chosen, summary = tiny.runs, tiny.chosen, tiny.summary
    board = leaderboard(runs, chosen, TARGETS, "adam", "runtime@1e-06").set_index("optimizer")
    assert {column: summary[column] for column in COLUMNS} == {column: board[column].to_dict() for column in COLUMNS}
    # counted from the runs: the evaluation seeds at the chosen rates, and Adam's at its Keras default rate, 0.001
    evaluation = runs[runs["role"] == "evaluation"]
    at_rate = evaluation[evaluation["on_grid"]].merge(chosen[["problem", "optimizer", "lr"]])
    rows = {name: cell for name, cell in at_rate.groupby("optimizer")}
    rows["adam at Keras's default lr"] = evaluation[(evaluation["optimizer"] == "adam") & (evaluation["lr"] == 0.001)]
    assert summary["solved_share"] == {
        name: cell.filter(like="runtime@").notna().to_numpy().mean() for name, cell in rows.items()
    }
    assert summary["solved_primary"] == {name: cell["runtime@1e-06"].notna().mean() for name, cell in rows.items()}
    assert summary["speedup"]["adam at Keras's default lr"] == 1.0


def test_classic_plans_every_test_function_and_first_order_optimizer_and_takes_overrides():
    from hydra import compose, initialize_config_dir

    from tapelab.study.plan import plan_groups

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        composer = lambda overrides: compose(config_name="config", overrides=overrides)  # noqa: E731
        classic = plan_groups(composer(["study=classic"]).study, composer)
        chosen = composer(["study=classic", "study.optimizers=[adam,sgd]", "study.seeds.evaluation=20"]).study
        fewer = plan_groups(chosen, composer)
    assert len(classic) == 15 * 12 and {group.optimizer.name for group in classic} == set(OPTIMIZERS) - {"newton"}
    grid = sorted({member.lr for member in classic[0].members if member.on_grid})
    assert len(grid) == 31 and grid[0] == pytest.approx(1e-5, rel=1e-12) and grid[-1] == 10.0  # 5 per decade
    assert len(fewer) == 15 * 2 and all(len(group.members) == 31 * (3 + 20) for group in fewer)
    adam = next(group for group in fewer if group.optimizer.name == "adam")
    assert {member.lr for member in adam.members if member.keras_default} == {0.001}  # Keras's default, on the grid


def test_a_diverged_row_reproduces_alone_with_its_status_steps_and_final_loss(tiny, tmp_path):
    row = tiny.runs[tiny.runs["status"] == "diverged"].sort_values("run").iloc[0]
    overrides = shlex.split(row["command"])[2:]
    run = tapelab.run(*overrides, "log.plots=false", run_dir=tmp_path / "alone")  # TensorBoard too
    summary = run.summary
    assert (summary["status"], summary["steps"], summary["final_loss"]) == ("diverged", row["steps"], row["final_loss"])
    kept = tiny.curves[tiny.curves["run"] == row["run"]]
    assert kept["step"].max() == row["steps"] and np.isfinite(kept["loss"]).all()
    both = kept.merge(run.history[["step", "loss"]], on="step", suffixes=("", "_alone"))
    assert len(both) == len(kept) and np.array_equal(both["loss"], both["loss_alone"])


def test_editing_an_objective_s_config_file_trains_its_groups_again(tmp_path):
    configs = tmp_path / "configs"
    (configs / "objective").mkdir(parents=True)
    (configs / "study").mkdir()
    mine = configs / "objective" / "mine.yaml"
    mine.write_text("defaults:\n  - expression\nexpr: '(x - 3)**2 + 1'\ndomain: [[0.0, 6.0]]\n")
    (configs / "study" / "mine.yaml").write_text(
        "defaults:\n  - /schema_study\n  - _self_\nproblems:\n  mine: {objective: mine, budget: 5}\n"
        "optimizers: [gd]\nlr: {low: 0.1, high: 0.1}\nseeds: {tuning: 1, evaluation: 1}\n"
    )
    search = f"hydra.searchpath=[file://{configs}]"
    first = tapelab.run_study(search, "study=mine", run_dir=tmp_path / "study")
    assert first.runs["best_loss"].min() >= 1
    mine.write_text(mine.read_text().replace("+ 1", "+ 5"))
    again = tapelab.run_study(search, "study=mine", run_dir=tmp_path / "study")
    assert again.runs["best_loss"].min() >= 5  # not the first file's results, cached
    assert again.runs["command"].str.startswith(f"python run.py '{search}' objective=mine ").all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+study.problems.q={objective:quadratic,budget:10}"], "study.problems.q.settings.domain: a study draws"),
        (["study.targets.primary=2e-6"], "study.targets.primary: must be one of the targets, got 2e-06"),
        (["study.unit=0"], "study.dir: must be set with study.unit: the directory every unit"),
        (["study.optimizers=[nope]"], "study.optimizers (nope: optimizer): no option 'nope'; choose from adadelta,"),
        (["study.problems.booth.budget=0"], "study.problems.booth.budget: must be an integer from 1 to 2**62, got 0"),
    ],
)
def test_a_study_s_mistake_is_refused_before_anything_trains(tmp_path, overrides, message):
    with pytest.raises(tapelab.ConfigError) as refused:
        tapelab.run_study(*BOOTH_ONLY, *overrides, run_dir=tmp_path / "study")
    assert str(refused.value).startswith(message)
    assert not (tmp_path / "study" / "groups").exists()
