"""objective=python: the user's own loss function, looked up by its dotted path (tests/user_objectives.py)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf.errors import MissingMandatoryValue

from conftest import compose_config
from tapelab.config import to_experiment
from tapelab.errors import ConfigError
from tapelab.runs import train_config


def test_a_vector_quadratic_descends_in_closed_form(train):
    # Σ (wᵢ − tᵢ)² with t = (1, −2), from 0 at lr 0.1: w_t = t·(1 − 0.8^t), gradient 2(w − t).
    result = train(
        "objective=python",
        "objective.function=user_objectives.shifted_bowl",
        "objective.init={w: [0, 0]}",
        "optimizer=gd",
        "lr=0.1",
        "epochs=10",
    )
    metrics = result.metrics
    assert list(metrics.columns) == ["step", "loss", "grad_norm", "lr", "w[0]", "w[1]", "grad_w[0]", "grad_w[1]"]
    assert metrics[["loss", "grad_w[0]", "grad_w[1]"]].iloc[0].tolist() == [5.0, -2.0, 4.0]
    shrink = 0.8 ** metrics["step"].to_numpy()
    target = np.array([1.0, -2.0])
    np.testing.assert_allclose(metrics[["w[0]", "w[1]"]], np.outer(1 - shrink, target), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["loss"], 5.0 * shrink**2, rtol=1e-5)
    assert result.summary["objective"] == "python"
    assert result.summary["params"]["w"] == pytest.approx((1 - 0.8**10) * target, rel=1e-6)


def test_a_loss_xla_cannot_compile_falls_back_to_the_plain_graph(train, caplog):
    result = train(
        "objective=python",
        "objective.function=user_objectives.bowl_through_python",
        "objective.init={w: [0, 0]}",
        "optimizer=gd",
        "lr=0.1",
        "epochs=10",
        "jit_compile=true",
    )
    assert result.summary["xla"] is False
    assert "XLA can't compile this objective and optimizer, so the plain graph runs instead" in caplog.text
    shrink = 0.8 ** result.metrics["step"].to_numpy()  # the same closed form as the plain bowl's
    np.testing.assert_allclose(result.metrics["loss"], 5.0 * shrink**2, rtol=1e-5)


def test_scalar_and_vector_parameters_keep_the_order_of_init(train):
    # (3a − 6)² + Σ vᵢ² at a = 0.5, v = (1, −3): 20.25 + 10, ∂a = 6(3a − 6) = −27, ∂v = 2v.
    result = train(
        "objective=python",
        "objective.function=user_objectives.neuron_and_vector",
        "objective.init={a: 0.5, v: [1, -3]}",
        "epochs=1",
    )
    assert list(result.metrics.columns)[4:] == ["a", "v[0]", "v[1]", "grad_a", "grad_v[0]", "grad_v[1]"]
    row = result.metrics.iloc[0]
    assert row[["loss", "grad_a", "grad_v[0]", "grad_v[1]"]].tolist() == [30.25, -27.0, 2.0, -6.0]


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        ("user_objectives.NOT_CALLABLE", "non-callable of type 'float'"),
        ("user_objectives.nowhere", "has no attribute 'nowhere'"),
        ("no_such_module.loss", "No module named 'no_such_module'"),
        ("shifted_bowl", "dotted path"),
        ("user_objectives.vector_loss", "must return a floating-point scalar loss, got shape [2]"),
        ("os.getcwd", "must take one argument, the mapping name -> tf.Variable"),
        ("user_objectives.not_a_tensor", "must return a floating-point scalar loss, got shape [] and dtype string"),
    ],
)
def test_a_bad_function_path_or_return_value_is_a_config_error(tmp_path, function, problem):
    cfg = compose_config("objective=python", f"objective.function={function}", "objective.init={w: [0, 0]}")
    with pytest.raises(ConfigError) as error:
        train_config(cfg, tmp_path / "run")
    assert error.value.key == "objective.function"
    assert problem in error.value.problem
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("init", "key", "problem"),
    [
        ("objective.init={}", "objective.init", "must map each parameter name"),
        ("objective.init=3", "objective.init", "must map each parameter name"),
        ("objective.init={w: [0, x]}", "objective.init.w", "a number or a list of numbers"),
        ("objective.init={w: []}", "objective.init.w", "at least one number"),
        ("objective.init={w: [[0, 1]]}", "objective.init.w", "a number or a list of numbers"),
        ("objective.init={lr: 1}", "objective.init", "'lr' clashes with the metrics columns"),
        ("objective.init={w: 1e39}", "objective.init.w", "float32"),
    ],
)
def test_start_values_are_checked(tmp_path, init, key, problem):
    cfg = compose_config("objective=python", "objective.function=user_objectives.shifted_bowl", init)
    with pytest.raises(ConfigError) as error:
        train_config(cfg, tmp_path / "run")
    assert error.value.key == key
    assert problem in error.value.problem
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("missing", ["function", "init"])
def test_function_and_init_must_be_set(missing):
    overrides = {"function": "objective.function=user_objectives.shifted_bowl", "init": "objective.init={w: 1}"}
    del overrides[missing]
    with pytest.raises(MissingMandatoryValue) as error:
        to_experiment(compose_config("objective=python", *overrides.values()))
    assert f"objective.{missing}" in str(error.value)
