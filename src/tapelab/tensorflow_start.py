"""Importing TensorFlow without its start-up notices, and a run without its log noise.

TensorFlow's C++ libraries print a few notices while they load, some before TensorFlow applies its log
level (`TF_CPP_MIN_LOG_LEVEL`): absl's "All log messages before absl::InitializeLog()…", oneDNN's "custom
operations are on" and "Could not find cuda drivers", each once per library; the CPU instructions it was
not built for; and, at the first device query, the failed CUDA probe of a machine without a GPU. They say
nothing about a run. tapelab imports TensorFlow with standard error passed through a filter that drops
exactly these lines and lets every other line through as it comes, errors included.
`TF_CPP_MIN_LOG_LEVEL=0` asks for everything, and gets the notices too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

# A glog-style prefix: severity, date, time, thread, file:line.
_PREFIX = r"[IWE]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] "
NO_DRIVER = re.compile(_PREFIX + r"Could not find cuda drivers on your machine, GPU will not be used\.")
NOTICES = [
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(_PREFIX + r"oneDNN custom operations are on\."),
    NO_DRIVER,
    re.compile(_PREFIX + r"This TensorFlow binary is optimized to use available CPU instructions"),
    re.compile(r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."),
]
# Dropped only after NO_DRIVER: the probe of a driver that isn't there.
NO_DRIVER_PROBE = re.compile(_PREFIX + r"failed call to cuInit: ")
FILTER_DRAIN_SECONDS = 5.0  # after the block, for the filter to copy what is left in the pipe


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, and its first device query, without the start-up notices (see the module)."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow as tf

        return tf
    with stderr_without_notices():
        import tensorflow as tf

        tf.config.list_physical_devices()  # TensorFlow probes for CUDA here, inside the filter
    return tf


@contextmanager
def stderr_without_notices() -> Iterator[None]:
    """For the block, standard error (file descriptor 2, where C++ writes) goes through `NoticeFilter`; a
    process without one (fd 2 closed, or no `sys.stderr`) runs the block as it is."""
    if sys.stderr is None:
        yield
        return
    sys.stderr.flush()
    try:
        terminal = os.dup(2)
    except OSError:
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    notice_filter = NoticeFilter(read_end, terminal)
    notice_filter.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end: the filter reads to its end and stops
        notice_filter.join(FILTER_DRAIN_SECONDS)  # longer only if a child process holds the pipe open
        if not notice_filter.is_alive():  # else the filter keeps its copy of the terminal, open
            os.close(terminal)


class NoticeFilter(threading.Thread):
    """Copies lines from a pipe to `terminal`, dropping TensorFlow's start-up notices."""

    def __init__(self, pipe: int, terminal: int) -> None:
        super().__init__(name="tensorflow-notice-filter", daemon=True)
        self._pipe, self._terminal = pipe, terminal

    def run(self) -> None:
        no_driver = False
        with os.fdopen(self._pipe, "rb") as lines:
            for line in lines:
                text = line.decode(errors="replace").rstrip("\n")
                no_driver = no_driver or bool(NO_DRIVER.match(text))
                notice = any(pattern.match(text) for pattern in NOTICES)
                if not notice and not (no_driver and NO_DRIVER_PROBE.match(text)):
                    with contextlib.suppress(OSError):  # the terminal is gone: keep draining the pipe
                        os.write(self._terminal, line)


class _OneTracePerStructure(logging.Filter):
    """Each loop structure is traced once per process, so a sweep over several optimizers or objectives traces a
    few loops of the same code, and TensorFlow warns about "retracing". That warning is about this design,
    not a fault: drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextmanager
def quiet_tensorflow_logs() -> Iterator[None]:
    """For one run: no retracing warnings, and no INFO lines from absl (the checkpoint writer's timings)."""
    tensorflow_log, absl_log = logging.getLogger("tensorflow"), logging.getLogger("absl")
    retracing, absl_level = _OneTracePerStructure(), absl_log.level
    tensorflow_log.addFilter(retracing)
    absl_log.setLevel(max(absl_level, logging.WARNING))
    try:
        yield
    finally:
        tensorflow_log.removeFilter(retracing)
        absl_log.setLevel(absl_level)
