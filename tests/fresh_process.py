"""Reference runs in a fresh Python process, started in the background while the tests go on.

A fresh process costs ~5 s of importing TensorFlow, so one process runs several jobs, one after another, through
`tapelab.run` (what `python run.py` does). Each job must be the first loop of its structure in that process, so
that it is traced afresh: `runs()` checks that every job traced and compiled a loop of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN_JOBS = """
import json, sys
import tapelab
for run_dir, overrides in json.loads(sys.argv[1]):
    tapelab.run(*overrides, run_dir=run_dir)
"""


class FreshProcess:
    """The jobs `name -> overrides`, run one after another in a new Python process, each into `root/name`."""

    def __init__(self, root: Path, jobs: dict[str, list[str]]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.dirs = root, {name: root / name for name in jobs}
        payload = json.dumps([[str(self.dirs[name]), overrides] for name, overrides in jobs.items()])
        with open(root / "output.txt", "w") as output:  # a file, not a pipe that nobody reads until the end
            self._process = subprocess.Popen(
                [sys.executable, "-c", RUN_JOBS, payload], stdout=output, stderr=subprocess.STDOUT
            )
        self._checked = False

    def runs(self, timeout: float = 300) -> dict[str, Path]:
        """The jobs' run directories, once the process has ended; each job traced and compiled its own loop."""
        if not self._checked:
            self._process.wait(timeout=timeout)
            assert self._process.returncode == 0, (self.root / "output.txt").read_text()[-3000:]
            for name, run_dir in self.dirs.items():
                timings = json.loads((run_dir / "summary.json").read_text())["timings_s"]
                assert timings["trace"] > 0 and timings["compile"] > 0, f"{name} reused a loop of its process"
            self._checked = True
        return self.dirs

    def stop(self) -> None:
        """End the process if it still runs (a test that needed it failed or was deselected)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
