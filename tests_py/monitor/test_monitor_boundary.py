"""The monitor modules read an ExecutorCore only through its read interface
(``ExecutorCore._monitor_view()``), never through its private attributes:
a newcomer changing the executor's insides then has one place to keep
working, not five modules to search."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import caudal
from caudal import ExecutorCore

MODULES = (
    "_executor/stats.py",
    "_executor/tuner.py",
    "_executor/recorder.py",
    "integrations/prometheus.py",
    "integrations/plots.py",
)
ALLOWED = {"_monitor_view"}  # the read interface itself
# Names these modules give an executor object.
EXECUTOR_NAMES = {"executor", "ex", "exe", "_executor", "core"}


def private_members() -> set[str]:
    """ExecutorCore's private attributes and methods (not dunders)."""
    names = set(ExecutorCore.__slots__) | set(vars(ExecutorCore))
    return {n for n in names if n.startswith("_") and not n.startswith("__")} - ALLOWED


def _is_executor(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in EXECUTOR_NAMES
    if isinstance(node, ast.Attribute):  # self._executor, view.executor
        return node.attr in EXECUTOR_NAMES
    return False


def reach_ins(source: str) -> list[tuple[int, str]]:
    """(line, what) of each read of an executor's private attribute: ``x._a``
    where x names an executor or ``_a`` is one of ExecutorCore's private
    members (on anything but ``self``), and ``getattr(x, "_a")``."""
    private = private_members()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in ALLOWED:
                continue
            on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if _is_executor(node.value) or (attr in private and not on_self):
                found.append((node.lineno, f"{ast.unparse(node.value)}.{attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            attr = node.args[1].value
            if (
                attr.startswith("_")
                and attr not in ALLOWED
                and (_is_executor(node.args[0]) or attr in private)
            ):
                found.append((node.lineno, f"{node.func.id}(..., {attr!r})"))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_monitor_modules_do_not_read_executor_privates(module):
    path = Path(caudal.__file__).parent / module
    assert reach_ins(path.read_text()) == [], f"{module} reads an executor's private attribute"


@pytest.mark.parametrize(
    "snippet",
    [
        "def f(executor):\n    return executor._engine.step_stats()",
        "def f(ex):\n    return ex._tuner",
        "class C:\n    def f(self):\n        return self._executor._l2",
        "def f(view):\n    return view.owner._own_pool",
        "def f(executor):\n    return getattr(executor, '_recorder', None)",
    ],
)
def test_the_check_finds_a_reach_in(snippet):
    assert reach_ins(snippet) != []


def test_the_check_allows_the_read_interface_and_own_attributes():
    source = inspect.cleandoc(
        """
        class C:
            def __init__(self, executor):
                self._engine = executor._monitor_view().engine
                self._engine.step_stats()
        """
    )
    assert reach_ins(source) == []
    assert "_engine" in private_members() and "_tuner" in private_members()
