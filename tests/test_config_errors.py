"""User mistakes are caught before training, naming the key and what is allowed."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf.errors import ValidationError

from conftest import compose_config
from tapelab.config import to_experiment
from tapelab.errors import ConfigError, one_line
from tapelab.runs import train_config


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["lr=0"], "lr"),
        (["lr=-0.1"], "lr"),
        (["lr=nan"], "lr"),
        (["lr=inf"], "lr"),
        (["epochs=0"], "epochs"),
        (["log.every=0"], "log.every"),
        (["log.every=100000000000000000000"], "log.every"),
        (["epochs=100000000000000000000"], "epochs"),
        (["lr=1e39"], "lr"),  # beyond float32
        (["lr=1e-50"], "lr"),  # 0 in float32
        (["seed=-1"], "seed"),
        (["optimizer=adam", "optimizer.epsilon=nan"], "optimizer.epsilon"),
        (["objective=linear_regression", "objective.true_w=nan"], "objective.true_w"),
        (["objective=rosenbrock", "objective.b=inf"], "objective.b"),
        (["objective=booth", "objective.init=[1e39,0]"], "objective.init"),
    ],
)
def test_out_of_range_top_level_values_name_their_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        to_experiment(compose_config(*overrides))
    assert error.value.key == key


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["objective=neuron", "objective.trainable=[z]"], "objective.trainable", "['w', 'x']"),
        (["objective=neuron", "objective.trainable=[]"], "objective.trainable", "['w', 'x']"),
        (["objective=rosenbrock", "objective.init=[1,2,3]"], "objective.init", "exactly 2 values"),
        (["objective=booth", "objective.init=[nan,1]"], "objective.init", "finite"),
        (["objective=sum_of_squares", "objective.init=[]"], "objective.init", "at least one"),
        (["objective=linear_regression", "objective.x=[]"], "objective.x", "at least one point"),
        (["objective=linear_regression", "objective.n_points=0"], "objective.n_points", ">= 1"),
        (
            ["objective=linear_regression", "objective.n_points=5", "objective.x_range=[2,1]"],
            "objective.x_range",
            "low < high",
        ),
        (["objective.init=nan"], "objective.init", "finite"),
        (["objective=rosenbrock", "objective.a=1e20"], "objective.a", "float32"),  # its minimum (a, a²) overflows
        (["objective=linear_regression", "objective.huber_delta=0"], "objective.huber_delta", "> 0"),
        (["objective=sum_of_squares", "objective.init=[[1],[1,2]]"], "objective.init", "a flat list of numbers"),
        (["objective=linear_regression", "objective.x=[[1],[2,3]]"], "objective.x", "a flat list of numbers"),
        (["objective=linear_regression", "objective.n_points=1000000000000"], "objective.n_points", "<= 10,000,000"),
        (["optimizer.momentum=2"], "optimizer.momentum", "between 0 and 1"),  # Keras's own range check
        (["optimizer=lion", "optimizer.beta_1=5"], "optimizer.beta_1", "(0, 1]"),
        (["optimizer.clipnorm=1", "optimizer.global_clipnorm=1"], "optimizer.global_clipnorm", "only one of"),
    ],
)
def test_bad_objective_values_fail_before_anything_is_written(tmp_path, overrides, key, allowed):
    with pytest.raises(ConfigError) as error:
        train_config(compose_config(*overrides), tmp_path / "run")
    assert error.value.key == key
    assert allowed in error.value.problem
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["objective=nope"], "Could not find 'objective/nope'"),
        (["optimizer=nope"], "Could not find 'optimizer/nope'"),
        (["lr=fast"], "full_key: lr"),
        (["epochs=1.5"], "full_key: epochs"),
        (["objective=linear_regression", "objective.loss=l1"], "mse, mae, huber"),
        (["optimizer.momentun=0.9"], "momentun"),
        (["nope=1"], "nope"),
        (["objective=booth", "objective.init=[a,b]"], "full_key: objective.init"),
    ],
)
def test_unknown_names_and_wrong_types_fail_at_composition(overrides, expected):
    with pytest.raises((ConfigCompositionException, HydraException, ValidationError)) as error:
        compose_config(*overrides)
    assert expected in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["optimizer=nope"], "optimizer: no option 'nope'; choose from adadelta, adagrad, adam, adamax, adamw,"),
        (["hydra/launcher=nope"], "hydra/launcher: no option 'nope'; choose from basic, batched, joblib,"),
        (["objective.nope=1"], "objective.nope: not a key of the config; objective has starts, domain, a, b, c, init"),
        (
            ["optimizer.momentun=0.9"],
            "optimizer.momentun: not a key of the config (did you mean momentum?); optimizer has weight_decay,",
        ),
        (["epochs=1.5"], "epochs: '1.5' is not an integer"),
        (["lr=null"], "lr: cannot be null"),
        (["objective=booth", "objective.init=[a,b]"], "objective.init[0]: 'a' is not a float"),
        (["objective=linear_regression", "objective.loss=l1"], "objective.loss: 'l1' is not one of mse, mae, huber"),
        (["+lr=1"], "lr: already in the config; set it with lr=1 (or ++lr=1)"),
        (["~nope"], "nope: not a key of the config, nothing to delete"),
        (["lr"], "lr: cannot read 'lr': missing EQUAL at '<EOF>' (the syntax: https://hydra.cc/"),
    ],
)
def test_composition_errors_read_as_one_line_that_names_the_key(overrides, line):
    with pytest.raises((HydraException, ValidationError)) as error:
        compose_config(*overrides)
    assert one_line(error.value).startswith(line)
    assert "\n" not in one_line(error.value)


TOP_LEVEL_KEYS = "objective, optimizer, lr, epochs, seed, jit_compile, dtype, resume, stop, log, study"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["ep0chs=10"],  # no advice to add it with +ep0chs=10, which would train 1000 steps
            f"ep0chs: not a key of the config (did you mean epochs?); the top level has {TOP_LEVEL_KEYS}",
        ),
        (
            ["optimizer=adam", "optimizer.beta1=0.8"],
            "optimizer.beta1: not a key of the config (did you mean beta_1 or beta_2?); optimizer has weight_decay, "
            "clipnorm, clipvalue, global_clipnorm, beta_1, beta_2, epsilon, amsgrad",
        ),
        (  # Hydra's own message quotes the example for a shell, with backslashes
            ["lr=0.1,0.2"],
            "lr: 0.1,0.2 is several values; sweep over them with -m, or write lr=[0.1,0.2] for a list or "
            "\"lr='0.1,0.2'\" for a string",
        ),
        (["seed=range(1,3)"], "seed: range(1,3) is a sweep; run it with -m"),
        (  # Hydra 1.3 links to the docs of 1.2
            ["lr=["],
            "lr: cannot read 'lr=[': no viable alternative at input '[' (the syntax: "
            "https://hydra.cc/docs/1.3/advanced/override_grammar/basic)",
        ),
    ],
)
def test_composition_errors_name_the_nearest_keys_and_read_as_the_command_line_needs(overrides, line):
    with pytest.raises(HydraException) as error:
        compose_config(*overrides)
    assert one_line(error.value) == line


def test_a_finished_run_directory_is_never_written_over(train):
    first = train("epochs=3")
    before = {path.name: path.read_bytes() for path in first.dir.iterdir() if path.is_file()}
    with pytest.raises(ConfigError) as error:
        train_config(compose_config("epochs=5"), first.dir)
    assert error.value.key == "hydra.run.dir"
    assert {path.name: path.read_bytes() for path in first.dir.iterdir() if path.is_file()} == before


def test_a_tiny_quadratic_curvature_is_valid_and_has_no_representable_minimum(train):
    result = train("objective.a=1e-40", "epochs=2")  # −b / 2a overflows float32: no known minimum
    assert result.summary["status"] == "completed"
    assert "distance_to_min" not in result.summary
