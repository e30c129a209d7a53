"""Time tapelab's training loop and set-up against the seeds' eager loop, bare TensorFlow loops and the
TensorFlow import.

    python scripts/bench.py [--quick] [--repeats N] [--problems quadratic rosenbrock regression]
    python scripts/bench.py --loop-ratio   # only a run alone's loop ÷ a bare XLA loop (see `loop_ratio`)
    python scripts/bench.py --study [--study-classic] [--quick] [--repeats N]   # only the studies (below)

Each problem is timed per update step in five ways:

1. eager: the seeds' Python for-loop with a `tf.GradientTape` and the optimizer's update, run eagerly;
2. tf.function step: the same Python loop, calling one compiled step;
3. runner: `python run.py` at its default settings;
4. runner sparse: `python run.py` at its defaults with sparse logging (`log.every=1000000`, so that
   jit_compile=auto compiles the long runs with XLA);
5. bare XLA: one `tf.function(jit_compile=True)` whose `tf.range` loop does the steps and nothing else.

Variants 1, 2 and 5 build the loss and the update from tapelab's own config, as `run.py` does, so the maths
is the same. A runner's cost per step is (wall time of N steps − wall time of 1 step) / (N − 1), both run as
subprocesses, which cancels the start-up. Extra rows compare the runner's full logging with a bare graph loop
that trains and writes the same TensorBoard scalars.

Set-up, in seconds:
- `run.py epochs=1` against `python -c "import tensorflow"`;
- a 24-job Rosenbrock grid (4 optimizers × 6 learning rates, 1000 steps, pictures and TensorBoard on, the
  basic launcher) against a 1-job sweep: the cost of each job beyond the first, and where it goes (the
  phases every job's summary.json records, averaged over the jobs beyond the first);
- `hydra/launcher=batched` on a 24-job Rosenbrock grid (adam, sgd, rmsprop × 8 learning rates, 1000 steps,
  pictures and TensorBoard on; also under the basic launcher) and on a 256-job learning-rate grid (Adam, 1000
  steps, `log.every=10`, `log.plots=false`), each against a single run of its first job: (sweep − single run)
  / (jobs − 1), the cost of each job beyond a single run;
- jit_compile=auto at 1000 and at 10⁶ steps against XLA and the plain graph forced, by the runner's own time
  (summary.json's wall_time_s, which leaves out Python's and TensorFlow's start): auto passes when it chose
  the faster of the two, or when they are within 15% of each other.

Studies, with `--study` (and `--study-classic`), in seconds:
- `python run.py study=quick` (and `study=classic`) from a cold process, tables and report included (they must
  load with `tapelab.load_study`), against 60 s (and 10 minutes); then its report rebuilt from its tables,
  `tapelab.load_study(dir).report()` from a cold process, against 30 s for `study=classic`;
- a subset, Rosenbrock with Adam and SGD over the default grid (1e-5 to 10, 5 a decade, without Keras's own
  rates) and 13 seeds: 31 × 13 × 2 = 806 runs of 1000 steps in float64, as a study (without its report), and as
  the same runs (its runs.parquet's commands, each with its own `objective.init`) in a `hydra/launcher=batched`
  sweep and, on a sample of 60 of them, a basic-launcher sweep. Each figure is counted beyond a single run's whole
  time (its first run alone, by its command): (study − single run), (batched sweep − single run), and the basic
  launcher's (sample − single run) / 59 per job, × 805. The ratios of the sweeps' figures to the study's are
  checked against at least 20 (batched) and 100 (basic), and the batched sweep's jobs against the study's
  completed runs (final loss and steps, to the bit). The sweeps draw no pictures and write no TensorBoard
  (see `SWEEP_LOGGING`).
`--quick` shrinks the classic study and the subset (7 rates, 2 seeds: 28 runs, 12 of them for the basic
launcher); `--repeats` defaults to 1 here.

Repeats are interleaved (every repeat times every variant once), so noise on the machine falls on all
variants alike. It prints one markdown table, headed with the date and the machine: each measurement's median,
min and max, then the ratios against their targets (from the medians), as README.md's Benchmark section shows.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # before anything imports TensorFlow
logging.getLogger("tensorflow").setLevel(logging.ERROR)  # every measurement traces its own loop: no retracing warnings

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# The runner variants' overrides, on top of the problem's.
RUNNER_DEFAULT: list[str] = []
RUNNER_SPARSE = ["log.every=1000000"]
RUNNER_FULL_LOGGING = ["log.every=1", "log.max_rows=null", "log.plots=false"]

EAGER = "eager"
STEP = "tf.function step"
RUNNER = "runner"
RUNNER_SPARSE_LOGGING = "runner sparse"
BARE_XLA = "bare XLA"
FULL_LOGGING = "runner full logging"
SUMMARY_LOOP = "bare summary loop"

IMPORT = "import tensorflow"
STARTUP = "run.py epochs=1"
ONE_JOB = "1-job sweep"

# The grid: its jobs are the product of the two swept lists; the 1-job sweep is its first job.
GRID_JOB = ["objective=rosenbrock", "epochs=1000"]
GRID = [*GRID_JOB, "optimizer=sgd,adam,rmsprop,adagrad", "lr=0.001,0.003,0.01,0.03,0.1,0.3"]
QUICK_GRID = [*GRID_JOB, "optimizer=sgd,adam,rmsprop,adagrad", "lr=0.01,0.1"]
PHASES = ["trace", "compile", "steps", "pictures", "tensorboard", "csv", "summary", "checkpoint"]

# hydra/launcher=batched: each grid against a single run of its first job; the small grid under the basic launcher too.
BATCHED = ["hydra/launcher=batched"]
BASIC = ["hydra/launcher=basic"]
BATCH_GRIDS = {
    # name: (a job's overrides, its swept values, the same with --quick), for "per job beyond a single run"
    "24-job grid": (
        ["objective=rosenbrock", "epochs=1000"],
        ["optimizer=adam,sgd,rmsprop", "lr=0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3"],
        ["optimizer=adam,sgd,rmsprop", "lr=0.001,0.01"],
    ),
    "256-job grid": (
        ["objective=rosenbrock", "optimizer=adam", "epochs=1000", "log.every=10", "log.plots=false"],
        [f"lr={','.join(f'{lr:.4g}' for lr in np.geomspace(1e-4, 0.3, 256))}"],
        [f"lr={','.join(f'{lr:.4g}' for lr in np.geomspace(1e-4, 0.3, 32))}"],
    ),
}
BATCH_TARGETS = {"24-job grid": 0.2, "256-job grid": 0.05}  # seconds per job beyond a single run's time

# jit_compile=auto against its two choices, by the runner's own time, at both ends of the run lengths.
AUTO_PROBLEM = ["objective=rosenbrock", "optimizer=adam", "lr=0.001", "log.plots=false"]
AUTO_EPOCHS = {"short": (1000, 1000), "long": (1_000_000, 100_000)}  # (full, --quick)
JIT = {"auto": [], "XLA": ["jit_compile=true"], "plain graph": ["jit_compile=false"]}
AUTO_TIE = 1.15  # within this factor of each other the two choices are a tie, and auto passes either way

# Per problem: numerator, denominator, target, whether the ratio must be at least (else at most) it, and
# the problems the target is set for (the compute targets are for Rosenbrock/Adam; elsewhere: for information).
RATIOS = [
    (EAGER, RUNNER_SPARSE_LOGGING, 500, True, {"rosenbrock"}),
    (RUNNER_SPARSE_LOGGING, BARE_XLA, 2, False, {"rosenbrock"}),
    (FULL_LOGGING, SUMMARY_LOOP, 2, False, {"quadratic", "rosenbrock", "regression"}),
]


@dataclass(frozen=True)
class Case:
    """A problem: its run.py overrides and, per variant, the steps to time (full, with --quick)."""

    name: str
    overrides: list[str]
    steps: dict[str, tuple[int, int]]


CASES = [
    Case(
        "quadratic",
        ["objective=quadratic", "optimizer=sgd"],
        {
            EAGER: (300, 10),
            STEP: (3000, 100),
            RUNNER: (50_000, 2000),
            RUNNER_SPARSE_LOGGING: (200_000_000, 20_000),
            BARE_XLA: (200_000_000, 100_000),
            FULL_LOGGING: (50_000, 2000),
            SUMMARY_LOOP: (50_000, 2000),
        },
    ),
    Case(
        "rosenbrock",
        ["objective=rosenbrock", "optimizer=adam"],
        {
            EAGER: (200, 10),
            STEP: (3000, 100),
            RUNNER: (20_000, 2000),
            RUNNER_SPARSE_LOGGING: (200_000_000, 20_000),
            BARE_XLA: (30_000_000, 100_000),
            FULL_LOGGING: (60_000, 2000),
            SUMMARY_LOOP: (10_000, 2000),
        },
    ),
    Case(
        "regression",
        ["objective=linear_regression", "objective.n_points=100000", "optimizer=sgd"],
        {
            EAGER: (200, 10),
            STEP: (2000, 100),
            RUNNER: (20_000, 300),
            RUNNER_SPARSE_LOGGING: (20_000, 300),
            BARE_XLA: (3000, 300),
            FULL_LOGGING: (20_000, 300),
            SUMMARY_LOOP: (2000, 300),
        },
    ),
]


def seconds(action: Callable[[], object]) -> float:
    """Wall time of `action()`."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def python(args: Sequence[str]) -> float:
    """Wall time of `python ARGS` from the repository root; exits with its stderr if it fails."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"`python {' '.join(args)}` failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed


def fresh_dir(workdir: Path) -> Path:
    """A path under `workdir` that does not exist yet, for one run or sweep."""
    return Path(tempfile.mkdtemp(dir=workdir)) / "out"


def run_py(overrides: Sequence[str], workdir: Path) -> float:
    """Wall time of one `python run.py OVERRIDES` into a fresh run directory."""
    return python(["run.py", *overrides, f"hydra.run.dir={fresh_dir(workdir)}"])


def runner_seconds(overrides: Sequence[str], workdir: Path, chose_xla: list[bool] | None = None) -> float:
    """The runner's own time for `python run.py OVERRIDES`: summary.json's wall_time_s (appending its `xla`
    to `chose_xla`)."""
    run_dir = fresh_dir(workdir)
    python(["run.py", *overrides, f"hydra.run.dir={run_dir}"])
    summary = json.loads((run_dir / "summary.json").read_text())
    if chose_xla is not None:
        chose_xla.append(summary["xla"])
    return summary["wall_time_s"]


def runner_per_step(extra: list[str], overrides: list[str], steps: int, workdir: Path) -> float:
    """The runner's cost of one more step: (time of `steps` steps − time of 1 step) / (steps − 1)."""
    long = run_py([*overrides, *extra, f"epochs={steps}"], workdir)
    short = run_py([*overrides, *extra, "epochs=1"], workdir)
    return (long - short) / (steps - 1)


def composed_experiment(overrides: list[str]) -> Any:
    """tapelab's `Experiment` for these overrides, composed as `run.py` composes it."""
    from hydra import compose, initialize_config_dir

    from tapelab.config import register_configs, to_experiment

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_experiment(compose(config_name="config", overrides=overrides))


class Training:
    """One problem's variables, loss and update, built from tapelab's config as `run.py` builds them."""

    def __init__(self, overrides: list[str]) -> None:
        import tensorflow as tf

        experiment = composed_experiment(overrides)
        self.problem = experiment.objective.build(experiment.seed)
        self.variables = [tf.Variable(value, name=name) for name, value in self.problem.start.items()]
        self.update = experiment.optimizer.build()
        self.update.prepare(self.variables, self.loss)
        self.update.load(experiment.lr, experiment.optimizer.hyperparameters())

    def loss(self) -> Any:
        """The loss at the current variables."""
        return self.problem.value(dict(zip(self.problem.start, self.variables, strict=True)))

    def gradients(self) -> tuple[Any, list[Any]]:
        """The loss and its gradients, by a tape."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = self.loss()
        return loss, tape.gradient(loss, self.variables)

    def step(self) -> None:
        """One update, as the seeds write it."""
        _, gradients = self.gradients()
        self.update.apply(gradients, self.variables)

    def sync(self) -> None:
        """Wait for pending work by reading the variables back."""
        for variable in self.variables:
            variable.numpy()


def timed_loop(loop: Callable[[int], object], training: Training, steps: int, warm_up: int = 1) -> float:
    """Seconds per step of `loop(steps)`, after a `loop(warm_up)` call that traces and compiles it."""
    loop(warm_up)
    training.sync()
    return seconds(lambda: (loop(steps), training.sync())) / steps


def eager_per_step(overrides: list[str], steps: int, workdir: Path) -> float:
    """The seeds' eager loop."""
    training = Training(overrides)

    def loop(n: int) -> None:
        for _ in range(n):
            training.step()

    return timed_loop(loop, training, steps)


def step_function_per_step(overrides: list[str], steps: int, workdir: Path) -> float:
    """A Python loop over a compiled step."""
    import tensorflow as tf

    training = Training(overrides)
    step = tf.function(training.step)

    def loop(n: int) -> None:
        for _ in range(n):
            step()

    return timed_loop(loop, training, steps)


def bare_xla_loop(overrides: list[str], steps: int) -> Callable[[], float]:
    """One XLA-compiled `tf.range` loop of steps, with nothing else, compiled and warmed up: a function that
    returns its seconds per step over `steps` more steps."""
    import tensorflow as tf

    training = Training(overrides)

    @tf.function(jit_compile=True)
    def loop(n):
        for _ in tf.range(n):
            training.step()

    # XLA compiles a `tf.range` loop for each value of n, so the warm-up runs the very same number of steps.
    run = lambda n: loop(tf.constant(n, tf.int64))  # noqa: E731
    run(steps)
    training.sync()
    return lambda: seconds(lambda: (run(steps), training.sync())) / steps


def bare_xla_per_step(overrides: list[str], steps: int, workdir: Path) -> float:
    """One XLA-compiled `tf.range` loop of steps, with nothing else."""
    return bare_xla_loop(overrides, steps)()


LOOP_RATIO_OVERRIDES = ["objective=rosenbrock", "optimizer=adam", "log.every=1000000", "jit_compile=true"]
LOOP_RATIO_STEPS = 10_000_000  # per timed call: the calls' own overhead is then negligible
LOOP_RATIO_TARGET = 1.3
LOOP_RATIO_REPEATS = 5
LOOP_RATIO_LABEL = "run alone's loop / bare XLA loop, in one process, compile excluded"


def loop_ratio(repeats: int = 5, steps: int = LOOP_RATIO_STEPS) -> tuple[float, list[float], list[float]]:
    """A run alone's compiled chunk loop against a bare XLA loop of the same Keras update, in this process, on
    Rosenbrock/Adam with sparse logging: (ratio of the median seconds per step, the loop's, the bare loop's).

    Both are compiled (and warmed up) before timing; then each repeat times `steps` steps of each, interleaved.
    The run's loop compiles first, so both loops run under the XLA flags a run sets (`xla_without_fma`).
    """
    from tapelab.engine.pool import POOL

    experiment = composed_experiment(LOOP_RATIO_OVERRIDES)
    problem = experiment.objective.build(experiment.seed)
    loop = POOL.batch_for([problem], [experiment.optimizer], [experiment.lr], experiment.log.every,
                          [experiment.stop], jit_compile=True)  # fmt: skip
    engine, bare = [], []
    with loop as batch:
        batch.trace()
        batch.compile(fallback=False)
        batch.advance(steps)  # warm-up
        bare_per_step = bare_xla_loop(LOOP_RATIO_OVERRIDES, steps)
        for _ in range(repeats):
            engine.append(seconds(lambda: batch.advance(steps)) / steps)
            bare.append(bare_per_step())
    return statistics.median(engine) / statistics.median(bare), engine, bare


def print_loop_ratio(repeats: int) -> None:
    """The loop ratio, with the medians it comes from."""
    ratio, engine, bare = loop_ratio(repeats)
    median = lambda values: 1e6 * statistics.median(values)  # noqa: E731
    print(f"run alone's loop {median(engine):.4f} µs/step, bare XLA loop {median(bare):.4f} µs/step "
          f"(medians of {repeats}, {LOOP_RATIO_STEPS:,} steps each)")  # fmt: skip
    print(f"rosenbrock: {LOOP_RATIO_LABEL}: {ratio:.3f} ({Check('', ratio, LOOP_RATIO_TARGET).verdict()})")


def element_tags(training: Training) -> list[str]:
    """The parameter elements' names, as metrics.csv's columns: `x`, or `x[0]`, `x[1]` for a vector."""
    tags = []
    for name, variable in zip(training.problem.start, training.variables, strict=True):
        size = int(variable.shape.num_elements())
        tags += [name] if variable.shape.rank == 0 else [f"{name}[{i}]" for i in range(size)]
    return tags


def summary_loop_per_step(overrides: list[str], steps: int, workdir: Path) -> float:
    """A graph loop (no XLA) that trains and writes the runner's scalars every step with tf.summary."""
    import tensorflow as tf

    training = Training(overrides)
    tags = element_tags(training)
    writer = tf.summary.create_file_writer(str(fresh_dir(workdir)))

    def flat(tensors: list[Any]) -> Any:
        return tf.concat([tf.reshape(tensor, [-1]) for tensor in tensors], axis=0)

    @tf.function
    def loop(n):
        with writer.as_default():
            for step in tf.range(n):
                loss, gradients = training.gradients()
                params, grads = flat(training.variables), flat(gradients)
                tf.summary.scalar("loss", loss, step=step)
                tf.summary.scalar("grad_norm", tf.linalg.global_norm(gradients), step=step)
                tf.summary.scalar("lr", training.update.learning_rate(), step=step)
                for i, tag in enumerate(tags):
                    tf.summary.scalar(f"params/{tag}", params[i], step=step)
                    tf.summary.scalar(f"grads/{tag}", grads[i], step=step)
                training.update.apply(gradients, training.variables)

    def run(n: int) -> None:
        loop(tf.constant(n, tf.int64))
        writer.flush()

    return timed_loop(run, training, steps)


VARIANTS: dict[str, Callable[[list[str], int, Path], float]] = {
    EAGER: eager_per_step,
    STEP: step_function_per_step,
    RUNNER: partial(runner_per_step, RUNNER_DEFAULT),
    RUNNER_SPARSE_LOGGING: partial(runner_per_step, RUNNER_SPARSE),
    BARE_XLA: bare_xla_per_step,
    FULL_LOGGING: partial(runner_per_step, RUNNER_FULL_LOGGING),
    SUMMARY_LOOP: summary_loop_per_step,
}


@dataclass(frozen=True, eq=False)
class Task:
    """One measurement, repeated: a row of the table."""

    group: str  # a problem, "start-up", "grid" or "jit"
    label: str
    unit: str  # "µs/step" or "s"
    count: int | None  # steps, or a sweep's jobs
    measure: Callable[[], float]  # returns the value in `unit`


def problem_tasks(case: Case, quick: bool, workdir: Path) -> list[Task]:
    """The variants of one problem, in µs per step."""
    tasks = []
    for variant, per_step in VARIANTS.items():
        steps = case.steps[variant][1 if quick else 0]
        measure = partial(per_step, case.overrides, steps, workdir)
        tasks.append(Task(case.name, variant, "µs/step", steps, lambda measure=measure: 1e6 * measure()))
    return tasks


@dataclass
class Grid:
    """Sweeps into fresh directories; keeps, per sweep, the phases its jobs beyond the first recorded."""

    workdir: Path
    phases: list[dict[str, float]] = field(default_factory=list)

    def sweep(self, overrides: Sequence[str]) -> float:
        """Wall time of one `python run.py -m OVERRIDES`."""
        sweep_dir = fresh_dir(self.workdir)
        elapsed = python(["run.py", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"])
        jobs = sorted(sweep_dir.glob("*/summary.json"), key=lambda path: int(path.parent.name.rpartition("_")[2]))
        if len(jobs) > 1:
            later = [json.loads(path.read_text()).get("timings_s", {}) for path in jobs[1:]]
            self.phases.append({phase: statistics.mean(job.get(phase, 0.0) for job in later) for phase in PHASES})
        return elapsed


AUTO_CHOICES: dict[str, list[bool]] = {length: [] for length in AUTO_EPOCHS}  # what auto chose, per repeat


def extra_tasks(quick: bool, workdir: Path, grid: Grid) -> list[Task]:
    """Start-up against importing TensorFlow, a grid against a 1-job sweep, the batched launcher's grids against a
    single run, and jit_compile=auto."""
    swept = QUICK_GRID if quick else GRID
    jobs = len(swept[-2].split(",")) * len(swept[-1].split(","))
    tasks = [
        Task("start-up", IMPORT, "s", None, lambda: python(["-c", "import tensorflow"])),
        Task("start-up", STARTUP, "s", None, lambda: run_py(["epochs=1"], workdir)),
        Task("grid", ONE_JOB, "s", 1, partial(grid.sweep, GRID_JOB)),
        Task("grid", f"{jobs}-job sweep", "s", jobs, partial(grid.sweep, swept)),
    ]
    batch_sweeps = Grid(workdir)  # its phases are not the basic grid's
    for name, (job, values, quick_values) in BATCH_GRIDS.items():
        chosen = quick_values if quick else values
        first = [override.split(",")[0] for override in values]
        tasks.append(Task(name, "single run", "s", 1, partial(run_py, [*job, *first], workdir)))
        for launcher, choice in (("batched launcher", BATCHED), ("basic launcher", BASIC)):
            sweep = partial(batch_sweeps.sweep, [*choice, *job, *chosen])
            tasks.append(Task(name, launcher, "s", jobs_in(chosen), sweep))
    for length, steps in AUTO_EPOCHS.items():
        epochs = steps[1 if quick else 0]
        for choice, overrides in JIT.items():
            command = [*AUTO_PROBLEM, f"epochs={epochs}", *overrides]
            record = AUTO_CHOICES[length] if choice == "auto" else None
            tasks.append(Task(f"jit {length}", choice, "s", epochs, partial(runner_seconds, command, workdir, record)))
    return tasks


def jobs_in(swept: Sequence[str]) -> int:
    """The jobs of a grid of these swept overrides (`key=a,b,c` each)."""
    return int(np.prod([len(override.split(",")) for override in swept]))


# --study: the studies from a cold process (tables included) against their targets; and the side-by-side subset
# (Rosenbrock, Adam and SGD, the default grid without Keras's own rates, 13 seeds: 31 × 13 × 2 = 806 runs of 1000
# steps in float64) as a study, and as the same runs in sweeps.
FEW = ["study.lr.per_decade=1", "study.seeds.tuning=1", "study.seeds.evaluation=1"]  # --quick: 7 rates, 2 seeds
STUDIES = {  # name: (overrides, with --quick)
    "study=quick": (["study=quick"], ["study=quick"]),
    "study=classic": (["study=classic"], ["study=classic", *FEW]),
}
STUDY_TARGETS = {"study=quick": 60.0, "study=classic": 600.0}  # seconds from a cold process, report included
REPORT_TARGETS = {"study=classic": 30.0}  # seconds to rebuild a study's report from its tables, cold process
SUBSET = "study subset"
SUBSET_STUDY = """\
# scripts/bench.py's side-by-side subset: 31 learning rates × 13 seeds × 2 optimizers = 806 runs.
defaults:
  - /schema_study
  - _self_
problems:
  rosenbrock: {objective: rosenbrock, budget: 1000}
optimizers: [adam, sgd]
lr: {low: 1.0e-5, high: 10.0, per_decade: 5, keras_default: false}
seeds: {tuning: 3, evaluation: 10}
"""
SUBSET_RUNS = (806, 28)  # (full, --quick)
# The basic launcher runs a sample, scaled per job: every `stride`-th learning rate, the first `seeds` seeds, both
# optimizers: 6 × 5 × 2 = 60 of the 806 runs (3 × 2 × 2 = 12 of the 28 with --quick).
BASIC_SAMPLE = ({"stride": 6, "seeds": 5, "jobs": 60}, {"stride": 3, "seeds": 2, "jobs": 12})
SUBSET_TARGETS = {"batched launcher": 20.0, "basic launcher": 100.0}  # the sweep's seconds ÷ the study's, at least
SWEPT = ("optimizer", "lr", "seed", "objective.init")  # what differs between the study's commands
# The sweeps' jobs (and the single run) write their history, metrics.csv at every step as the commands say, but
# no pictures and no TensorBoard, which a study doesn't make either: the ratios compare training and keeping the
# curves, not drawing. (Pictures would add ~0.1 s a job.) TensorBoard also fails for a float64 run that diverges
# (its parameters' histogram: the span of ±1e300 values overflows), and in a batched sweep its batch fails with it.
SWEEP_LOGGING = ["log.tensorboard=false", "log.plots=false"]


@dataclass
class StudySubset:
    """The side-by-side subset: its study into fresh directories, and the runs of the last one's runs.parquet
    (their `command` column) as one run alone, as a `hydra/launcher=batched` sweep and as a basic-launcher sweep."""

    workdir: Path
    quick: bool
    runs: Any = None  # the last study's runs table
    jobs_equal: list[float] = field(default_factory=list)  # per batched sweep: its share of jobs equal to the study's
    conf_dir: Path = field(init=False)  # the `--config-dir` of the subset's study and of the sweeps' start points

    def __post_init__(self) -> None:
        self.conf_dir = Path(tempfile.mkdtemp(dir=self.workdir))
        (self.conf_dir / "study").mkdir()
        (self.conf_dir / "study" / "bench_subset.yaml").write_text(SUBSET_STUDY)

    def study(self) -> float:
        """Wall time of the subset's study from a cold process, tables included; keeps its runs table."""
        import tapelab

        run_dir = fresh_dir(self.workdir)
        overrides = ["--config-dir", str(self.conf_dir), "study=bench_subset", *(FEW if self.quick else [])]
        overrides.append("study.report=false")  # the sweeps draw nothing either: the ratios compare the training
        elapsed = study_seconds(overrides, run_dir)
        self.runs = tapelab.load_study(run_dir).runs
        if len(self.runs) != SUBSET_RUNS[1 if self.quick else 0]:
            sys.exit(f"the subset's study has {len(self.runs)} runs, not {SUBSET_RUNS[1 if self.quick else 0]}")
        return elapsed

    def single_run(self) -> float:
        """Wall time of the study's first run alone, by its command."""
        return run_py([*shlex.split(self.runs["command"].iloc[0])[2:], *SWEEP_LOGGING], self.workdir)

    def batched(self) -> float:
        """Wall time of all the study's runs as one `hydra/launcher=batched` sweep."""
        sweep_dir = fresh_dir(self.workdir)
        elapsed = self.sweep([*BATCHED, *self.grid(sample=False)], sweep_dir)
        self.jobs_equal.append(self.share_equal(sweep_dir))
        return elapsed

    def basic(self) -> float:
        """Wall time of a sample of the study's runs (`BASIC_SAMPLE`) as a basic-launcher sweep."""
        return self.sweep([*BASIC, *self.grid(sample=True)], fresh_dir(self.workdir))

    def sweep(self, overrides: list[str], sweep_dir: Path) -> float:
        """Wall time of `python run.py -m OVERRIDES` with the start points' `--config-dir`."""
        return python(["run.py", "-m", "--config-dir", str(self.conf_dir), *overrides, f"hydra.sweep.dir={sweep_dir}"])

    def grid(self, sample: bool) -> list[str]:
        """The study's commands as one grid of jobs: the overrides they all share, then optimizer × lr × start.

        Hydra's sweepers take the product of the swept keys, but a run's start point goes with its seed. So each
        seed is an option of a config group `start` in the `--config-dir`: `start/seed_<n>.yaml` sets `seed` and
        `objective.init` as the commands do (and, added after the objective in the defaults list, its init wins).
        The product optimizer × lr × `+start` is then exactly the study's runs: checked here against the commands,
        and after each batched sweep against the study's final losses and steps (`share_equal`)."""
        commands = [parsed_command(command) for command in self.runs["command"]]
        shared = {key: value for key, value in commands[0].items() if key not in SWEPT}
        if any({key: value for key, value in command.items() if key not in SWEPT} != shared for command in commands):
            sys.exit("the study's commands differ in more than optimizer, lr, seed and objective.init")
        starts = {command["seed"]: command["objective.init"] for command in commands}
        optimizers = list(dict.fromkeys(command["optimizer"] for command in commands))
        lrs = list(dict.fromkeys(command["lr"] for command in commands))
        runs = {tuple(command[key] for key in SWEPT) for command in commands}
        grid = {(optimizer, lr, seed, init) for optimizer in optimizers for lr in lrs for seed, init in starts.items()}
        if runs != grid or len(runs) < len(commands):
            sys.exit("the study's commands are not each optimizer × lr × seed once, with one start point per seed")
        for seed, init in starts.items():
            path = self.conf_dir / "start" / f"seed_{seed}.yaml"
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"# @package _global_\nseed: {seed}\nobjective:\n  init: {init}\n")
        seeds = list(starts)
        if sample:
            chosen = BASIC_SAMPLE[1 if self.quick else 0]
            lrs, seeds = lrs[:: chosen["stride"]], seeds[: chosen["seeds"]]
        swept = [f"optimizer={','.join(optimizers)}", f"lr={','.join(lrs)}",
                 f"+start={','.join(f'seed_{seed}' for seed in seeds)}"]  # fmt: skip
        if sample and jobs_in(swept) != chosen["jobs"]:
            sys.exit(f"the basic launcher's sample has {jobs_in(swept)} jobs, not {chosen['jobs']}")
        return [f"{key}={value}" for key, value in shared.items()] + swept + SWEEP_LOGGING

    def share_equal(self, sweep_dir: Path) -> float:
        """The share of the study's completed runs whose job in the sweep (by optimizer, lr and seed) has the same
        final loss, to the bit, and steps. (A diverged run's row counts one step more than the run alone does.)"""
        completed = self.runs[self.runs["status"] == "completed"]
        study = {(run.optimizer, run.lr, run.seed): (run.final_loss, run.steps) for run in completed.itertuples()}
        summaries = [json.loads(path.read_text()) for path in sweep_dir.glob("*/summary.json")]
        jobs = {(job.get("optimizer"), job.get("lr"), job.get("seed")): (job.get("final_loss"), job.get("steps"))
                for job in summaries}  # fmt: skip
        return sum(jobs.get(key) == value for key, value in study.items()) / len(study)


def study_seconds(overrides: Sequence[str], run_dir: Path) -> float:
    """Wall time of one `python run.py OVERRIDES` study into `run_dir`, whose tables (and report, unless
    `study.report=false`) must then load."""
    import tapelab

    elapsed = python(["run.py", *overrides, f"hydra.run.dir={run_dir}"])
    study = tapelab.load_study(run_dir)
    if study.runs.empty or study.curves.empty or study.chosen.empty:
        sys.exit(f"`python run.py {' '.join(overrides)}` left an empty table in {run_dir}")
    if "study.report=false" not in overrides and not (run_dir / "report.html").is_file():
        sys.exit(f"`python run.py {' '.join(overrides)}` left no report.html in {run_dir}")
    return elapsed


@dataclass
class Studies:
    """The presets' studies into fresh directories, and their reports rebuilt from the last one's tables."""

    workdir: Path
    last: dict[str, Path] = field(default_factory=dict)  # preset -> its last study's directory

    def study(self, name: str, overrides: Sequence[str]) -> float:
        """Wall time of the study from a cold process, report included."""
        self.last[name] = fresh_dir(self.workdir)
        return study_seconds(overrides, self.last[name])

    def report(self, name: str) -> float:
        """Wall time of `tapelab.load_study(dir).report()` from a cold process on the last study's tables."""
        page = self.last[name] / "report.html"
        page.unlink()
        elapsed = python(["-c", f"import tapelab; tapelab.load_study({str(self.last[name])!r}).report()"])
        if not page.is_file():
            sys.exit(f"the report of {name} was not rebuilt in {self.last[name]}")
        return elapsed


def parsed_command(command: str) -> dict[str, str]:
    """A study's `python run.py [--config-dir DIR] KEY=VALUE …` command as {key: value as written}, without the
    study's config source (the sweeps here give their own)."""
    words = shlex.split(command)[2:]
    if words[0] == "--config-dir":
        words = words[2:]
    return dict(override.split("=", 1) for override in words if not override.startswith("hydra.searchpath="))


def study_tasks(quick: bool, classic: bool, workdir: Path, subset: StudySubset) -> list[Task]:
    """The studies from a cold process, and the subset: its study, its first run alone and its runs as sweeps."""
    tasks, studies = [], Studies(workdir)
    for name, overrides in STUDIES.items():
        if name != "study=classic" or classic:
            tasks.append(Task("study", name, "s", None, partial(studies.study, name, overrides[1 if quick else 0])))
            tasks.append(Task("report", name, "s", None, partial(studies.report, name)))
    runs, sample = SUBSET_RUNS[1 if quick else 0], BASIC_SAMPLE[1 if quick else 0]["jobs"]
    return tasks + [
        Task(SUBSET, "study", "s", runs, subset.study),  # first: the others take its runs
        Task(SUBSET, "single run", "s", 1, subset.single_run),
        Task(SUBSET, "batched launcher", "s", runs, subset.batched),
        Task(SUBSET, "basic launcher", "s", sample, subset.basic),
    ]


def measure_all(tasks: list[Task], repeats: int) -> dict[Task, list[float]]:
    """Every task once per repeat, round-robin, reporting progress on stderr."""
    results: dict[Task, list[float]] = {task: [] for task in tasks}
    for repeat in range(1, repeats + 1):
        for task in tasks:
            value = task.measure()
            results[task].append(value)
            print(f"[{repeat}/{repeats}] {task.group:<11} {task.label:<20} {value:12.3f} {task.unit}", file=sys.stderr)
    return results


def machine() -> str:
    """The CPU model, its cores, TensorFlow's and Python's versions."""
    cpuinfo = Path("/proc/cpuinfo")
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    cpu = models[0].strip() if models else platform.processor() or platform.machine()
    tensorflow = importlib.metadata.version("tensorflow")
    return f"{cpu}, {os.cpu_count()} cores, TensorFlow {tensorflow}, Python {platform.python_version()}"


def row(*cells: str) -> str:
    """A markdown table row."""
    return "| " + " | ".join(cells) + " |"


def measurement_rows(results: dict[Task, list[float]]) -> list[str]:
    """Median, min and max of every task."""
    rows = []
    for task, values in results.items():
        count = "" if task.count is None else f"{task.count:,}"
        spread = f"{min(values):.3f}–{max(values):.3f}"
        rows.append(row(task.group, task.label, count, f"{statistics.median(values):.3f} {task.unit}", spread, ""))
    return rows


def phase_row(grid: Grid, extra_job: float) -> str:
    """Where a job of the grid beyond the first spends its time (summary.json's timings_s): medians over the sweeps."""
    values = {phase: statistics.median(phases[phase] for phases in grid.phases) for phase in PHASES}
    rest = extra_job - sum(values.values())  # Hydra's composition and job set-up, the sweep report
    spent = ", ".join(f"{phase} {value:.3f}" for phase, value in {**values, "the rest": rest}.items())
    return row("grid", "a job beyond the first, by phase (s)", "", spent, "", "")


@dataclass(frozen=True)
class Check:
    """A derived number and its target (at least or at most `target`), or no target."""

    label: str
    value: float
    target: float | None = None
    at_least: bool = False
    chose_faster: bool | None = None  # for jit_compile=auto: whether it picked the faster of its two choices

    def verdict(self) -> str:
        """`≥ 500: met`, `≤ 2: **not met**`, noise for a value <= 0, or nothing without a target."""
        if self.chose_faster is not None:
            return "chose the faster: met" if self.chose_faster else "chose the faster: **not met**"
        if self.target is None:
            return ""
        if self.value <= 0:
            return "noise: a runner's cost came out <= 0; give it more steps"
        met = self.value >= self.target if self.at_least else self.value <= self.target
        return f"{'≥' if self.at_least else '≤'} {self.target:g}: {'met' if met else '**not met**'}"


def extra_job_seconds(median: dict[tuple[str, str], float], results: dict[Task, list[float]]) -> float:
    """(grid − 1-job sweep) / (jobs − 1), from the medians."""
    grid = next(task for task in results if task.group == "grid" and task.label != ONE_JOB)
    return (median["grid", grid.label] - median["grid", ONE_JOB]) / (grid.count - 1)


def checks(results: dict[Task, list[float]]) -> list[Check]:
    """The issue's ratios and targets, from the medians."""
    median = {(task.group, task.label): statistics.median(values) for task, values in results.items()}
    found = []
    groups = {task.group for task in results}
    for group in dict.fromkeys(task.group for task in results if task.unit == "µs/step"):
        for top, bottom, target, at_least, targeted in RATIOS:
            value = median[group, top] / median[group, bottom]
            found.append(Check(f"{group}: {top} / {bottom}", value, target if group in targeted else None, at_least))
    if {"start-up", "grid"} <= groups:
        found += [
            Check(f"start-up: {STARTUP} / {IMPORT}", median["start-up", STARTUP] / median["start-up", IMPORT], 1.3),
            Check("grid: seconds per job beyond the first", extra_job_seconds(median, results), 0.3),
        ]
    for name, target in BATCH_TARGETS.items():
        if name not in groups:
            continue
        jobs = next(task.count for task in results if task.group == name and task.label == "batched launcher")
        for launcher in ("batched launcher", "basic launcher"):
            beyond = (median[name, launcher] - median[name, "single run"]) / (jobs - 1)
            wanted = target if launcher == "batched launcher" else None  # the basic one for comparison
            found.append(Check(f"{name}: {launcher}, s per job beyond a single run", beyond, wanted))
    for length in AUTO_EPOCHS:
        group = f"jit {length}"
        if group not in groups:
            continue
        faster = "XLA" if median[group, "XLA"] < median[group, "plain graph"] else "plain graph"
        chose = {"XLA" if xla else "plain graph" for xla in AUTO_CHOICES[length]}
        label = f"{group}: auto chose {' and '.join(sorted(chose))}; {faster} was faster, by"
        slower = max(median[group, "XLA"], median[group, "plain graph"]) / median[group, faster]
        found.append(Check(label, slower, None, chose_faster=chose == {faster} or slower <= AUTO_TIE))
    return found


def study_checks(results: dict[Task, list[float]], subset: StudySubset, quick: bool) -> list[Check]:
    """The studies' seconds against their targets; the subset's figures beyond a single run (the basic launcher's
    scaled from its sample, per job), the sweeps' ratios to the study, and whether the sweeps ran the same runs."""
    median = {(task.group, task.label): statistics.median(values) for task, values in results.items()}
    found = [
        Check(f"study: {name}, s from a cold process", median["study", name], target)
        for name, target in STUDY_TARGETS.items()
        if ("study", name) in median
    ]
    found += [
        Check(f"report: {name}, s to rebuild from the tables, cold process", median["report", name], target)
        for name, target in REPORT_TARGETS.items()
        if ("report", name) in median
    ]
    runs, sample = SUBSET_RUNS[1 if quick else 0], BASIC_SAMPLE[1 if quick else 0]["jobs"]
    single = median[SUBSET, "single run"]
    beyond = {
        "study": median[SUBSET, "study"] - single,
        "batched launcher": median[SUBSET, "batched launcher"] - single,
        "basic launcher": (median[SUBSET, "basic launcher"] - single) / (sample - 1) * (runs - 1),
    }
    found += [
        Check(f"{SUBSET}: study, s beyond a single run", beyond["study"]),
        Check(f"{SUBSET}: batched launcher, s beyond a single run", beyond["batched launcher"]),
        Check(
            f"{SUBSET}: basic launcher, s beyond a single run ({sample} jobs' s per job × {runs - 1})",
            beyond["basic launcher"],
        ),  # fmt: skip
    ]
    found += [
        Check(f"{SUBSET}: {launcher} / study, beyond a single run", beyond[launcher] / beyond["study"], target, True)
        for launcher, target in SUBSET_TARGETS.items()
    ]
    share = min(subset.jobs_equal)
    return [*found, Check(f"{SUBSET}: batched jobs equal to the study's completed runs", share, 1.0, True)]


def print_report(results: dict[Task, list[float]], grid: Grid, repeats: int, extra: Sequence[Check] = ()) -> None:
    """One markdown table, headed with the date and the machine: the measurements, the grid's phases, the checks
    (and the `extra` ones, measured apart)."""
    print(f"Measured {datetime.date.today().isoformat()} on {machine()}; {repeats} interleaved repeats.")
    print()
    print(row("group", "measurement", "steps or jobs", "median", "min–max", "target"))
    print("|---" * 6 + "|")
    for line in measurement_rows(results):
        print(line)
    if grid.phases:
        median = {(task.group, task.label): statistics.median(values) for task, values in results.items()}
        print(phase_row(grid, extra_job_seconds(median, results)))
    for check in [*checks(results), *extra]:
        group, _, label = check.label.partition(": ")
        print(row(group, label, "", f"{check.value:.3f}", "", check.verdict()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [case.name for case in CASES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps and a small grid: a smoke run")
    parser.add_argument(
        "--repeats", type=int, help="times each variant is timed (default 3; 5 with --loop-ratio, 1 with --study)"
    )
    parser.add_argument("--problems", nargs="*", choices=names, default=names, metavar="NAME", help=" ".join(names))
    parser.add_argument(
        "--loop-ratio", action="store_true", help="only a run alone's loop against a bare XLA loop, in this process"
    )
    parser.add_argument(
        "--batched-only", action="store_true", help="only hydra/launcher=batched's grids (and their single runs)"
    )
    parser.add_argument(
        "--study",
        action="store_true",
        help="only the studies: study=quick from a cold process, and 806 runs as a study against the same runs as "
        "batched and basic sweeps (a few minutes; 1 repeat unless --repeats)",
    )
    parser.add_argument("--study-classic", action="store_true", help="--study, and study=classic (minutes more)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.loop_ratio:
        print_loop_ratio(args.repeats or LOOP_RATIO_REPEATS)
        return
    if args.study or args.study_classic:
        with tempfile.TemporaryDirectory(prefix="tapelab-bench-") as tmp:
            subset = StudySubset(Path(tmp), args.quick)
            results = measure_all(study_tasks(args.quick, args.study_classic, Path(tmp), subset), args.repeats or 1)
        print_report(results, Grid(Path(tmp)), args.repeats or 1, study_checks(results, subset, args.quick))
        return
    with tempfile.TemporaryDirectory(prefix="tapelab-bench-") as tmp:
        workdir = Path(tmp)
        grid = Grid(workdir)
        tasks = [
            task for case in CASES if case.name in args.problems for task in problem_tasks(case, args.quick, workdir)
        ]
        tasks += extra_tasks(args.quick, workdir, grid)
        if args.batched_only:
            tasks = [task for task in tasks if task.group in BATCH_GRIDS]
        results = measure_all(tasks, args.repeats or 3)
    extra = []
    if "rosenbrock" in args.problems and not args.batched_only:
        ratio, _, _ = loop_ratio(LOOP_RATIO_REPEATS, LOOP_RATIO_STEPS // (100 if args.quick else 1))
        extra.append(Check(f"rosenbrock: {LOOP_RATIO_LABEL}", ratio, LOOP_RATIO_TARGET))
    print_report(results, grid, args.repeats or 3, extra)


if __name__ == "__main__":
    main()
