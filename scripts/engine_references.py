"""Write the metrics.csv of a fixed set of runs, which the training engine must reproduce byte for byte.

    python scripts/engine_references.py [OUT_DIR]   # default: tests/references/engine

The set covers every path through the engine: every optimizer on Rosenbrock alone under jit_compile=auto
(XLA at 3000 steps), a few under the plain graph and forced XLA, runs that converge by a stop rule and that
diverge, a multi-start run, a run resumed to more steps, and a batched sweep whose members converge, diverge
and complete. `tests/test_engine_references.py` runs this script in a fresh process and compares each file
with the committed one, so a change to the engine that moves any number by an ulp fails there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ["gd", "sgd", "adam", "adamw", "adamax", "nadam", "lamb", "lion", "adagrad", "adadelta", "rmsprop",
              "ftrl", "newton"]  # fmt: skip
LEARNING_RATES = {"gd": 0.001, "sgd": 0.001, "newton": 0.5, "adadelta": 1.0}  # else 0.01
ROSENBROCK = ["objective=rosenbrock", "epochs=3000", "log.every=15"]
QUIET = ["log.plots=false", "log.tensorboard=false"]

RUNS_ALONE: dict[str, list[str]] = {
    **{f"auto_{name}": [*ROSENBROCK, f"optimizer={name}", f"lr={LEARNING_RATES.get(name, 0.01)}"]
       for name in OPTIMIZERS},
    **{f"graph_{name}": [*ROSENBROCK, f"optimizer={name}", f"lr={LEARNING_RATES.get(name, 0.01)}",
                         "jit_compile=false"] for name in ("gd", "sgd", "adam", "rmsprop", "newton")},
    **{f"xla_{name}": ["objective=rosenbrock", "epochs=500", "log.every=5", f"optimizer={name}", "lr=0.01",
                       "jit_compile=true"] for name in ("sgd", "adam", "nadam")},
    "converges_graph": ["objective=quadratic", "optimizer=sgd", "lr=0.1", "epochs=500", "stop.grad_tol=1e-4"],
    "converges_xla": ["objective=quadratic", "optimizer=adam", "lr=0.1", "epochs=2000", "stop.loss_tol=1e-7",
                      "stop.patience=20", "jit_compile=true"],
    "diverges": ["objective=rosenbrock", "optimizer=sgd", "lr=0.01", "epochs=200"],
    "multistart": ["objective=rosenbrock", "objective.starts=8", "optimizer=adam", "lr=0.02", "epochs=3000",
                   "log.every=15"],
}  # fmt: skip
RESUMED = ["objective=rosenbrock", "optimizer=rmsprop", "lr=0.001", "epochs=400", "jit_compile=false"]
BATCHED_SWEEP = ["objective=rosenbrock", "optimizer=sgd", "lr=0.0001,0.001,0.002,0.01", "epochs=4000",
                 "log.every=20", "stop.grad_tol=0.05", "hydra/launcher=batched"]  # fmt: skip


def write_runs_alone(out_dir: Path, work_dir: Path) -> None:
    """Each run alone and the resumed run, in this process through `tapelab.run`."""
    import tapelab

    for name, overrides in RUNS_ALONE.items():
        run = tapelab.run(*overrides, *QUIET, run_dir=work_dir / name)
        shutil.copyfile(run.dir / "metrics.csv", out_dir / f"{name}.csv")
    resumed = work_dir / "resumed"
    tapelab.run(*RESUMED, *QUIET, run_dir=resumed)
    tapelab.run("resume=true", "epochs=900", run_dir=resumed)
    shutil.copyfile(resumed / "metrics.csv", out_dir / "resumed.csv")


def start_batched_sweep(work_dir: Path) -> subprocess.Popen:
    """The batched sweep, as `python run.py -m` runs it (the launcher found by Hydra's plugin scan of src)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "run.py"), "-m", *BATCHED_SWEEP, *QUIET, f"hydra.sweep.dir={work_dir}"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def write_references(out_dir: Path) -> None:
    """Every reference file into `out_dir`: `<run>.csv`, and `batched_<job dir>.csv` for the sweep's jobs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        sweep_dir = Path(work) / "sweep"
        sweep = start_batched_sweep(sweep_dir)
        write_runs_alone(out_dir, Path(work))
        output, _ = sweep.communicate()
        if sweep.returncode != 0:
            raise SystemExit(f"the batched sweep failed:\n{output}")
        for job_dir in sorted(path for path in sweep_dir.iterdir() if (path / "metrics.csv").exists()):
            shutil.copyfile(job_dir / "metrics.csv", out_dir / f"batched_{job_dir.name}.csv")


if __name__ == "__main__":
    write_references(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "references" / "engine")
