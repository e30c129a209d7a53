"""objective.starts=N: one batch in one graph, equal to N separate runs for elementwise optimizers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tapelab.errors import ConfigError

HIMMELBLAU = ["objective=himmelblau", "optimizer=adam", "lr=0.05", "epochs=300", "seed=3", "jit_compile=true"]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from conftest import Run, compose_config
    from tapelab.runner import run

    run_dir = tmp_path_factory.mktemp("batch")
    returned = run(compose_config(*HIMMELBLAU, "objective.starts=4", "log.plots=true"), run_dir)
    return Run(run_dir, returned)


def test_a_batch_of_starts_equals_separate_runs_from_the_same_points(batch, train):
    starts = pd.read_csv(batch.dir / "starts.csv")
    assert starts.columns.tolist() == [
        "start", "start_x[0]", "start_x[1]", "end_x[0]", "end_x[1]", "final_loss"
    ]  # fmt: skip
    for row in starts.itertuples(index=False):
        init = f"[{np.float32(row[1])},{np.float32(row[2])}]"  # the float32 start, in its shortest text
        alone = train(*HIMMELBLAU, f"objective.init={init}", "log.tensorboard=false")
        np.testing.assert_allclose([row[3], row[4]], alone.summary["params"]["x"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(row[5], alone.summary["final_loss"], rtol=1e-5, atol=1e-6)


def test_starts_are_drawn_from_the_domain_by_seed(batch, train):
    starts = pd.read_csv(batch.dir / "starts.csv")
    assert starts[["start_x[0]", "start_x[1]"]].abs().to_numpy().max() <= 5  # himmelblau's domain: [-5, 5]²
    again = train(*HIMMELBLAU, "objective.starts=4", "log.tensorboard=false", "epochs=1")
    pd.testing.assert_frame_equal(
        pd.read_csv(again.dir / "starts.csv").filter(like="start_"), starts.filter(like="start_")
    )


def test_history_has_the_best_mean_and_worst_loss_and_the_summary_the_best_start(batch):
    starts = pd.read_csv(batch.dir / "starts.csv")
    last = batch.metrics.iloc[-1]
    assert batch.metrics.columns.tolist() == ["step", "loss", "grad_norm", "lr", "loss_mean", "loss_worst"]
    np.testing.assert_allclose(
        [last["loss"], last["loss_mean"], last["loss_worst"]],
        [starts["final_loss"].min(), starts["final_loss"].mean(), starts["final_loss"].max()],
        rtol=1e-5,
        atol=1e-9,
    )
    best = starts.loc[starts["final_loss"].idxmin()]
    assert batch.summary["best_start"] == int(best["start"])
    assert batch.summary["params"]["x"] == pytest.approx([best["end_x[0]"], best["end_x[1]"]])
    events = EventAccumulator(str(batch.dir), size_guidance={"tensors": 0})
    events.Reload()
    assert {"loss", "loss_mean", "loss_worst"} <= set(events.Tags()["tensors"])
    assert (batch.dir / "starts.png").exists() and not (batch.dir / "trajectory.png").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer=lamb"], "objective.starts: needs an elementwise optimizer, .* lamb's trust ratio"),
        (["optimizer=newton"], "objective.starts: needs an elementwise optimizer, .* newton's Hessian"),
        (["optimizer=sgd", "optimizer.clipnorm=1.0"], "optimizer.clipnorm"),
        (["objective=quadratic"], "objective.domain: objective.starts > 1 needs a search box"),
        (["objective=quadratic", "objective.domain=[[0.0,1.0],[0.0,1.0]]"], "needs one .low, high. pair or 1"),
    ],
)
def test_multistart_refuses_what_would_not_be_independent_runs(train, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train("objective=himmelblau", "objective.starts=3", *overrides)


def test_starts_must_be_at_least_one(train):
    with pytest.raises(ConfigError, match="objective.starts: must be an integer from 1 to 1000000, got 0"):
        train("objective.starts=0")


def test_a_one_value_domain_covers_every_element(train):
    result = train("objective=sum_of_squares", "objective.starts=5", "objective.domain=[[-1.0,1.0]]", "epochs=50")
    starts = pd.read_csv(result.dir / "starts.csv")
    assert len(starts) == 5 and starts.filter(like="start_").abs().to_numpy().max() <= 1


def test_a_batch_that_blows_up_reports_its_best_finite_start(train):
    # (x − 1)² overflows float32 beyond |x| ≈ 1.8e19, so some starts drawn from ±1e20 are infinite at once.
    result = train("objective=quadratic", "objective.starts=8", "objective.domain=[[-1e20,1e20]]", "epochs=10")
    starts = pd.read_csv(result.dir / "starts.csv")
    finite = starts[np.isfinite(starts["final_loss"])]
    assert result.summary["status"] == "diverged" and result.summary["steps"] == 0
    assert 0 < len(finite) < 8
    assert result.summary["best_start"] == int(finite.loc[finite["final_loss"].idxmin(), "start"])
    assert result.summary["final_loss"] == pytest.approx(finite["final_loss"].min(), rel=1e-6)
