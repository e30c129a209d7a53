"""User mistakes: the exception that names the key, and the one way the CLI reports it."""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from tapelab.environ import restored_environ

USAGE_ERROR = 2  # the exit code of a config value tapelab refuses
FULL_ERROR = "HYDRA_FULL_ERROR"  # "1": Hydra re-raises instead of printing its own report and exiting 1


class ConfigError(ValueError):
    """A configuration value that tapelab cannot run with.

    The message names the key and what is allowed; the CLI prints it without a traceback.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem

    @classmethod
    def of(cls, error: Exception) -> ConfigError:
        """`error` (tapelab's, Hydra's or OmegaConf's) as a ConfigError with the CLI's one-line message."""
        if isinstance(error, ConfigError):
            return error
        text = one_line(error)
        key, separator, problem = text.partition(": ")
        if not separator or " " in key:  # a message that names no key
            key, problem = "", text
        return cls(key, problem)


class PastHydra(BaseException):
    """An exception carried past Hydra, which turns a callback's exceptions into warnings and goes on, and
    prints a failed job's error before raising it. This is not an `Exception`, so it passes both.

    tapelab's callbacks carry a ConfigError, which the command line reports as one line with exit 2, or the
    error of a user's own loss function called while it is checked, which keeps its traceback; `tapelab.run`
    raises whatever it carries. Code that drives tapelab's Hydra callbacks by other ways than these two gets it
    as it is.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def exit_on_user_error(error: Exception) -> NoReturn:
    """Print `error` as one line on stderr and exit with USAGE_ERROR (no traceback)."""
    print(f"Error in config: {one_line(error)}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


@contextmanager
def config_errors_exit_with_usage_error() -> Iterator[None]:
    """Around a `@hydra.main` function: a mistake Hydra finds while composing the config is one line, exit 2.

    Hydra prints such errors itself (several lines, a hint about HYDRA_FULL_ERROR) and exits 1; with
    HYDRA_FULL_ERROR=1 it re-raises them instead, so that is set for the duration and they are caught here.
    Other exceptions keep their traceback. A user who set HYDRA_FULL_ERROR=1 gets Hydra's full traces.
    """
    if os.environ.get(FULL_ERROR) == "1":
        yield
        return
    with restored_environ(FULL_ERROR):
        os.environ[FULL_ERROR] = "1"
        try:
            yield
        except (ConfigError, CompactHydraException, OmegaConfBaseException) as error:
            exit_on_user_error(error)
        except PastHydra as carried:
            if isinstance(carried.error, ConfigError):
                exit_on_user_error(carried.error)
            raise carried.error from None


def unknown_key(key: str, known: Sequence[str]) -> ConfigError:
    """The mistake of `key`, which the config doesn't have: the nearest of the `known` keys beside it (by
    difflib), then all of them."""
    parent, _, name = key.rpartition(".")
    nearest = difflib.get_close_matches(name, known, n=3)
    guess = f" (did you mean {' or '.join(nearest)}?)" if nearest else ""
    beside = f"; {parent or 'the top level'} has {', '.join(known)}" if known else ""
    return ConfigError(key, f"not a key of the config{guess}{beside}")


def one_line(error: Exception) -> str:
    """`error` as `<key>: <problem>` on one line, for a ConfigError or an error Hydra or OmegaConf raise; its
    links to Hydra's docs are to the installed version's."""
    return _installed_docs(_one_line(error))


def _installed_docs(text: str) -> str:
    """`text` with its links to Hydra's docs made links to the installed version's (Hydra 1.3 links to 1.2's)."""
    from hydra import __version__

    version = ".".join(__version__.split(".")[:2])
    return re.sub(r"https://hydra\.cc/docs/\d+\.\d+/", f"https://hydra.cc/docs/{version}/", text)


def _one_line(error: Exception) -> str:
    """`one_line` but for the links."""
    if isinstance(error, ConfigError):
        return _collapse(str(error))
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if group:
            from tapelab.extras import missing_extra

            missing = missing_extra(group, option)
            if missing is not None:
                return f"{group}: {option} {missing}"
            return f"{group}: no option '{option}'; choose from {', '.join(error.options)}"
    if isinstance(error, OverrideParseException):
        key = re.match(r"[~+]*([^=~+]*)", error.override).group(1).strip() or error.override
        problem = re.sub(r"^Error parsing override '.*'\s*", "", error.message)
        problem = re.sub(r"\s*See (\S+) for details", r" (the syntax: \1)", problem)
        return f"{key}: cannot read '{error.override}': {_collapse(problem)}"
    text = str(error)
    found = re.search(r"An item is already at '([^']+)'.*?'([^']+)'.*?'(\+\+[^']+)'", text, flags=re.DOTALL)
    if found:  # +key=value for a key that exists
        return f"{found.group(1)}: already in the config; set it with {found.group(2)} (or {found.group(3)})"
    found = re.search(r"Could not delete from config\. '([^']+)' does not exist", text)
    if found:  # ~key for a key that does not
        return f"{found.group(1)}: not a key of the config, nothing to delete"
    found = re.match(r"(?:Ambiguous value for argument|Sweep parameters) '([~+]*)([^=]*)=(.*)'", text)
    if found:  # a sweep (key=a,b, key=range(…)) in a single run
        key, value = found.group(2), found.group(3)
        if text.startswith("Ambiguous"):
            return (
                f"{key}: {value} is several values; sweep over them with -m, or write {key}=[{value}] for a list "
                f"or \"{key}='{value}'\" for a string"
            )
        return f"{key}: {value} is a sweep; run it with -m"
    cause = error.__cause__
    if isinstance(error, CompactHydraException) and isinstance(cause, OmegaConfBaseException):
        found = re.search(r"To append to your config use (\+\S+)", str(error))
        if found and isinstance(cause, (AttributeError, KeyError)):  # ConfigAttributeError, ConfigKeyError
            key = cause.full_key or found.group(1).lstrip("+").split("=")[0]
            return str(unknown_key(key, _keys_beside(cause)))
        if cause.full_key:
            return f"{cause.full_key}: {_problem(cause)}"
        override = re.search(r"override (\S+?)=", str(error))
        return f"{override.group(1)}: {_problem(cause)}" if override else _collapse(f"{error}: {_problem(cause)}")
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        return f"{key}: {_problem(error)}" if key else _problem(error)
    return _collapse(re.sub(r"\n\s*Config search path:.*", "", str(error), flags=re.DOTALL))


def _problem(error: OmegaConfBaseException) -> str:
    """What OmegaConf says is wrong, without its `full_key:`/`object_type=` lines, in tapelab's words."""
    text = "\n".join(
        line for line in str(error).splitlines() if not re.match(r"\s*(full_key|object_type|reference_type)\b", line)
    )
    for pattern, replacement in _REWORDED:
        text = re.sub(pattern, replacement, text)
    return _collapse(text)


def _article(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


_REWORDED = [
    (
        r"^Value '(.*)' of type '.*' could not be converted to (\w+)$",
        lambda found: f"'{found.group(1)}' is not {_article(found.group(2).lower())}",
    ),
    (r"^Value '(.*)' is not a valid bool \(type .*\)$", r"'\1' is not a bool (true or false)"),
    (r"^Invalid value '(.*)', expected one of \[(.*)\]$", r"'\1' is not one of \2"),
    (r"^field '.*' is not Optional$", "cannot be null"),
]


def _keys_beside(error: OmegaConfBaseException) -> list[str]:
    """The keys of an unknown key's parent node (none if it isn't a DictConfig)."""
    parent = getattr(error, "parent_node", None)
    try:
        return [str(key) for key in parent.keys() if key != "hydra"]
    except Exception:  # not a DictConfig
        return []


def _collapse(text: str) -> str:
    """`text` on one line: its lines joined, blank ones dropped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = ""
    for line in lines:
        joined += line if not joined else (" " if joined[-1] in ".:;," else "; ") + line
    return joined
