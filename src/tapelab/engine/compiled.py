"""The compiled loop: trace, compile (XLA or the plain graph), a compile in the background, the fallback to
the plain graph when XLA can't compile, and the graphs TensorBoard shows."""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from tapelab.environ import restored_environ
from tapelab.objectives import Problem

log = logging.getLogger(__name__)

# jit_compile=auto: XLA once a run's estimated work, epochs × (1 + elements / XLA_ELEMENTS_PER_STEP), reaches
# XLA_MIN_WORK. Measured by scripts/bench.py: the plain graph costs ~50 µs a step on a small problem (a row
# written every step) plus ~9 ns per element of parameters and data, XLA ~0.04 µs plus ~0.7 ns, and XLA's
# compile ~0.15 s more than the plain graph's first call: they break even near 3000 steps.
XLA_MIN_WORK = 3000
XLA_ELEMENTS_PER_STEP = 5000
XLA_ISA_CAP = "--xla_cpu_max_isa=AVX"

# Set by the process's first XLA compile. XLA reads XLA_FLAGS then, once per process: nothing resets it.
XLA_STARTED = threading.Event()


class CannotCompile(Exception):
    """XLA can't compile a loop (an objective with an op XLA lacks); str(error) is XLA's reason."""


def wants_xla(setting: bool | None, epochs: int, problem: Problem, starts: int = 1) -> bool:
    """`jit_compile`: true or false as set; auto (None) turns XLA on where its compile pays for itself, for
    `starts` starts of `problem` (which share its constants)."""
    if setting is not None:
        return setting
    elements = starts * sum(np.size(value) for value in problem.start.values())
    elements += sum(np.size(value) for value in problem.constants.values())
    return epochs * (1 + elements / XLA_ELEMENTS_PER_STEP) >= XLA_MIN_WORK


class CompiledLoop:
    """`run_steps(n_steps)` as one `tf.function`, under XLA or as the plain graph; `step` (one training step,
    never run) is traced only for its graph."""

    def __init__(self, run_steps: Callable[[Any], Any], step: Callable[[], Any], jit_compile: bool) -> None:
        import tensorflow as tf

        self.jit_compile = jit_compile
        self._run_steps, self._step = run_steps, step
        self._function = tf.function(run_steps, jit_compile=jit_compile, autograph=False)
        self.compiled = False
        self._compiling: Future | None = None  # a compile started by `compile_in_background`
        self._failed_in_background: BaseException | None = None
        self._graph_def: bytes | None = None
        self._step_graph_def: bytes | None = None

    def trace(self) -> float:
        """Trace the loop if it isn't yet; return the seconds it took."""
        if self.compiled:
            return 0.0
        started = time.perf_counter()
        self._concrete()
        return time.perf_counter() - started

    def compile(self, fallback: bool = True) -> float:
        """Compile the loop if it isn't yet (XLA's compile, or the plain graph's instantiation) by a call of no
        steps; return the seconds it took. If XLA can't compile it: with `fallback`, the plain graph runs
        instead; without, `CannotCompile` is raised (also if it had fallen back earlier). A compile that
        `compile_in_background` started is waited for."""
        if not fallback and self.compiled and not self.jit_compile:
            raise CannotCompile("XLA could not compile this loop for an earlier run of the process")
        if self.compiled and self._compiling is None:
            return 0.0
        started = time.perf_counter()
        self.wait()
        if not self.compiled:
            if self._failed_in_background is not None and not fallback:
                raise self._failed_in_background  # no second attempt at what XLA already refused
            self.call(0, fallback)
        return time.perf_counter() - started

    def compile_in_background(self, executor: Executor) -> None:
        """Start XLA's compile of the traced loop in `executor`'s thread, which runs without the GIL while this
        thread goes on; `wait` waits for it. Only after XLA's first compile in the process: the first one sets
        XLA_FLAGS (`xla_without_fma`), which a thread must not change."""
        assert self.jit_compile and XLA_STARTED.is_set() and self._compiling is None
        if not self.compiled:
            self._compiling = executor.submit(self.call, 0, False)

    def wait(self) -> None:
        """Wait for a compile in the background, if one was started; `compile` raises its error."""
        if self._compiling is not None:
            compiling, self._compiling = self._compiling, None
            self._failed_in_background = compiling.exception()

    def call(self, n_steps: int, fallback: bool = True) -> tuple[Any, ...]:
        """Call the loop; if XLA can't compile it the first time, fall back to the plain graph (with `fallback`)
        or raise `CannotCompile`."""
        import tensorflow as tf

        try:
            with as_traced(), xla_without_fma() if self.jit_compile and not XLA_STARTED.is_set() else nullcontext():
                outputs = self._function(tf.constant(n_steps, tf.int64))
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            if self.compiled or not self.jit_compile:
                raise
            reason = str(error).strip().splitlines()[0][:300]
            if not fallback:
                raise CannotCompile(reason) from None
            log.warning("XLA can't compile this objective and optimizer, so the plain graph runs instead: %s", reason)
            self.jit_compile, self._graph_def = False, None
            self._function = tf.function(self._run_steps, autograph=False)
            with as_traced():
                outputs = self._function(tf.constant(n_steps, tf.int64))
        self.compiled = True
        if self.jit_compile:
            XLA_STARTED.set()
        return outputs

    def _concrete(self) -> Any:
        import tensorflow as tf

        return self._function.get_concrete_function(tf.TensorSpec([], tf.int64))

    def graph_def(self) -> bytes:
        """The serialized graph of the compiled loop, for TensorBoard (from the loop's own trace)."""
        if self._graph_def is None:
            self._graph_def = self._concrete().graph.as_graph_def().SerializeToString()
        return self._graph_def

    def step_graph_def(self) -> bytes:
        """The serialized graph of one training step, in the name scopes `loss`, `gradients`, `row` and `update`,
        for TensorBoard: the loop's body without its bookkeeping, traced once per structure and never run."""
        import tensorflow as tf

        if self._step_graph_def is None:
            graph_def = tf.function(self._step, autograph=False).get_concrete_function().graph.as_graph_def()
            self._step_graph_def = gradients_in_their_scope(graph_def).SerializeToString()
        return self._step_graph_def


@contextmanager
def xla_without_fma() -> Iterator[None]:
    """XLA_FLAGS with XLA's CPU instruction set capped at AVX, for the length of this block.

    On AVX2 CPUs XLA fuses a*b + c into one FMA instruction, which rounds once instead of twice, so its
    history would drift from the plain graph's and the seeds' by an ulp now and then. XLA reads XLA_FLAGS
    once, at the first XLA compile in the process: if that is this block's, the cap then holds for every
    later XLA computation of the process; if XLA started earlier, the cap comes too late (the README says
    more). A user's own `xla_cpu_max_isa` is left as it is.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_max_isa" in flags:
        yield
        return
    with restored_environ("XLA_FLAGS"):
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_ISA_CAP}".strip()
        yield


@contextmanager
def as_traced() -> Iterator[None]:
    """Run this thread's function calls as they were traced: without Grappler's graph rewrites.

    The plain graph then computes what eager TensorFlow (and the seeds) compute, in the same order:
    - Grappler's arithmetic optimizer turns a chain of additions into one AddN, which sums in another order:
      a·x² + b·x + c at x = 1.292 gives 1.9612643 instead of the seed's 1.9612641;
    - its dependency optimizer can drop the control edge that makes a step read a variable (for its loss and
      row) before the optimizer's update writes it; in about one new plain-graph loop in three, a step then
      computed its loss from the value its own update wrote (seen with Keras's SGD and RMSprop).
    XLA runs no Grappler. The option is set for the calls inside this block, in this thread only, through the
    eager context's function-call options (as `tensorflow.python.eager.context.function_executor_type` sets the
    executor). Without the rewrites a plain-graph step costs ~15% more, and the first call ~0.05 s less.
    """
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    options = context.context().function_call_options
    saved = copy.copy(options)
    config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    options.config_proto_serialized = config
    try:
        yield
    finally:
        context.context().function_call_options = saved


TAPE_OPS = re.compile(r"^(\^?)((?:gradient_tape/)+)(update/)?")  # a tape's op name, as an input (^: control)


def gradients_in_their_scope(graph_def: Any) -> Any:
    """`graph_def` with the tapes' ops moved into the scope of the step they belong to.

    A tape names the ops it adds `gradient_tape/<forward scope>/…` from the top level, whatever scope it is
    called in (`gradient_tape/gradient_tape/…` for a tape over a tape). The step's gradient, of the ops in
    `loss`, goes to `gradients/loss/…`; the tapes an optimizer runs itself (Newton's Hessian), of ops in
    `update`, go to `update/gradient_tape/…`.
    """

    def moved(name: str) -> str:
        match = TAPE_OPS.match(name)
        if match is None:
            return name
        control, tapes, update = match.groups()
        rest = name[match.end() :]
        return (
            f"{control}update/{tapes}{rest}" if update else f"{control}gradients/{tapes[len('gradient_tape/') :]}{rest}"
        )

    for node in graph_def.node:
        node.name = moved(node.name)
        node.input[:] = [moved(source) for source in node.input]
    return graph_def
