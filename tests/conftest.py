"""Shared fixtures: configs composed in-process, and runs into pytest's tmp_path."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow

from tapelab.config import register_configs  # noqa: E402
from tapelab.runner import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

register_configs()


def compose_config(*overrides: str) -> DictConfig:
    """The config `python run.py <overrides>` would run, composed in-process."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


class Run:
    """A finished in-process run: its directory, history and summary."""

    def __init__(self, run_dir: Path, returned: float) -> None:
        self.dir = run_dir
        self.returned = returned
        self.metrics = pd.read_csv(run_dir / "metrics.csv")
        self.summary = json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def train(tmp_path: Path) -> Callable[..., Run]:
    """Run `python run.py <overrides>` in-process into a fresh directory under tmp_path."""
    count = 0

    def _train(*overrides: str) -> Run:
        nonlocal count
        count += 1
        run_dir = tmp_path / f"run{count}"
        if not any(override.startswith("log.plots=") for override in overrides):
            overrides = ("log.plots=false", *overrides)  # pictures cost ~0.5 s a run; test_pictures.py asks for them
        if not any(override.startswith("jit_compile=") for override in overrides):
            # XLA's compile costs ~0.5 s a run; the seeds, resume, multi-start and XLA tests (and every
            # subprocess test) run with it, and the XLA tests compare the two.
            overrides = ("jit_compile=false", *overrides)
        return Run(run_dir, run(compose_config(*overrides), run_dir))

    return _train
