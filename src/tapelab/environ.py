"""Environment variables changed for the length of a block, and put back as they were after it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def restored_environ(*names: str) -> Iterator[None]:
    """When the block ends, the environment variables `names` hold what they held before it (or are unset)."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
