"""A loss written on the command line: `objective=expression objective.expr="4*w + w**3"`.

The text is parsed with `ast.parse` and checked against a whitelist before anything runs; it is then
turned into a tree of small functions that apply TensorFlow ops. It is never passed to eval, exec or
compile: the only things an expression can do are arithmetic and the functions in FUNCTIONS.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from tapelab.errors import ConfigError
from tapelab.objectives.base import FLOAT32_MAX, Objective, Problem, finite_scalar, register_objective

# The callable names, each a TensorFlow op of one tensor (tf.math.<op>: tf.sin is tf.math.sin).
FUNCTIONS: dict[str, str] = {
    name: f"math.{name}" for name in ("sin", "cos", "tan", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "softplus")
}
BINARY_OPS: dict[type[ast.operator], str] = {
    ast.Add: "math.add",
    ast.Sub: "math.subtract",
    ast.Mult: "math.multiply",
    ast.Div: "math.truediv",
    ast.Pow: "math.pow",
}
ALLOWED = (
    f"numbers, names, + - * / ** (and unary - and +), parentheses, and one-argument calls of {', '.join(FUNCTIONS)}"
)
# Each level of operators and calls is a nested Python call when the loss is traced; TensorFlow's tracing
# runs out of Python's recursion limit between 200 and 250 levels, so stop well before.
MAX_DEPTH = 100
TOO_DEEP = f"is nested too deeply: at most {MAX_DEPTH} levels of operators and calls"
# Metric columns a trainable parameter must not shadow (its gradient column is `grad_<name>`).
RESERVED_COLUMNS = ("step", "loss", "grad_norm", "lr")
DEFAULT_START = 1.0  # of every name, while objective.init is null

Compiled = Callable[[Any, Mapping[str, Any]], Any]
"""Evaluates a checked expression: (the tensorflow module, name -> tensor) -> tensor."""


def check_column_names(key: str, names: Iterable[str]) -> None:
    """Trainable parameter names become metrics.csv columns: refuse names that would clash with others."""
    for name in names:
        if name in RESERVED_COLUMNS or name.startswith("grad_"):
            raise ConfigError(
                key,
                f"the parameter name {name!r} clashes with the metrics columns "
                f"({', '.join(RESERVED_COLUMNS)}, grad_<parameter>); rename it",
            )


def tf_attribute(tf: Any, dotted: str) -> Any:
    """`tf.math.sigmoid` from ("math.sigmoid"): a fixed attribute path, never user text."""
    target = tf
    for part in dotted.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class Checked:
    """A whitelisted expression: its evaluator and its names in order of first appearance."""

    evaluate: Compiled
    names: tuple[str, ...]


class _Compiler:
    """Walks a parsed expression, refusing every node outside the whitelist, and builds its evaluator."""

    def __init__(self, text: str, line_shift: int, column_shift: int) -> None:
        self.lines = text.splitlines() or [""]
        self.line_shift = line_shift
        self.column_shift = column_shift
        self.multiline = len(self.lines) + line_shift > 1
        self.names: list[str] = []
        self.depth = 0

    def where(self, line: int, column: int) -> str:
        """'at column N' (1-based, in characters), with the line when the expression spans several."""
        if line == 1:
            column += self.column_shift
        line += self.line_shift
        return f"at line {line}, column {column}" if self.multiline else f"at column {column}"

    def position(self, node: ast.AST, after: ast.AST | None = None) -> str:
        """Where `node` starts in the user's text; with `after`, where the first symbol after that operand is
        (the `.` of an attribute, the `[` of an index, the operator of a comparison)."""
        if after is None:
            line, byte_offset = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        else:
            line, byte_offset = self.next_symbol(after.end_lineno or 1, after.end_col_offset or 0)
        source = self.lines[line - 1] if line <= len(self.lines) else ""
        return self.where(line, len(source.encode()[:byte_offset].decode(errors="ignore")) + 1)  # ast counts bytes

    def next_symbol(self, line: int, byte_offset: int) -> tuple[int, int]:
        """The first character at or after (line, byte offset) that is not a space or a closing parenthesis."""
        while line <= len(self.lines):
            encoded = self.lines[line - 1].encode()
            while byte_offset < len(encoded) and encoded[byte_offset : byte_offset + 1] in (b" ", b"\t", b")"):
                byte_offset += 1
            if byte_offset < len(encoded):
                return line, byte_offset
            line, byte_offset = line + 1, 0
        return len(self.lines), len(self.lines[-1].encode())

    def source(self, node: ast.AST) -> str:
        """The text of `node` as the user wrote it (shortened)."""
        text = ast.get_source_segment("\n".join(self.lines), node) or ast.unparse(node)
        return text if len(text) <= 30 else text[:27] + "..."

    def refuse(self, node: ast.AST, what: str, after: ast.AST | None = None) -> ConfigError:
        where = self.position(node, after)
        return ConfigError("objective.expr", f"{what} is not allowed, {where}; allowed: {ALLOWED}")

    def compile(self, node: ast.AST) -> Compiled:
        """The evaluator of `node`, refusing expressions nested deeper than MAX_DEPTH."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError("objective.expr", TOO_DEEP)
            return self.compile_node(node)
        finally:
            self.depth -= 1

    def compile_node(self, node: ast.AST) -> Compiled:
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            if node.id in FUNCTIONS:
                raise self.refuse(node, f"the function name {node.id} without a call")
            if node.id not in self.names:
                self.names.append(node.id)
            name = node.id
            return lambda tf, values: values[name]
        if isinstance(node, ast.BinOp):
            if type(node.op) not in BINARY_OPS:
                raise self.refuse(node, f"the operator {operator_symbol(node.op)}", after=node.left)
            left, right = self.compile(node.left), self.compile(node.right)
            op = BINARY_OPS[type(node.op)]
            return lambda tf, values: tf_attribute(tf, op)(left(tf, values), right(tf, values))
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.UAdd):
                return self.compile(node.operand)
            if isinstance(node.op, ast.USub):
                operand = self.compile(node.operand)
                return lambda tf, values: tf.math.negative(operand(tf, values))
            raise self.refuse(node, f"the operator {operator_symbol(node.op)}")
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            raise self.refuse(node, describe(node), after=node.value)
        if isinstance(node, ast.Compare):
            raise self.refuse(node, describe(node), after=node.left)
        raise self.refuse(node, describe(node))

    def number(self, node: ast.Constant) -> Compiled:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(node, describe(node))
        try:
            as_float = float(value)
        except OverflowError:
            as_float = float("inf")
        if not abs(as_float) <= FLOAT32_MAX:
            raise ConfigError(
                "objective.expr",
                f"the number {self.source(node)} is beyond float32's range, {self.position(node)}",
            )
        return lambda tf, values: tf.constant(as_float, loss_dtype(tf, values))

    def call(self, node: ast.Call) -> Compiled:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, f"calling {describe(node.func)}")
        function = node.func.id
        if function not in FUNCTIONS:
            raise self.refuse(node, f"a call of {function}")
        if node.keywords:
            raise self.refuse(node, f"a keyword argument in the call of {function}")
        if any(isinstance(argument, ast.Starred) for argument in node.args):
            raise self.refuse(node, f"unpacking (*) in the call of {function}")
        if len(node.args) != 1:
            raise self.refuse(node, f"calling {function} with {len(node.args)} arguments (it takes exactly one)")
        argument = self.compile(node.args[0])
        op = FUNCTIONS[function]
        return lambda tf, values: tf_attribute(tf, op)(argument(tf, values))


def loss_dtype(tf: Any, values: Mapping[str, Any]) -> Any:
    """The dtype an expression computes in: its names' (parameters and constants share the run's dtype)."""
    return next(iter(values.values())).dtype if values else tf.float32


def operator_symbol(op: ast.AST) -> str:
    symbols = {
        ast.FloorDiv: "//",
        ast.Mod: "%",
        ast.MatMult: "@",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.BitOr: "|",
        ast.BitAnd: "&",
        ast.BitXor: "^",
        ast.Invert: "~",
        ast.Not: "not",
        ast.Eq: "==",
        ast.NotEq: "!=",
        ast.Lt: "<",
        ast.LtE: "<=",
        ast.Gt: ">",
        ast.GtE: ">=",
        ast.Is: "is",
        ast.IsNot: "is not",
        ast.In: "in",
        ast.NotIn: "not in",
    }
    return symbols.get(type(op), type(op).__name__)


def describe(node: ast.AST) -> str:
    """A short, user-facing name for a construct the whitelist refuses."""
    if isinstance(node, ast.Constant):
        kinds = {str: "a string", bytes: "a bytes literal", bool: "the constant", complex: "a complex number"}
        kind = kinds.get(type(node.value), "the constant")
        return f"{kind} {ast.unparse(node)[:30]}"
    if isinstance(node, ast.Attribute):
        return f"attribute access (.{node.attr})"
    if isinstance(node, ast.Compare):
        return f"the comparison {operator_symbol(node.ops[0])}"
    names = {
        ast.Subscript: "indexing ([...])",
        ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.List: "a list",
        ast.Tuple: "a tuple",
        ast.Set: "a set",
        ast.Dict: "a dict",
        ast.BoolOp: "and/or",
        ast.IfExp: "a conditional expression (if/else)",
        ast.NamedExpr: "an assignment (:=)",
        ast.JoinedStr: "an f-string",
        ast.Starred: "unpacking (*)",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
        ast.Call: "a call",
    }
    return names.get(type(node), f"a {type(node).__name__} expression")


def check_expression(expr: str) -> Checked:
    """Parse `expr` and check every node against the whitelist; raise ConfigError("objective.expr") if not."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError("objective.expr", f"is empty; write a loss such as 4*w + w**3 ({ALLOWED})")
    text = expr.strip()
    skipped = expr[: len(expr) - len(expr.lstrip())]
    compiler = _Compiler(text, skipped.count("\n"), len(skipped) - (skipped.rfind("\n") + 1))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        where = compiler.where(error.lineno or 1, error.offset) if error.offset else "at the end"
        raise ConfigError("objective.expr", f"is not a valid expression ({error.msg}), {where}") from None
    except (RecursionError, MemoryError):
        raise ConfigError("objective.expr", TOO_DEEP) from None
    try:
        evaluate = compiler.compile(tree.body)
    except RecursionError:
        raise ConfigError("objective.expr", TOO_DEEP) from None
    return Checked(evaluate, tuple(compiler.names))


@register_objective("expression")
@dataclass
class Expression(Objective):
    """A loss written as a formula of named scalars, e.g. 4*w + w**3 (seed 003)."""

    inputs = ("init",)
    expr: str = MISSING
    # A start value for every name, constants included; null starts every name at 1.0. Typed Any and null by
    # default, so that an init given on the command line or in a config replaces it: a default dict would be
    # merged with it. Checked in build.
    init: Any = None
    constants: list[str] = MISSING  # names that stay fixed at their init value

    def build(self, seed: int) -> Problem:
        checked = check_expression(self.expr)
        names = checked.names
        if not names:
            raise ConfigError("objective.expr", f"has no parameter to train: {self.expr.strip()!r} names none")
        outside = [name for name in self.constants if name not in names]
        if outside or len(set(self.constants)) != len(self.constants):
            raise ConfigError(
                "objective.constants",
                f"must list distinct names of the expression ({', '.join(names)}), got {list(self.constants)}",
            )
        trainable = [name for name in names if name not in self.constants]
        if not trainable:
            raise ConfigError("objective.constants", f"leaves nothing to train: every name ({', '.join(names)})")
        check_column_names("objective.expr", trainable)
        init = dict.fromkeys(names, DEFAULT_START) if self.init is None else self.init
        if not isinstance(init, Mapping) or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in init.values()
        ):
            raise ConfigError("objective.init", f"must map each name to a number, e.g. {{w: 1.0}}, got {init}")
        unstarted = [name for name in names if name not in init]
        unknown = [str(name) for name in init if name not in names]
        if unstarted or unknown:
            problems = [f"needs a start value for {', '.join(unstarted)}"] if unstarted else []
            if unknown:
                problems.append(f"has {', '.join(unknown)}, which the expression does not use")
            example = ", ".join(f"{name}: 1.0" for name in names)
            raise ConfigError(
                "objective.init",
                f"{' and '.join(problems)}; give one value per name, e.g. objective.init={{{example}}}",
            )
        start = {name: finite_scalar(f"objective.init.{name}", init[name]) for name in trainable}
        fixed = {name: finite_scalar(f"objective.init.{name}", init[name]) for name in self.constants}
        return self.problem(start, fixed)

    def formula(self, params, constants):
        import tensorflow as tf

        return check_expression(self.expr).evaluate(tf, {**constants, **params})
