"""docs/scale-out.md's Python examples run as written, each as a script of
its own against a local Ray instance it starts (its ``ray.init()``, or Ray's
start on first use), on loopback, beside any cluster the machine runs."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "scale-out.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def ray_env():
    """An environment where ``ray.init()`` starts a Ray instance of its own:
    no RAY_ADDRESS, and a temp dir of its own (where Ray looks for a
    cluster recorded by ``ray start``; short, for Ray's socket paths), on
    loopback."""
    tmp = tempfile.mkdtemp(prefix="rd", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    yield env, Path(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def run(script: str, env: dict, cwd: Path) -> str:
    path = cwd / "example.py"
    path.write_text(script)
    p = subprocess.run(
        [sys.executable, str(path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Started a local Ray instance" in p.stderr  # not a cluster found on the machine
    return p.stdout


def test_the_doc_has_the_examples_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) == 2, [b.splitlines()[0] for b in blocks]
    for b in blocks:
        ast.parse(b)


def test_quick_start_runs_as_written(ray_env):
    env, tmp = ray_env
    out = run(python_blocks()[0], env, tmp)
    scores = ast.literal_eval(out.strip().splitlines()[-1])
    assert len(scores) == 3 and all(isinstance(s, int) and s > 0 for s in scores)


def test_actor_pool_example_runs_as_written(ray_env):
    env, tmp = ray_env
    driver = """

import asyncio
from caudal import ExecutorCore

async def main():
    executor = ExecutorCore()
    results = await asyncio.gather(*(executor.execute(step, t) for t in ("a", "bb", "ccc")))
    print([r.output for r in results])

asyncio.run(main())
"""
    out = run(python_blocks()[1] + driver, env, tmp)
    outputs = ast.literal_eval(out.strip().splitlines()[-1])
    assert outputs == [{"model": "large", "length": n} for n in (1, 2, 3)]
