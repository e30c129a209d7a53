"""The host side of a batch of members: load their values, run the compiled loop chunk by chunk, and decode
the rows it returns into each report's history and status.

A run alone is a batch of one member. The rows go to one report per member, or (pooled: a multi-start run)
to one report of the batch's best, mean and worst loss. Row t of a member's history is its state after t
updates: the loss, the gradient's global norm, the learning rate, every parameter element and every gradient
element, all evaluated at that state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tapelab.config import StopConfig
from tapelab.engine.compiled import CompiledLoop
from tapelab.engine.layout import MemberLayout, element_columns
from tapelab.engine.state import CONVERGED, STATUS_NAMES, MemberState, pooled_status
from tapelab.engine.step import StepGraph
from tapelab.objectives import Problem
from tapelab.optimizers import OptimizerConfig

FIRST_CHUNK_STEPS = 1000
CHUNK_SECONDS = 0.5  # per compiled call: a Ctrl-C waits at most this, and history is written as it goes
MAX_ROWS_PER_CHUNK = 4096
ROW_BUFFER_FLOATS = 2**22  # row floats per chunk at most (16 MB in float32, 32 MB in float64), for many parameters


@dataclass(frozen=True)
class Chunk:
    """What one compiled call gives one report."""

    history: pd.DataFrame  # the logged rows, with a `step` column
    updates: int  # steps done: updates applied after a finite row (not the one after a non-finite row)
    status: str | None  # None while running; "diverged", "converged" or "completed" when the run ends here
    last_finite: pd.DataFrame | None  # the chunk's last finite row, logged or not; None if it had none


def next_chunk_steps(steps: int, seconds: float) -> int:
    """Scale the chunk towards CHUNK_SECONDS, growing at most fourfold at a time."""
    wanted = steps * CHUNK_SECONDS / max(seconds, 1e-6)
    return int(min(max(wanted, 100), 4 * steps))


class Batch:
    """The variables and compiled loop of `members` runs of one loop structure, in `dtype`; `load` readies
    them for a batch's values, so that later batches of the structure reuse the traced and compiled loop.

    TensorFlow is imported here, not at module import, so that config errors and `--help` stay fast.
    """

    def __init__(self, problem: Problem, optimizer: OptimizerConfig, stop: StopConfig, jit_compile: bool,
                 members: int = 1, pooled: bool = False, dtype: str = "float32") -> None:  # fmt: skip
        if pooled and members < 2:
            raise ValueError("a pooled batch has at least two members")
        self.members, self.pooled, self.dtype = members, pooled, dtype
        self.layout = MemberLayout(problem, members, pooled, dtype)
        self.state = MemberState(members, dtype)
        self.param_columns = [] if pooled else element_columns(problem.start)
        if pooled:  # `loss` is the best member's, then the mean and the worst over the members not diverged
            self.columns = ["step", "loss", "grad_norm", "lr", "loss_mean", "loss_worst"]
        else:
            self.columns = ["step", "loss", "grad_norm", "lr", *self.param_columns]
            self.columns += [f"grad_{column}" for column in self.param_columns]
        self.reports = 1 if pooled else members
        self.update = optimizer.build(dtype)
        if members > 1:
            self.update.for_members(members)
        capacity = int(np.clip(ROW_BUFFER_FLOATS // (self.reports * len(self.columns)), 2, MAX_ROWS_PER_CHUNK))
        stop_rules = (stop.grad_tol is not None, stop.plateau_active())
        self.graph = StepGraph(self.layout, self.state, self.update, pooled, stop_rules, capacity)
        self.update.prepare(list(self.layout.params.values()), self.layout.total_loss)
        self.loop = CompiledLoop(self.graph.run_steps, self.graph.one_step, jit_compile)
        self._max_chunk_steps = capacity - 1
        self._every = 1  # log.every, as the state's variable holds it for the loop
        self._starts = np.zeros((members, self.layout.elements), dtype)
        self._end: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # member rows, reports, losses at the end
        self.step_seconds = 0.0  # the batch's time in the compiled calls since `load`
        self.last_step_times: list[float | None] = [None] * self.reports  # see `advance`

    def load(self, problems: Sequence[Problem], optimizers: Sequence[OptimizerConfig], lrs: Sequence[float],
             log_every: int, stops: Sequence[StopConfig]) -> None:  # fmt: skip
        """Set each member's values (one problem, optimizer, learning rate and stop config each) and return the
        state to before the first step. Of a batch's optimizer keys, the members' own are their
        `member_inputs`; the others are the first member's (a batch's members share them)."""
        if not len(problems) == len(optimizers) == len(lrs) == len(stops) == self.members:
            raise ValueError(f"a batch of {self.members} members needs as many problems, optimizers, lrs and stops")
        self.loop.wait()  # a compile's call of no steps sets the state too
        self._starts = self.layout.load(problems)
        values, lr = optimizers[0].hyperparameters(), lrs[0]
        if self.members > 1:  # each member's own, as an [members, 1] column
            lr = np.array(lrs, self.dtype)[:, None]
            for key in self.update.member_keys:
                values[key] = np.array([[optimizer.hyperparameters()[key]] for optimizer in optimizers], self.dtype)
        self.update.load(lr, values)
        self.state.load(stops, log_every)
        self._every = log_every
        self._max_chunk_steps = (self.graph.capacity - 1) * log_every  # the kept rows, and the slot after them
        self._end = None
        self.step_seconds = 0.0
        self.last_step_times = [None] * self.reports

    @property
    def jit_compile(self) -> bool:
        """Whether the loop runs under XLA (False after a fallback to the plain graph)."""
        return self.loop.jit_compile

    @property
    def max_chunk_steps(self) -> int:
        """The most steps one compiled call takes: the rows its buffer keeps."""
        return self._max_chunk_steps

    @property
    def step(self) -> int:
        """The batch's steps so far: the updates of every member still running."""
        return int(self.state.clock.numpy())

    @property
    def steps(self) -> np.ndarray:
        """Each member's updates so far."""
        return self.state.steps.numpy()

    @property
    def best_losses(self) -> np.ndarray:
        """Each member's lowest finite loss so far (inf before its first)."""
        return self.state.best.numpy()

    @property
    def statuses(self) -> list[str | None]:
        """Each member's status: None while it runs, else "diverged" or "converged"."""
        return self.state.statuses()

    def runs(self) -> list[RunView]:
        """The runs this batch trains, one per report: each member, or the pooled batch."""
        return [RunView(self, report) for report in range(self.reports)]

    def trace(self) -> float:
        """Trace the loop if it isn't yet (the first batch of a structure); return the seconds it took."""
        return self.loop.trace()

    def compile(self, fallback: bool = True) -> float:
        """Compile the loop if it isn't yet; see `CompiledLoop.compile`."""
        return self.loop.compile(fallback)

    def _call(self, n_steps: int) -> tuple[Any, ...]:
        outputs = self.loop.call(n_steps)
        *_, end_rows, end_reports, end_losses = outputs
        self._end = (end_rows.numpy(), end_reports.numpy(), end_losses.numpy())
        return outputs

    def _timed_call(self, n_steps: int) -> tuple[tuple[Any, ...], np.ndarray, float, float]:
        """A call of `n_steps` steps counted in `step_seconds`: its outputs, the steps of the rows it kept (the
        log grid's from the batch's step on), when it started and how long it took."""
        first_step = self.step
        started = time.perf_counter()
        outputs = self._call(n_steps)
        seconds = time.perf_counter() - started
        self.step_seconds += seconds
        first_kept = -(-first_step // self._every) * self._every
        steps = first_kept + self._every * np.arange(int(outputs[1]), dtype=np.int64)
        return outputs, steps, started, seconds

    def chunks(self, epochs: int) -> Iterator[list[list[Chunk]]]:
        """Run until every member has done `epochs` updates (counting earlier ones) or stopped, in chunks sized
        to CHUNK_SECONDS.

        Yields, for each compiled call, each report's chunks: the call's chunk, then for a report that ended in
        it (or, after the last call, for each report still running) the chunk of its final row. Its last
        chunk's status is the report's: completed, converged or diverged. A report that ended earlier gets none.
        The caller may stop early (an interrupt) by not asking for the next chunk.
        """
        size = min(FIRST_CHUNK_STEPS, self._max_chunk_steps)
        running = self._running_reports()
        if self.step >= epochs or not all(running):  # resumed: done its steps, or ended, but not recorded so
            yield [[self.final_chunk(report, "completed")] if going and self.step >= epochs else
                   [] if going else [self._ended_chunk(report)] for report, going in enumerate(running)]  # fmt: skip
        while self.step < epochs and any(self._running_reports()):
            n_steps = min(size, epochs - self.step, self._max_chunk_steps)
            before = self.step_seconds
            chunks = self.advance(n_steps)
            size = next_chunk_steps(n_steps, self.step_seconds - before)
            last = self.step >= epochs
            reports = []
            for report, chunk in enumerate(chunks):
                if chunk is None:
                    reports.append([])
                elif chunk.status == "converged" or (chunk.status is None and last):
                    reports.append([chunk, self.final_chunk(report, chunk.status or "completed")])
                else:
                    reports.append([chunk])
            yield reports

    def advance(self, n_steps: int) -> list[Chunk | None]:
        """Apply up to `n_steps` updates to every running member; one Chunk per report (None for a report that
        had ended before). Each running report's `last_step_times` becomes the time (`time.perf_counter()`) of
        its last step in the call: the call's start plus its share of the call's steps of the call's time."""
        first_step, before = self.step, self.steps
        was_running = self._running_reports()
        outputs, steps, started, seconds = self._timed_call(n_steps)
        rows, _, member_steps, status, last_row, last_step, *_ = outputs
        rows, last_row, last_step = rows.numpy()[: len(steps)], last_row.numpy(), last_step.numpy()
        if self.pooled:
            updates, statuses = [self.step - first_step], [pooled_status(status.numpy())]
        else:
            updates, statuses = member_steps.numpy() - before, [STATUS_NAMES[int(code)] for code in status.numpy()]
        call_steps = max(self.step - first_step, 1)
        chunks: list[Chunk | None] = []
        for report in range(self.reports):
            if not was_running[report]:
                chunks.append(None)
                continue
            self.last_step_times[report] = started + seconds * min(updates[report] / call_steps, 1.0)
            kept = steps < first_step + updates[report]  # a member's rows end at the step it stopped
            last_finite = None
            if last_step[report] >= first_step:
                last_finite = self._frame(last_step[report : report + 1], last_row[report][None, :])
            history = self._frame(steps[kept], rows[kept, report])
            chunks.append(Chunk(history, int(updates[report]), statuses[report], last_finite))
        return chunks

    def advance_rows(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Apply up to `n_steps` updates to every running member, as `advance` does, but return the call's kept
        rows as they come: their steps, and the rows [rows, reports, columns but `step`]. A member's rows end at
        the step it stopped (`steps` after the call); those after it are not its."""
        outputs, steps, _, _ = self._timed_call(n_steps)
        return steps, outputs[0].numpy()[: len(steps)]

    def end_rows(self) -> np.ndarray:
        """Each report's row at its current state [reports, columns but `step`], finite or not."""
        if self._end is None:
            self._call(0)
        return self._end[1]

    def _running_reports(self) -> list[bool]:
        running = [status is None for status in self.statuses]
        return [any(running)] if self.pooled else running

    def report_step(self, report: int) -> int:
        """A report's updates so far: its member's, or the pooled batch's."""
        return self.step if self.pooled else int(self.steps[report])

    def report_best_loss(self, report: int) -> float:
        """A report's lowest finite loss so far: its member's, or the lowest of the pooled batch's members."""
        best = self.best_losses
        return float(best.min() if self.pooled else best[report])

    def current_row(self, report: int) -> pd.DataFrame | None:
        """A report's row at the current state as a one-row frame, or None if it isn't finite.

        It comes from the last compiled call, which evaluates the state it ends on (a call of no steps if none
        ran yet), so it is computed exactly as every other row.
        """
        if self._end is None:
            self._call(0)
        row = self._end[1][report]
        return self._frame(np.array([self.report_step(report)]), row[None, :]) if np.all(np.isfinite(row)) else None

    def final_chunk(self, report: int, status: str) -> Chunk:
        """A report's row of its final state, which no update follows, and its end `status` ("diverged" instead
        if that state isn't finite)."""
        row = self.current_row(report)
        if row is None:
            empty = self._frame(np.zeros(0, np.int64), np.zeros((0, len(self.columns) - 1), self.dtype))
            return Chunk(empty, 0, "diverged", None)
        best = self.best_losses
        if self.pooled:  # every member's final state that is finite
            losses = self._end[2]
            best = np.where(np.isfinite(losses), np.minimum(best, losses), best)
        else:
            best[report] = min(best[report], float(row["loss"].iat[0]))
        self.state.best.assign(best)
        return Chunk(row, 0, status, row)

    def _ended_chunk(self, report: int) -> Chunk:
        """The end of a report that had stopped when this batch was restored (its run was killed before it
        recorded that): its final row if it converged, else none, as diverged."""
        codes = self.state.status.numpy()
        converged = (codes == CONVERGED).any() if self.pooled else codes[report] == CONVERGED
        return self.final_chunk(report, "converged" if converged else "diverged")

    def member_ends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        """Each member's flat start and current parameters, its loss there, its steps and its status (None
        while it runs)."""
        if self._end is None:
            self._call(0)
        return self._starts, self.layout.flat_params(), self._end[2], self.steps, self.statuses

    def state_variables(self) -> dict[str, Any]:
        """Everything a resumed batch needs: parameters, optimizer state, each member's steps, status, best loss
        and plateau counter, by their keys in a checkpoint."""
        optimizer = self.update.state()
        return {"params": self.layout.params, **self.state.saved(), **({"optimizer": optimizer} if optimizer else {})}

    def restored(self) -> None:
        """After `state_variables` were loaded from a checkpoint: the batch's clock is its furthest member's."""
        self.state.restored()
        self._end = None

    def member_states(self) -> dict[str, Any]:
        """Every member's state as a run alone's `state_variables`, stacked on a first axis of members: the
        parameters in their shapes, a slot as its members' rows, and a value the members share repeated."""
        import tensorflow as tf

        if self.members == 1:
            return tf.nest.map_structure(lambda variable: variable.numpy()[None], self.state_variables())
        names = list(self.layout.params)
        params = {name: self.layout.unstacked(name, variable.numpy()) for name, variable in self.layout.params.items()}
        optimizer = []
        for variable, parameter in zip(self.update.state(), self.update.slot_parameters(), strict=True):
            value = variable.numpy()
            if parameter is not None:
                optimizer.append(self.layout.unstacked(names[parameter], value))
            else:  # shared by the members (the iteration count)
                optimizer.append(np.broadcast_to(value, [self.members, *value.shape]))
        state = {"params": params}
        for key, variable in self.state.saved().items():
            state[key] = variable.numpy()[:, None]  # a run alone's is a vector of one member
        return {**state, **({"optimizer": optimizer} if optimizer else {})}

    def _frame(self, steps: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=self.columns[1:])
        frame.insert(0, "step", steps.astype(np.int64))
        return frame


class RunView:
    """One report of a batch seen as the run it stands for: what a `tapelab.record.RunRecord` reads."""

    def __init__(self, batch: Batch, report: int) -> None:
        self.batch, self.report = batch, report
        self.columns, self.param_columns = batch.columns, batch.param_columns

    @property
    def jit_compile(self) -> bool:
        return self.batch.jit_compile

    @property
    def pooled(self) -> bool:
        """Whether the run is a pooled batch of members (a multi-start run), with `member_ends`."""
        return self.batch.pooled

    @property
    def step_seconds(self) -> float:
        return self.batch.step_seconds / self.batch.reports  # its share of the batch's compiled calls

    @property
    def step(self) -> int:
        return self.batch.report_step(self.report)

    @property
    def last_step_time(self) -> float | None:
        """When (`time.perf_counter()`) its last step so far ran, estimated within the batch's call that ran it."""
        return self.batch.last_step_times[self.report]

    @property
    def best_loss(self) -> float:
        return self.batch.report_best_loss(self.report)

    def current_row(self) -> pd.DataFrame | None:
        return self.batch.current_row(self.report)

    def member_ends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        return self.batch.member_ends()

    def step_graph_def(self) -> bytes:
        return self.batch.loop.step_graph_def()

    def graph_def(self) -> bytes:
        return self.batch.loop.graph_def()
