"""Writes that are never left half-done: write a temporary file beside the target, then rename it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path, temporary_name: str | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` in one rename, on error it is removed.

    The temporary is `.<name>.<pid>.tmp` beside `path`, or `temporary_name`, for a file whose readers would
    take that name for one of theirs (TensorBoard reads every file with "tfevents" in its name). `durable`
    flushes the file to disk before the rename; files rebuilt from others at will (a study's TensorBoard folder,
    thousands of small files) skip it.
    """
    temporary = path.with_name(temporary_name or f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        if durable:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
