"""tapelab installed from a wheel, not from the checkout: the configs travel with the package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with tapelab installed by `pip install .` (not editable), from a copy of the checkout.

    Its dependencies come from this test run's environment through a .pth line, which adds that
    site-packages directory to the path without running the editable install's hook found there; so the
    fresh venv sees only its own, installed tapelab.
    """
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    for part in ("conf", "src", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copy(ROOT / part, source / part)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site_packages) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)]
    finished = subprocess.run(pip, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return venv


def test_the_installed_package_holds_its_configs_and_plugins(installed):
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import tapelab.conf, hydra_plugins.tapelab_sweeper as s; "
         "print(tapelab.conf.__file__); print(s.__file__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for module_file in where:
        assert Path(module_file).is_relative_to(installed), module_file
    assert (Path(where[0]).parent / "objective" / "rosenbrock.yaml").is_file()
    installed_files = {
        path.relative_to(installed).parts[-2:] for path in installed.rglob("*.py") if "tapelab" in str(path)
    }
    for source in (ROOT / "src").rglob("*.py"):  # every module of the checkout is in the wheel
        assert source.relative_to(ROOT / "src").parts[-2:] in installed_files, source


def test_tapelab_runs_from_an_empty_directory_with_a_users_config_dir(installed, tmp_path):
    user_configs = tmp_path / "my_configs"
    shutil.copytree(ROOT / "tests" / "user_configs", user_configs)
    workdir = tmp_path / "empty"
    workdir.mkdir()
    command = [installed / "bin" / "tapelab", "--config-dir", str(user_configs), "objective=my_quad", "epochs=10"]
    finished = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    (summary_file,) = (workdir / "outputs").glob("*/*/summary.json")
    # SGD at lr 0.01 on (x − 3)² from 0: x_t = 3·(1 − 0.98^t).
    history = pd.read_csv(summary_file.parent / "metrics.csv")
    np.testing.assert_allclose(history["x"], 3 * (1 - 0.98 ** np.arange(11)), rtol=1e-6)
    assert json.loads(summary_file.read_text())["objective_params"]["expr"] == "(x - 3)**2"

    shadowing = user_configs / "objective" / "quadratic.yaml"  # tapelab's option of that name comes first
    shadowing.write_text("defaults: [expression]\nexpr: (x - 5)**2\n")
    shown = subprocess.run([*command[:3], "--help"], cwd=workdir, capture_output=True, text=True, check=True).stdout
    (objectives,) = [line for line in shown.splitlines() if line.startswith("objective: ")]
    assert {"my_quad", "quadratic", "rosenbrock"} <= set(objectives.removeprefix("objective: ").split(", "))
    composed = subprocess.run([*command[:3], "objective=quadratic", "--cfg", "job"], cwd=workdir,
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "expr" not in composed and "a: 1.0" in composed

    sweep = subprocess.run(
        [installed / "bin" / "tapelab", "-m", "lr=0.1,0.2", "epochs=5"], cwd=workdir, capture_output=True, text=True
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (table,) = (workdir / "outputs" / "multirun").glob("*/*/sweep.csv")
    assert pd.read_csv(table)["status"].tolist() == ["completed", "completed"]
