"""The first attempt runs inside the engine's ``_start`` call.

``execute`` makes one native call that begins the execution, calls the step
and sends its coroutine its first value, in the caller's task, exactly where
``await`` would have sent it. A step that finishes without suspending ends
in that call; one that suspends goes on through ``_go_on``, which must give
the coroutine everything ``await`` gives it: the values and exceptions the
task sends or throws, ``close()``, the caller's context. These tests pin
each of those, and that the execution's accounting is right on every exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import sys

import pytest

from caudal import ExecutorCore, OptimizationConfig, RetryStrategy, Step


def stats(ex: ExecutorCore) -> dict:
    return ex.get_optimization_stats()["execution"]


def step_recording_its_end():
    """A step that waits an hour; `closed` gets its input when it ends."""
    closed: list = []

    async def forever(x):
        try:
            await asyncio.sleep(3600)
        finally:
            closed.append(x)

    return closed, forever


class Ask:
    """Yields "question" to whoever drives the coroutine; its value is what
    that driver sends back."""

    def __await__(self):
        return (yield "question")


async def test_a_step_that_never_suspends_is_a_result_at_once():
    async def inc(x):
        return x + 1

    ex = ExecutorCore()
    results = [await ex.execute(inc, i) for i in range(100)]
    assert [r.output for r in results] == [i + 1 for i in range(100)]
    s = stats(ex)
    assert s["in_flight"] == 0 and s["successes"] == 100


async def test_a_step_that_suspends_many_times_gets_every_value_back():
    async def hops(x):
        total = x
        for i in range(5):
            await asyncio.sleep(0)
            total += i
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, 100)
        return total + await fut

    ex = ExecutorCore()
    r = await ex.execute(hops, 1)
    assert r.success and r.output == 1 + 10 + 100
    assert stats(ex)["in_flight"] == 0


async def test_concurrent_suspending_executions_never_mix_inputs():
    async def echo_later(x):
        await asyncio.sleep(0.001 * (x % 3))
        return x

    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True))
    results = await asyncio.gather(*(ex.execute(echo_later, i) for i in range(500)))
    assert [r.output for r in results] == list(range(500))
    assert stats(ex)["in_flight"] == 0


async def test_cancelling_a_suspended_step_reaches_the_step_and_ends_the_execution():
    seen = []
    started = asyncio.Event()

    async def forever(x):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as e:
            seen.append(e.args)
            raise

    ex = ExecutorCore()
    task = asyncio.create_task(ex.execute(Step(forever, "forever", max_retries=3), 1))
    await started.wait()
    task.cancel("stop it")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [("stop it",)]  # the step saw the task's own cancellation
    s = stats(ex)
    assert s["cancelled"] == 1 and s["failures"] == 0 and s["in_flight"] == 0
    assert s["steps"]["forever"]["attempts"] == 1


async def test_a_step_that_swallows_its_cancellation_returns_its_value():
    started = asyncio.Event()

    async def stubborn(x):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "kept going"

    ex = ExecutorCore()
    task = asyncio.create_task(ex.execute(stubborn, 1))
    await started.wait()
    task.cancel()
    r = await task  # as with a plain await: the step decided
    assert r.success and r.output == "kept going"
    assert stats(ex)["in_flight"] == 0


class Stop(BaseException):
    """Not an Exception: like KeyboardInterrupt or SystemExit."""


@pytest.mark.parametrize("suspend_first", [False, True])
async def test_a_base_exception_from_the_step_propagates_and_ends_the_execution(suspend_first):
    async def stop(x):
        if suspend_first:
            await asyncio.sleep(0)
        raise Stop(x)

    ex = ExecutorCore()
    with pytest.raises(Stop):
        await ex.execute(Step(stop, "stop", max_retries=3), 1)
    s = stats(ex)
    assert s["in_flight"] == 0 and s["cancelled"] == 1 and s["failures"] == 0
    assert s["steps"]["stop"]["attempts"] == 1  # never retried


@pytest.mark.parametrize("suspend_first", [False, True])
async def test_an_exception_from_the_step_is_a_failed_attempt(suspend_first):
    calls = []

    async def flaky(x):
        calls.append(x)
        if suspend_first:
            await asyncio.sleep(0)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)}")
        return x * 2

    ex = ExecutorCore()
    retry = RetryStrategy(max_attempts=3, base_delay=0)
    r = await ex.execute(Step(flaky, "flaky", retry=retry), 21)
    assert r.success and r.output == 42 and r.attempts == 3 and calls == [21, 21, 21]

    async def broken(x):
        if suspend_first:
            await asyncio.sleep(0)
        raise ValueError("always")

    r = await ex.execute(broken, 1)
    assert not r.success and isinstance(r.error, ValueError) and str(r.error) == "always"
    # The step's own frame is in the error's traceback.
    tb, names = r.error.__traceback__, []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "broken" in names
    assert stats(ex)["in_flight"] == 0


async def test_an_awaitable_that_is_not_a_coroutine_is_awaited_as_it_is():
    class Ready:
        def __init__(self, value):
            self.value = value

        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return self.value

    # Functions marked as coroutine functions that return other awaitables.
    @inspect.markcoroutinefunction
    def returns_ready(x):
        return Ready(x * 3)

    @inspect.markcoroutinefunction
    def returns_future(x):
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(x + 1)
        return fut

    ex = ExecutorCore()
    assert (await ex.execute(returns_ready, 2)).output == 6
    assert (await ex.execute(returns_future, 2)).output == 3
    assert stats(ex)["in_flight"] == 0


async def test_the_step_runs_in_the_callers_context():
    var = contextvars.ContextVar("var", default="unset")

    async def reads_and_sets(x):
        before = var.get()
        var.set("set by the step")
        return before

    async def suspends_reads_and_sets(x):
        await asyncio.sleep(0)
        before = var.get()
        var.set("set after a suspension")
        return before

    ex = ExecutorCore()
    var.set("caller")
    assert (await ex.execute(reads_and_sets, 1)).output == "caller"
    assert var.get() == "set by the step"  # the same context, as with await
    var.set("caller again")
    assert (await ex.execute(suspends_reads_and_sets, 1)).output == "caller again"
    assert var.get() == "set after a suspension"


async def test_closing_a_suspended_execution_closes_the_step_and_ends_the_execution():
    closed, forever = step_recording_its_end()
    ex = ExecutorCore()
    coro = ex.execute(forever, 7)
    fut = coro.send(None)  # runs until the step suspends (on the sleep's future)
    assert isinstance(fut, asyncio.Future)
    assert stats(ex)["in_flight"] == 1
    coro.close()
    fut.cancel()
    assert closed == [7]
    s = stats(ex)
    assert s["in_flight"] == 0 and s["cancelled"] == 1


async def test_an_execution_dropped_while_suspended_is_ended_when_collected():
    closed, forever = step_recording_its_end()
    ex = ExecutorCore()
    coro = ex.execute(forever, 8)
    fut = coro.send(None)
    del coro
    gc.collect()
    fut.cancel()
    assert closed == [8]
    assert stats(ex)["in_flight"] == 0


async def test_values_sent_by_a_driver_other_than_a_task_reach_the_step():
    # `await` forwards whatever is sent; so does the rest of a suspended
    # first attempt.
    async def asks(x):
        answer = await Ask()
        return (x, answer)

    ex = ExecutorCore()
    coro = ex.execute(Step(asks, "asks"), 1)
    assert coro.send(None) == "question"
    with pytest.raises(StopIteration) as stop:
        coro.send("answer")
    assert stop.value.value.output == (1, "answer")


async def test_an_exception_thrown_in_that_the_step_handles_lets_it_go_on():
    async def recovers(x):
        try:
            await Ask()
        except KeyError:
            pass
        return (await Ask(), "recovered")

    ex = ExecutorCore()
    coro = ex.execute(Step(recovers, "recovers"), 1)
    assert coro.send(None) == "question"
    assert coro.throw(KeyError("k")) == "question"  # caught; asks again
    with pytest.raises(StopIteration) as stop:
        coro.send("second")
    assert stop.value.value.output == ("second", "recovered")
    assert stats(ex)["in_flight"] == 0


async def test_nested_executions_of_the_same_executor():
    # No concurrency limit: nested executions of one step would otherwise
    # wait for permits their ancestors hold (docs/concurrency.md).
    ex = ExecutorCore(OptimizationConfig(enable_concurrency_optimization=False))

    async def depth(n):
        if n == 0:
            return 0
        r = await ex.execute(Step(depth, "depth"), n - 1)
        return r.output + 1

    # Well inside the interpreter's recursion limit; every level's first
    # attempt runs inside its parent's.
    n = min(200, sys.getrecursionlimit() // 10)
    r = await ex.execute(Step(depth, "depth"), n)
    assert r.success and r.output == n
    assert stats(ex)["in_flight"] == 0
