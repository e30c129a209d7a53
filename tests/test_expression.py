"""objective=expression: a loss typed on the command line, whitelisted before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, compose_config
from tapelab.errors import ConfigError
from tapelab.objectives.expression import check_expression
from tapelab.runs import train_config

SEED_000_X = [3.0, 2.3, 1.74, 1.292, 0.93360007]  # x² + x − 1 from 3, descended at lr 0.1


def test_the_default_is_seed_003s_4w_plus_w_cubed_with_gradient_7(train):
    result = train("objective=expression", "objective.expr=4*w + w**3", "objective.init={w: 1.0}", "epochs=1")
    assert list(result.metrics.columns) == ["step", "loss", "grad_norm", "lr", "w", "grad_w"]
    assert result.metrics[["w", "loss", "grad_w"]].iloc[0].tolist() == [1.0, 5.0, 7.0]
    default = train("objective=expression", "epochs=1")
    assert default.metrics.equals(result.metrics)


def test_seed_003_gradient_of_w_to_the_fourth_at_minus_3(train):
    result = train("objective=expression", "objective.expr=w**4", "objective.init={w: -3}", "epochs=1")
    assert result.metrics[["loss", "grad_w"]].iloc[0].tolist() == [81.0, -108.0]


def test_seed_003_constants_stay_fixed_and_get_no_column(train):
    # L = (w1 + c1)² + c2³ + 4·c3 with w1 = 1 trainable; ∂L/∂w1 = 2(w1 + c1) = −2.
    result = train(
        "objective=expression",
        "objective.expr='(w1 + c1)**2 + c2**3 + 4*c3'",
        "objective.init={w1: 1, c1: -2, c2: -1, c3: 2}",
        "objective.constants=[c1,c2,c3]",
        "optimizer=gd",
        "lr=0.25",
        "epochs=2",
    )
    assert list(result.metrics.columns) == ["step", "loss", "grad_norm", "lr", "w1", "grad_w1"]
    row = result.metrics.iloc[0]
    assert (row["loss"], row["grad_w1"]) == (1.0 - 1.0 + 8.0, -2.0)
    # w1 ← w1 − 0.25·2(w1 − 2): 1 → 1.5 → 1.75; the constants never move.
    assert result.metrics["w1"].tolist() == [1.0, 1.5, 1.75]
    assert result.summary["params"] == {"w1": 1.75}


def test_two_parameters_in_order_of_first_appearance(train):
    # f = b·a² + 3a at a = 2, b = −1: f = 2, ∂f/∂b = a² = 4, ∂f/∂a = 2ab + 3 = −1.
    result = train(
        "objective=expression",
        "objective.expr=b*a**2 + 3*a",
        "objective.init={a: 2, b: -1}",
        "epochs=1",
    )
    assert list(result.metrics.columns) == ["step", "loss", "grad_norm", "lr", "b", "a", "grad_b", "grad_a"]
    assert result.metrics[["loss", "b", "a", "grad_b", "grad_a"]].iloc[0].tolist() == [2.0, -1.0, 2.0, 4.0, -1.0]
    assert result.metrics["grad_norm"].iloc[0] == pytest.approx(np.sqrt(17.0))


def test_every_function_is_its_tensorflow_op(train):
    w = 0.5
    sigmoid = 1 / (1 + np.exp(-w))
    functions = {  # name: (value, derivative) at w
        "sin": (np.sin(w), np.cos(w)),
        "cos": (np.cos(w), -np.sin(w)),
        "tan": (np.tan(w), 1 / np.cos(w) ** 2),
        "exp": (np.exp(w), np.exp(w)),
        "log": (np.log(w), 1 / w),
        "sqrt": (np.sqrt(w), 0.5 / np.sqrt(w)),
        "abs": (w, 1.0),
        "tanh": (np.tanh(w), 1 - np.tanh(w) ** 2),
        "sigmoid": (sigmoid, sigmoid * (1 - sigmoid)),
        "softplus": (np.log1p(np.exp(w)), sigmoid),
    }
    # Each function gets its own weight k, so that two swapped ops would show.
    expr = " + ".join(f"{k}*{name}(w)" for k, name in enumerate(functions, start=1)) + " - 2/w"
    result = train("objective=expression", f"objective.expr='{expr}'", f"objective.init={{w: {w}}}", "epochs=1")
    loss = sum(k * value for k, (value, _) in enumerate(functions.values(), start=1)) - 2 / w
    grad = sum(k * slope for k, (_, slope) in enumerate(functions.values(), start=1)) + 2 / w**2
    row = result.metrics.iloc[0]
    assert row["loss"] == pytest.approx(loss, rel=1e-6)
    assert row["grad_w"] == pytest.approx(grad, rel=1e-6)


def test_descent_on_an_expression_follows_seed_000_and_the_quadratic_exactly(train):
    overrides = ["optimizer=gd", "lr=0.1", "epochs=4"]
    typed = train("objective=expression", "objective.expr=x**2 + x - 1", "objective.init={x: 3}", *overrides)
    quadratic = train(
        "objective=quadratic", "objective.a=1", "objective.b=1", "objective.c=-1", "objective.init=3", *overrides
    )
    assert typed.metrics["x"].astype(np.float32).tolist() == [np.float32(x) for x in SEED_000_X]
    for column in ("x", "grad_x", "grad_norm"):
        assert typed.metrics[column].tolist() == quadratic.metrics[column].tolist()
    # TensorFlow's graph optimizer may regroup `+ x − 1` with the constant: the loss agrees to float32 rounding.
    np.testing.assert_allclose(typed.metrics["loss"], quadratic.metrics["loss"], rtol=2e-7)


REJECTED = [
    ("__import__('os')", "a call of __import__"),
    ("w.real", "attribute access (.real)"),
    ("w[0]", "indexing"),
    ("lambda: 1", "lambda"),
    ("'a'", "a string"),
    ("[w for w in x]", "comprehension"),
    ("foo(w)", "a call of foo"),
    ("sin(w, w)", "calling sin with 2 arguments"),
    ("sin(x=w)", "keyword argument"),
    ("w < 1", "comparison <"),
    ("w if w else 1", "conditional expression"),
    ("w and 1", "and/or"),
    ("w // 2", "operator //"),
    ("sin", "function name sin"),
    ("sin + w", "function name sin"),
    ("True", "the constant True"),
    ("(w, 1)", "a tuple"),
    ("w.__class__.__bases__", "attribute access"),
    ("", "is empty"),
    ("4*w +", "not a valid expression"),
    ("(w", "not a valid expression"),
]


@pytest.mark.parametrize(("expr", "problem"), REJECTED, ids=[expr or "empty" for expr, _ in REJECTED])
def test_anything_outside_the_whitelist_is_refused_before_tensorflow_runs(tmp_path, monkeypatch, expr, problem):
    cfg = compose_config("objective=expression", "objective.init={w: 1.0}")
    cfg.objective.expr = expr  # exactly this text, with no command-line quoting in between
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # importing TensorFlow would now fail
    with pytest.raises(ConfigError) as error:
        train_config(cfg, tmp_path / "run")
    assert error.value.key == "objective.expr"
    assert problem in error.value.problem
    if expr:
        assert "at column" in error.value.problem or "at the end" in error.value.problem
    assert not (tmp_path / "run").exists()


def test_the_column_of_a_refused_construct_points_at_it(tmp_path):
    cfg = compose_config("objective=expression", "objective.expr='4*w + w.real'")
    with pytest.raises(ConfigError) as error:
        train_config(cfg, tmp_path / "run")
    assert "attribute access (.real) is not allowed, at column 8; allowed: numbers, names" in error.value.problem


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        (["objective.expr=x**2", "objective.init={w: 1}"], "objective.init", "needs a start value for x and has w"),
        (["objective.expr=w + z", "objective.init={w: 1}"], "objective.init", "needs a start value for z; give one"),
        (["objective.init={w: 1, z: 2}"], "objective.init", "has z, which the expression does not use"),
        (["objective.init={w: [1, 2]}"], "objective.init", "must map each name to a number"),
        (["objective.constants=[w]"], "objective.constants", "nothing to train"),
        (["objective.constants=[c]"], "objective.constants", "names of the expression (w)"),
        (["objective.expr=2 + 3"], "objective.expr", "no parameter to train"),
        (
            ["objective.expr=lr*w", "objective.init={lr: 1, w: 1}"],
            "objective.expr",
            "'lr' clashes with the metrics columns",
        ),
        (["objective.expr=w + 1e39"], "objective.expr", "beyond float32"),
        (["objective.init={w: 1e39}"], "objective.init.w", "float32"),
        (["objective.init={1: 1, w: 1}"], "objective.init", "has 1, which the expression does not use"),
        ([f"objective.expr='{'+'.join(['w'] * 101)}'"], "objective.expr", "nested too deeply: at most 100 levels"),
    ],
)
def test_names_constants_and_start_values_are_checked(tmp_path, overrides, key, problem):
    with pytest.raises(ConfigError) as error:
        train_config(compose_config("objective=expression", *overrides), tmp_path / "run")
    assert error.value.key == key
    assert problem in error.value.problem
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_command_line_refusal_is_one_line_with_exit_code_2(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    finished = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "objective=expression", "objective.expr=w.__class__"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 2, finished.stderr
    assert (
        "Error in config: objective.expr: attribute access (.__class__) is not allowed, at column 2" in finished.stderr
    )
    assert "Traceback" not in finished.stderr
    assert not list(tmp_path.rglob("metrics.csv"))


def test_the_nesting_limit_leaves_room_for_long_formulas():
    assert check_expression("+".join(["w"] * 100)).names == ("w",)  # 100 levels: the most allowed
    assert check_expression("sin(" * 49 + "w" + ")" * 49).names == ("w",)
