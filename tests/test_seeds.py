"""The seed notebooks' printed numbers, reproduced from the command-line config (float32, exact)."""

from __future__ import annotations

import numpy as np
import pytest

# Seed 000: gradient descent on x² + x − 1 from 3.0 at lr 0.1; "Epoch i: [x, f(x)]" before update i+1.
SEED_000 = [
    (3.0, 11.0),
    (2.3, 6.59),
    (1.74, 3.7676),
    (1.292, 1.9612641),
    (0.93360007, 0.80520916),
    (0.64688003, 0.06533384),
    (0.417504, -0.40818638),
    (0.2340032, -0.71123934),
    (0.087202564, -0.90519315),
    (-0.03023795, -1.0293236),
    (-0.12419036, -1.1087672),
    (-0.1993523, -1.159611),
    (-0.25948185, -1.1921511),
    (-0.30758548, -1.2129767),
    (-0.34606838, -1.226305),
    (-0.37685472, -1.2348353),
    (-0.40148377, -1.2402946),
    (-0.421187, -1.2437885),
    (-0.4369496, -1.2460246),
    (-0.4495597, -1.2474558),
    (-0.45964774, -1.2483717),
    (-0.46771818, -1.2489579),
    (-0.47417456, -1.249333),
    (-0.47933966, -1.2495731),
    (-0.48347172, -1.2497268),
    (-0.48677737, -1.2498251),
    (-0.4894219, -1.2498881),
    (-0.4915375, -1.2499284),
]
SEED_000_X28 = -0.49323002  # the notebook's output is cut after this x

# Seed 004: "Loss = {loss before the update}, w = {w after it}", printed with two decimals.
SEED_004_W = [
    (20.25, 0.77),
    (13.62, 0.99),
    (9.16, 1.17),
    (6.16, 1.32),
    (4.14, 1.44),
    (2.78, 1.54),
    (1.87, 1.63),
    (1.26, 1.69),
    (0.85, 1.75),
    (0.57, 1.79),
    (0.38, 1.83),
    (0.26, 1.86),
    (0.17, 1.89),
    (0.12, 1.91),
    (0.08, 1.92),
    (0.05, 1.94),
    (0.04, 1.95),
    (0.02, 1.96),
    (0.02, 1.97),
    (0.01, 1.97),
]
SEED_004_X = [
    (20.25, 3.45),
    (18.28, 3.88),
    (16.49, 4.28),
    (14.89, 4.67),
    (13.43, 5.04),
    (12.12, 5.38),
    (10.94, 5.71),
    (9.88, 6.03),
    (8.91, 6.33),
    (8.04, 6.61),
    (7.26, 6.88),
    (6.55, 7.14),
    (5.91, 7.38),
    (5.34, 7.61),
    (4.82, 7.83),
    (4.35, 8.04),
    (3.92, 8.24),
    (3.54, 8.43),
    (3.20, 8.60),
    (2.88, 8.77),
    (2.60, 8.93),
    (2.35, 9.09),
    (2.12, 9.23),
    (1.91, 9.37),
    (1.73, 9.50),
    (1.56, 9.63),
    (1.41, 9.75),
    (1.27, 9.86),
    (1.15, 9.97),
    (1.03, 10.07),
    (0.93, 10.16),
    (0.84, 10.26),
    (0.76, 10.34),
    (0.69, 10.43),
    (0.62, 10.51),
    (0.56, 10.58),
    (0.50, 10.65),
    (0.45, 10.72),
]


@pytest.fixture(params=["auto", "true", "false"])
def train(train, request):
    """Every seed number, exactly, with the default (auto: these short runs take the plain graph), with XLA and
    with the plain graph forced."""
    return lambda *overrides: train(f"jit_compile={request.param}", *overrides)


def float32_equal(actual, expected) -> bool:
    return np.array_equal(np.asarray(actual, np.float32), np.asarray(expected, np.float32))


def test_gd_reproduces_seed_000_quadratic_trajectory(train):
    result = train(
        "objective.a=1", "objective.b=1", "objective.c=-1", "objective.init=3.0", "optimizer=gd", "lr=0.1", "epochs=29"
    )
    rows = result.metrics
    assert rows["step"].tolist() == list(range(30))
    assert float32_equal(rows["x"][:28], [x for x, _ in SEED_000])
    assert float32_equal(rows["loss"][:28], [f for _, f in SEED_000])
    assert float32_equal(rows["x"][28], SEED_000_X28)


def test_default_run_reproduces_seed_002_minimum(train):
    result = train()
    assert result.summary["status"] == "completed"
    assert result.summary["steps"] == 1000
    assert float32_equal(result.summary["params"]["x"], 0.99999857)
    assert float32_equal(result.metrics["x"].iloc[-1], 0.99999857)
    assert result.summary["final_loss"] == 0.0
    assert result.returned == 0.0


@pytest.mark.parametrize(
    ("trainable", "lr", "printed"),
    [("w", 0.01, SEED_004_W), ("x", 0.1, SEED_004_X)],
    ids=["weight", "input"],
)
def test_neuron_reproduces_seed_004_descent(train, trainable, lr, printed):
    result = train(
        "objective=neuron", f"objective.trainable=[{trainable}]", "optimizer=gd", f"lr={lr}", f"epochs={len(printed)}"
    )
    rows = result.metrics
    assert list(rows.columns[4:]) == [trainable, f"grad_{trainable}"]
    losses = [f"{loss:05.2f}" for loss in rows["loss"][:-1]]
    values = [f"{value:05.2f}" for value in rows[trainable][1:]]
    assert losses == [f"{loss:05.2f}" for loss, _ in printed]
    assert values == [f"{value:05.2f}" for _, value in printed]


@pytest.mark.parametrize(
    ("overrides", "column", "gradient"),
    [
        (["objective.a=1", "objective.b=1", "objective.c=-1", "objective.init=3.0"], "grad_x", 7.0),  # seed 000
        (["objective=polynomial"], "grad_x", 7.0),  # seed 003: 4w + w³ at w = 1
        (["objective=polynomial", "objective.coeffs=[0,0,0,0,1]", "objective.init=3"], "grad_x", 108.0),  # seed 001
        (["objective=polynomial", "objective.coeffs=[0,0,0,0,1]", "objective.init=-3"], "grad_x", -108.0),  # 003
        (["objective=sum_of_squares"], "grad_w[0]", 2.0),  # seed 003: (2, -6) at (1, -3)
        (["objective=sum_of_squares"], "grad_w[1]", -6.0),
    ],
)
def test_start_gradient_matches_seed(train, overrides, column, gradient):
    result = train(*overrides, "epochs=1")
    assert result.metrics[column].iloc[0] == gradient


def test_sum_of_squares_start_loss_and_gradient_norm(train):
    result = train("objective=sum_of_squares", "epochs=1")
    assert result.metrics["loss"].iloc[0] == 10.0  # seed 003: 1 + 9
    assert result.metrics["grad_norm"].iloc[0] == pytest.approx(np.hypot(2.0, 6.0))


@pytest.mark.parametrize(
    ("loss", "optimizer", "lr", "epochs"),
    [("mse", "gd", 0.05, 2000), ("mae", "adam", 0.01, 3000), ("huber", "gd", 0.1, 3000)],
)
def test_linear_regression_recovers_line(train, loss, optimizer, lr, epochs):
    result = train(
        "objective=linear_regression",
        f"objective.loss={loss}",
        f"optimizer={optimizer}",
        f"lr={lr}",
        f"epochs={epochs}",
        "log.every=100",
    )
    assert result.summary["params"]["w"] == pytest.approx(2.0, abs=0.02)
    assert result.summary["params"]["b"] == pytest.approx(-1.0, abs=0.02)
