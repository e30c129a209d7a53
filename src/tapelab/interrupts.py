"""Ctrl-C (SIGINT) and SIGTERM (what SLURM and submitit send) as a request to stop after the current chunk."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

CAUGHT = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A run stopped on a signal after saving everything; the process should exit with `exit_code`. `ended`: the
    signal came as the runs wrote their last files, after their end: nothing is left to continue. A study says
    `how_to_continue` (a run continues with resume=true) and counts runs instead of steps."""

    def __init__(self, signal_number: int, steps: int, ended: bool = False, how_to_continue: str | None = None) -> None:
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        self.ended = ended
        self.how_to_continue = how_to_continue
        done = f"{steps} steps" if how_to_continue is None else f"{steps} runs"
        super().__init__(f"interrupted by {signal.Signals(signal_number).name} after {done}")


class StopRequests:
    """While active, SIGINT and SIGTERM set `received` instead of stopping the process.

    A second Ctrl-C while the first is being answered stops at once, as Python normally does.
    Only the main thread can install handlers; elsewhere (some launchers' workers) signals keep their defaults.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _note(self, signal_number: int, frame: FrameType | None) -> None:
        if self.received is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal_number

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._note) for number in CAUGHT}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
