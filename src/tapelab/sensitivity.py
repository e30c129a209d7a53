"""How an objective responds to its parameters: f, f′ and f″ by nested tf.GradientTape (seed 003).

`python scripts/sensitivity.py [KEY=VALUE ...]` (config `conf/sensitivity.yaml`), into
`outputs/sensitivity/<date>/<time>/`:

- an objective with one scalar parameter: f and its first and second derivatives at `points` values of the
  parameter spread over `range`, computed in one pass by watching the whole grid (sensitivity.csv with the
  columns `<parameter>, f, df, d2f`, and sensitivity.png);
- an objective with several parameter elements: f, the gradient and the Hessian at the point `at` (default:
  the objective's start), in sensitivity.json and on stdout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapelab.cli import CONFIG_PATH, configure_process
from tapelab.config import check_finite_numbers, plain_values, register_configs
from tapelab.errors import ConfigError, config_errors_exit_with_usage_error, exit_on_user_error
from tapelab.objectives import Objective, Problem
from tapelab.objectives.base import finite_vector
from tapelab.tensorflow_start import import_tensorflow

CSV = "sensitivity.csv"
PNG = "sensitivity.png"
JSON = "sensitivity.json"
MAX_POINTS = 1_000_000


@dataclass
class SensitivityConfig:
    """The primary config of scripts/sensitivity.py (conf/sensitivity.yaml extends it)."""

    objective: Any = MISSING
    range: list[float] = MISSING  # [low, high] of the single parameter
    points: int = MISSING  # how many values of it, evenly spaced, ends included
    at: list[float] | None = MISSING  # several parameter elements: where (flat, in column order); null = start
    seed: int = MISSING  # for objectives that draw random data or start values


ConfigStore.instance().store(name="schema_sensitivity", node=SensitivityConfig)


def has_one_scalar(problem: Problem) -> bool:
    """Whether the objective trains exactly one scalar parameter (and so has a curve)."""
    return len(problem.start) == 1 and np.ndim(next(iter(problem.start.values()))) == 0


def curve(problem: Problem, low: float, high: float, points: int) -> pd.DataFrame:
    """f, df and d2f at `points` values of the single scalar parameter, evenly spaced from `low` to `high`.

    The grid is one watched tensor: an elementwise loss gives all values, and the tapes all derivatives, at
    once. A loss that is not elementwise (its value over the grid is not one value per point) is evaluated
    point by point instead.
    """
    import tensorflow as tf

    ((name, _),) = problem.start.items()
    grid = tf.linspace(tf.constant(low, tf.float32), tf.constant(high, tf.float32), points)

    def derivatives(values):
        zero = tf.UnconnectedGradients.ZERO
        with tf.GradientTape() as outer:
            outer.watch(values)
            with tf.GradientTape() as inner:
                inner.watch(values)
                f = tf.cast(problem.value({name: values}), tf.float32)
            df = inner.gradient(f, values, unconnected_gradients=zero)
        d2f = outer.gradient(df, values, unconnected_gradients=zero)
        return tf.stack([tf.broadcast_to(f, tf.shape(values)), df, d2f])

    f = tf.cast(problem.value({name: grid}), tf.float32)
    if f.shape == grid.shape:
        columns = derivatives(grid)
    else:
        columns = tf.transpose(tf.map_fn(derivatives, grid, fn_output_signature=tf.float32))
    frame = pd.DataFrame(dict(zip(["f", "df", "d2f"], columns.numpy(), strict=True)))
    frame.insert(0, name, grid.numpy())
    return frame


def at_point(problem: Problem, at: list[float] | None = None) -> dict[str, Any]:
    """f, the gradient and the Hessian over all parameter elements at `at` (flat; None: the start).

    Returns plain values: `elements` (column names), `point`, `f`, `gradient` and `hessian` (a list of rows).
    """
    from tapelab.derivatives import point_derivatives
    from tapelab.engine.layout import element_columns
    from tapelab.record import shortest

    elements = element_columns(problem.start)
    flat = problem.flat_start().astype(np.float32)
    if at is not None:
        flat = finite_vector("at", at, length=len(elements)).astype(np.float32)
    values = point_derivatives(problem.value, problem.split(flat))
    return {
        "elements": elements,
        "point": [shortest(v) for v in flat],
        "f": shortest(values["f"]),
        "gradient": [shortest(v) for v in values["gradient"]],
        "hessian": [[shortest(v) for v in row] for row in values["hessian"]],
    }


def describe_point(result: dict[str, Any]) -> str:
    """`at_point`'s result as text: the point, f, the gradient and the Hessian as labelled tables."""
    elements = result["elements"]
    table = pd.DataFrame({"point": result["point"], "gradient": result["gradient"]}, index=elements)
    hessian = pd.DataFrame(result["hessian"], index=elements, columns=elements)
    return f"f = {result['f']}\n{table.to_string()}\nHessian:\n{hessian.to_string()}"


def plot_curve(frame: pd.DataFrame, title: str, path: Path) -> None:
    """f, df and d2f against the parameter, with a legend (like seed 003's tanh plot)."""
    from tapelab.plots import new_figure, save

    name = frame.columns[0]
    figure, (axis,) = new_figure(7, 4.5)
    labels = {"f": f"f({name})", "df": f"df/d{name}", "d2f": f"d²f/d{name}²"}
    for column, label in labels.items():
        axis.plot(frame[name], frame[column], label=label, linewidth=1.5)
    axis.axhline(0.0, color="grey", linewidth=0.6)
    axis.set(xlabel=name, title=title)
    axis.legend()
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    save(figure, path)


def checked_objective(cfg: DictConfig) -> Objective:
    """The composed objective as its schema object, with its numbers checked like run.py checks them."""
    objective = OmegaConf.to_object(cfg.objective)
    if not isinstance(objective, Objective):
        raise ConfigError("objective", "must be chosen from conf/objective (see --help)")
    check_finite_numbers("objective", plain_values(objective))
    return objective


def sensitivity(cfg: DictConfig, out_dir: Path) -> Path:
    """Check `cfg`, compute, write the result into `out_dir`, print it, and return the main file written."""
    if cfg.seed < 0:
        raise ConfigError("seed", f"must be an integer >= 0, got {cfg.seed}")
    objective = checked_objective(cfg)
    import_tensorflow()
    problem = objective.build(int(cfg.seed))
    at = None if cfg.at is None else list(cfg.at)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not has_one_scalar(problem):
        result = {"objective": objective.name, **at_point(problem, at)}
        path = out_dir / JSON
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{objective.name}: f, gradient and Hessian at the point")
        print(describe_point(result))
        print(f"wrote {path}")
        return path
    (name,) = problem.start
    if at is not None:
        raise ConfigError(
            "at",
            f"is for objectives with several parameter elements; {objective.name} has the single parameter "
            f"{name}, whose curve over `range` is written instead (narrow `range` to zoom in)",
        )
    low, high = (float(value) for value in finite_vector("range", list(cfg.range), length=2).astype(np.float32))
    if not low < high:
        raise ConfigError("range", f"needs [low, high] with low < high, got {list(cfg.range)}")
    if not 2 <= cfg.points <= MAX_POINTS:
        raise ConfigError("points", f"must be an integer from 2 to {MAX_POINTS}, got {cfg.points}")
    frame = curve(problem, low, high, int(cfg.points))
    frame.to_csv(out_dir / CSV, index=False)
    plot_curve(frame, f"{objective.name}: f, df and d2f", out_dir / PNG)
    print(f"wrote {out_dir / CSV} and {PNG}: f, df, d2f of {objective.name} at {cfg.points} values of {name}")
    return out_dir / CSV


def main() -> None:
    """`python scripts/sensitivity.py`: a mistake, tapelab's or Hydra's, ends with one line on stderr and exit 2."""
    configure_process()
    register_configs()
    with config_errors_exit_with_usage_error():
        sensitivity_job()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="sensitivity")
def sensitivity_job(cfg: DictConfig) -> None:
    """Hydra's task: `sensitivity` in the run directory."""
    try:
        sensitivity(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, OmegaConfBaseException) as error:
        exit_on_user_error(error)
