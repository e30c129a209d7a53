"""What a study keeps of each member while its batch trains: the running best loss, the first step at which it
meets each target, and the loss at log-spaced steps and at those first steps."""

from __future__ import annotations

import numpy as np
import pandas as pd

POINTS_PER_DECADE = 40


def kept_steps(budget: int, per_decade: int = POINTS_PER_DECADE) -> np.ndarray:
    """Log-spaced steps, `per_decade` per decade, rounded and without repeats (so every step while they are
    less than one apart: to 22 at 40 per decade), from 0 to `budget`, which is always kept."""
    if budget < 1:
        return np.array([0], np.int64)
    logs = np.arange(0, np.log10(budget) * per_decade + 1) / per_decade
    steps = np.unique(np.round(10.0**logs).astype(np.int64))
    return np.unique(np.concatenate([[0], steps[steps < budget], [budget]]))


class MemberCurves:
    """Every member's curve, fed the batch's rows chunk by chunk.

    `f_star` is each member's minimum value (NaN where the study estimates it afterwards): where it is known,
    the first step meeting each target is found exactly, at every step; where not, afterwards, from the kept
    steps (`tapelab.study.tables`).
    """

    def __init__(self, f_star: np.ndarray, targets: np.ndarray, budget: int) -> None:
        self.f_star = np.asarray(f_star, np.float64)
        self.targets = np.asarray(targets, np.float64)
        self.kept = kept_steps(budget)
        members = len(self.f_star)
        self.best = np.full(members, np.inf)  # each member's lowest finite loss so far
        self.last_step = np.full(members, -1, np.int64)  # each member's last finite row: its step and loss
        self.last_loss = np.full(members, np.nan)
        self.hits = np.full((members, len(self.targets)), -1, np.int64)  # first step meeting each target, -1: none
        self._records: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def take(self, steps: np.ndarray, losses: np.ndarray, valid: np.ndarray, first: int = 0) -> None:
        """Rows of losses [rows, n] of members `first` … `first` + n - 1 at `steps` ([rows, n]), where `valid`
        says which are the member's own (rows after a member stopped are not)."""
        part = slice(first, first + losses.shape[1])
        losses = np.where(valid, np.asarray(losses, np.float64), np.nan)
        running = np.fmin.accumulate(np.vstack([self.best[None, part], losses]), axis=0)[1:]
        self.best[part] = running[-1]
        gaps = np.maximum(running - self.f_star[None, part], 0.0)  # NaN where f* is to be estimated
        keep = valid & np.isin(steps, self.kept)
        hits = self.hits[part]  # a view: set in place
        newly = (gaps[-1][:, None] <= self.targets[None, :]) & (hits < 0)
        for member in np.flatnonzero(newly.any(axis=1)):
            wanted = newly[member]
            rows = np.searchsorted(-gaps[:, member], -self.targets[wanted], side="left")  # gaps never rise
            hits[member, wanted] = steps[rows, member]
            keep[rows, member] = True
        finite = np.isfinite(losses)
        seen = finite.any(axis=0)
        last_row = len(losses) - 1 - np.argmax(finite[::-1], axis=0)
        members = np.arange(losses.shape[1])
        self.last_step[part] = np.where(seen, steps[last_row, members], self.last_step[part])
        self.last_loss[part] = np.where(seen, losses[last_row, members], self.last_loss[part])
        self._record(keep, steps, losses, running, first)

    def _record(self, keep: np.ndarray, steps: np.ndarray, losses: np.ndarray, running: np.ndarray, first: int) -> None:
        row_index, member_index = np.nonzero(keep)
        self._records.append(
            (first + member_index, steps[row_index, member_index], losses[row_index, member_index], running[keep])
        )

    def finish(self) -> None:
        """Keep each member's last finite row, its end as a run alone records it (a run that diverged ends at the
        row before the one that wasn't finite)."""
        ended = self.last_step >= 0
        members = np.flatnonzero(ended)
        self._records.append((members, self.last_step[ended], self.last_loss[ended], self.best[ended]))

    def table(self) -> pd.DataFrame:
        """The kept points: member, step, loss and best loss so far, by member and step."""
        parts = [np.concatenate(column) for column in zip(*self._records, strict=True)] if self._records else [[]] * 4
        frame = pd.DataFrame(dict(zip(("member", "step", "loss", "best_loss"), parts, strict=True)))
        frame = frame.astype({"member": np.int64, "step": np.int64, "loss": np.float64, "best_loss": np.float64})
        return frame.sort_values(["member", "step"], kind="stable").drop_duplicates(["member", "step"])
