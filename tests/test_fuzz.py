"""Fuzzed configurations: every one either runs or is refused cleanly, never a traceback or a hang.

"Cleanly" is what the CLI turns into a short message: Hydra's own composition errors (unknown names, wrong
types, unparsable overrides), and `ConfigError` or an OmegaConf error once the config is composed.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import CompactHydraException
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from conftest import CONF_DIR, ROOT, compose_config
from tapelab.errors import ConfigError
from tapelab.runs import train_config

OBJECTIVES = sorted(path.stem for path in (CONF_DIR / "objective").glob("*.yaml"))
OPTIMIZERS = sorted(path.stem for path in (CONF_DIR / "optimizer").glob("*.yaml"))
MAX_EPOCHS = 20  # every example that runs is a tiny run: tracing, not training, is what it costs
SLOW_EXAMPLE_SECONDS = 60  # far beyond a tiny run's few seconds: a sign of a near-hang

# Numbers as Hydra reads them: Python's repr gives nan, inf, -inf and 1e+39, which its grammar accepts.
numbers = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 1.0, 0.5, 1e-45, 1e-50, 3e38, 1e39, 1e308, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
).map(repr)
number_lists = st.lists(numbers, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
wrong_types = st.sampled_from(["abc", "[1,2]", "[[1],[1,2]]", "{a: 1}", "null", "true", "1.5", "''", "???", "${nope}"])
names = st.sampled_from(["w", "x", "y", "z", "b", "lr", "grad_w", "sin", "1"])

# Expressions: token soup over the allowed and some refused constructs, so that some parse and most don't.
tokens = st.sampled_from("w x 2 0 1e39 0.5 + - * / ** // ( ) sin( log( exp( .real [0]".split())
expressions = st.one_of(
    st.lists(tokens, min_size=1, max_size=12).map("".join),
    st.text(alphabet="wx+-*/() .0123456789esinlogabc,[]:_'", max_size=20),
    st.integers(1, 300).map(lambda n: "+".join(["w"] * n)),  # nesting depth: 100 is the limit
)


def quoted(text: str) -> str:
    """`text` as a single-quoted Hydra override value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def set_to(key: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Overrides `key=<value>` with values drawn from `values`."""
    return values.map(lambda value: f"{key}={value}")


start_dicts = st.dictionaries(names, numbers, max_size=3).map(
    lambda init: "{" + ",".join(f"{name}: {value}" for name, value in init.items()) + "}"
)
name_lists = st.lists(names, max_size=3).map(lambda items: f"[{','.join(items)}]")

# Mistakes any configuration can make.
common_mutations = st.one_of(
    set_to("lr", numbers),
    set_to("epochs", st.integers(-3, MAX_EPOCHS).map(str)),
    set_to("seed", st.integers(-2, 2**70).map(str)),
    set_to("log.every", st.integers(-1, 30).map(str)),
    set_to("objective.init", st.one_of(numbers, number_lists, st.just("[[1],[1,2]]"))),
    st.sampled_from(["optimizer.momentum", "optimizer.beta_1", "optimizer.epsilon", "optimizer.max_params"]).flatmap(
        lambda key: set_to(key, numbers)
    ),
    st.tuples(  # unknown names, also appended (+) or deleted (~)
        st.sampled_from(["", "+", "~"]),
        st.sampled_from(["", "objective.", "optimizer.", "log."]),
        st.text(alphabet="abcxyz_019", max_size=5),
    ).map(lambda parts: f"{parts[0]}{parts[1]}nope_{parts[2]}=1"),
    st.tuples(  # wrong types, as a user types them
        st.sampled_from(
            ["lr", "epochs", "seed", "log.every", "log.plots", "objective.init", "objective.a", "objective.x",
             "objective.loss", "objective.trainable", "objective.expr", "optimizer.momentum", "optimizer.nesterov"]
        ),
        wrong_types,
    ).map(lambda parts: "=".join(parts)),
)  # fmt: skip

# Mistakes in the keys of one objective: its start values, its parameters, its data and its formula.
objective_mutations = {
    "expression": st.one_of(
        set_to("objective.expr", expressions.map(quoted)),
        set_to("objective.init", start_dicts),
        set_to("objective.constants", name_lists),
    ),
    "neuron": st.one_of(set_to("objective.trainable", name_lists), set_to("objective.w", numbers)),
    "linear_regression": st.one_of(
        set_to("objective.x", number_lists),
        set_to("objective.n_points", st.sampled_from(["-1", "0", "1", "3", "1000000000000"])),
        set_to("objective.x_range", number_lists),
        set_to("objective.noise", numbers),
        set_to("objective.huber_delta", numbers),
        set_to("objective.loss", st.sampled_from(["mse", "mae", "huber", "l1"])),
    ),
    "styblinski_tang": st.one_of(
        set_to("objective.dim", st.integers(-1, 4).map(str)), set_to("objective.domain", number_lists)
    ),
    "rosenbrock": set_to("objective.a", numbers),
    "polynomial": set_to("objective.coeffs", number_lists),
    "quadratic": set_to("objective.a", numbers),
}


def overrides_for(objective: str) -> st.SearchStrategy[list[str]]:
    """The overrides of a tiny run of `objective` with one to three mutations."""
    own = objective_mutations.get(objective, common_mutations)
    mutations = st.one_of(common_mutations, own, own)  # the objective's own keys twice as often
    return st.tuples(
        st.sampled_from(OPTIMIZERS), st.integers(1, MAX_EPOCHS), st.lists(mutations, min_size=1, max_size=3)
    ).map(
        lambda parts: [
            f"objective={objective}",
            f"optimizer={parts[0]}",
            f"epochs={parts[1]}",
            "log.plots=false",
            "log.tensorboard=false",
            *parts[2],
        ]
    )


# Every objective, and more often those whose keys take the most kinds of mistake.
configurations = st.one_of(st.sampled_from(OBJECTIVES), st.sampled_from(sorted(objective_mutations))).flatmap(
    overrides_for
)


@settings(
    max_examples=60,
    derandomize=True,  # every run draws the same examples, so a failure comes back
    deadline=None,
    database=None,  # a failure prints its overrides; nothing to replay from a local example database
    phases=[Phase.explicit, Phase.generate],  # shrinking re-runs TensorFlow for minutes: report the raw example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(overrides=configurations)
def test_any_configuration_runs_or_is_refused_cleanly(tmp_path_factory, overrides):
    started = time.perf_counter()
    try:
        cfg = compose_config(*overrides)
    except CompactHydraException:  # printed by Hydra as its message alone
        event("refused by Hydra")
        return
    run_dir = tmp_path_factory.mktemp("run") / "run"
    try:
        final_loss = train_config(cfg, run_dir)
    except (ConfigError, OmegaConfBaseException) as error:
        event(f"refused: {getattr(error, 'key', type(error).__name__)}")
        assert not (run_dir / "metrics.csv").exists() and not (run_dir / "summary.json").exists()
    else:
        event("ran")
        assert isinstance(final_loss, float)
        assert (run_dir / "summary.json").exists()
    assert time.perf_counter() - started < SLOW_EXAMPLE_SECONDS, overrides


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> tuple[Path, dict[Path, bytes]]:
    """A finished run under <tmp>/outputs/<date>/<time>/, and the bytes of each of its files."""
    cwd = tmp_path_factory.mktemp("cwd")
    finished = run_cli(cwd, "epochs=3", "log.plots=false")
    assert finished.returncode == 0, finished.stderr
    return cwd, {path: path.read_bytes() for path in (cwd / "outputs").rglob("*") if path.is_file()}


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in `cwd`, as a user types it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, str(ROOT / "run.py"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["objective=expression", "objective.expr='4*w +'"], "objective.expr"),  # a malformed expression
        (["objective=linear_regression", "objective.x=[]"], "objective.x"),  # an empty data set
        (["objective=rosenbrock", "objective.init=[nan,1]"], "objective.init"),  # a non-finite start
    ],
)
def test_a_refused_value_is_one_line_exit_2_and_leaves_an_earlier_run_untouched(earlier_run, args, key):
    cwd, before = earlier_run
    finished = run_cli(cwd, *args)
    assert finished.returncode == 2, finished.stderr
    assert finished.stderr.strip().splitlines() == [finished.stderr.strip()]
    assert finished.stderr.startswith(f"Error in config: {key}: ")
    assert "Traceback" not in finished.stderr + finished.stdout
    assert {path: path.read_bytes() for path in before} == before
    assert len(list((cwd / "outputs").rglob("metrics.csv"))) == 1
