import asyncio
import threading
import traceback

import pytest

import caudal
from _probes import drive, until
from caudal import ConfigurationError, ExecutorCore, OptimizationConfig, Step, StepResult
from caudal.testing import ManualClock


async def add_one(x):
    return x + 1


def double(x):
    return x * 2


class Flaky:
    """Fails `failures` times, then returns its input."""

    def __init__(self, failures, exc=ValueError):
        self.failures = failures
        self.calls = 0
        self.exc = exc

    async def __call__(self, x):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return x


async def test_async_and_sync_steps():
    ex = ExecutorCore()
    r = await ex.execute(add_one, 1)
    assert isinstance(r, StepResult)
    assert (r.success, r.output, r.attempts, r.name, r.cache_hit) == (True, 2, 1, "add_one", False)
    assert r.latency_s > 0 and r.error is None and r.feedback is None
    r = await ex.execute(double, 4)
    assert r.output == 8 and r.success


async def test_sync_step_does_not_block_the_loop():
    started = threading.Event()
    release = threading.Event()

    def blocking(x):
        started.set()
        release.wait(5)
        return x

    ex = ExecutorCore()
    task = asyncio.create_task(ex.execute(blocking, 7))
    # The loop keeps running while the step blocks its worker thread.
    await until(started.is_set, what="the step started in its thread")
    assert not task.done()
    release.set()
    assert (await task).output == 7


async def test_call_shapes_no_args_data_context_and_agents():
    ex = ExecutorCore()

    async def no_args():
        return "none"

    async def with_ctx(data, context):
        return (data, context)

    async def kw_ctx(data, *, context=None, resources=None):
        return (data, context, resources)

    class Agent:
        async def run(self, data, **kwargs):
            return (data, kwargs)

    assert (await ex.execute(no_args, 1)).output == "none"
    assert (await ex.execute(with_ctx, 1, context={"k": 2})).output == (1, {"k": 2})
    assert (await ex.execute(kw_ctx, 1, context="c", resources="r")).output == (1, "c", "r")
    r = await ex.execute(Agent(), 5, context="c")
    assert r.output == (5, {"context": "c"}) and r.name == "Agent"
    agent = Agent()
    r = await ex.execute(agent.run, 6)  # bound methods are analysed once per (func, self)
    assert r.output == (6, {})
    assert (await ex.execute(Step(with_ctx, "named"), 1, context=3)).name == "named"


async def test_failure_is_a_result_with_the_exception_itself():
    ex = ExecutorCore()

    async def boom(x):
        raise KeyError("missing")

    r = await ex.execute(boom, 1)
    assert r.success is False and r.output is None
    assert isinstance(r.error, KeyError)
    assert r.feedback == "KeyError: 'missing'"
    frames = traceback.extract_tb(r.error.__traceback__)
    assert any(f.name == "boom" for f in frames)  # traceback intact
    with pytest.raises(KeyError):
        r.unwrap()
    assert (await ex.execute(add_one, 1)).unwrap() == 2


async def test_step_that_raises_when_called_is_a_failed_attempt():
    clock = ManualClock()  # the back-off between attempts passes on it
    ex = ExecutorCore(clock=clock)
    r = await drive(clock, ex.execute(Step(add_one, max_retries=1), None))  # None + 1 -> TypeError
    assert not r.success and isinstance(r.error, TypeError) and r.attempts == 2


async def test_retries_until_success_and_stats():
    clock = ManualClock()  # the back-off between attempts passes on it
    ex = ExecutorCore(clock=clock)
    flaky = Flaky(2)
    r = await drive(clock, ex.execute(Step(flaky, "flaky", max_retries=3), "ok"))
    assert (r.success, r.output, r.attempts, flaky.calls) == (True, "ok", 3, 3)
    s = ex.get_optimization_stats()["execution"]["steps"]["flaky"]
    assert (s["attempts"], s["retries"], s["errors"], s["recovered"]) == (3, 2, 2, 1)
    flaky2 = Flaky(5)
    r = await drive(clock, ex.execute(Step(flaky2, "flaky2", max_retries=1), "x"))
    assert (r.success, r.attempts, flaky2.calls) == (False, 2, 2)
    assert r.feedback == "ValueError: failure 2"


async def test_timeout_per_attempt_then_retry():
    calls = []

    async def slow_then_fast(x):
        calls.append(x)
        if len(calls) == 1:
            await asyncio.sleep(10)  # timed out: timeout_s runs on the loop's clock
        return x

    ex = ExecutorCore()
    r = await ex.execute(Step(slow_then_fast, timeout_s=0.05, max_retries=1), 3)
    assert r.success and r.output == 3 and r.attempts == 2
    # (timed out on the loop's clock, as above)
    r = await ex.execute(Step(lambda x: asyncio.sleep(10), "sleepy", timeout_s=0.02), 1)
    assert not r.success and isinstance(r.error, caudal.StepTimeoutError)
    assert isinstance(r.error, TimeoutError)
    assert ex.get_optimization_stats()["execution"]["timeouts"] >= 2


async def test_a_steps_own_timeout_error_is_not_mistaken_for_ours():
    async def raises_timeout(x):
        raise TimeoutError("backend said so")

    r = await ExecutorCore().execute(Step(raises_timeout, timeout_s=5), 1)
    assert not r.success and type(r.error) is TimeoutError
    assert str(r.error) == "backend said so"


async def test_fallback_runs_after_final_failure():
    async def broken(x):
        raise RuntimeError("down")

    clock = ManualClock()  # the back-off between attempts passes on it
    ex = ExecutorCore(clock=clock)
    r = await drive(clock, ex.execute(Step(broken, max_retries=1, fallback=add_one), 1))
    assert r.success and r.output == 2 and r.name == "broken"
    assert r.metadata["fallback_triggered"] is True
    assert isinstance(r.metadata["original_error"], RuntimeError)
    assert r.attempts == 3  # 2 of the primary, 1 of the fallback
    assert ex.get_optimization_stats()["execution"]["fallbacks"] == 1


async def test_cancellation_propagates_and_is_not_a_failure():
    started = asyncio.Event()

    async def forever(x):
        started.set()
        await asyncio.sleep(3600)  # cancelled by the test

    ex = ExecutorCore()
    task = asyncio.create_task(ex.execute(Step(forever, max_retries=5), 1))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = ex.get_optimization_stats()["execution"]
    assert s["cancelled"] == 1 and s["failures"] == 0 and s["in_flight"] == 0
    assert s["steps"]["forever"]["attempts"] == 1  # never retried


async def test_cancellation_during_timeout_and_fallback_and_sync_paths():
    ex = ExecutorCore()
    started = asyncio.Event()

    async def forever(x):
        started.set()
        await asyncio.sleep(3600)  # cancelled by the test

    async def broken(x):
        raise RuntimeError("x")

    for step in (Step(forever, "t", timeout_s=100), Step(broken, "fb", fallback=forever)):
        started.clear()
        task = asyncio.create_task(ex.execute(step, 1))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ex.get_optimization_stats()["execution"]["in_flight"] == 0


async def test_many_concurrent_executions():
    ex = ExecutorCore()

    async def jitter(x):
        await asyncio.sleep(0.001 * (x % 3))
        if x % 7 == 0:
            raise ValueError(x)
        return x

    results = await asyncio.gather(*(ex.execute(jitter, i) for i in range(2000)))
    assert [r.output for r in results if r.success] == [i for i in range(2000) if i % 7]
    s = ex.get_optimization_stats()["execution"]
    assert s["total_executions"] == 2000 and s["failures"] == 286 and s["in_flight"] == 0


def test_shared_by_event_loops_in_several_threads():
    ex = ExecutorCore()
    errors = []

    def worker(offset):
        async def main():
            rs = await asyncio.gather(*(ex.execute(add_one, offset + i) for i in range(500)))
            assert [r.output for r in rs] == [offset + i + 1 for i in range(500)]

        try:
            asyncio.run(main())
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ex.get_optimization_stats()["execution"]["total_executions"] == 2000


async def test_step_analysis_is_cached_once_per_step_object():
    ex = ExecutorCore()
    for i in range(100):
        await ex.execute(add_one, i)
    table = ex.get_optimization_stats()["execution"]["step_analysis"]
    assert table == {"size": 1, "capacity": 4096, "analyses": 1, "evictions": 0}


async def test_execute_with_monitoring_metrics():
    ex = ExecutorCore()
    result, metrics = await ex.execute_with_monitoring(add_one, 1)
    assert result.output == 2
    for key in ("execution_time_ms", "memory_usage_mb", "attempts", "cache_hit"):
        assert key in metrics
    assert metrics["memory_usage_mb"] > 1 and metrics["attempts"] == 1
    assert metrics["execution_time_ms"] == pytest.approx(result.latency_s * 1000)


async def test_invalid_configs_raise_and_keep_the_old_one():
    with pytest.raises(ConfigurationError) as e:
        ExecutorCore(
            optimization_config=OptimizationConfig(object_pool_max_size=0, telemetry_batch_size=-1)
        )
    assert e.value.problems == [
        "object_pool_max_size must be positive",
        "telemetry_batch_size must be positive",
    ]
    ex = ExecutorCore(OptimizationConfig(cache_max_size=42))
    with pytest.raises(ConfigurationError):
        await ex.apply_optimization_config(OptimizationConfig(cache_max_size=0))
    with pytest.raises(ConfigurationError, match="malformed JSON"):
        await ex.import_config("{not json")
    with pytest.raises(ConfigurationError, match=r"\$\.bogus: unknown field"):
        await ex.import_config('{"bogus": 1}')
    assert ex.optimization_config.cache_max_size == 42
    with pytest.raises(TypeError):
        ExecutorCore(optimization_config={"cache_max_size": 3})


async def test_apply_export_import_config():
    ex = ExecutorCore()
    await ex.apply_optimization_config(OptimizationConfig(max_concurrent_executions=4))
    assert ex.optimization_config.max_concurrent_executions == 4
    text = ex.export_config(format="json")
    other = ExecutorCore()
    await other.import_config(text, format="json")
    assert other.optimization_config == ex.optimization_config
    # The property returns a copy: mutating it changes nothing.
    ex.optimization_config.cache_max_size = 1
    assert ex.optimization_config.cache_max_size == 500


async def test_in_flight_execution_finishes_under_its_config():
    clock = ManualClock()
    ex = ExecutorCore(OptimizationConfig(slow_execution_threshold_ms=1.0), clock=clock)
    started, release = asyncio.Event(), asyncio.Event()

    async def slowish(x):
        started.set()
        await release.wait()
        clock.advance(0.05)  # each execution takes 50 ms on the executor's clock
        return x

    task = asyncio.create_task(ex.execute(slowish, 1))
    await started.wait()
    await ex.apply_optimization_config(OptimizationConfig(slow_execution_threshold_ms=60_000.0))
    release.set()
    await task
    await ex.execute(slowish, 2)  # under the new config: not slow
    assert ex.get_optimization_stats()["execution"]["slow_executions"] == 1


async def test_stats_sections_and_keys():
    ex = ExecutorCore()
    await ex.execute(add_one, 1)
    stats = ex.get_optimization_stats()
    assert set(stats) >= {
        "memory",
        "execution",
        "cache",
        "concurrency",
        "circuit_breaker",
        "error_handling",
        "telemetry",
    }
    assert stats["memory"]["usage_mb"] > 0
    assert "object_pool_utilization" in stats["memory"]
    assert stats["execution"]["avg_time_ms"] > 0
    assert stats["execution"]["p50_ms"] <= stats["execution"]["p99_ms"]
    for key in ("hit_rate",):
        assert key in stats["cache"]
    for key in ("state", "failure_count", "success_count"):
        assert key in stats["circuit_breaker"]
    for key in ("error_rate", "recovery_success_rate", "cached_patterns"):
        assert key in stats["error_handling"]


async def test_recommendations_follow_measurements():
    clock = ManualClock()
    ex = ExecutorCore(
        OptimizationConfig(slow_execution_threshold_ms=1.0, memory_pressure_threshold_mb=1e6),
        clock=clock,
    )
    assert ex.get_performance_recommendations() == []  # (no memory pressure either)

    async def slow(x):
        clock.advance(0.005)  # 5 ms on the executor's clock
        return x

    for i in range(5):
        await ex.execute(slow, i)
    recs = ex.get_performance_recommendations()
    assert recs and recs[0]["priority"] == "high" and "'slow'" in recs[0]["description"]
    assert set(recs[0]) >= {"description", "impact", "priority", "automatic"}


async def test_step_objects_and_decorator():
    @caudal.step(max_retries=2, name="deco")
    async def deco(x):
        return -x

    assert isinstance(deco, Step) and deco.max_retries == 2
    assert (await ExecutorCore().execute(deco, 3)).output == -3
    with pytest.raises(AttributeError, match="immutable"):
        deco.max_retries = 5
    assert deco.replace(max_retries=5).max_retries == 5

    from caudal import RetryStrategy

    retry = RetryStrategy(max_attempts=2, base_delay=0)

    @caudal.step(
        retry=retry,
        breaker="backend",
        cache_context=("lang",),
        single_flight=False,
        depends_on=("a",),
        optional=True,
    )
    async def every(x):
        return x

    assert (
        every.retry,
        every.breaker,
        every.cache_context,
        every.single_flight,
        every.depends_on,
        every.optional,
    ) == (retry, "backend", ("lang",), False, ("a",), True)
    with pytest.raises(TypeError):
        caudal.step(no_such_setting=1)(every.fn)
    with pytest.raises(ValueError, match="max_retries"):
        Step(add_one, max_retries=-1)
    with pytest.raises(TypeError, match="callable"):
        Step(42)
    # Something that is not a step at all is bad input, not a step failure.
    with pytest.raises(TypeError, match="cannot execute 'object'"):
        await ExecutorCore().execute(object(), 1)


def test_step_result_is_constructible_and_picklable():
    import pickle

    r = StepResult(name="n", output=[1], attempts=2, metadata={"a": 1})
    r2 = pickle.loads(pickle.dumps(r))
    assert (r2.name, r2.output, r2.attempts, r2.metadata, r2.success) == (
        "n",
        [1],
        2,
        {"a": 1},
        True,
    )
    r2.output = 5
    assert r2.output == 5
    assert "StepResult(name='n'" in repr(r)


# ------------------------------------------------ async with / aclose()
class _Spans:
    def __init__(self):
        self.spans = []

    def export(self, spans):
        self.spans.extend(spans)


def _closing_executor():
    # Spans leave only when flushed: nothing is exported on a timer here.
    sink = _Spans()
    cfg = OptimizationConfig(telemetry_flush_interval_seconds=3600.0, telemetry_batch_size=10_000)
    return ExecutorCore(cfg, span_exporters=[sink]), sink


async def test_async_with_returns_the_executor_and_closes_it():
    ex, sink = _closing_executor()
    started, release = threading.Event(), threading.Event()

    def slow_double(x):
        started.set()
        release.wait(10)
        return x * 2

    async with ex as entered:
        assert entered is ex
        assert (await ex.execute(Step(double), 2)).output == 4
        pool = ex._pool
        assert pool is not None and not pool.closed
        queued = asyncio.ensure_future(ex.execute(Step(slow_double), 5))
        await asyncio.to_thread(started.wait, 10)
        threading.Timer(0.05, release.set).start()
    # aclose(): the sync step already on the pool finished first, the
    # executor's own pool is closed, the buffered spans went out.
    assert queued.done() and queued.result().output == 10
    assert pool.closed and ex._pool is None
    assert ex.get_optimization_stats()["concurrency"]["worker_pool"] is None
    assert len(sink.spans) == 2
    # The executor stays usable: a later sync step gets a new pool.
    assert (await ex.execute(Step(double), 3)).output == 6
    assert ex._pool is not pool
    await ex.aclose()


async def test_async_with_leaves_a_given_worker_pool_open():
    pool = caudal.WorkerPool(workers=1)
    async with ExecutorCore(worker_pool=pool) as ex:
        assert (await ex.execute(Step(double), 2)).output == 4
    assert not pool.closed  # the caller's pool: the caller closes it
    await pool.aclose()


async def test_async_with_propagates_the_body_exception_and_still_closes():
    ex, sink = _closing_executor()
    with pytest.raises(KeyError, match="boom"):
        async with ex:
            await ex.execute(Step(double), 2)
            pool = ex._pool
            raise KeyError("boom")
    assert pool.closed and ex._pool is None
    assert len(sink.spans) == 1


async def test_async_with_keeps_the_body_exception_when_aclose_fails_too():
    class FailingClose(ExecutorCore):
        async def aclose(self):
            raise OSError("tier down")

    ex = FailingClose()
    with pytest.raises(KeyError) as info:
        async with ex:
            raise KeyError("boom")
    assert any("tier down" in note for note in getattr(info.value, "__notes__", []))
    # Without an exception from the body, aclose()'s own propagates.
    with pytest.raises(OSError, match="tier down"):
        async with ex:
            pass


async def test_async_with_cancelled_body_propagates_the_cancellation_and_closes():
    ex, sink = _closing_executor()
    inside = asyncio.Event()
    seen = {}

    async def body():
        async with ex:
            await ex.execute(Step(double), 2)
            seen["pool"] = ex._pool
            inside.set()
            await asyncio.sleep(3600)  # cancelled by the test

    task = asyncio.ensure_future(body())
    waiter = asyncio.ensure_future(inside.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    assert inside.is_set(), task.exception() if task.done() else "body did not start"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert seen["pool"].closed and ex._pool is None
    assert len(sink.spans) == 1
