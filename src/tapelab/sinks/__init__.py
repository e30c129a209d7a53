"""Where a run's history goes: metrics.csv and TensorBoard event files (summary.json is `tapelab.run_summary`).

Every sink takes the run's new rows as they come (`write`) and what the run ended with (`finish`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RunEnd:
    """What a sink gets when its run ends or is interrupted: the final summary (with its `status` and
    `steps`), the pictures drawn, the run's hyperparameters and HParams trial ID, and when it started."""

    summary: dict[str, Any]
    pictures: list[Path]
    hparams: dict[str, Any]
    trial: str
    started_at: float


class Sink(Protocol):
    """One destination of a run's history; `kind` names it in the run's timings."""

    kind: str

    def write(self, history: pd.DataFrame) -> None:
        """Take the run's new rows (columns as in metrics.csv), on disk when this returns."""

    def finish(self, end: RunEnd) -> None:
        """Take what the run ended with, and close."""
