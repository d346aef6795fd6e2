"""The wheels `make wheels` leaves in dist/, each installed as a user would.

Run by `make test-wheels` (which builds them and sets CAUDAL_WHEELS_DIR);
a plain pytest run, which has no wheels to test, does not collect this
folder (tests_py/conftest.py). For each wheel:
a fresh venv of its own interpreter, `pip install` of the wheel (PyYAML,
its one dependency, comes from the package index), then, from a directory
outside the source tree: the import is the installed one, the extension
needs no Abseil, zstd or xxHash library of the machine's (the wheel carries
what it links), an execution with retries and the cache, and the CLI on the
example pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

WHEELS_DIR = os.environ.get("CAUDAL_WHEELS_DIR")
REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("3.11", "3.12", "3.13")


def _wheels() -> list[Path]:
    return sorted(Path(WHEELS_DIR).glob("caudal-*.whl")) if WHEELS_DIR else []


def _version_of(wheel: Path) -> str:
    m = re.search(r"-cp3(\d+)-cp3\d+-", wheel.name)
    assert m, f"not a CPython wheel: {wheel.name}"
    return f"3.{m.group(1)}"


def _interpreter(version: str) -> str:
    """pyenv's pythonX.Y, else the one on PATH (a pyenv shim for a version
    that is not selected is on PATH but does not run: each is tried)."""
    candidates = [
        str(p) for p in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    ]
    candidates.append(shutil.which(f"python{version}") or "")
    for p in filter(None, candidates):
        ok = subprocess.run([p, "-c", "import sys"], capture_output=True).returncode == 0
        if ok:
            return p
    pytest.fail(f"no python{version} on this machine to install its wheel into")


def _run(args: list, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    p = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw
    )
    assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def test_one_manylinux_wheel_per_supported_version_and_an_sdist():
    assert WHEELS_DIR, "set CAUDAL_WHEELS_DIR to the wheels' folder (make test-wheels does)"
    wheels = _wheels()
    assert sorted(_version_of(w) for w in wheels) == list(VERSIONS), [w.name for w in wheels]
    for w in wheels:
        assert re.search(r"-manylinux_\d+_\d+_x86_64\.whl$", w.name), w.name
    (sdist,) = Path(WHEELS_DIR).glob("caudal-*.tar.gz")
    listing = subprocess.run(
        ["tar", "tzf", str(sdist)], capture_output=True, text=True, check=True
    ).stdout.split()
    top = {"/".join(n.split("/")[1:3]) for n in listing}
    for needed in ("LICENSE", "CMakeLists.txt", "cmake/Dependencies.cmake", "cpp/caudal"):
        assert needed in top or any(t.startswith(needed) for t in top), needed
    assert not any(t.startswith((".venv", "build/", ".stamps")) for t in top)


# What the installed package does, run by the venv's interpreter.
USE = r"""
import asyncio, json, sys
import caudal, caudal._core
from caudal import ExecutorCore, OptimizationConfig, RetryStrategy, Step

calls = []

async def flaky(x):
    calls.append(x)
    if len(calls) == 1:
        raise ConnectionError("first call fails")
    return x * 2

async def main():
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True))
    step = Step(flaky, "flaky", retry=RetryStrategy(max_attempts=3, base_delay=0.0), cache=True)
    first = await ex.execute(step, 21)
    again = await ex.execute(step, 21)
    await ex.aclose()
    return first, again

first, again = asyncio.run(main())
print(json.dumps({
    "package": caudal.__file__, "core": caudal._core.__file__,
    "first": [first.success, first.output, first.attempts, first.cache_hit],
    "again": [again.success, again.output, again.cache_hit], "calls": len(calls),
}))
"""


@pytest.mark.parametrize("wheel", _wheels(), ids=lambda w: w.name)
def test_the_wheel_installs_and_runs_outside_the_source_tree(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    _run([_interpreter(_version_of(wheel)), "-m", "venv", venv], cwd=tmp_path)
    vpy = venv / "bin" / "python"
    _run([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel], cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()

    used = json.loads(_run([vpy, "-c", USE], cwd=work).stdout)
    site = venv.resolve()
    assert Path(used["package"]).resolve().is_relative_to(site), used
    assert used["first"] == [True, 42, 2, False], used
    assert used["again"] == [True, 42, True], used
    assert used["calls"] == 2, used

    # The extension's libraries: Abseil from the wheel's own caudal.libs,
    # zstd linked in, xxHash header-only; nothing of those from the system.
    core = Path(used["core"])
    ldd = _run(["ldd", core], cwd=work).stdout
    assert "not found" not in ldd, ldd
    for line in ldd.splitlines():
        if re.search(r"libabsl|libzstd|libxxhash", line):
            path = line.split("=>")[1].split("(")[0].strip()
            assert Path(path).resolve().is_relative_to(site), line
            assert "/caudal.libs/" in path, line
    assert not re.search(r"libzstd|libxxhash", ldd), ldd
    assert "libabsl" in ldd  # vendored, so the check above saw them

    # The CLI, on the example pipeline (its registry imported from `work`).
    for name in ("pipeline_demo.yaml", "pipeline_registry.py"):
        shutil.copy(REPO / "examples" / name, work / name)
    caudal_cli = venv / "bin" / "caudal"
    assert "validate" in _run([caudal_cli, "--help"], cwd=work).stdout
    _run(
        [caudal_cli, "validate", "pipeline_demo.yaml", "--registry", "pipeline_registry:REGISTRY"],
        cwd=work,
    )
    run = _run(
        [
            caudal_cli,
            "run",
            "pipeline_demo.yaml",
            "--registry",
            "pipeline_registry:REGISTRY",
            "--resolver",
            "pipeline_registry:resolver",
            "--input",
            '{"topic": "rivers"}',
            "--store",
            tmp_path / "checkpoints.db",
            "--no-progress",
            "--json",
        ],
        cwd=work,
    )
    outcome = json.loads(run.stdout)
    assert outcome["status"] == "completed", outcome
