"""Step functions for tests_py/integrations/test_scale_out_ray.py.

They run in Ray worker processes, which import them from this module by
name (the test puts tests_py on the workers' PYTHONPATH), so they leave
their traces in files: a worker's memory is not the test's.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


class ParseError(ValueError):
    """A step's own exception type, raised remotely."""


def parse(text: str) -> list[int]:
    return [int(t) for t in text.split(",")]


def score(numbers: list[int], context: dict) -> dict:
    """Remote, sync, writes the context."""
    context["scored_on"] = os.getpid()
    context.pop("drop_me", None)
    return {"sum": sum(numbers), "pid": os.getpid()}


async def enrich(scored: dict) -> dict:
    """Remote, async def: awaited on the worker."""
    await asyncio.sleep(0)
    return {**scored, "enriched_on": os.getpid()}


def strict_parse(text: str) -> int:
    raise ParseError(f"not a number: {text!r}")


def die_once(marker: str) -> int:
    """Kills its own worker process on the first attempt, succeeds after."""
    m = Path(marker)
    if not m.exists():
        m.write_text(str(os.getpid()))
        os._exit(1)
    return os.getpid()


def counted(arg: tuple[str, int]) -> int:
    """Appends a line per call to the file arg[0]; returns arg[1] squared."""
    path, x = arg
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x * x


def slow(folder: str) -> str:
    """Marks that it started, then sleeps; a cancelled task is interrupted
    (KeyboardInterrupt) and says so; only an uncancelled one finishes."""
    d = Path(folder)
    (d / "started").write_text(str(os.getpid()))
    try:
        for _ in range(600):
            time.sleep(0.1)
    except KeyboardInterrupt:
        (d / "interrupted").write_text("")
        raise
    (d / "finished").write_text("")
    return "done"


def where(_data: object = None) -> int:
    return os.getpid()


class Embedder:
    """A step with costly set-up: one instance per actor."""

    def __init__(self, scale: int = 10) -> None:
        folder = os.environ["CAUDAL_TEST_SETUP_DIR"]
        Path(folder, f"setup-{os.getpid()}-{scale}").write_text("")
        self.pid = os.getpid()
        self.table = {i: i * scale for i in range(100)}

    def __call__(self, x: int) -> tuple[int, int]:
        return self.table[x], self.pid


class Fragile:
    """An actor step whose process dies on the first call (marker file)."""

    def __init__(self) -> None:
        folder = os.environ["CAUDAL_TEST_SETUP_DIR"]
        Path(folder, f"fragile-{os.getpid()}").write_text("")

    def __call__(self, marker: str) -> int:
        m = Path(marker)
        if not m.exists():
            m.write_text(str(os.getpid()))
            os._exit(1)
        return os.getpid()


def gather(scored: dict, context: dict) -> dict:
    """Local by choice: runs in the driver (the CLI process)."""
    return {**scored, "driver": os.getpid(), "ctx": dict(context)}


def _registry() -> dict:
    from caudal import Step

    return {
        "parse": parse,
        "score": score,
        "enrich": enrich,
        "gather": Step(gather, backend="local"),
    }


REGISTRY = _registry()


def slow_once(folder: str) -> int:
    """The first attempt marks that it started and sleeps (its node is
    killed meanwhile); the next returns at once."""
    d = Path(folder)
    if not (d / "started").exists():
        (d / "started").write_text(str(os.getpid()))
        time.sleep(60)
    return os.getpid()


def identity(x):
    return x


def make_lock(_x=None):
    import threading

    return threading.Lock()


class Echo:
    """An actor-pool step that returns its input."""

    def __call__(self, x):
        return x


def die_always(_x=None):
    """Kills its worker process every time (a crash Ray cannot recover)."""
    os._exit(1)


async def enrich_or_fail(scored: dict) -> dict:
    """enrich, failing while the tests' BROKEN marker exists."""
    if (Path(os.environ["CAUDAL_TEST_SETUP_DIR"]) / "BROKEN").exists():
        raise RuntimeError("enrich is broken")
    return await enrich(scored)


RESUME_REGISTRY = dict(REGISTRY, enrich=enrich_or_fail)


def die_then_fail_once(folder: str) -> int:
    """First attempt: kills its worker. Second: raises an ordinary error.
    Then succeeds (its pid)."""
    d = Path(folder)
    if not (d / "died").exists():
        (d / "died").write_text("")
        os._exit(1)
    if not (d / "failed").exists():
        (d / "failed").write_text("")
        raise ValueError("an ordinary failure")
    return os.getpid()


def pair(x: int) -> tuple:
    """An output shaped like (output, changes): it is the output, whole."""
    return (x, {"looks": "like changes"})


def pair_and_context(x: int, context: dict) -> tuple:
    context["seen"] = x
    return (x, None)


def task_name(_x=None) -> str:
    import ray

    return ray.get_runtime_context().get_task_name()


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
