"""Studies stopped, resumed and spread (issue 24, items 7 and 8): a study finished in several goes, by several units
or under Hydra's parallel launchers gives the tables of one straight study; a failed group is retried; reordering
the config or a new version trains nothing again; the progress line counts groups and runs and estimates the time.

Every study here is tests/user_configs/study/tiny.yaml (or smaller): 2 problems × 2 optimizers = 4 groups, each
3 learning rates (1e-3, 1e-2, 0.1; Adam's Keras default 1e-3 is on that grid) × 3 seeds = 9 runs, so 36 runs.
Two studies' tables are compared exactly, less the column that measures time (`group_seconds`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import tapelab
from conftest import ROOT, TINY_STUDY, USER_CONFIGS, no_idle_trainers

GROUPS, GROUP_RUNS, RUNS = 4, 9, 36
TIME_COLUMNS = ["group_seconds"]  # a group's training time: the one column two runs of a study don't share
PROGRESS = re.compile(r"study: (\d+)/(\d+) groups, (\d+)/(\d+) runs done \((\w+) × (\w+)\), about (\d+) s left")


def tables(study_dir: Path) -> dict[str, pd.DataFrame]:
    """A study's runs, curves and chosen tables, without the columns that measure time, and with each command's
    config source (`--config-dir DIR` on the command line, `hydra.searchpath=[file://DIR]` in-process, a copy of
    the configs elsewhere) as one."""
    study = tapelab.load_study(study_dir)
    runs = study.runs.drop(columns=TIME_COLUMNS)
    runs["command"] = runs["command"].str.replace(r"^python run\.py (--config-dir \S+|'hydra\.searchpath=[^']*') ",
                                                  "python run.py <config source> ", regex=True)  # fmt: skip
    return {"runs": runs, "curves": study.curves, "chosen": study.chosen}


def assert_same_tables(study_dir: Path, straight_dir: Path, sort: bool = False) -> None:
    """The study in `study_dir` has the tables of the straight one, to the bit (row order aside if `sort`)."""
    mine, straight = tables(study_dir), tables(straight_dir)
    assert len(straight["runs"]) == RUNS
    for name, by in [("runs", ["run"]), ("curves", ["run", "step"]), ("chosen", ["problem", "optimizer"])]:
        left, right = mine[name], straight[name]
        if sort:
            left, right = (table.sort_values(by, ignore_index=True) for table in (left, right))
        pd.testing.assert_frame_equal(left, right, check_exact=True)


def done_markers(study_dir: Path) -> dict[str, tuple[int, str]]:
    """Each finished group's directory name -> its group.json's modification time and text."""
    markers = study_dir.glob("groups/*/group.json")
    return {path.parent.name: (path.stat().st_mtime_ns, path.read_text()) for path in markers}


def group_name(directory: str) -> str:
    """A group's name in study.json ("booth × gd") from its directory's (booth__gd__<key>)."""
    return " × ".join(directory.split("__")[:2])


def group_names(study_dir: Path) -> set[str]:
    """The study's finished groups, by name."""
    return {group_name(directory) for directory in done_markers(study_dir)}


ALL_GROUPS = {f"{problem} × {optimizer}" for problem in ("booth", "rosenbrock") for optimizer in ("gd", "adam")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The tiny study, run whole in this process."""
    study = tapelab.run_study(*TINY_STUDY, run_dir=tmp_path_factory.mktemp("straight"))
    assert study.summary["status"] == "complete" and group_names(study.dir) == ALL_GROUPS
    return study.dir


def test_a_study_finished_after_one_of_its_units_trains_the_groups_left_and_equals_a_straight_study(
    straight, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="tapelab")
    study_dir = tmp_path / "b"
    unit = ("study.units=4", "study.unit=0", f"study.dir={study_dir}")
    tapelab.run_study(*TINY_STUDY, *unit, run_dir=tmp_path / "unit0")
    assert "study: 1 group (9 runs), 1 to train" in caplog.messages
    first = done_markers(study_dir)
    assert len(first) == 1 and tapelab.load_study(study_dir).summary["status"] == "partial"

    caplog.clear()
    with no_idle_trainers():  # each group traces and compiles, as in a fresh process: time enough to estimate
        tapelab.run_study(*TINY_STUDY, run_dir=study_dir)
    assert f"study: {GROUPS} groups ({RUNS} runs), 3 to train" in caplog.messages
    assert {name: done_markers(study_dir)[name] for name in first} == first  # the first unit's group: untouched
    assert_same_tables(study_dir, straight)

    # The progress line as each group left ends: groups and runs done so far, the group, the time left.
    records = [record for record in caplog.records if PROGRESS.fullmatch(record.getMessage())]
    found = [PROGRESS.fullmatch(record.getMessage()).groups() for record in records]
    assert [line[:4] for line in found] == [("2", "4", "18", "36"), ("3", "4", "27", "36"), ("4", "4", "36", "36")]
    assert {f"{line[4]} × {line[5]}" for line in found} == ALL_GROUPS - {group_name(name) for name in first}
    # After the first group (9 runs trained, 18 left) the time left is twice the time it took, in whole seconds
    # (the clock starts a few milliseconds after the line "… 3 to train").
    started = next(record for record in caplog.records if record.getMessage().endswith("3 to train"))
    assert abs(int(found[0][6]) - 2 * (records[0].created - started.created)) <= 0.75
    assert found[-1][6] == "0"


def test_a_failed_group_is_recorded_with_its_error_and_retried_until_it_finishes_under_the_same_key(
    tmp_path, caplog, monkeypatch
):
    # A loss of the user's own that mixes a float32 constant into the study's float64 parameters fails as it is
    # traced; the fix is in the user's code, so the group's key (from the config) stays the same.
    module = "study_runs_user_loss"
    (tmp_path / f"{module}.py").write_text(
        "import tensorflow as tf\n\n"
        "def bowl(params):  # Σ (wᵢ − tᵢ)², t = (1, −2)\n"
        "    return tf.reduce_sum((params['w'] - tf.constant([1.0, -2.0])) ** 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "study").mkdir(parents=True)
    mine = {"objective": "python", "budget": 20,
            "settings": {"function": f"{module}.bowl", "init": {"w": [0.0, 0.0]}, "domain": [[-3.0, 3.0]]}}  # fmt: skip
    study = {"defaults": ["/schema_study", "_self_"], "problems": {"booth": {"objective": "booth", "budget": 20},
             "mine": mine}, "optimizers": ["gd"], "lr": {"low": 0.01, "high": 0.1, "per_decade": 1},
             "seeds": {"tuning": 1, "evaluation": 1}}  # fmt: skip
    (tmp_path / "conf" / "study" / "failing.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    overrides = (f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "study=failing")
    study_dir = tmp_path / "study"
    caplog.set_level(logging.INFO, logger="tapelab")
    mismatch = "Input 'y' of 'Sub' Op has type float32 that does not match type float64 of argument 'x'"

    summary = tapelab.run_study(*overrides, run_dir=study_dir).summary
    (failed,) = study_dir.glob("groups/mine__gd__*/failed.json")
    assert json.loads(failed.read_text())["error"].startswith("TypeError: ") and mismatch in failed.read_text()
    assert not (failed.parent / "group.json").exists()
    assert summary["status"] == "partial" and summary["missing"] == ["mine × gd"]
    assert list(summary["failed"]) == ["mine × gd"] and mismatch in summary["failed"]["mine × gd"]
    assert summary["runs"] == 4 and group_names(study_dir) == {"booth × gd"}

    caplog.clear()  # the same study again: the failed group is tried again (and fails again), the other one not
    summary = tapelab.run_study(*overrides, run_dir=study_dir).summary
    assert "study: 2 groups (8 runs), 1 to train" in caplog.messages
    assert any(message.startswith("study: group mine × gd failed: ") for message in caplog.messages)
    assert summary["status"] == "partial" and list(summary["failed"]) == ["mine × gd"]

    (tmp_path / f"{module}.py").write_text(  # the user's fix: the constant in the parameters' dtype
        "import tensorflow as tf\n\n"
        "def bowl(params):\n"
        "    return tf.reduce_sum((params['w'] - tf.constant([1.0, -2.0], params['w'].dtype)) ** 2)\n"
    )
    monkeypatch.delitem(sys.modules, module)
    caplog.clear()
    study = tapelab.run_study(*overrides, run_dir=study_dir)
    assert "study: 2 groups (8 runs), 1 to train" in caplog.messages
    assert (failed.parent / "group.json").is_file() and not failed.exists()  # the same directory: the same key
    assert study.summary["status"] == "complete" and study.summary["failed"] == {}
    # Gradient descent on Σ (wᵢ − tᵢ)²: w − t shrinks by (1 − 2 lr) a step, so the loss by (1 − 2 lr)² a step.
    runs = study.runs[study.runs["problem"] == "mine"]
    start = study.curves.merge(runs[["run", "lr"]]).query("step == 0").set_index("run")
    expected = start["loss"] * (1 - 2 * start["lr"]) ** (2 * 20)
    assert len(runs) == 4 and (runs["status"] == "completed").all()
    pd.testing.assert_series_equal(runs.set_index("run")["final_loss"], expected, check_names=False, rtol=1e-10)


def test_reordering_the_problems_and_optimizers_trains_no_group_again(straight, tmp_path, caplog):
    study_dir = tmp_path / "study"
    shutil.copytree(straight, study_dir)
    before = done_markers(study_dir)
    tiny = yaml.safe_load((USER_CONFIGS / "study" / "tiny.yaml").read_text())
    tiny["problems"] = dict(reversed(tiny["problems"].items()))
    tiny["optimizers"] = tiny["optimizers"][::-1]
    (tmp_path / "conf" / "study").mkdir(parents=True)
    (tmp_path / "conf" / "study" / "reordered.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    caplog.set_level(logging.INFO, logger="tapelab")

    study = tapelab.run_study(f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "study=reordered", run_dir=study_dir)
    assert f"study: {GROUPS} groups ({RUNS} runs), 0 to train" in caplog.messages
    assert done_markers(study_dir) == before
    assert study.runs[["problem", "optimizer"]].iloc[0].tolist() == ["rosenbrock", "adam"]  # the new order
    assert_same_tables(study_dir, straight, sort=True)


def test_groups_of_another_tensorflow_version_are_kept_and_the_study_says_so(straight, tmp_path, caplog):
    study_dir = tmp_path / "study"
    shutil.copytree(straight, study_dir)
    marker = next(study_dir.glob("groups/booth__gd__*/group.json"))
    info = json.loads(marker.read_text())
    marker.write_text(json.dumps({**info, "tensorflow": "2.0.0"}))
    before = done_markers(study_dir)
    caplog.set_level(logging.INFO, logger="tapelab")

    summary = tapelab.run_study(*TINY_STUDY, run_dir=study_dir).summary
    assert f"study: {GROUPS} groups ({RUNS} runs), 0 to train" in caplog.messages
    assert done_markers(study_dir) == before
    current = {"tapelab": info["tapelab"], "tensorflow": info["tensorflow"]}
    assert tapelab.load_study(straight).summary["versions"] == [current]
    assert summary["versions"] == [{**current, "tensorflow": "2.0.0"}, current]
    assert "different versions" in summary["warning"] and "warning" not in tapelab.load_study(straight).summary
    assert_same_tables(study_dir, straight)


def run_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    finished = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_ctrl_c_stops_a_study_and_the_same_command_finishes_it_as_a_straight_study(straight, tmp_path):
    run_dir = tmp_path / "d"
    command = ["--config-dir", str(USER_CONFIGS), "study=tiny", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *command], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen = []
    for line in process.stdout:
        seen.append(line)
        if PROGRESS.search(line):  # the first group is saved, the second one is training
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=120)
    stdout = "".join(seen) + stdout
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    done = group_names(run_dir)
    assert 1 <= len(done) < GROUPS  # the first group, and the one it was training if that ended first
    last = stdout.rstrip("\n").splitlines()[-1]
    assert re.search(rf"interrupted by SIGINT after {GROUP_RUNS * len(done)} runs; run the same command with "
                     + re.escape(f"hydra.run.dir={run_dir}") + " to train the groups left$", last), stdout  # fmt: skip
    summary = tapelab.load_study(run_dir).summary
    assert summary["status"] == "partial" and summary["runs"] == GROUP_RUNS * len(done)
    assert set(summary["missing"]) == ALL_GROUPS - done and summary["failed"] == {}
    assert not (run_dir / "report.html").exists()  # a stopped study stops at once; report() reports what is done
    kept = done_markers(run_dir)

    again = run_py(*command, cwd=tmp_path)
    assert f"study: {GROUPS} groups ({RUNS} runs), {GROUPS - len(done)} to train" in again.stdout
    assert {name: done_markers(run_dir)[name] for name in kept} == kept
    assert tapelab.load_study(run_dir).summary["status"] == "complete"
    assert_same_tables(run_dir, straight)
    assert (run_dir / "leaderboard.csv").read_bytes() == (straight / "leaderboard.csv").read_bytes()


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_units_under_a_parallel_launcher_merge_into_the_tables_of_one_process(straight, tmp_path, launcher):
    study_dir = tmp_path / "s"
    config = ["--config-dir", str(USER_CONFIGS), "study=tiny"]
    run_py("-m", *config, "study.units=2", "study.unit=0,1", f"study.dir={study_dir}", f"hydra/launcher={launcher}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)  # fmt: skip
    units = [(tmp_path / "sweep" / f"study.unit={unit}_{unit}" / "tapelab.log").read_text() for unit in (0, 1)]
    trained = [{" × ".join(names) for names in re.findall(r"runs done \((\w+) × (\w+)\)", log)} for log in units]
    assert all(f"study: 2 groups ({RUNS // 2} runs), 2 to train" in log for log in units)
    assert len(trained[0]) == len(trained[1]) == 2 and trained[0] | trained[1] == ALL_GROUPS  # each group once

    # The sweep's end merged the units' groups (tapelab.callbacks.SweepReport): no sweep.csv, the study's tables.
    assert not (tmp_path / "sweep" / "sweep.csv").exists()
    assert tapelab.load_study(study_dir).summary["status"] == "complete"
    assert_same_tables(study_dir, straight)
    # ... and built the report once, the units none: its leaderboard is the study in one process's, every digit.
    assert not any("study: report in" in log for log in units)
    assert (study_dir / "leaderboard.csv").read_bytes() == (straight / "leaderboard.csv").read_bytes()
