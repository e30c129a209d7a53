"""README.md's Layout section lists every module under src/, each with its docstring's first sentence.

The list is one bullet per module, `- `tapelab/cli.py`: <first sentence>`, in the order of the paths. When a
module is added, moved or its docstring changes, the failure prints the whole list to paste into the section.
"""

from __future__ import annotations

import ast
import re

from conftest import ROOT

SRC = ROOT / "src"
PACKAGES = ("tapelab", "hydra_plugins")
MODULE_LINE = re.compile(r"- `[^`]+\.py`")


def first_sentence(docstring: str) -> str:
    """The docstring's first paragraph on one line, up to the full stop that ends its first sentence."""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]


def module_lines() -> list[str]:
    """The Layout section's list as src/ says it should be: every module, with its docstring's first sentence
    (a package's `__init__.py` only where it has a docstring)."""
    lines = []
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            docstring = ast.get_docstring(ast.parse(path.read_text()))
            name = path.relative_to(SRC).as_posix()
            if docstring is None and path.name == "__init__.py":
                continue
            assert docstring, f"src/{name} has no docstring: give it one, whose first sentence says what it does"
            lines.append(f"- `{name}`: {first_sentence(docstring)}")
    return lines


def layout_section(readme: str) -> list[str]:
    """The lines of README.md's `## Layout` section, up to the next section."""
    found = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, flags=re.DOTALL | re.MULTILINE)
    assert found, "README.md has no `## Layout` section"
    return found.group(1).splitlines()


def test_layout_lists_every_module_of_src_with_its_docstring() -> None:
    listed = [line for line in layout_section((ROOT / "README.md").read_text()) if MODULE_LINE.match(line)]
    expected = module_lines()
    missing = [line for line in expected if line not in listed]
    stale = [line for line in listed if line not in expected]
    assert listed == expected, (
        "README.md's Layout section is out of date with src/.\n"
        + "".join(f"  not in the README (or worded otherwise there): {line}\n" for line in missing)
        + "".join(f"  in the README, not in src/ as written: {line}\n" for line in stale)
        + "Replace the section's module list with these lines:\n\n"
        + "\n".join(expected)
    )


def test_first_sentence_joins_a_wrapped_line_and_stops_at_the_first_full_stop() -> None:
    docstring = "The loop: members trained in chunks,\neach one `tf.function` call. A run alone is one.\n\nMore."
    assert first_sentence(docstring) == "The loop: members trained in chunks, each one `tf.function` call."
    assert first_sentence("objective.starts=N: N start points, as one batch.") == (
        "objective.starts=N: N start points, as one batch."
    )
