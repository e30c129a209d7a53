"""End to end: `python run.py` and `tapelab` as real subprocesses, as a user types them."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

OBJECTIVES = [
    "ackley",
    "beale",
    "booth",
    "branin",
    "easom",
    "expression",
    "goldstein_price",
    "himmelblau",
    "linear_regression",
    "matyas",
    "mccormick",
    "neuron",
    "polynomial",
    "python",
    "quadratic",
    "rastrigin",
    "rosenbrock",
    "six_hump_camel",
    "styblinski_tang",
    "sum_of_squares",
    "tanh",
    "three_hump_camel",
]
OPTIMIZERS = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "ftrl",
    "gd",
    "lamb",
    "lion",
    "nadam",
    "newton",
    "rmsprop",
    "sgd",
]


def run_cli(*args: str, cwd: Path = ROOT, command: list[str] | None = None) -> subprocess.CompletedProcess:
    command = command or [sys.executable, str(ROOT / "run.py")]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_bare_run_writes_a_dated_run_directory_that_reproduces_seed_002(tmp_path):
    finished = run_cli(cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    (summary_path,) = (tmp_path / "outputs").glob("*/*/summary.json")
    run_name = summary_path.parent.relative_to(tmp_path / "outputs").as_posix()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", run_name)
    summary = json.loads(summary_path.read_text())
    assert summary["params"] == {"x": 0.99999857}
    assert summary["status"] == "completed"
    metrics = pd.read_csv(summary_path.parent / "metrics.csv")
    assert metrics["step"].tolist() == list(range(1001))
    assert "x=0.99999857" in (summary_path.parent / "tapelab.log").read_text()
    # The console: no TensorFlow start-up lines, and one line when the run ends.
    assert finished.stderr == ""
    (line,) = finished.stdout.splitlines()
    assert re.fullmatch(
        r"\[[\d-]+ [\d:,]+\]\[tapelab\]\[INFO\] - completed after 1000 steps in \d+\.\d\d s: "
        + re.escape(f"final loss {summary['final_loss']}, x=0.99999857 (outputs/{run_name})"),
        line,
    )


def test_console_script_runs_the_same_experiment_as_run_py(tmp_path):
    overrides = ["objective=sum_of_squares", "optimizer=rmsprop", "lr=0.05", "epochs=40"]
    by_script = run_cli(
        *overrides, f"hydra.run.dir={tmp_path / 'script'}", command=[str(Path(sys.executable).parent / "tapelab")]
    )
    by_file = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'file'}")
    assert by_script.returncode == 0 and by_file.returncode == 0, by_script.stderr + by_file.stderr
    script_rows = pd.read_csv(tmp_path / "script" / "metrics.csv")
    assert script_rows.equals(pd.read_csv(tmp_path / "file" / "metrics.csv"))
    assert len(script_rows) == 41


def test_help_lists_every_objective_optimizer_and_key_without_importing_tensorflow():
    finished = run_cli("--help", command=[sys.executable, "-X", "importtime", str(ROOT / "run.py")])
    assert finished.returncode == 0
    groups = dict(re.findall(r"^(hparams_search|objective|optimizer): (.*)$", finished.stdout, flags=re.MULTILINE))
    assert groups == {"hparams_search": "grid, optuna", "objective": ", ".join(OBJECTIVES),
                      "optimizer": ", ".join(OPTIMIZERS)}  # fmt: skip
    assert "not installed" not in finished.stdout  # the test environment has every extra but ray
    for key in ("lr", "epochs", "seed", "log.every"):
        assert key in finished.stdout
    assert "Usage: python run.py [KEY=VALUE ...]\n" in finished.stdout
    assert "\n  python run.py objective=rosenbrock optimizer=adam lr=0.01 epochs=5000\n" in finished.stdout
    config, hint = finished.stdout.index("\nobjective:\n  starts: 1\n"), finished.stdout.index("(see the config above)")
    assert config < hint
    assert not {"tensorflow", "keras"} & imported_modules(finished.stderr)


def imported_modules(stderr: str) -> set[str]:
    """The modules `python -X importtime` reports as imported."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if "|" in line}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["optimizer.momentum=2"], "optimizer.momentum: must be a float between 0 and 1, got 2.0"),  # Keras's range
        (["optimizer=lion", "optimizer.beta_1=0"], "optimizer.beta_1: must be in (0, 1]"),
        (["objective=himmelblau", "objective.starts=3", "optimizer=lamb"], "objective.starts: needs an elementwise"),
        (["objective=quadratic", "objective.starts=3"], "objective.domain: objective.starts > 1 needs a search box"),
        (
            ["objective=sum_of_squares", "objective.init=[" + ",".join(["1.0"] * 101) + "]", "optimizer=newton"],
            "optimizer.max_params: the objective has 101 trainable elements",
        ),  # fmt: skip
        (["jit_compile=maybe"], "jit_compile: must be auto, true or false, got 'maybe'"),
    ],
)
def test_config_mistakes_are_refused_before_tensorflow_is_imported(tmp_path, args, expected):
    command = [sys.executable, "-X", "importtime", str(ROOT / "run.py")]
    finished = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}", command=command)
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert f"Error in config: {expected}" in finished.stderr
    assert not {"tensorflow", "keras"} & imported_modules(finished.stderr)
    assert list(tmp_path.iterdir()) == []  # not even the run directory


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["lr=-1"], "lr: must be a finite number > 0 (in float32, so 1e-45 to 3.4e38), got -1.0"),
        (["lr=nan"], "lr: must be a finite number > 0 (in float32, so 1e-45 to 3.4e38), got nan"),
        (["lr=fast"], "lr: 'fast' is not a float"),
        (["epochs=0"], "epochs: must be an integer from 1 to 2**62, got 0"),
        (["objective=nope"], "objective: no option 'nope'; choose from ackley, beale, booth,"),
        (["optimizer=nope"], "optimizer: no option 'nope'; choose from adadelta, adagrad, adam,"),
        (["objective=neuron", "objective.trainable=[z]"], "objective.trainable: must list distinct names from"),
        (["objective=booth", "objective.init=[1]"], "objective.init: needs exactly 2 values, got 1"),
        (["objective=linear_regression", "objective.loss=l1"], "mse, mae, huber"),
        (["+epoch=10"], "epoch: not a key of the config (did you mean epochs?); the top level has objective,"),
    ],
)
def test_user_mistakes_get_a_short_message_and_no_traceback(tmp_path, args, expected):
    finished = run_cli(*args, cwd=tmp_path)  # into outputs/<date>/<time>/
    assert finished.returncode == 2, finished.stderr
    assert expected in finished.stderr
    assert "Traceback" not in finished.stderr + finished.stdout
    assert list(tmp_path.iterdir()) == []  # not even outputs/


@pytest.mark.parametrize(("mode", "key"), [([], "hydra.run.dir"), (["-m"], "hydra.sweep.dir")])
def test_a_directory_that_cannot_be_created_is_refused_before_anything_is_written(tmp_path, mode, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    finished = run_cli(*mode, "epochs=1", f"{key}={blocker / 'run'}")
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        f"Error in config: {key}: can't create {blocker / 'run'}: Not a directory"
    ]
    assert blocker.read_text() == "not a directory\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["objective=nope"], "objective: no option 'nope'; choose from " + ", ".join(OBJECTIVES)),
        (["nope=1"], "nope: not a key of the config; the top level has objective, optimizer, lr, epochs,"),
        (["lr=fast"], "lr: 'fast' is not a float"),
        (["log.plots=maybe"], "log.plots: 'maybe' is not a bool (true or false)"),
        (["lr=["], "lr: cannot read 'lr=[': no viable alternative at input '['"),
        (["-m", "nope=1,2"], "nope: not a key of the config;"),  # a sweep stops before its first job
    ],
)
def test_mistakes_hydra_finds_while_composing_are_one_line_and_exit_2(tmp_path, args, line):
    finished = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert finished.returncode == 2, finished.stderr
    assert [text for text in finished.stderr.splitlines() if text.strip()] == [finished.stderr.strip()]
    assert finished.stderr.startswith(f"Error in config: {line}")
    assert "Traceback" not in finished.stderr + finished.stdout and "HYDRA_FULL_ERROR" not in finished.stderr
    assert not list(tmp_path.rglob("metrics.csv"))  # (the basic sweeper saves multirun.yaml before composing a job)


def test_a_sweep_that_cannot_run_is_refused_before_anything_is_written(tmp_path):
    cases = [
        (["+epoch=1,2"], "epoch: not a key of the config (did you mean epochs?); the top level has objective,"),
        (["+objective.nope=1", "lr=0.1,0.2"], "objective.nope: not a key of the config; objective has starts,"),
    ]
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:  # the ray extra has an environment apart
        cases.append((["hydra/launcher=ray", "lr=0.1,0.2"], "hydra/launcher: ray needs the ray extra "
                      "(hydra-ray-launcher), which is not installed here: python3 -m venv .venv-ray && "
                      '.venv-ray/bin/pip install -e ".[ray]"'))  # fmt: skip
    for args, line in cases:
        finished = run_cli("-m", *args, "epochs=2", cwd=tmp_path)
        assert finished.returncode == 2, finished.stderr
        assert finished.stderr.startswith(f"Error in config: {line}") and finished.stderr.count("\n") == 1
        assert finished.stdout == ""  # no "sweep of 2 jobs" line
        assert list(tmp_path.iterdir()) == []


def python_without(root: Path, plugins: tuple[str, ...]) -> Path:
    """The Python of a new virtual environment that has every package of this one but the Hydra `plugins`
    (packages of hydra_plugins): where their extras are not installed. Its site-packages links to this one's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = root / ours.relative_to(sys.prefix)
    for entry in ours.iterdir():
        if entry.name == "hydra_plugins":
            (theirs / entry.name).mkdir()
            for plugin in entry.iterdir():
                if plugin.name not in plugins:
                    (theirs / entry.name / plugin.name).symlink_to(plugin)
        elif not entry.name.startswith(plugins):  # the plugin's .dist-info too
            (theirs / entry.name).symlink_to(entry)
    return root / "bin" / "python"


def test_launchers_and_sweepers_whose_extra_is_not_installed_name_the_extra_and_its_install_command(tmp_path):
    python = python_without(
        tmp_path / "venv", ("hydra_joblib_launcher", "hydra_submitit_launcher", "hydra_optuna_sweeper")
    )
    work = tmp_path / "work"
    work.mkdir()
    needs = 'needs the {0} extra ({1}), which is not installed here: pip install -e ".[{0}]"'.format
    cases = [
        (["hparams_search=optuna"], "hydra/sweeper: optuna " + needs("optuna", "hydra-optuna-sweeper")),
        (["-m", "hydra/launcher=joblib", "lr=0.1,0.2"],
         "hydra/launcher: joblib " + needs("parallel", "hydra-joblib-launcher")),
        (["-m", "hydra/launcher=submitit_local", "lr=0.1,0.2"],
         "hydra/launcher: submitit_local " + needs("slurm", "hydra-submitit-launcher")),
        (["-m", "hydra/launcher=submitit_slurm", "lr=0.1,0.2"],
         "hydra/launcher: submitit_slurm " + needs("slurm", "hydra-submitit-launcher")),
    ]  # fmt: skip
    for args, line in cases:
        finished = run_cli(*args, cwd=work, command=[str(python), str(ROOT / "run.py")])
        assert finished.returncode == 2, finished.stderr
        assert finished.stderr == f"Error in config: {line}\n"
        assert list(work.iterdir()) == []
    # --help, from the console script: its own name, and the option that can't run here with its extra.
    helped = run_cli("--help", command=[str(python), str(Path(sys.executable).parent / "tapelab")])
    assert helped.returncode == 0, helped.stderr
    assert "Usage: tapelab [KEY=VALUE ...]\n       tapelab -m [-q] KEY=V1,V2 ...\n" in helped.stdout
    assert "\n  tapelab objective=rosenbrock optimizer=adam lr=0.01 epochs=5000\n" in helped.stdout
    assert (
        f"optimizer: {', '.join(OPTIMIZERS)}\nhparams_search=optuna needs the optuna extra (hydra-optuna-sweeper), "
        'which is not installed here: pip install -e ".[optuna]"\n'
    ) in helped.stdout


def test_hydra_full_error_set_by_the_user_still_gives_hydras_traceback():
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    command = [sys.executable, str(ROOT / "run.py"), "nope=1"]
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 1
    assert "Traceback" in finished.stderr and "ConfigCompositionException" in finished.stderr


def test_rerun_into_a_finished_directory_is_refused_and_leaves_it_untouched(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("epochs=5", f"hydra.run.dir={run_dir}").returncode == 0
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    finished = run_cli("epochs=9", f"hydra.run.dir={run_dir}")
    assert finished.returncode == 2
    assert "hydra.run.dir" in finished.stderr and "Traceback" not in finished.stderr
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
