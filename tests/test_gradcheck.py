"""scripts/gradcheck.py: the tape's gradient of every objective agrees with finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

import tapelab.gradcheck
from conftest import CONF_DIR, compose_config
from tapelab.gradcheck import check_config, check_gradient, main
from tapelab.objectives import Problem

OBJECTIVES = sorted(path.stem for path in (CONF_DIR / "objective").glob("*.yaml"))
MEASURED_RTOL = 1e-4  # the worst default start measured ~3e-6 (linear_regression, float32 differences)


# Objectives whose config has required keys get them here (`python` needs a function to check).
REQUIRED = {
    "python": ["objective.function=user_objectives.neuron_and_vector", "objective.init={a: 0.5, v: [1.0, -3.0]}"]
}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_at_its_default_start(name):
    cfg = compose_config(f"objective={name}", *REQUIRED.get(name, []))
    assert not OmegaConf.missing_keys(cfg.objective), "give the objective's required keys in REQUIRED"
    objective, result = check_config(cfg)
    assert objective == name
    assert result.passed, result.report()
    assert result.max_rel_error < MEASURED_RTOL, result.report()


def test_a_loss_with_its_own_float32_constant_is_checked_in_float32_and_the_others_in_float64():
    # shifted_bowl makes tf.constant((1.0, -2.0)), a float32 tensor, so its loss can't be built on float64 tensors.
    bowl = compose_config("objective=python", "objective.function=user_objectives.shifted_bowl",
                          "objective.init={w: [0.5, 1.5]}")  # fmt: skip
    assert check_config(bowl)[1].precision == "float32"
    assert check_config(compose_config("objective=expression"))[1].precision == "float64"
    assert check_config(compose_config("objective=booth"))[1].precision == "float64"


def wrong_gradient_problem(factor: float) -> Problem:
    """Σ w²·(1 + w) with a custom gradient that is `factor` times the true one."""

    def loss(params, constants):
        import tensorflow as tf

        @tf.custom_gradient
        def cubic(w):
            def gradient(upstream):
                return upstream * factor * (2 * w + 3 * w**2)

            return tf.reduce_sum(w**2 + w**3), gradient

        return cubic(params["w"])

    return Problem({"w": np.array([0.5, -2.0, 3.0], np.float32)}, loss, structure=f"wrong gradient × {factor}")


def test_a_wrong_gradient_is_flagged():
    assert check_gradient(wrong_gradient_problem(1.0)).passed
    result = check_gradient(wrong_gradient_problem(1.01))  # off by 1%
    assert not result.passed and not result.table["ok"].any()
    np.testing.assert_allclose(result.table["rel_error"], 0.01 / 1.01, rtol=1e-3)
    assert "MISMATCH" in result.report()


def test_a_stationary_point_is_judged_by_atol():
    result = check_config(compose_config("objective=rosenbrock", "objective.init=[1,1]"))[1]
    assert result.passed and result.table["tape"].eq(0.0).all()


def test_main_exit_status(capsys, monkeypatch):
    assert main(["objective=booth"]) == 0
    assert "OK (rtol 0.001, atol 1e-05)" in capsys.readouterr().out
    assert main(["objective=booth", "objective.init=[1]"]) == 2
    assert "Error in config: objective.init: needs exactly 2 values, got 1" in capsys.readouterr().err
    assert main(["objective=nope"]) == 2
    monkeypatch.setattr(tapelab.gradcheck, "tape_gradient", lambda problem: np.array([-34.0, -38.5], np.float32))
    assert main(["objective=booth"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["lr=fast"], "Error in config: lr: 'fast' is not a float"),
        (["objective=nope"], "Error in config: objective: no option 'nope'; choose from ackley, beale, booth, branin"),
        (["objective=expression", "objective.expr=sin(w)*w**2"], "Error in config: objective.expr: cannot read"),
    ],
)
def test_config_mistakes_are_one_line_as_run_py_gives_them(capsys, overrides, line):
    assert main(overrides) == 2
    (printed,) = capsys.readouterr().err.splitlines()
    assert printed.startswith(line)
