"""TensorBoard event files: scalars, histograms, the loop's graph and the run's hparams.

History rows are written by a compiled loop under a reset (v1) name scope, so tags carry no
`while/` prefix. Tags: `loss`, `grad_norm`, `lr`, `params/<column>`, `grads/<column>`,
histograms `params/<name>` for vector parameters, and `final_loss`, `best_loss` at the end. The
loop's graph is the run graph of the Graphs tab.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def scalar_tag(column: str, param_columns: list[str]) -> str:
    """The TensorBoard tag of a metrics.csv column."""
    if column in param_columns:
        return f"params/{column}"
    if column.startswith("grad_") and column[len("grad_") :] in param_columns:
        return f"grads/{column[len('grad_') :]}"
    return column


class TensorBoardSink:
    """Writes one run's event files into `log_dir`."""

    def __init__(
        self,
        log_dir: Path,
        columns: list[str],
        param_columns: list[str],
        vector_params: Mapping[str, slice],
    ) -> None:
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(str(log_dir))
        self._value_columns = [column for column in columns if column != "step"]
        self._tags = [scalar_tag(column, param_columns) for column in self._value_columns]
        first_param = self._value_columns.index(param_columns[0]) if param_columns else 0
        self._histograms = {
            f"params/{name}": slice(first_param + part.start, first_param + part.stop)
            for name, part in vector_params.items()
        }
        self._write_rows = tf.function(
            self._write_rows_in_graph,
            input_signature=[
                tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None, len(self._value_columns)], tf.float32),
            ],
        )

    def _write_rows_in_graph(self, steps, rows):
        import tensorflow as tf

        with self._writer.as_default():
            for i in tf.range(tf.shape(steps)[0]):
                with tf.compat.v1.name_scope(None):
                    for j, tag in enumerate(self._tags):
                        tf.summary.scalar(tag, rows[i, j], step=steps[i])
                    for tag, part in self._histograms.items():
                        tf.summary.histogram(tag, rows[i, part], step=steps[i])
        return tf.constant(True)

    def write_hparams(self, hparams: Mapping[str, Any], trial_id: str) -> None:
        """Record the run's hyperparameters for the HParams tab."""
        from tensorboard.plugins.hparams import api as hp

        with self._writer.as_default():
            hp.hparams(dict(hparams), trial_id=trial_id)

    def write_graph(self, graph: Any) -> None:
        """The training loop's graph (a tf.Graph), for the Graphs tab."""
        import tensorflow as tf

        with self._writer.as_default():
            tf.summary.graph(graph)

    def write(self, history: pd.DataFrame) -> None:
        """Write the rows of `history` (columns as in metrics.csv)."""
        if history.empty:
            return
        self._write_rows(history["step"].to_numpy(np.int64), history[self._value_columns].to_numpy(np.float32))
        self._writer.flush()  # on disk before the chunk's checkpoint, so a resume never writes a step twice

    def write_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars that summarise the run (the HParams tab's metric columns)."""
        import tensorflow as tf

        with self._writer.as_default():
            for tag, value in metrics.items():
                tf.summary.scalar(tag, value, step=step)

    def write_images(self, pictures: list[Path], step: int) -> None:
        """PNG files as image summaries, tagged `plots/<file name without .png>`."""
        import tensorflow as tf

        with self._writer.as_default():
            for picture in pictures:
                image = tf.io.decode_png(tf.io.read_file(str(picture)), channels=4)
                tf.summary.image(f"plots/{picture.stem}", image[None], step=step)

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
