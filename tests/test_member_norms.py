"""Norms over one member: Lamb's trust ratio, clipnorm and global_clipnorm in a batch equal Keras's on each run alone.

Keras takes these norms over a whole variable (or all of them); a batch stacks its members in one variable, so a
batch takes each over its member's row (`tapelab.optimizers.per_member`). Each test compares a batch under XLA with
the same runs alone, where Keras's own optimizer class runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from composed import derived
from conftest import compose_config
from tapelab.config import StopConfig, to_experiment
from tapelab.engine.pool import POOL
from tapelab.runs import checked_problem, train_config

EPOCHS = 50
LRS = ["0.001", "0.01", "0.05", "0.2"]
# Four members of each objective, each with its own start point and learning rate.
ROSENBROCK = ["objective=rosenbrock"], ["[-1.2,1.0]", "[0.5,-0.5]", "[2.0,2.0]", "[-0.3,0.8]"]
SQUARES = (
    ["objective=sum_of_squares"],
    [  # one vector of 8
        "[1.0,-2.0,3.0,-4.0,0.5,0.25,-1.5,2.5]",
        "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]",
        "[10.0,-10.0,5.0,0.0,0.0,1.0,2.0,3.0]",
        "[-0.01,0.02,-0.03,0.04,-0.05,0.06,-0.07,0.08]",
    ],
)
REGRESSION = (
    ["objective=linear_regression", "objective.noise=0.5"],
    [  # two variables, w and b
        "objective.init_w=0.5 objective.init_b=3.0",
        "objective.init_w=-1.0 objective.init_b=2.0",
        "objective.init_w=2.0 objective.init_b=-0.5",
        "objective.init_w=0.1 objective.init_b=0.1",
    ],
)
LAMB = ["optimizer=lamb"]
CLIPNORM = ["optimizer=adam", "optimizer.clipnorm=1.0"]  # clips some members' gradients, not the others'
GLOBAL_CLIPNORM = ["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.global_clipnorm=1.0"]
CASES = {
    "lamb rosenbrock": (LAMB, ROSENBROCK),
    "lamb sum_of_squares": (LAMB, SQUARES),
    "lamb linear_regression": (LAMB, REGRESSION),
    "clipnorm sum_of_squares": (CLIPNORM, SQUARES),
    "global_clipnorm sum_of_squares": (GLOBAL_CLIPNORM, SQUARES),
    "global_clipnorm linear_regression": (GLOBAL_CLIPNORM, REGRESSION),
}


def member_values(starts: list[str], lrs: list[str]) -> list[str]:
    """Each member's own overrides: a start (`objective.init=…`, or the objective's own keys) and a learning rate."""
    return [
        f"{start if '=' in start else f'objective.init={start}'} lr={lr}" for start, lr in zip(starts, lrs, strict=True)
    ]


def histories(overrides: list[str], members: list[str], together: bool) -> list[np.ndarray]:
    """Each member's history (loss, grad_norm, lr, elements, gradients per step) after EPOCHS steps under XLA, a
    member being `overrides` and its own values (space-separated): the members in one batch, or each alone."""
    common = ["log.plots=false", "jit_compile=true", *overrides]
    experiments = [to_experiment(derived(common, *values.split())) for values in members]
    runs = [(checked_problem(experiment)[0], experiment.optimizer, float(experiment.lr)) for experiment in experiments]
    groups = [runs] if together else [[run] for run in runs]
    found = []
    for group in groups:
        problems, optimizers, rates = (list(values) for values in zip(*group, strict=True))
        with POOL.batch_for(problems, optimizers, rates, 1, [StopConfig()] * len(group), jit_compile=True) as batch:
            assert batch.jit_compile
            calls = list(batch.chunks(EPOCHS))
        for member in range(len(group)):
            history = pd.concat([chunk.history for call in calls for chunk in call[member]])
            assert history["step"].drop_duplicates().tolist() == list(range(EPOCHS + 1))
            found.append(history.drop(columns="step").to_numpy())
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_a_batch_equals_keras_on_each_member_alone_bit_for_bit(case):
    optimizer, (objective, starts) = CASES[case]
    members = member_values(starts, LRS)
    batch = histories([*objective, *optimizer], members, together=True)
    alone = histories([*objective, *optimizer], members, together=False)
    for member, (together, itself) in enumerate(zip(batch, alone, strict=True)):
        assert together.dtype == np.float32 and np.isfinite(together).all()
        assert np.array_equal(together, itself), f"member {member}"


def test_a_member_at_the_origin_takes_lamb_s_unscaled_first_step_as_keras_alone_does():
    # f = (x − 1)² from x = 0: the weight's norm is 0, so Keras's trust ratio is 1, and the first step is Adam's
    # bias-corrected one, lr·g/(|g| + ε) with g = −2: x₁ = lr·2/(2 + 1e-7), which is lr in float32 (2 + 1e-7
    # rounds to 2). In a stacked variable the other members' non-zero weights would set its ratio.
    lrs = ["0.1", "0.01", "0.5", "0.3"]
    members = member_values(["0.0", "3.0", "-2.0", "0.0"], lrs)
    batch = histories(["objective=quadratic", *LAMB], members, together=True)
    alone = histories(["objective=quadratic", *LAMB], members, together=False)
    for member in (0, 3):
        x_1 = batch[member][1, 3]  # the row after one step: loss, grad_norm, lr, x, grad_x
        assert x_1 == np.float32(lrs[member]) and x_1 == pytest.approx(float(lrs[member]) * 2 / (2 + 1e-7))
    for together, itself in zip(batch, alone, strict=True):
        assert np.array_equal(together, itself)


def test_starts_of_lamb_train_as_one_batch_each_ending_where_it_ends_alone(tmp_path):
    common = ["objective=himmelblau", *LAMB, "lr=0.05", f"epochs={EPOCHS}", "jit_compile=true", "log.plots=false"]
    train_config(compose_config(*common, "objective.starts=4", "log.tensorboard=false"), tmp_path / "starts")
    starts = pd.read_csv(tmp_path / "starts" / "starts.csv")
    assert starts["status"].tolist() == ["completed"] * 4
    begin = [f"[{x},{y}]" for x, y in starts[["start_x[0]", "start_x[1]"]].to_numpy(np.float32)]
    ends = [history[-1, 3:5] for history in histories(common, member_values(begin, ["0.05"] * 4), together=False)]
    assert np.array_equal(starts[["end_x[0]", "end_x[1]"]].to_numpy(np.float32), np.stack(ends))
