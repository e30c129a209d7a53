"""A batch of runs in one compiled loop: each member writes what the same run alone writes, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from composed import derived
from conftest import ROOT
from tapelab.config import to_experiment
from tapelab.engine.pool import POOL
from tapelab.runs import train_alone, train_batch

# Learning rates from far too small to far too large for Rosenbrock/Adam, and stop rules: in one batch, members
# complete, converge (on the gradient or a plateau) and diverge at steps of their own. Every elementwise optimizer
# is compared through the launcher (test_batched_launcher).
ADAM_LEARNING_RATES = ["0.0001", "0.001", "0.003", "0.01", "0.03", "0.1", "0.5", "1"]
STOP_RULES = ["stop.grad_tol=0.01", "stop.loss_tol=1e-4", "stop.patience=20"]


def run_both(tmp_path: Path, optimizer: str, lrs: list[str], *extra: str, epochs: int = 300) -> list[tuple[Path, Path]]:
    """The runs at `lrs` (with `extra` overrides, one string per member) as one batch and each alone under XLA,
    as batches train; their directories, in pairs."""
    common = ["objective=rosenbrock", f"optimizer={optimizer}", f"epochs={epochs}", "jit_compile=true"]
    common += ["log.plots=false", *STOP_RULES]
    experiments = [
        to_experiment(derived(common, f"lr={lr}", *more.split()))
        for lr, more in zip(lrs, extra or [""] * len(lrs), strict=True)
    ]
    batch = [tmp_path / "batch" / str(number) for number in range(len(lrs))]
    alone = [tmp_path / "alone" / str(number) for number in range(len(lrs))]
    returned = train_batch(experiments, batch, lrs, group=3)
    for run_dir in batch:
        assert json.loads((run_dir / "summary.json").read_text())["batch"] == {"group": 3, "size": len(lrs)}
    assert returned == [
        train_alone(experiment, run_dir, trial=lr)
        for experiment, run_dir, lr in zip(experiments, alone, lrs, strict=True)
    ]
    return list(zip(batch, alone, strict=True))


def summary_of(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    times = ("wall_time_s", "steps_per_s", "timings_s")
    return {key: value for key, value in summary.items() if key not in (*times, "batch")}


def test_members_stop_at_steps_of_their_own(tmp_path):
    # The members differ in their stop rules' thresholds too.
    tolerances = ["stop.loss_tol=0.2", "stop.loss_tol=0.1", "stop.loss_tol=0.05", "", ""]  # patience 20
    pairs = run_both(tmp_path, "sgd", ["0.001", "0.001", "0.001", "0.001", "0.1"], *tolerances)
    ends = [(summary_of(batch)["status"], summary_of(batch)["steps"]) for batch, _ in pairs]
    assert {status for status, _ in ends} == {"completed", "converged", "diverged"}
    assert len({steps for _, steps in ends}) == 3  # diverged at 2, converged at 22, completed at 300
    for batch, alone in pairs:
        pd.testing.assert_frame_equal(
            pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )


def test_a_member_resumes_alone_as_its_run_alone_does(tmp_path):
    lrs = ["0.001", "0.01", "0.05"]
    pairs = run_both(tmp_path, "adam", lrs)
    for (batch, alone), lr in zip(pairs, lrs, strict=True):
        longer = to_experiment(derived(["objective=rosenbrock", "optimizer=adam", "jit_compile=true", "log.plots=false",
                                        *STOP_RULES], f"lr={lr}", "epochs=500"))  # fmt: skip
        if summary_of(batch)["status"] != "completed":
            continue
        for run_dir in (batch, alone):
            train_alone(longer, run_dir, resume=True, trial=lr)
        pd.testing.assert_frame_equal(
            pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )
        assert summary_of(batch)["steps"] == summary_of(alone)["steps"] > 300


def test_a_batch_that_reuses_an_earlier_batch_s_loop_equals_its_runs_alone(tmp_path):
    run_both(tmp_path / "first", "adam", ADAM_LEARNING_RATES)
    built = {id(batch) for batch in POOL.idle()}
    pairs = run_both(tmp_path / "again", "adam", list(reversed(ADAM_LEARNING_RATES)))  # other values, the same loop
    assert {id(batch) for batch in POOL.idle()} == built  # none new
    for batch, alone in pairs:
        pd.testing.assert_frame_equal(
            pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True
        )
        assert summary_of(batch) == summary_of(alone)


def test_a_member_with_parameters_of_two_shapes_resumes_alone_as_its_run_alone_does(tmp_path):
    # Adam keeps two slots per parameter; Keras makes them parameter by parameter, the scalar a's before v's.
    python = ["objective=python", "objective.function=user_objectives.neuron_and_vector"]
    python += ["objective.init={a: 0.5, v: [1.0, -3.0]}", "optimizer=adam", "jit_compile=true", "log.plots=false"]
    lrs = ["0.01", "0.1"]
    short = [to_experiment(derived(python, f"lr={lr}", "epochs=30")) for lr in lrs]
    batch = [tmp_path / "batch" / lr for lr in lrs]
    train_batch(short, batch, lrs, group=0)
    for lr, run_dir in zip(lrs, batch, strict=True):
        longer = to_experiment(derived(python, f"lr={lr}", "epochs=60"))
        train_alone(longer, run_dir, resume=True, trial=lr)
        train_alone(longer, tmp_path / "straight" / lr, trial=lr)
        # This loss, mapped over the members, rounds unlike its run alone in the last bit now and then (README):
        # to float32 rounding, and Adam's moments restored into the right slots (a wrong one would not even
        # fit: a is a scalar, v a vector).
        resumed, straight = (pd.read_csv(path / "metrics.csv") for path in (run_dir, tmp_path / "straight" / lr))
        assert resumed["step"].tolist() == list(range(61))
        pd.testing.assert_frame_equal(resumed, straight, rtol=1e-6)


BUILT_IN = sorted(path.stem for path in (ROOT / "conf" / "objective").glob("*.yaml"))
BUILT_IN = [name for name in BUILT_IN if name not in ("expression", "python")]  # those are yours


def test_a_member_equals_its_run_alone_on_every_built_in_objective(tmp_path):
    assert len(BUILT_IN) == 20
    lrs = ["0.001", "0.01", "0.1"]
    for objective in BUILT_IN:
        overrides = [f"objective={objective}", "optimizer=adam", "epochs=30", "jit_compile=true", "log.plots=false"]
        overrides.append("log.tensorboard=false")  # the histories are the point here
        experiments = [to_experiment(derived(overrides, f"lr={lr}")) for lr in lrs]
        batch = [tmp_path / objective / "batch" / lr for lr in lrs]
        train_batch(experiments, batch, lrs, group=0)
        for experiment, run_dir, lr in zip(experiments, batch, lrs, strict=True):
            train_alone(experiment, tmp_path / objective / "alone" / lr, trial=lr)
            pd.testing.assert_frame_equal(
                pd.read_csv(run_dir / "metrics.csv"),
                pd.read_csv(tmp_path / objective / "alone" / lr / "metrics.csv"),
                check_exact=True,
                obj=f"{objective}, lr={lr}",
            )


# The optimizer's own keys that the members of a batch may differ in (README), and three values of each: one a member.
MEMBER_KEYS = {
    "sgd": ["weight_decay"],
    "adam": ["weight_decay", "beta_1", "beta_2", "epsilon"],
    "adamw": ["weight_decay", "beta_1", "beta_2", "epsilon"],
    "adamax": ["weight_decay", "beta_1", "beta_2", "epsilon"],
    "nadam": ["weight_decay", "beta_2", "epsilon"],  # not beta_1: Keras keeps a product of it in a scalar variable
    "adagrad": ["weight_decay", "epsilon"],
    "adadelta": ["weight_decay", "rho", "epsilon"],
    "rmsprop": ["weight_decay", "rho", "epsilon"],
    "ftrl": [
        "weight_decay",
        "learning_rate_power",
        "l1_regularization_strength",
        "l2_regularization_strength",
        "l2_shrinkage_regularization_strength",
        "beta",
    ],  # fmt: skip
    "lion": ["weight_decay", "beta_1", "beta_2"],
}
MEMBER_VALUES = {
    "weight_decay": [0.004, 0.01, 0.02],
    "beta_1": [0.8, 0.9, 0.95],
    "beta_2": [0.99, 0.999, 0.9],
    "epsilon": [1e-7, 1e-5, 1e-3],
    "rho": [0.8, 0.9, 0.95],
    "learning_rate_power": [-0.5, -0.3, -0.7],
    "l1_regularization_strength": [0.0, 0.01, 0.1],
    "l2_regularization_strength": [0.1, 0.0, 0.01],
    "l2_shrinkage_regularization_strength": [0.01, 0.1, 0.0],
    "beta": [0.0, 0.1, 1.0],
}


def test_members_that_differ_in_the_optimizer_s_own_keys_equal_their_runs_alone(tmp_path):
    # Every key of MEMBER_KEYS was measured bit for bit so; tested here on a few optimizers (compiling is what costs),
    # Adam through the launcher (test_batched_launcher).
    for optimizer in ("nadam", "rmsprop", "ftrl", "lion"):
        keys = MEMBER_KEYS[optimizer]
        extra = [" ".join(f"optimizer.{key}={MEMBER_VALUES[key][member]}" for key in keys) for member in range(3)]
        extra = [f"{values} log.tensorboard=false" for values in extra]  # the histories are the point here
        for batch, alone in run_both(tmp_path / optimizer, optimizer, ["0.01"] * 3, *extra, epochs=40):
            pd.testing.assert_frame_equal(
                pd.read_csv(batch / "metrics.csv"), pd.read_csv(alone / "metrics.csv"), check_exact=True, obj=optimizer
            )
            assert summary_of(batch) == summary_of(alone)  # optimizer_params too: each member's own
