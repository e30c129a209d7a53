"""metrics.csv: the history, appended one chunk at a time with pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tapelab.sinks import RunEnd


class CsvSink:
    """Appends history rows to `metrics.csv`. A new run's first write refuses to replace an existing file;
    with `append` (a resumed run) the rows go after the existing ones."""

    kind = "csv"

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = path
        self._started = append

    def write(self, history: pd.DataFrame) -> None:
        """Append `history`, flushed to disk when this returns."""
        if history.empty and self._started:
            return
        history.to_csv(self.path, mode="a" if self._started else "x", header=not self._started, index=False)
        self._started = True

    def finish(self, end: RunEnd) -> None:
        """Nothing to do: every write closes the file."""
