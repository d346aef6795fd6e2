"""How many times one execute calls into caudal._core, per path.

docs/DESIGN "The one rule of the hot path": an execution whose step
finishes without suspending (or a cache hit) makes one native call, which
runs the step's first attempt; an attempt that suspends, one native call
before it and one after. These tests count the calls the Python
layer makes into the native module during one ``execute`` and pin them:
exactly on the paths through ``execute``'s fast path (a plain success, a
cache miss stored, a cache hit), as an upper bound on the general paths
(a retry, a failure).

What is counted: calls made from Python code (``sys.monitoring`` CALL
events, this thread only) whose callee belongs to caudal._core: its
functions and types, methods of its objects, and the functions the engine
hands out bound to itself (``Engine._fast_calls(resume)``, bound to a
``caudal._core._HotPath``). Reads of native properties and operators on native
objects (``len(ctx)``, ``ctx[k]``) are not calls here and are not counted.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types

import pytest

import caudal
from caudal import ExecutorCore, OptimizationConfig, RetryStrategy, Step, StepResult, _core
from caudal._executor.core import _go_on

CORE = _core.__name__


def _native_class(cls: type) -> bool:
    return any(k.__module__ == CORE for k in cls.__mro__)


def _is_native(fn: object) -> bool:
    """Whether calling ``fn`` enters caudal._core."""
    if isinstance(fn, type):
        return _native_class(fn)  # constructing a native type
    if isinstance(fn, types.MethodType):  # a bound method: native if its function is
        return isinstance(fn.__func__, types.BuiltinFunctionType) and (
            getattr(fn.__func__, "__module__", None) == CORE or _native_class(type(fn.__self__))
        )
    if isinstance(fn, types.BuiltinFunctionType):  # a C function, or a C method bound
        if getattr(fn, "__module__", None) == CORE:
            return True
        owner = fn.__self__
        if isinstance(owner, types.ModuleType):
            return owner.__name__ == CORE
        return owner is not None and _native_class(type(owner))
    objclass = getattr(fn, "__objclass__", None)  # a method descriptor called unbound
    if isinstance(objclass, type):
        return _native_class(objclass)
    return _native_class(type(fn))  # a callable native object


class NativeCalls:
    """Records the native calls this thread makes inside the ``with`` block
    (names, in order), using a free ``sys.monitoring`` tool id."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._tool: int | None = None
        self._thread = threading.get_ident()

    def _on_call(self, code, offset, fn, arg0):
        if threading.get_ident() == self._thread and _is_native(fn):
            self.names.append(getattr(fn, "__name__", None) or repr(fn))

    def __enter__(self) -> NativeCalls:
        mon = sys.monitoring
        free = [t for t in range(6) if mon.get_tool(t) is None]
        if not free:
            pytest.fail("no free sys.monitoring tool id to count native calls with")
        self._tool = free[-1]
        mon.use_tool_id(self._tool, "caudal native-call counter")
        mon.register_callback(self._tool, mon.events.CALL, self._on_call)
        mon.set_events(self._tool, mon.events.CALL)
        return self

    def __exit__(self, *exc: object) -> None:
        mon = sys.monitoring
        mon.set_events(self._tool, 0)
        mon.register_callback(self._tool, mon.events.CALL, None)
        mon.free_tool_id(self._tool)

    def __len__(self) -> int:
        return len(self.names)


async def native_calls_of(ex: ExecutorCore, step, data) -> tuple[StepResult, list[str]]:
    """One execute, and the native calls it made."""
    with NativeCalls() as calls:
        result = await ex.execute(step, data)
    return result, calls.names


async def echo(x):
    return x


CACHED = OptimizationConfig(enable_cache_optimization=True)


# ------------------------------------------------------- the fast path


async def test_a_plain_success_makes_one_call():
    ex = ExecutorCore()
    step = Step(echo, "echo")
    await ex.execute(step, 0)  # first use: the step's analysis is not the hot path
    result, names = await native_calls_of(ex, step, 1)
    assert result.success and result.output == 1
    assert names == ["_start"], names


async def test_a_plain_function_step_is_the_same_path():
    ex = ExecutorCore()
    await ex.execute(echo, 0)
    result, names = await native_calls_of(ex, echo, 1)
    assert result.output == 1
    assert names == ["_start"], names


async def test_a_step_that_suspends_makes_one_call_before_and_one_after():
    async def sleepy(x):
        await asyncio.sleep(0)
        return x

    ex = ExecutorCore()
    step = Step(sleepy, "sleepy")
    await ex.execute(step, 0)
    result, names = await native_calls_of(ex, step, 1)
    assert result.success and result.output == 1
    assert names == ["_start", "_succeed"], names


async def test_a_cache_miss_stored_makes_one_call():
    ex = ExecutorCore(CACHED)
    step = Step(echo, "cached")
    await ex.execute(step, 0)
    result, names = await native_calls_of(ex, step, 1)  # a new input: a miss
    assert result.success and not result.cache_hit
    assert names == ["_start"], names
    hit = await ex.execute(step, 1)
    assert hit.cache_hit and hit.output == 1  # ...that was stored


async def test_a_cache_hit_makes_one_call():
    ex = ExecutorCore(CACHED)
    step = Step(echo, "cached")
    await ex.execute(step, 1)
    result, names = await native_calls_of(ex, step, 1)
    assert result.cache_hit and result.output == 1
    assert len(names) == 1, names


# ----------------------------------------------------- the general paths


def flaky_step(max_attempts: int) -> tuple[dict, Step]:
    """A step that raises ValueError while failures["left"] > 0 (counting
    down), then echoes its input; retried without a wait."""
    failures = {"left": 0}

    async def flaky(x):
        if failures["left"]:
            failures["left"] -= 1
            raise ValueError("not yet")
        return x

    retry = RetryStrategy(max_attempts=max_attempts, base_delay=0)
    return failures, Step(flaky, "flaky", retry=retry)


async def test_a_retry_makes_at_most_two_calls_per_attempt():
    # One failed attempt (ValueError, no wait before the next), then a
    # success: before and after each attempt, nothing else.
    failures, step = flaky_step(max_attempts=3)
    ex = ExecutorCore()
    await ex.execute(step, 0)
    failures["left"] = 1
    result, names = await native_calls_of(ex, step, 1)
    assert result.success and result.attempts == 2
    assert len(names) <= 2 * result.attempts, names


async def test_a_retry_without_a_wait_makes_one_call_between_attempts():
    # The failed attempt's report starts the next attempt in the same call:
    # _start (whose attempt raised), _fail (which restarts), _succeed.
    failures, step = flaky_step(max_attempts=4)
    ex = ExecutorCore()
    await ex.execute(step, 0)
    failures["left"] = 3
    result, names = await native_calls_of(ex, step, 1)
    assert result.success and result.attempts == 4 and result.output == 1
    assert names == ["_start", "_fail", "_fail", "_fail", "_succeed"], names


async def test_a_failure_without_retries_makes_at_most_two_calls():
    async def broken(x):
        raise ValueError(x)

    ex = ExecutorCore()
    step = Step(broken, "broken")
    await ex.execute(step, 0)
    result, names = await native_calls_of(ex, step, 1)
    assert not result.success and result.attempts == 1
    assert len(names) <= 2, names


# ------------------------------------------------------ the counter itself


async def test_the_counter_sees_an_added_native_call():
    # What the pins above would miss if the counter did not see it: a
    # wrapper that makes one more native call per execute.
    ex = ExecutorCore()
    step = Step(echo, "echo")
    await ex.execute(step, 0)
    start = ex._start

    def start_and_more(*args):
        _core._clock_offset_ns()
        return start(*args)

    ex._start = start_and_more
    result, names = await native_calls_of(ex, step, 1)
    assert result.output == 1
    assert len(names) == 2, names
    assert "_clock_offset_ns" in names


def test_what_belongs_to_the_native_module():
    ex = ExecutorCore()
    begin, succeed, fail, start = ex._engine._fast_calls(_go_on)
    assert _is_native(begin) and _is_native(succeed) and _is_native(fail) and _is_native(start)
    assert _is_native(ex._engine.step_stats)  # a method of a native object
    assert _is_native(_core.cache_key) and _is_native(caudal.Context)
    assert _is_native(caudal.Context().set)
    assert not _is_native(len) and not _is_native(echo) and not _is_native(ex.execute)
    assert not _is_native(threading.get_ident) and not _is_native(dict)
