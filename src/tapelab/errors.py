"""The one exception type for user mistakes."""


class ConfigError(ValueError):
    """A configuration value that tapelab cannot run with.

    The message names the key and what is allowed; the CLI prints it without a traceback.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
