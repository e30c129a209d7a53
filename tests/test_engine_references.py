"""The engine reproduces, byte for byte, the metrics.csv of a fixed set of runs committed before it was split
into modules (`scripts/engine_references.py` lists them and writes them again)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

REFERENCES = ROOT / "tests" / "references" / "engine"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """The fixed set's files, written again by the script in a fresh process (XLA's flags as a user's are)."""
    out = tmp_path_factory.mktemp("engine_references")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "engine_references.py"), str(out)], check=True,
                   capture_output=True, timeout=240)  # fmt: skip
    return out


def test_the_fixed_set_has_every_path_through_the_engine():
    names = {path.stem for path in REFERENCES.glob("*.csv")}
    optimizers = {"gd", "sgd", "adam", "adamw", "adamax", "nadam", "lamb", "lion", "adagrad", "adadelta",
                  "rmsprop", "ftrl", "newton"}  # fmt: skip
    assert {f"auto_{name}" for name in optimizers} <= names
    assert {"graph_adam", "xla_adam", "converges_graph", "converges_xla", "diverges", "multistart", "resumed"} <= names
    batched = sorted(name for name in names if name.startswith("batched_"))
    ends = [(REFERENCES / f"{name}.csv").read_text().splitlines()[-1].split(",")[0] for name in batched]
    assert ends == ["4000", "4000", "2615", "4"]  # two complete, one converges, one diverges at step 4


def test_every_metrics_csv_of_the_fixed_set_is_byte_identical_to_its_reference(written):
    references = sorted(path.name for path in REFERENCES.glob("*.csv"))
    assert sorted(path.name for path in written.glob("*.csv")) == references
    differing = [name for name in references if (written / name).read_bytes() != (REFERENCES / name).read_bytes()]
    assert differing == []
