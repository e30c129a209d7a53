"""End to end: `python run.py` and `tapelab` as real subprocesses, as a user types them."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
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


RMSPROP = ["objective=sum_of_squares", "optimizer=rmsprop", "lr=0.05", "epochs=40"]


@pytest.fixture(scope="module")
def rmsprop_run(tmp_path_factory) -> Path:
    """`python run.py <RMSPROP>`'s run directory."""
    run_dir = tmp_path_factory.mktemp("run_py") / "run"
    finished = run_cli(*RMSPROP, f"hydra.run.dir={run_dir}")
    assert finished.returncode == 0, finished.stderr
    return run_dir


def test_console_script_runs_the_same_experiment_as_run_py(tmp_path, rmsprop_run):
    by_script = run_cli(
        *RMSPROP, f"hydra.run.dir={tmp_path / 'script'}", command=[str(Path(sys.executable).parent / "tapelab")]
    )
    assert by_script.returncode == 0, by_script.stderr
    script_rows = pd.read_csv(tmp_path / "script" / "metrics.csv")
    pd.testing.assert_frame_equal(script_rows, pd.read_csv(rmsprop_run / "metrics.csv"), check_exact=True)
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
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


# `python run.py <arguments>` for each case of argv[1] (JSON: [name, working directory, arguments]), one after
# another in one process, each as run.py calls tapelab.cli.main with its stdout and stderr caught at the file
# descriptors. A command line that is refused stops before any work, so one process checks many of them.
# Written to argv[2], by name: the exit code, stdout, stderr, and the TensorFlow and Keras modules imported by
# then (by this case or one before it).
COMMAND_LINES = """
import json, os, sys, tempfile, traceback
from hydra.core.global_hydra import GlobalHydra
from tapelab.cli import main

cases, report_file, report = json.loads(sys.argv[1]), sys.argv[2], {}
for name, cwd, arguments in cases:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
        os.chdir(cwd)
        sys.argv = ["run.py", *arguments]
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = 0 if stop.code is None else stop.code
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            GlobalHydra.instance().clear()
        out.seek(0), err.seek(0)
        imported = [module for module in sys.modules if module.split(".")[0] in ("tensorflow", "keras")]
        report[name] = {"returncode": code, "stdout": out.read().decode(), "stderr": err.read().decode(),
                        "imported": sorted(imported)}
with open(report_file, "w") as file:
    json.dump(report, file)
"""


@dataclass
class Finished:
    """How a command line ended: its exit code, stdout, stderr, and whether it imported TensorFlow or Keras."""

    returncode: int
    stdout: str
    stderr: str
    imported_tensorflow: bool

    @classmethod
    def of(cls, finished: subprocess.CompletedProcess) -> Finished:
        """A real `python -X importtime run.py` process: the modules it imported are on its stderr."""
        lines = finished.stderr.splitlines(keepends=True)
        stderr = "".join(line for line in lines if not line.startswith("import time:"))
        imported = {"tensorflow", "keras"} & imported_modules(finished.stderr)
        return cls(finished.returncode, finished.stdout, stderr, bool(imported))


def command_lines(python: str, cases: list[tuple[str, Path, list[str]]], report: Path) -> dict[str, Finished]:
    """Each case (name, working directory, arguments) of `python run.py <arguments>`, run by COMMAND_LINES in one
    process of `python`, by name."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    cases_json = json.dumps([(name, str(cwd), arguments) for name, cwd, arguments in cases])
    finished = subprocess.run([python, "-c", COMMAND_LINES, cases_json, str(report)], env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    return {
        name: Finished(case["returncode"], case["stdout"], case["stderr"], bool(case["imported"]))
        for name, case in json.loads(report.read_text()).items()
    }


def one_real_process(*args: str, cwd: Path) -> Finished:
    """`python -X importtime run.py <args>`: the real process for one case of each kind of mistake below."""
    return Finished.of(run_cli(*args, cwd=cwd, command=[sys.executable, "-X", "importtime", str(ROOT / "run.py")]))


CONFIG_MISTAKES = [
    (["optimizer.momentum=2"], "optimizer.momentum: must be a float between 0 and 1, got 2.0"),  # Keras's range
    (["optimizer=lion", "optimizer.beta_1=0"], "optimizer.beta_1: must be in (0, 1]"),
    (["objective=himmelblau", "objective.starts=3", "optimizer=newton"], "objective.starts: needs an elementwise"),
    (["objective=quadratic", "objective.starts=3"], "objective.domain: objective.starts > 1 needs a search box"),
    (
        ["objective=sum_of_squares", "objective.init=[" + ",".join(["1.0"] * 101) + "]", "optimizer=newton"],
        "optimizer.max_params: the objective has 101 trainable elements",
    ),  # fmt: skip
    (["jit_compile=maybe"], "jit_compile: must be auto, true or false, got 'maybe'"),
    (["dtype=float16"], "dtype: must be float32 or float64, got 'float16'"),
]
USER_MISTAKES = [
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
]
HYDRA_MISTAKES = [
    (["objective=nope"], "objective: no option 'nope'; choose from " + ", ".join(OBJECTIVES)),
    (["nope=1"], "nope: not a key of the config; the top level has objective, optimizer, lr, epochs,"),
    (["lr=fast"], "lr: 'fast' is not a float"),
    (["log.plots=maybe"], "log.plots: 'maybe' is not a bool (true or false)"),
    (["lr=["], "lr: cannot read 'lr=[': no viable alternative at input '['"),
    (["-m", "nope=1,2"], "nope: not a key of the config;"),  # a sweep stops before its first job
]
UNCREATABLE = [([], "hydra.run.dir"), (["-m"], "hydra.sweep.dir")]
SWEEPS_THAT_CANNOT_RUN = [
    (["+epoch=1,2"], "epoch: not a key of the config (did you mean epochs?); the top level has objective,"),
    (["+objective.nope=1", "lr=0.1,0.2"], "objective.nope: not a key of the config; objective has starts,"),
]
if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:  # the ray extra has an environment apart
    SWEEPS_THAT_CANNOT_RUN.append((["hydra/launcher=ray", "lr=0.1,0.2"], "hydra/launcher: ray needs the ray extra "
                                   "(hydra-ray-launcher), which is not installed here: python3 -m venv .venv-ray && "
                                   '.venv-ray/bin/pip install -e ".[ray]"'))  # fmt: skip
# The command line's whole line for the mistakes that test_api.py has tapelab.run raise as ConfigError.
ONE_LINE_MISTAKES = {
    "lr=-1": "lr: must be a finite number > 0 (in float32, so 1e-45 to 3.4e38), got -1.0",
    "objective=nope": "objective: no option 'nope'; choose from " + ", ".join(OBJECTIVES),
    "lr=fast": "lr: 'fast' is not a float",
    "nokey=1": "nokey: not a key of the config; the top level has objective, optimizer, lr, epochs, seed, "
    "jit_compile, dtype, resume, stop, log, study",
    "optimizer.momentum=2": "optimizer.momentum: must be a float between 0 and 1, got 2.0",
}


@dataclass
class Refusals:
    """The refused command lines of this module's cases, each run in a working directory of its own."""

    root: Path
    answers: dict[str, Finished]

    def __getitem__(self, name: str) -> tuple[Finished, Path]:
        """A case's answer and its working directory."""
        return self.answers[name], self.root / name


def case_name(kind: str, number: int) -> str:
    return f"{kind}{number}"


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> Refusals:
    """Every refused command line of this module, run in one process by COMMAND_LINES."""
    root = tmp_path_factory.mktemp("refusals")
    cases = []

    def case(name: str, *arguments: str) -> None:
        (root / name).mkdir()
        cases.append((name, root / name, list(arguments)))

    for number, (args, _) in enumerate(CONFIG_MISTAKES):
        case(case_name("config", number), *args, f"hydra.run.dir={root / case_name('config', number) / 'run'}")
    for number, (args, _) in enumerate(USER_MISTAKES):
        case(case_name("user", number), *args)  # into outputs/<date>/<time>/ of its working directory
    for number, (args, _) in enumerate(HYDRA_MISTAKES):
        directory = root / case_name("hydra", number)
        case(case_name("hydra", number), *args, f"hydra.run.dir={directory / 'run'}",
             f"hydra.sweep.dir={directory / 'sweep'}")  # fmt: skip
    for number, (mode, key) in enumerate(UNCREATABLE):
        blocker = root / case_name("uncreatable", number) / "a_file"
        blocker.parent.mkdir()
        blocker.write_text("not a directory\n")
        cases.append((case_name("uncreatable", number), ROOT, [*mode, "epochs=1", f"{key}={blocker / 'run'}"]))
    for number, (args, _) in enumerate(SWEEPS_THAT_CANNOT_RUN):
        case(case_name("sweep", number), "-m", *args, "epochs=2")
    for number, override in enumerate(ONE_LINE_MISTAKES):
        case(case_name("line", number), override, f"hydra.run.dir={root / case_name('line', number) / 'run'}")
    return Refusals(root, command_lines(sys.executable, cases, tmp_path_factory.mktemp("report") / "report.json"))


def assert_refused_before_tensorflow(finished: Finished, cwd: Path, expected: str) -> None:
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert f"Error in config: {expected}" in finished.stderr
    assert not finished.imported_tensorflow
    assert list(cwd.iterdir()) == []  # not even the run directory


@pytest.mark.parametrize(("number", "expected"), [(number, line) for number, (_, line) in enumerate(CONFIG_MISTAKES)])
def test_config_mistakes_are_refused_before_tensorflow_is_imported(refusals, number, expected):
    assert_refused_before_tensorflow(*refusals[case_name("config", number)], expected)


def test_a_config_mistake_is_refused_before_tensorflow_is_imported_in_a_process_of_its_own(tmp_path):
    args, expected = CONFIG_MISTAKES[0]
    assert_refused_before_tensorflow(one_real_process(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=ROOT),
                                     tmp_path, expected)  # fmt: skip


def assert_short_message(finished: Finished, cwd: Path, expected: str) -> None:
    assert finished.returncode == 2, finished.stderr
    assert expected in finished.stderr
    assert "Traceback" not in finished.stderr + finished.stdout
    assert list(cwd.iterdir()) == []  # not even outputs/


@pytest.mark.parametrize(("number", "expected"), [(number, line) for number, (_, line) in enumerate(USER_MISTAKES)])
def test_user_mistakes_get_a_short_message_and_no_traceback(refusals, number, expected):
    assert_short_message(*refusals[case_name("user", number)], expected)


def test_a_user_mistake_gets_a_short_message_in_a_process_of_its_own(tmp_path):
    args, expected = USER_MISTAKES[0]
    assert_short_message(one_real_process(*args, cwd=tmp_path), tmp_path, expected)


def assert_uncreatable_refused(finished: Finished, blocker: Path, key: str) -> None:
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        f"Error in config: {key}: can't create {blocker / 'run'}: Not a directory"
    ]
    assert blocker.read_text() == "not a directory\n"


@pytest.mark.parametrize("number", range(len(UNCREATABLE)))
def test_a_directory_that_cannot_be_created_is_refused_before_anything_is_written(refusals, number):
    finished, directory = refusals[case_name("uncreatable", number)]
    assert_uncreatable_refused(finished, directory / "a_file", UNCREATABLE[number][1])


def test_a_directory_that_cannot_be_created_is_refused_in_a_process_of_its_own(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    mode, key = UNCREATABLE[0]
    assert_uncreatable_refused(one_real_process(*mode, "epochs=1", f"{key}={blocker / 'run'}", cwd=ROOT), blocker, key)


def assert_one_line_from_composing(finished: Finished, cwd: Path, line: str) -> None:
    assert finished.returncode == 2, finished.stderr
    assert [text for text in finished.stderr.splitlines() if text.strip()] == [finished.stderr.strip()]
    assert finished.stderr.startswith(f"Error in config: {line}")
    assert "Traceback" not in finished.stderr + finished.stdout and "HYDRA_FULL_ERROR" not in finished.stderr
    assert not list(cwd.rglob("metrics.csv"))  # (the basic sweeper saves multirun.yaml before composing a job)


@pytest.mark.parametrize(("number", "line"), [(number, line) for number, (_, line) in enumerate(HYDRA_MISTAKES)])
def test_mistakes_hydra_finds_while_composing_are_one_line_and_exit_2(refusals, number, line):
    assert_one_line_from_composing(*refusals[case_name("hydra", number)], line)


def test_a_mistake_hydra_finds_while_composing_is_one_line_in_a_process_of_its_own(tmp_path):
    args, line = HYDRA_MISTAKES[0]
    finished = one_real_process(*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                                cwd=ROOT)  # fmt: skip
    assert_one_line_from_composing(finished, tmp_path, line)


def assert_sweep_refused(finished: Finished, cwd: Path, line: str) -> None:
    assert finished.returncode == 2, finished.stderr
    assert finished.stderr.startswith(f"Error in config: {line}") and finished.stderr.count("\n") == 1
    assert finished.stdout == ""  # no "sweep of 2 jobs" line
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(("number", "line"), [(n, line) for n, (_, line) in enumerate(SWEEPS_THAT_CANNOT_RUN)])
def test_a_sweep_that_cannot_run_is_refused_before_anything_is_written(refusals, number, line):
    assert_sweep_refused(*refusals[case_name("sweep", number)], line)


def test_a_sweep_that_cannot_run_is_refused_in_a_process_of_its_own(tmp_path):
    args, line = SWEEPS_THAT_CANNOT_RUN[0]
    assert_sweep_refused(one_real_process("-m", *args, "epochs=2", cwd=tmp_path), tmp_path, line)


@pytest.mark.parametrize(("number", "override"), list(enumerate(ONE_LINE_MISTAKES)))
def test_the_command_line_says_a_mistake_in_one_whole_line(refusals, number, override):
    finished, cwd = refusals[case_name("line", number)]
    assert (finished.returncode, finished.stderr, finished.stdout) == (
        2, f"Error in config: {ONE_LINE_MISTAKES[override]}\n", ""
    )  # fmt: skip
    assert list(cwd.iterdir()) == []


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
    # The first in a process of its own, and each in one process that runs them all, in a directory of its own.
    finished = run_cli(*cases[0][0], cwd=work, command=[str(python), str(ROOT / "run.py")])
    assert (finished.returncode, finished.stderr) == (2, f"Error in config: {cases[0][1]}\n")
    assert list(work.iterdir()) == []
    for number in range(len(cases)):
        (work / str(number)).mkdir()
    answers = command_lines(
        str(python), [(str(number), work / str(number), args) for number, (args, _) in enumerate(cases)],
        tmp_path / "report.json",
    )  # fmt: skip
    for number, (_, line) in enumerate(cases):
        assert (answers[str(number)].returncode, answers[str(number)].stderr) == (2, f"Error in config: {line}\n")
        assert list((work / str(number)).iterdir()) == []
    # --help, from the console script: its own name, and the option that can't run here with its extra.
    helped = run_cli("--help", command=[str(python), str(Path(sys.executable).parent / "tapelab")])
    assert helped.returncode == 0, helped.stderr
    assert "Usage: tapelab [KEY=VALUE ...]\n       tapelab -m [-q] KEY=V1,V2 ...\n" in helped.stdout
    assert "\n  tapelab objective=rosenbrock optimizer=adam lr=0.01 epochs=5000\n" in helped.stdout
    assert (
        f"optimizer: {', '.join(OPTIMIZERS)}\nstudy: classic, quick\n"
        "hparams_search=optuna needs the optuna extra (hydra-optuna-sweeper), "
        'which is not installed here: pip install -e ".[optuna]"\n'
    ) in helped.stdout


def test_hydra_full_error_set_by_the_user_still_gives_hydras_traceback():
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    command = [sys.executable, str(ROOT / "run.py"), "nope=1"]
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 1
    assert "Traceback" in finished.stderr and "ConfigCompositionException" in finished.stderr


def test_rerun_into_a_finished_directory_is_refused_and_leaves_it_untouched(tmp_path, rmsprop_run):
    run_dir = shutil.copytree(rmsprop_run, tmp_path / "run")
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    finished = run_cli("epochs=9", f"hydra.run.dir={run_dir}")
    assert finished.returncode == 2
    assert "hydra.run.dir" in finished.stderr and "Traceback" not in finished.stderr
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
