"""tapelab: optimisation experiments with tf.GradientTape, configured by Hydra.

From Python (see `tapelab.api`): `tapelab.run(*overrides)` trains a run in-process, `tapelab.load(dir)` and
`tapelab.load_sweep(dir)` read runs and sweeps back; `tapelab.ConfigError` is a config mistake, and
`tapelab.Interrupted` a run stopped by Ctrl-C or SIGTERM.
Importing tapelab changes nothing in the process: no environment variable, logging filter or matplotlib
backend, and TensorFlow is imported only when a run trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tapelab.api import Run, Study, load, load_study, load_sweep, run, run_study
    from tapelab.errors import ConfigError
    from tapelab.interrupts import Interrupted

__version__ = "0.1.0"
__all__ = ["ConfigError", "Interrupted", "Run", "Study", "load", "load_study", "load_sweep", "run", "run_study"]


def __getattr__(name: str) -> Any:
    """The API on first use, so that `import tapelab` (and the command line's start) stays light."""
    if name == "ConfigError":
        from tapelab.errors import ConfigError

        return ConfigError
    if name == "Interrupted":
        from tapelab.interrupts import Interrupted

        return Interrupted
    if name in __all__:
        from tapelab import api

        return getattr(api, name)
    raise AttributeError(f"module 'tapelab' has no attribute {name!r}")
