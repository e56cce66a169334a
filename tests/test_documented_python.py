"""The README's Python examples call the library as it is: read top to bottom as a reader copies
them, every name is defined before it is used, every import resolves, every call into
`graphrec_jax` binds to its callee's signature (the names and number of its arguments), every
attribute read on a library object exists, and every config key set exists. A renamed method,
argument or key fails here, not in a user's session."""

from __future__ import annotations

import ast
import builtins
import dataclasses
import importlib
import inspect
import re
import types
import typing
from pathlib import Path

import ml_collections
import pytest

from graphrec_jax import default_config
from tests.helpers import config_has_key

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@dataclasses.dataclass(frozen=True)
class Instance:
    """A value known to be an instance of `cls`."""

    cls: type


class Opaque:
    """A value from outside the library (a DataFrame, a list): not checked."""


OPAQUE = Opaque()


def is_library(obj) -> bool:
    module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "") or ""
    return module == "graphrec_jax" or module.startswith("graphrec_jax.")


def returned(callee, call_text: str):
    """What a library call returns, as far as its annotation says."""
    if inspect.isclass(callee):
        return Instance(callee)
    target = callee.__func__ if inspect.ismethod(callee) else callee
    try:
        hint = typing.get_type_hints(target).get("return")
    except Exception as error:  # an annotation that does not resolve is a finding too
        message = f"{call_text}: cannot read the return annotation of {target.__qualname__}: {error}"
        raise AssertionError(message) from error
    if hint is ml_collections.ConfigDict:
        return ml_collections.ConfigDict  # a config: keys set on it are checked (see `Reader.assign`)
    if inspect.isclass(hint) and is_library(hint):
        return Instance(hint)
    return OPAQUE


class Reader:
    """Follows the README's Python top to bottom; `problems` collects what would fail."""

    def __init__(self):
        self.names: dict[str, object] = {}
        self.problems: list[str] = []
        self.checked_calls: list[str] = []

    def fail(self, node: ast.AST, message: str) -> None:
        self.problems.append(f"README python example, `{ast.unparse(node)}`: {message}")

    def run(self, source: str) -> None:
        for statement in ast.parse(source).body:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            self.imports(node)
        elif isinstance(node, ast.Assign):
            value = self.value(node.value)
            for target in node.targets:
                self.assign(target, value, node)
        elif isinstance(node, ast.Expr):
            self.value(node.value)
        else:
            raise AssertionError(f"the test does not read statements like `{ast.unparse(node)}`; extend it")

    def imports(self, node) -> None:
        for alias in node.names:
            try:
                if isinstance(node, ast.ImportFrom):
                    module = importlib.import_module(node.module)
                    if hasattr(module, alias.name):
                        value = getattr(module, alias.name)
                    else:  # a submodule, as `from package import module` imports it
                        value = importlib.import_module(f"{node.module}.{alias.name}")
                else:
                    value = importlib.import_module(alias.name)
            except ImportError as error:
                self.fail(node, f"import fails: {error}")
                value = OPAQUE
            self.names[alias.asname or alias.name.split(".")[0]] = value

    def assign(self, target: ast.expr, value, node) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = value
            return
        if isinstance(target, ast.Attribute):
            path, root = [], target
            while isinstance(root, ast.Attribute):
                path.insert(0, root.attr)
                root = root.value
            owner = self.value(root)
            if owner is ml_collections.ConfigDict and not config_has_key(default_config(), ".".join(path)):
                self.fail(node, f"config key {'.'.join(path)!r} does not exist")
            return
        raise AssertionError(f"the test does not read assignments like `{ast.unparse(node)}`; extend it")

    def value(self, node: ast.expr):
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            if hasattr(builtins, node.id):
                return OPAQUE
            self.fail(node, f"{node.id!r} is used before the examples define or import it")
            return OPAQUE
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        for child in ast.iter_child_nodes(node):  # literals, lists, keyword values, subscripts
            if isinstance(child, ast.expr):
                self.value(child)
        return OPAQUE

    def attribute(self, node: ast.Attribute):
        owner = self.value(node.value)
        if isinstance(owner, Instance):
            cls = owner.cls
            static = inspect.getattr_static(cls, node.attr, None)
            fields = {field.name for field in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
            annotated = any(node.attr in getattr(base, "__annotations__", {}) for base in cls.__mro__)
            if static is None and node.attr not in fields and not annotated:
                self.fail(node, f"{cls.__name__} has no attribute {node.attr!r}")
                return OPAQUE
            if isinstance(static, property):
                return OPAQUE
            if callable(static):
                return ("method", cls, getattr(cls, node.attr))
            return OPAQUE
        if owner is ml_collections.ConfigDict:
            return ml_collections.ConfigDict
        if isinstance(owner, types.ModuleType) or inspect.isclass(owner):
            if not hasattr(owner, node.attr):
                if is_library(owner):
                    self.fail(node, f"{owner.__name__} has no attribute {node.attr!r}")
                return OPAQUE
            return getattr(owner, node.attr)
        return OPAQUE

    def call(self, node: ast.Call):
        callee = self.value(node.func)
        for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
            self.value(argument)
        bound_self = []
        if isinstance(callee, tuple) and callee[0] == "method":
            _, cls, function = callee
            if not isinstance(inspect.getattr_static(cls, function.__name__), classmethod | staticmethod):
                bound_self = [object()]  # an instance method read off an instance
            callee = function
        if isinstance(callee, Opaque) or not callable(callee) or not is_library(callee):
            return OPAQUE
        if any(isinstance(arg, ast.Starred) for arg in node.args) or any(k.arg is None for k in node.keywords):
            raise AssertionError(f"the test does not read `*` / `**` arguments: `{ast.unparse(node)}`; extend it")
        signature = inspect.signature(callee)
        try:
            signature.bind(*bound_self, *(object() for _ in node.args), **{k.arg: object() for k in node.keywords})
        except TypeError as error:
            self.fail(node, f"does not match {getattr(callee, '__qualname__', callee)}{signature}: {error}")
        self.checked_calls.append(ast.unparse(node.func))
        return returned(callee, ast.unparse(node))


def read(text: str) -> Reader:
    reader = Reader()
    for block in python_blocks(text):
        reader.run(block)
    return reader


def test_readme_python_examples_match_the_library():
    reader = read(README.read_text())
    assert not reader.problems, "\n".join(reader.problems)
    # the walk reached the library: the Recommender's methods, the text encoder, the run and loop
    for expected in ("Recommender.from_checkpoint", "recommender.recommend", "recommender.explain", "encoder.encode"):
        assert expected in reader.checked_calls, f"{expected} was not checked; calls checked: {reader.checked_calls}"
    assert len(reader.checked_calls) >= 20


@pytest.mark.parametrize(
    "example, problem",
    [
        (
            "from graphrec_jax import Recommender\nr = Recommender.from_checkpoint('w')\n"
            "r.recommend(['a'], k=3, top=4)",
            "got an unexpected keyword argument 'top'",
        ),
        (
            "from graphrec_jax import Recommender\nr = Recommender.from_checkpoint('w')\nr.recomend(['a'])",
            "no attribute",
        ),
        ("from graphrec_jax import default_config\nc = default_config()\nc.train.epochs = 3", "'train.epochs'"),
        ("recommender.recommend(['a'], k=3)", "used before"),
        ("from graphrec_jax import Recomender", "import fails"),
        ("from graphrec_jax import TextEncoder\nTextEncoder.from_pretrained()", "missing a required argument"),
    ],
)
def test_a_stale_example_is_caught(example, problem):
    reader = read(f"```python\n{example}\n```")
    assert any(problem in line for line in reader.problems), reader.problems
