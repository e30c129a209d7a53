"""User mistakes: the exception that names the key, and the one way the CLI reports it."""

import sys
from typing import NoReturn

USAGE_ERROR = 2  # the exit code of a config value tapelab refuses


class ConfigError(ValueError):
    """A configuration value that tapelab cannot run with.

    The message names the key and what is allowed; the CLI prints it without a traceback.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def exit_on_user_error(error: Exception) -> NoReturn:
    """Print `error` as one line on stderr and exit with USAGE_ERROR (no traceback)."""
    print(f"Error in config: {error}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
