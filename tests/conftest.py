"""Shared fixtures: configs composed in-process, and runs into pytest's tmp_path."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from tapelab.config import register_configs
from tapelab.engine.pool import POOL
from tapelab.resume import resumed_config
from tapelab.runs import train_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
# The tests' own configs; `tapelab.run_study(*TINY_STUDY, ...)` runs tests/user_configs/study/tiny.yaml.
USER_CONFIGS = ROOT / "tests" / "user_configs"
STUDY_SEARCH_PATH = f"hydra.searchpath=[file://{USER_CONFIGS}]"
TINY_STUDY = (STUDY_SEARCH_PATH, "study=tiny")
sys.path.append(str(ROOT / "scripts"))  # scripts/devtools.py, the browser driver that the screenshot scripts share

from devtools import INSTALL_HINT, find_chromium  # noqa: E402

register_configs()


def compose_config(*overrides: str) -> DictConfig:
    """The config `python run.py <overrides>` would run, composed in-process."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_in(run_dir: Path, *overrides: str) -> dict:
    """A new run into `run_dir`, with its overrides saved as Hydra saves them; returns its summary."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
    train_config(compose_config(*overrides), run_dir)
    return json.loads((run_dir / "summary.json").read_text())


def resume_in(run_dir: Path, *overrides: str) -> dict:
    """`python run.py resume=true hydra.run.dir=<run_dir> <overrides>`, in-process; returns the summary."""
    cfg = resumed_config(run_dir, ["resume=true", *overrides], lambda keys: compose_config(*keys))
    train_config(cfg, run_dir, resume=True)
    return json.loads((run_dir / "summary.json").read_text())


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
        return Run(run_dir, train_config(compose_config(*overrides), run_dir))

    return _train


def chromium_or_skip() -> str:
    """The Chromium executable for a browser test; the test skips without one, or fails where
    TAPELAB_REQUIRE_CHROMIUM=1 (CI) says it must run."""
    executable = find_chromium()
    if executable:
        return executable
    if os.environ.get("TAPELAB_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"TAPELAB_REQUIRE_CHROMIUM=1 and no Chromium: {INSTALL_HINT}")
    pytest.skip(f"no Chromium: {INSTALL_HINT}")


@contextmanager
def no_idle_trainers() -> Iterator[None]:
    """The process's pool of loops empty while the block runs, as in a fresh process, and again afterwards: a run's
    first loop of each structure traces, whatever tests ran before in this process."""
    POOL.reset()
    try:
        yield
    finally:
        POOL.reset()
