"""python/caudal/_core.pyi describes the native module as built.

``mypy.stubtest`` imports caudal._core and compares it with the stub: every
public name of the module is in the stub and the other way round, with the
same kind (class, function, property, read-only or not). What it may report
without failing is in tests_py/stubtest_allowlist.txt, each entry with its
reason. The config fields are also checked against ``fields()``: the same
names, in the same order, with the same types.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import caudal
from caudal import _core

HERE = Path(__file__).resolve().parents[1]  # tests_py
STUB = Path(caudal.__file__).resolve().parent / "_core.pyi"
ALLOWLIST = HERE / "stubtest_allowlist.txt"


def test_stubtest_finds_nothing_unexplained(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.fail(
            "mypy is not installed; it is a dev requirement: "
            "pip install -r requirements-dev.txt (or `make deps`)",
            pytrace=False,
        )
    # The child imports the caudal (and _core) under test, not another one.
    package_root = str(Path(caudal.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        # A cache of this run's own: runs side by side (or an interrupted
        # one) must not share, and corrupt, one SQLite cache.
        "MYPY_CACHE_DIR": str(tmp_path / "mypy_cache"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "caudal._core",
            "--allowlist",
            str(ALLOWLIST),
            "--mypy-config-file",
            os.devnull,  # the stub alone, not the project's settings
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=HERE,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _stub_class(name: str) -> ast.ClassDef:
    tree = ast.parse(STUB.read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def test_the_stub_has_every_config_field_with_its_type():
    cls = _stub_class("OptimizationConfig")
    stub = [
        (n.target.id, ast.unparse(n.annotation))
        for n in cls.body
        if isinstance(n, ast.AnnAssign)
        and isinstance(n.target, ast.Name)
        and not n.target.id.startswith("__")
    ]
    runtime = [(f["name"], f["type"]) for f in _core.OptimizationConfig.fields()]
    assert stub == runtime
