"""scripts/sensitivity.py: f, f′ and f″ by nested tapes, against closed forms (seeds 001 and 003)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, ROOT
from tapelab.config import to_experiment
from tapelab.errors import ConfigError
from tapelab.sensitivity import at_point, curve, sensitivity


def sensitivity_config(*overrides: str):
    """The config `python scripts/sensitivity.py <overrides>` would use, composed in-process."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="sensitivity", overrides=list(overrides))


def problem(*overrides: str):
    """The objective of `python run.py <overrides>`, built."""
    from conftest import compose_config

    experiment = to_experiment(compose_config(*overrides))
    return experiment.objective.build(experiment.seed)


def test_tanh_derivatives_match_the_closed_forms_at_every_point():
    frame = curve(problem("objective=tanh"), -10.0, 10.0, 129)
    assert list(frame.columns) == ["w", "f", "df", "d2f"] and len(frame) == 129
    w = frame["w"].to_numpy(np.float64)
    assert w[0] == -10.0 and w[-1] == 10.0 and w[64] == 0.0
    t = np.tanh(w)
    # float32: TensorFlow's tanh is exactly ±1 beyond |w| ≈ 7.9, where 1 − tanh² < 5e-7; hence the atol.
    np.testing.assert_allclose(frame["f"], t, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(frame["df"], 1 - t**2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(frame["d2f"], -2 * t * (1 - t**2), rtol=1e-5, atol=1e-6)
    # The same identities hold within float32 rounding for the computed tanh itself, at every point.
    f = frame["f"].to_numpy(np.float32)
    np.testing.assert_allclose(frame["df"], 1 - f * f, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(frame["d2f"], -2 * f * (1 - f * f), rtol=1e-6, atol=1e-7)


def test_seed_001_cube_at_3_has_slope_27_and_curvature_18():
    frame = curve(problem("objective=polynomial", "objective.coeffs=[0,0,0,1]"), -4.0, 4.0, 9)
    row = frame.set_index("x").loc[3.0]
    assert (row["f"], row["df"], row["d2f"]) == (27.0, 27.0, 18.0)
    x = frame["x"].to_numpy()
    np.testing.assert_allclose(frame["df"], 3 * x**2)
    np.testing.assert_allclose(frame["d2f"], 6 * x)


def test_a_loss_that_is_not_elementwise_is_evaluated_point_by_point():
    from tapelab.objectives import Problem

    def summed(params, constants):  # the value of a whole grid is one number: reduce_sum over its points
        import tensorflow as tf

        return tf.reduce_sum(params["x"] ** 3)

    frame = curve(Problem({"x": np.float32(0.0)}, summed, structure="summed cubes"), -2.0, 2.0, 5)
    np.testing.assert_allclose(frame["f"], frame["x"] ** 3)
    np.testing.assert_allclose(frame["d2f"], 6 * frame["x"])


def test_sum_of_squares_has_gradient_2w_and_hessian_2i():
    result = at_point(problem("objective=sum_of_squares", "objective.init=[1.0,-3.0,0.5]"))
    assert result["elements"] == ["w[0]", "w[1]", "w[2]"]
    assert result["f"] == 10.25 and result["gradient"] == [2.0, -6.0, 1.0]
    np.testing.assert_array_equal(result["hessian"], 2 * np.eye(3))
    elsewhere = at_point(problem("objective=sum_of_squares"), at=[4.0, 0.25])
    assert elsewhere["point"] == [4.0, 0.25] and elsewhere["gradient"] == [8.0, 0.5]


def test_booth_hessian_is_constant():
    for at in (None, [1.0, 3.0], [-5.0, 7.5]):
        result = at_point(problem("objective=booth"), at)
        assert result["hessian"] == [[10.0, 8.0], [8.0, 10.0]]
    assert at_point(problem("objective=booth"), [1.0, 3.0])["gradient"] == [0.0, 0.0]


def test_several_parameters_write_json_and_print_it(tmp_path, capsys):
    path = sensitivity(sensitivity_config("objective=rosenbrock", "at=[1.0,1.0]"), tmp_path)
    result = json.loads(path.read_text())
    assert path.name == "sensitivity.json" and result["objective"] == "rosenbrock"
    assert result["f"] == 0.0 and result["gradient"] == [0.0, 0.0]
    assert result["hessian"] == [[802.0, -400.0], [-400.0, 200.0]]
    assert "802.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["range=[1,1]"], "range: needs [low, high] with low < high"),
        (["range=[0,1,2]"], "range: needs exactly 2 values, got 3"),
        (["points=1"], "points: must be an integer from 2 to"),
        (["at=[1.0]"], "at: is for objectives with several parameter elements; tanh has the single parameter w"),
        (["objective=booth", "at=[1.0]"], "at: needs exactly 2 values, got 1"),
        (["seed=-1"], "seed: must be an integer >= 0"),
    ],
)
def test_mistakes_name_the_key(tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as refused:
        sensitivity(sensitivity_config(*overrides), tmp_path)
    assert expected in str(refused.value)


@pytest.mark.e2e
def test_script_writes_the_tanh_curve_into_the_run_dir(tmp_path):
    out = tmp_path / "sens"
    finished = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sensitivity.py"), "points=33", f"hydra.run.dir={out}"],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    frame = pd.read_csv(out / "sensitivity.csv")
    assert list(frame.columns) == ["w", "f", "df", "d2f"] and len(frame) == 33
    assert (out / "sensitivity.png").stat().st_size > 10_000
