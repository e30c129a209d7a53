"""Every command line in README.md does what the README shows.

A command is a line of a plain fenced code block, or an inline code span anywhere else (tables, prose), that
starts one of this repository's programs: `python run.py`, `tapelab` or `python scripts/<name>.py`, also
behind a path (`.venv/bin/python`), environment assignments (`PYTHONPATH=.`) or `$ `. A line that ends in
`\\` continues on the next; `$ ` marks a command whose output follows it; a comment may state its result.

- REAL_RUNS, and the commands the README shows refused (Mistakes), run as a user runs them: subprocesses,
  each in a fresh working directory that holds the files the README asks the reader to write. Their console
  lines (the refused ones': their one line and exit code 2) and results are checked against the README's.
- Every other command is split as a shell splits it and composed with Hydra's compose API as its program
  composes it (a sweep job by job), then checked by tapelab's own checks that run before TensorFlow. A start
  gradient the README states is checked by a one-step run in-process. scripts/gradcheck.py and
  scripts/sensitivity.py run in-process; scripts/bench.py (minutes) only has its arguments parsed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from conftest import ROOT
from tapelab.callbacks import RunChecks
from tapelab.cli import CONFIG_MODULE, quiet_flag_as_override
from tapelab.config import check_added_keys
from tapelab.errors import ConfigError, PastHydra, one_line
from tapelab.rundir import CHECKPOINTS, METRICS, SAVED_OVERRIDES, SUMMARY

README = ROOT / "README.md"
PROGRAM = re.compile(r"(?:[A-Z_]+=\S* )*(?:\S*/)?(?:python3? (?:run\.py|scripts/\w+\.py)|tapelab)(?=\s|$)")
MAX_SWEPT_VALUES = 8  # a key swept over more values: its first and last are composed, the ends of its range

# ---------------------------------------------------------------------------------------------------------------
# The README's commands


@dataclass
class Command:
    """A command line of the README and what the README shows with it."""

    line: str  # as a shell reads it: without `$ ` and the comment, continuation lines joined
    where: list[int]  # README line numbers
    comments: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # the lines shown after `$ <line>`
    rows: list[str] = field(default_factory=list)  # the table rows it stands in

    @property
    def id(self) -> str:
        return self.line if len(self.line) <= 70 else self.line[:67] + "..."


def without_comment(line: str) -> tuple[str, str]:
    """`line` and its comment, split as a shell splits them: at a `#` that starts a word outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def readme_commands(text: str) -> list[Command]:
    """The command lines of a README, each once, in order of first appearance."""
    found: dict[str, Command] = {}

    def add(line: str, number: int, comment: str = "", output: list[str] | None = None, row: str = "") -> None:
        command = found.setdefault(line, Command(line, []))
        command.where.append(number)
        command.comments += [comment] if comment else []
        command.output += output or []
        command.rows += [row] if row else []

    lines = text.splitlines()
    fence = None  # the open code block's language, "" for a plain block
    number = 0
    while number < len(lines):
        line, start = lines[number], number + 1
        if line.lstrip().startswith("```"):
            fence = line.strip()[3:] if fence is None else None
        elif fence == "":
            while line.endswith("\\") and number + 1 < len(lines):
                number += 1
                line = line[:-1].rstrip() + " " + lines[number].strip()
            shown = line.startswith("$ ")
            code, comment = without_comment(line.removeprefix("$ "))
            output = []  # a shown command's output: the block's lines up to the next `$ `
            while shown and number + 1 < len(lines) and not re.match(r"\$ |```", lines[number + 1].lstrip()):
                number += 1
                output.append(lines[number])
            for part in re.split(r"\s+&&\s+", code):  # `python3 -m venv .venv && ... && .venv/bin/python run.py`
                if PROGRAM.match(part):
                    add(part, start, comment, output)
        elif fence is None:
            for span in re.findall(r"`([^`\n]+)`", line):
                if PROGRAM.match(span):
                    add(span, start, row=line if line.startswith("|") else "")
        number += 1
    return list(found.values())


@dataclass(frozen=True)
class Invocation:
    """A command line split as a shell splits it."""

    env: dict[str, str]  # the assignments before the program
    executable: str  # as typed: python, .venv/bin/python, tapelab
    script: str | None  # run.py, scripts/gradcheck.py; None for tapelab
    arguments: list[str]

    @property
    def program(self) -> str:
        """`run` for run.py and tapelab, else the script's name (`gradcheck`)."""
        return "run" if self.script in (None, "run.py") else Path(self.script).stem

    def argv(self) -> list[str]:
        """The command as this environment runs it: its Python, its tapelab, the checkout's files."""
        if self.script is None:
            return [str(Path(sys.executable).parent / "tapelab"), *self.arguments]
        return [sys.executable, str(ROOT / self.script), *self.arguments]


def invocation(line: str) -> Invocation:
    words = shlex.split(line)  # a quote left open fails here, as in a shell
    env = {}
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    executable = words.pop(0)
    script = None if Path(executable).name == "tapelab" else words.pop(0)
    return Invocation(env, executable, script, words)


# The Layout section quotes the modules' docstrings (usage lines such as `python scripts/gradcheck.py [KEY=VALUE ...]`
# among them), not commands to run.
COMMANDS = readme_commands(README.read_text().partition("\n## Layout\n")[0])


def readme_says(pattern: str) -> str:
    """The first group of `pattern` in the README (its minus signs as ASCII), which must be there."""
    found = re.search(pattern, README.read_text().replace("\u2212", "-"))
    assert found, f"the README no longer says /{pattern}/: update this test with what it now says"
    return found.group(1)


def working_directory(path: Path) -> Path:
    """A user's working directory, with the files the README has them write: the code blocks whose first line is
    `# <path>` (my_configs/objective/my_quad.yaml, my_losses.py)."""
    files = re.findall(r"^```\w*\n# (\S+\.(?:py|yaml))\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.M)
    for name, content in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    return path


def start_gradient(command: Command) -> list[float] | None:
    """The gradient at the start that the README states for a command: `# grad_w = 7` in its comment, or the
    seeds table's first number or tuple of a one-step command ("the gradient 108 of x⁴ at 3", "(2, −6) for …")."""
    for comment in command.comments:
        found = re.search(r"grad_\w+ = (-?\d+(?:\.\d+)?)", comment.replace("\u2212", "-"))
        if found:
            return [float(found.group(1))]
    for row in command.rows:
        if re.match(r"\|\s*\d{3}\s*\|", row) and "epochs=1" in command.line.split():
            found = re.search(r"\(([-\d., ]+)\)|(-?\d+(?:\.\d+)?)", row.split("|")[2].replace("\u2212", "-"))
            assert found, f"this row of the seeds table states no gradient: {row}"
            return [float(value) for value in (found.group(1) or found.group(2)).split(",")]
    return None


def check_start_gradient(run_dir: Path, gradient: list[float]) -> None:
    metrics = pd.read_csv(run_dir / METRICS)
    columns = [column for column in metrics.columns if column.startswith("grad_") and column != "grad_norm"]
    assert metrics[columns].iloc[0].tolist() == gradient


# ---------------------------------------------------------------------------------------------------------------
# Composed in-process


def composed(config_name: str, overrides: list[str]) -> DictConfig:
    """The config a program composes from `overrides`, with its `hydra` node."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def sweep_jobs(cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """Jobs of a sweep that between them give each swept key each of its values, as Hydra's override parser
    expands a grid, or as the Optuna sweeper parses its search space (the ends of an interval)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    if "optuna" not in cfg.hydra.sweeper._target_:
        values = {}
        for override in parsed:
            key = override.get_key_element()
            swept = list(override.sweep_string_iterator()) if override.is_sweep_override() else []
            choices = swept if len(swept) <= MAX_SWEPT_VALUES else [swept[0], swept[-1]]
            values[key] = choices or [override.get_value_element_as_str()]
        return diagonal(values)
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution

    task = [override.input_line for override in parsed if not override.is_hydra_override()]
    space, _ = create_params_from_overrides([*(f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()), *task])
    values = {
        key: dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for key, dist in space.items()
    }
    fixed = {override.get_key_element(): [override.get_value_element_as_str()] for override in parsed}
    return diagonal({**fixed, **values})


def diagonal(values: dict[str, list]) -> list[list[str]]:
    """Jobs that between them give each key each of its values: job i takes each key's i-th value (cycling)."""
    count = max(len(choices) for choices in values.values())
    return [[f"{key}={choices[i % len(choices)]}" for key, choices in values.items()] for i in range(count)]


def check_job(overrides: list[str]) -> None:
    """Make the checks the command line makes before it writes anything (`RunChecks`) on a run's config."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        RunChecks().on_run_start(compose(config_name="config", overrides=overrides, return_hydra_config=True))


def check_sweep_config(overrides: list[str], extras_here: bool) -> None:
    """Make the checks the command line makes before a sweep writes anything, on the sweep's own config (but
    for the extras it needs, unless they are to be installed `here`)."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        if extras_here:
            RunChecks().on_multirun_start(cfg)
        else:
            check_added_keys(cfg)


def command_line_answer(arguments: list[str], extras_here: bool = True) -> str | None:
    """The line `python run.py <arguments>` ends with for a mistake in its config, else None.

    Its flags are read by Hydra's own argument parser; `--help` and `--cfg` compose the same config. A command
    that runs in an environment of its own (`.venv-ray/bin/python`) is not checked for extras installed here."""
    args = get_args_parser().parse_args(quiet_flag_as_override(arguments))
    assert not (args.config_path or args.config_name or args.info), "a flag this test doesn't compose with"
    overrides = list(args.overrides)
    if args.config_dir:
        assert Path(args.config_dir).is_dir(), f"--config-dir {args.config_dir}: not a directory"
        overrides.append(f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
        cfg = composed("config", fixed if args.multirun else overrides)
        if args.multirun or cfg.hydra.mode == RunMode.MULTIRUN:
            check_sweep_config(fixed, extras_here)
            for job in sweep_jobs(cfg, overrides):
                check_job(job)
        else:
            check_job(overrides)
    except (ConfigError, CompactHydraException, OmegaConfBaseException) as mistake:
        return f"Error in config: {one_line(mistake)}"
    except PastHydra as carried:  # how tapelab's callbacks refuse a config
        return f"Error in config: {one_line(carried.error)}"
    return None


def check_run_command(command: Command, arguments: list[str], tmp_path: Path) -> None:
    answer = command_line_answer(arguments, extras_here=not command.line.startswith(".venv-ray/"))
    assert answer is None, answer
    gradient = start_gradient(command)
    if gradient is not None:
        import tapelab

        run = tapelab.run(*arguments, "log.plots=false", "log.tensorboard=false", run_dir=tmp_path / "run")
        check_start_gradient(run.dir, gradient)


def check_gradcheck_command(command: Command, arguments: list[str], tmp_path: Path) -> None:
    from tapelab.gradcheck import main

    assert main(arguments) == 0


def check_sensitivity_command(command: Command, arguments: list[str], tmp_path: Path) -> None:
    from tapelab.sensitivity import sensitivity

    written = sensitivity(composed("sensitivity", arguments), tmp_path)
    for comment in command.comments:  # "tanh over [-10, 10], 129 points"
        found = re.search(r"over \[(-?\d+), (-?\d+)\], (\d+) points", comment)
        if found:
            column = pd.read_csv(written).iloc[:, 0]
            assert [column.iloc[0], column.iloc[-1], len(column)] == [float(value) for value in found.groups()]
    if "objective=rosenbrock" in arguments and "at=[1,1]" in arguments:
        expected = json.loads(readme_says(r"Rosenbrock's at \(1, 1\)\s+is (\[\[.*?\]\])"))
        assert json.loads(written.read_text())["hessian"] == expected


def script(name: str) -> ModuleType:
    """scripts/<name>.py, imported."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check_bench_command(command: Command, arguments: list[str], tmp_path: Path) -> None:
    logger = logging.getLogger("tensorflow")
    level, log_level = logger.level, os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    try:
        script("bench").parse_args(arguments)  # it runs for minutes: its arguments only
    finally:  # importing bench.py sets both
        logger.setLevel(level)
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        if log_level is not None:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = log_level


PROGRAMS = {
    "run": check_run_command,
    "gradcheck": check_gradcheck_command,
    "sensitivity": check_sensitivity_command,
    "bench": check_bench_command,
}

# Commands that can't be checked, and why.
SKIPPED = {
    "python run.py objective=quartic": "the objective that 'Adding an objective' adds; it exists once a reader adds it",
}

# ---------------------------------------------------------------------------------------------------------------
# Run for real


@dataclass(frozen=True)
class Finished:
    """A command that ran as a subprocess."""

    cwd: Path
    process: subprocess.CompletedProcess

    def run_dir(self) -> Path:
        """The directory of the single run it made."""
        (summary,) = (self.cwd / "outputs").rglob(SUMMARY)
        return summary.parent


class RealRuns:
    """README commands as subprocesses, each once, in a fresh working directory of its own. They start in the
    background, two at a time, so that they overlap the in-process tests."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.started: dict[tuple[str, ...], Future[Finished]] = {}
        for line in lines:
            self.start(line)

    def start(self, line: str) -> Future[Finished]:
        call = invocation(line)
        argv = tuple(call.argv())
        if argv not in self.started:
            cwd = working_directory(self.tmp_path_factory.mktemp("user"))
            env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "HYDRA_FULL_ERROR")}
            self.started[argv] = self.pool.submit(self.run, argv, cwd, {**env, **call.env})
        return self.started[argv]

    @staticmethod
    def run(argv: tuple[str, ...], cwd: Path, env: dict[str, str]) -> Finished:
        return Finished(cwd, subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300))

    def __call__(self, line: str) -> Finished:
        return self.start(line).result()


VARYING = re.compile(
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]"  # a log line's time
    r"|\b\d+\.\d+ s\b"  # a duration
    r"|outputs/(?:multirun/)?\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d(?:_\d+)?"  # a dated directory
)


def steady(line: str) -> str:
    """A console line with its times, durations and dated directories as `…`: what two runs share."""
    return VARYING.sub("…", line)


def check_quick_start(finished: Finished, command: Command) -> None:
    summary = json.loads((finished.run_dir() / SUMMARY).read_text())
    assert summary["status"] == "completed"
    assert summary["params"] == {"x": float(readme_says(r"which ends at x = ([\d.]+)"))}


def check_sweep(finished: Finished, command: Command) -> None:
    (sweep_dir,) = (finished.cwd / "outputs" / "multirun").glob("*/*")
    shown = [re.search(r": (\w+) after \d+ steps", line) for line in command.output]
    assert pd.read_csv(sweep_dir / "sweep.csv")["status"].tolist() == [found[1] for found in shown if found]


def check_my_quad(finished: Finished, command: Command) -> None:
    summary = json.loads((finished.run_dir() / SUMMARY).read_text())
    assert summary["status"] == "completed"
    assert summary["objective_params"]["expr"] == "(x - 3)**2"  # the README's file, found through --config-dir
    assert summary["params"]["x"] == pytest.approx(3.0, abs=0.01)  # the minimum of (x − 3)²


def check_bowl(finished: Finished, command: Command) -> None:
    summary = json.loads((finished.run_dir() / SUMMARY).read_text())
    assert summary["status"] == "completed"
    assert summary["params"]["w"] == pytest.approx([2.0, 2.0], abs=0.01)  # the minimum of Σ(w − 2)² + b²
    assert summary["params"]["b"] == pytest.approx(0.0, abs=0.01)


def check_booth_hessian(finished: Finished, command: Command) -> None:
    (result,) = (finished.cwd / "outputs").rglob("sensitivity.json")
    assert json.loads(result.read_text())["hessian"] == json.loads(readme_says(r"booth's Hessian is (\[\[.*?\]\])"))


SWEEP_EXAMPLE = "python run.py -m objective=rosenbrock lr=0.01,0.1 optimizer=sgd,adam epochs=200"
# The commands that run for real, and the check of each one's result beyond the lines the README shows.
REAL_RUNS: dict[str, Callable[[Finished, Command], None]] = {
    ".venv/bin/python run.py": check_quick_start,
    "python run.py": check_quick_start,  # the console's example and seed 002: the same run
    SWEEP_EXAMPLE: check_sweep,
    "tapelab --config-dir my_configs objective=my_quad optimizer=adam lr=0.1": check_my_quad,
    "PYTHONPATH=. python run.py objective=python objective.function=my_losses.bowl "
    "'objective.init={w: [1.0, -3.0], b: 0.5}' optimizer=adam lr=0.1 epochs=300": check_bowl,
    "python scripts/sensitivity.py objective=booth": check_booth_hessian,
}


def refused(command: Command) -> bool:
    """Whether the README shows the command refused with tapelab's one line (see Mistakes)."""
    return bool(command.output) and command.output[0].startswith("Error in config: ")


def runs_for_real(command: Command) -> bool:
    return command.line in REAL_RUNS or refused(command)


def real_runs_needed(command: Command) -> list[str]:
    """The commands that run for real to check `command`."""
    if "scripts/sweep_report.py" in command.line:
        return [SWEEP_EXAMPLE]  # it rebuilds the report of the README's sweep example
    return [command.line] if runs_for_real(command) else []


# ---------------------------------------------------------------------------------------------------------------
# The tests


@pytest.fixture(scope="module", autouse=True)
def real_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRuns]:
    """The real runs of the selected tests, started at once."""
    selected = [
        getattr(item, "callspec", None)
        for item in request.session.items
        if getattr(item, "module", None) is sys.modules[__name__]
    ]
    lines = [line for spec in selected if spec for line in real_runs_needed(spec.params["command"])]
    runs = RealRuns(tmp_path_factory, lines)
    yield runs
    runs.pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of the composed commands: the README's files, and the run its resume examples
    continue (outputs/2026-11-27/10-31-07) as an interrupt leaves it: summary.json at step 500 of 1000, a
    checkpoint, the saved overrides."""
    path = working_directory(tmp_path_factory.mktemp("composed"))
    run_dir = path / "outputs" / "2026-11-27" / "10-31-07"
    (run_dir / CHECKPOINTS).mkdir(parents=True)
    (run_dir / SAVED_OVERRIDES).parent.mkdir()
    (run_dir / SAVED_OVERRIDES).write_text("[]\n")
    (run_dir / SUMMARY).write_text(json.dumps({"status": "interrupted", "steps": 500, "epochs": 1000}))
    return path


@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna, imported for its search space
def test_composed(
    command: Command, user_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_runs: RealRuns
) -> None:
    assert not command.output, "the README shows this command's output: run it for real (REAL_RUNS)"
    if command.line in SKIPPED:
        pytest.skip(SKIPPED[command.line])
    if "scripts/sweep_report.py" in command.line:
        (sweep_dir,) = (real_runs(SWEEP_EXAMPLE).cwd / "outputs" / "multirun").glob("*/*")
        written = pd.read_csv(sweep_dir / "sweep.csv")
        call = invocation(command.line.replace("<sweep dir>", shlex.quote(str(sweep_dir))))
        assert script("sweep_report").main(call.arguments) == 0
        pd.testing.assert_frame_equal(pd.read_csv(sweep_dir / "sweep.csv"), written)
        return
    monkeypatch.chdir(user_dir)
    call = invocation(command.line)
    if "PYTHONPATH" in call.env:
        monkeypatch.syspath_prepend(str(Path(call.env["PYTHONPATH"]).resolve()))
    assert call.program in PROGRAMS, f"scripts/{call.program}.py: a README command this test doesn't check yet"
    PROGRAMS[call.program](command, call.arguments, tmp_path)


def test_run_for_real(command: Command, real_runs: RealRuns) -> None:
    finished = real_runs(command.line)
    process = finished.process
    if refused(command):  # its one line on stderr (`...` ends a line the README shortens), and exit code 2
        (shown,) = command.output
        assert (process.returncode, process.stdout) == (2, "")
        (line,) = process.stderr.splitlines()
        expected = shown.removesuffix("...")
        assert (line[: len(expected)] if expected != shown else line) == expected
        return
    assert process.returncode == 0, process.stderr
    if command.output:  # the console lines the README shows, but for times and dated directories
        assert process.stderr == ""
        assert [steady(line) for line in process.stdout.splitlines()] == [steady(line) for line in command.output]
    REAL_RUNS[command.line](finished, command)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per README command: test_run_for_real for REAL_RUNS and the commands shown refused,
    test_composed for the others (e2e where they need a real run)."""
    if "command" in metafunc.fixturenames:
        real = metafunc.function.__name__ == "test_run_for_real"
        params = [
            pytest.param(command, id=command.id, marks=[pytest.mark.e2e] * bool(real_runs_needed(command)))
            for command in COMMANDS
            if runs_for_real(command) == real
        ]
        metafunc.parametrize("command", params)


def test_every_real_run_and_skip_is_a_readme_command() -> None:
    assert set(REAL_RUNS) | set(SKIPPED) <= {command.line for command in COMMANDS}


def test_commands_come_from_plain_code_blocks_tables_and_continued_lines() -> None:
    text = (
        "```\npython run.py 'objective.expr=\"a # b\"' \\\n    epochs=1   # grad_a = 1\n"
        "python3 -m venv .venv && .venv/bin/python run.py\n$ python run.py lr=-1\nError in config: lr: …\n```\n"
        "| 000 | x | `tapelab epochs=2` |\n"
        "```python\npython run.py not_a_command=1\n```\n"
    )
    commands = readme_commands(text)
    assert [command.line for command in commands] == [
        "python run.py 'objective.expr=\"a # b\"' epochs=1",
        ".venv/bin/python run.py",
        "python run.py lr=-1",
        "tapelab epochs=2",
    ]
    assert commands[0].comments == ["grad_a = 1"]
    assert commands[2].output == ["Error in config: lr: …"]
    assert commands[3].rows == ["| 000 | x | `tapelab epochs=2` |"]
