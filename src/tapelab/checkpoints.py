"""Every checkpoint format, and restoring one into a run alone.

A run alone (or a multi-start run) saves its state into its own `checkpoint/`. A batch saves one checkpoint
of every member's state into its first member's `checkpoint/batch/`, and in each member's `checkpoint/` a
`member.json` that points there, so that any launcher resumes each member alone. A checkpoint that doesn't
fit the run's loop (another structure, an older tapelab's layout) is refused with one line.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapelab.errors import ConfigError
from tapelab.run_summary import write_json_atomically
from tapelab.rundir import CHECKPOINTS

if TYPE_CHECKING:
    from tapelab.engine.batch import Batch

log = logging.getLogger(__name__)

BATCH_CHECKPOINTS = "batch"  # in the first member's checkpoint directory
MEMBER_FILE = "member.json"  # in each member's: where its batch's checkpoint is, and which member it is
UNRESTORED_VALUES = (  # TensorFlow's warnings as the objects of a restore that left values unused are freed
    "Detecting that an object or model or tf.train.Checkpoint is being deleted with unrestored values",
    "Value in checkpoint could not be found in the restored object",
    "An attribute in the restored object could not be found in the checkpoint",
)


class RunCheckpoint:
    """A run's own checkpoint of its batch's state, in `run_dir/checkpoint/`, the latest kept."""

    def __init__(self, batch: Batch, run_dir: Path) -> None:
        import tensorflow as tf

        self.batch, self.run_dir = batch, run_dir
        checkpoint = tf.train.Checkpoint(**batch.state_variables())
        self.manager = tf.train.CheckpointManager(checkpoint, run_dir / CHECKPOINTS, max_to_keep=1)

    def save(self, step: int) -> None:
        self.manager.save(checkpoint_number=step)

    def restore(self) -> None:
        """Load the run's latest checkpoint (a batch member that saved none of its own: its batch's), or raise
        ConfigError if it doesn't fit.

        A run killed while it saved its first checkpoint has none that is complete; it starts again from its
        first step, which gives the same history, and its rows already written are kept."""
        import tensorflow as tf

        latest = self.manager.latest_checkpoint
        if latest is not None:
            restore_quietly(lambda: restore_fitting(tf.train.Checkpoint(**self.batch.state_variables()), latest),
                            self.run_dir)  # fmt: skip
        elif not restore_member(self.batch.state_variables(), self.run_dir):
            log.info("%s holds no complete checkpoint: continuing from the first step", self.run_dir)
        self.batch.restored()


class BatchCheckpoint:
    """One checkpoint of every member's state, saved into the first member's `checkpoint/batch/`, with a pointer
    in each member's `checkpoint/` after the first save."""

    def __init__(self, batch: Batch, run_dirs: Sequence[Path]) -> None:
        import tensorflow as tf

        self.batch, self.run_dirs = batch, run_dirs
        self.variables = tf.nest.map_structure(lambda value: tf.Variable(value, trainable=False), batch.member_states())
        directory = run_dirs[0] / CHECKPOINTS / BATCH_CHECKPOINTS
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(**self.variables), directory, max_to_keep=1)
        self.pointed = False

    def save(self, step: int) -> None:
        """Save every member's state as the batch's checkpoint of `step`."""
        import tensorflow as tf

        states = self.batch.member_states()
        tf.nest.map_structure(lambda variable, value: variable.assign(value), self.variables, states)
        self.manager.save(checkpoint_number=step)
        if not self.pointed:  # after the first save: a member's checkpoint directory always holds a checkpoint
            batch = self.run_dirs[0] / CHECKPOINTS / BATCH_CHECKPOINTS
            for member, run_dir in enumerate(self.run_dirs):
                (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
                pointer = {"batch": os.path.relpath(batch, run_dir / CHECKPOINTS), "member": member}
                write_json_atomically(run_dir / CHECKPOINTS / MEMBER_FILE, {**pointer, "members": len(self.run_dirs)})
            self.pointed = True


def restore_member(state_variables: dict[str, Any], run_dir: Path) -> bool:
    """Load the state of the batch member whose run is in `run_dir` into a run alone's `state_variables`, from
    its batch's latest checkpoint; return False if the run was no batch member or its batch saved no complete
    checkpoint. Raises ConfigError if the checkpoint doesn't fit."""
    import tensorflow as tf

    pointer_file = run_dir / CHECKPOINTS / MEMBER_FILE
    if not pointer_file.exists():
        return False
    pointer = json.loads(pointer_file.read_text())
    latest = tf.train.latest_checkpoint(str(run_dir / CHECKPOINTS / pointer["batch"]))
    if latest is None:
        return False
    members = pointer["members"]
    stacked = tf.nest.map_structure(
        lambda variable: tf.Variable(tf.zeros([members, *variable.shape], variable.dtype), trainable=False),
        state_variables,
    )
    restore_quietly(lambda: restore_fitting(tf.train.Checkpoint(**stacked), latest), run_dir)
    member = pointer["member"]
    tf.nest.map_structure(lambda variable, batch: variable.assign(batch[member]), state_variables, stacked)
    return True


def restore_fitting(checkpoint: Any, path: str) -> None:
    """Restore `checkpoint` from `path`; AssertionError or ValueError unless every value on both sides matched."""
    status = None
    try:
        status = checkpoint.restore(path)
        status.assert_consumed()
    except (AssertionError, ValueError):
        if status is not None:
            status.expect_partial()  # TensorFlow would log each unmatched value again; the error names them
        raise


def restore_quietly(restore: Callable[[], None], run_dir: Path) -> None:
    """Run `restore`; if the checkpoint doesn't fit this run's loop, raise the one-line refusal.

    A restore that fails midway leaves objects that log a warning for each value they didn't restore when they
    are freed, which could be long after the refusal's line: they are freed here, unheard."""
    tensorflow_log = logging.getLogger("tensorflow")
    tensorflow_log.addFilter(not_about_unrestored_values)
    try:
        try:
            restore()
            return
        except (AssertionError, ValueError) as error:  # another structure, or an older tapelab's layout
            problem = " ".join(str(error).split())[:200]
        gc.collect()  # the error's frames are gone now, and with them the restore's objects
        raise ConfigError("resume", f"the checkpoint in {run_dir} does not fit this run's loop: {problem}")
    finally:
        tensorflow_log.removeFilter(not_about_unrestored_values)


def not_about_unrestored_values(record: logging.LogRecord) -> bool:
    """A logging filter that drops TensorFlow's warnings of values a restore left unused."""
    return not record.getMessage().startswith(UNRESTORED_VALUES)
