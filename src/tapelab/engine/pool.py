"""The process's pool of batches, one per loop structure and size, kept for later runs to reuse their traced
and compiled loop; and the compile of a batch's loop ahead, while an earlier batch ends."""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from tapelab.config import StopConfig
from tapelab.engine.batch import Batch
from tapelab.engine.compiled import XLA_STARTED
from tapelab.objectives import Problem
from tapelab.optimizers import OptimizerConfig

log = logging.getLogger(__name__)

MAX_IDLE_LOOPS = 16  # loop structures a process keeps for later runs


def loop_key(problem: Problem, optimizer: OptimizerConfig, stop: StopConfig, jit_compile: bool,
             dtype: str = "float32") -> str:  # fmt: skip
    """Everything a batch's traced loop is built from, but its number of members; runs with the same key can
    share it."""

    def shapes(values: dict[str, np.ndarray]) -> tuple:
        return tuple((name, np.shape(value)) for name, value in values.items())

    parts = (problem.structure, shapes(problem.start), shapes(problem.constants), optimizer.structure())
    return repr((*parts, stop.grad_tol is not None, stop.plateau_active(), jit_compile, dtype))


def batch_key(problems: Sequence[Problem], optimizer: OptimizerConfig, stop: StopConfig, jit_compile: bool,
              pooled: bool, dtype: str) -> str:  # fmt: skip
    """The key of the batches that can train these members."""
    return f"{loop_key(problems[0], optimizer, stop, jit_compile, dtype)} members={len(problems)} pooled={pooled}"


class LoopPool:
    """Idle batches by key, at most MAX_IDLE_LOOPS keys (the least recently used dropped first), and the thread
    in which loops compile ahead. `reset()` empties it, as in a fresh process (XLA's start, which reads
    XLA_FLAGS once per process, is not undone)."""

    def __init__(self) -> None:
        self._idle: OrderedDict[str, list[Batch]] = OrderedDict()
        self._borrowed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._compile_thread: ThreadPoolExecutor | None = None

    def reset(self) -> None:
        """Drop every idle batch: the next run of each structure traces and compiles its loop again."""
        with self._lock:
            self._idle.clear()

    def idle(self) -> list[Batch]:
        """The idle batches, least recently used first."""
        with self._lock:
            return [batch for batches in self._idle.values() for batch in batches]

    @contextmanager
    def borrowed(self, key: str, make: Callable[[], Batch]) -> Iterator[Batch]:
        """The idle batch of `key` if there is one, else `make()`; kept for later runs when the block ends."""
        with self._lock:
            waiting = self._idle.get(key)
            batch = waiting.pop() if waiting else None
            self._borrowed[key] += 1
        if batch is None:
            batch = make()
        try:
            yield batch
        finally:
            with self._lock:
                self._borrowed[key] -= 1
            self.keep(key, batch)

    def keep(self, key: str, batch: Batch) -> None:
        """Keep `batch` idle for a later run of `key`."""
        with self._lock:
            self._idle.setdefault(key, []).append(batch)
            self._idle.move_to_end(key)
            while len(self._idle) > MAX_IDLE_LOOPS:
                self._idle.popitem(last=False)

    @contextmanager
    def batch_for(self, problems: Sequence[Problem], optimizers: Sequence[OptimizerConfig], lrs: Sequence[float],
                  log_every: int, stops: Sequence[StopConfig], jit_compile: bool, pooled: bool = False,
                  dtype: str = "float32") -> Iterator[Batch]:  # fmt: skip
        """A batch of `problems` (one per member, a run alone's one) loaded with the members' values: an idle one
        of that loop structure and size if there is one, else a new one; kept idle when the block ends."""
        key = batch_key(problems, optimizers[0], stops[0], jit_compile, pooled, dtype)
        make = lambda: Batch(problems[0], optimizers[0], stops[0], jit_compile, len(problems), pooled, dtype)  # noqa: E731
        with self.borrowed(key, make) as batch:
            batch.load(problems, optimizers, lrs, log_every, stops)
            yield batch

    def compile_ahead(self, problems: Sequence[Problem], optimizers: Sequence[OptimizerConfig],
                      lrs: Sequence[float], log_every: int, stops: Sequence[StopConfig], dtype: str = "float32",
                      ) -> None:  # fmt: skip
        """Get the XLA batch that a later `batch_for` of these members will borrow ready while this thread goes
        on (a batched sweep's next batch, while this one ends): made, loaded and traced here, compiled in a
        thread of its own. Does nothing before XLA's first compile in the process, or if a batch of that key is
        idle or in use (a group split by `max_batch`: the next batch gets it)."""
        key = batch_key(problems, optimizers[0], stops[0], True, False, dtype)
        with self._lock:
            if not XLA_STARTED.is_set() or self._idle.get(key) or self._borrowed[key]:
                return
        log.debug("compiling the loop of the next batch (%d members) meanwhile", len(problems))
        batch = Batch(problems[0], optimizers[0], stops[0], True, len(problems), dtype=dtype)
        batch.load(problems, optimizers, lrs, log_every, stops)
        batch.trace()
        with self._lock:
            if self._compile_thread is None:
                self._compile_thread = ThreadPoolExecutor(1, thread_name_prefix="tapelab-compile")
        batch.loop.compile_in_background(self._compile_thread)
        self.keep(key, batch)


POOL = LoopPool()  # the process's
