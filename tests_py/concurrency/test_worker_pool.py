"""caudal.WorkerPool: native threads for blocking work, results on asyncio."""

import asyncio
import threading
import time
import traceback

import pytest

from _probes import until
from caudal import (
    ExecutorCore,
    OptimizationConfig,
    PoolTimeoutError,
    QueueFullError,
    Step,
    WorkerPool,
)


@pytest.fixture
async def pool():
    p = WorkerPool(workers=2, queue_size=100)
    yield p
    await p.aclose()


async def test_submit_returns_the_result(pool):
    assert await pool.submit(pow, 2, 10) == 1024
    assert await pool.run(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]


async def test_an_exception_arrives_as_itself_with_its_traceback(pool):
    def fails():
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing") as info:
        await pool.submit(fails)
    assert "fails" in "".join(traceback.format_tb(info.value.__traceback__))


async def test_a_full_queue_refuses_at_once_and_run_waits_for_room():
    p = WorkerPool(workers=1, queue_size=2)
    gate = threading.Event()
    blocker = p.submit(gate.wait, 5)
    await until(lambda: p.stats()["active"] == 1, what="the worker took it")
    queued = [p.submit(lambda i=i: i) for i in range(2)]
    with pytest.raises(QueueFullError, match="task queue is full"):
        p.submit(lambda: None)
    assert p.stats()["rejected"] == 1
    waiting = [asyncio.create_task(p.run(lambda i=i: i * 10)) for i in range(5)]
    await until(lambda: p.stats()["room_waiters"] == 5, what="5 callers waiting for room")
    assert not any(t.done() for t in waiting)  # backpressure, not failure
    gate.set()
    assert await blocker is True
    assert [await q for q in queued] == [0, 1]
    assert await asyncio.gather(*waiting) == [0, 10, 20, 30, 40]
    s = p.stats()
    assert s["rejected"] >= 1 and s["room_waiters"] == 0 and s["queued"] == 0
    await p.aclose()


async def test_tasks_that_wait_too_long_in_the_queue_are_not_run():
    p = WorkerPool(workers=1, queue_size=10, task_timeout=0.01)
    ran = []
    gate = threading.Event()
    first = p.submit(gate.wait, 5)
    await until(lambda: p.stats()["active"] == 1, what="the worker took it")
    late = p.submit(ran.append, "late")
    # Real time: the pool's queue timeout reads the steady clock (a
    # WorkerPool takes no manual clock).
    await asyncio.sleep(0.05)
    gate.set()
    await first
    with pytest.raises(PoolTimeoutError):
        await late
    assert ran == [] and p.stats()["timed_out"] == 1
    await p.aclose()


async def test_closing_with_cancel_pending_cancels_queued_tasks():
    # While close() waits for the running task, stats() shows the pool being
    # closed, and `accepting` is false only once its shutdown mode is final
    # (a waiter that saw it false and then let the worker go on must see the
    # queued tasks cancelled, never run).
    p = WorkerPool(workers=1, queue_size=10)
    gate = threading.Event()
    first = p.submit(gate.wait, 5)
    await until(lambda: p.stats()["active"] == 1, what="the worker took it")
    queued = [p.submit(lambda: "never") for _ in range(3)]
    closing = asyncio.create_task(p.aclose(cancel_pending=True))
    await until(lambda: not p.stats()["accepting"], what="the pool closing")
    s = p.stats()
    assert (s["active"], s["queued"], s["workers"]) == (1, 3, 1), s
    gate.set()
    await closing
    assert await first is True
    for q in queued:
        with pytest.raises(asyncio.CancelledError):
            await q
    s = p.stats()
    assert (s["active"], s["queued"], s["cancelled"], s["completed"]) == (0, 0, 3, 1), s
    assert p.closed
    with pytest.raises(ValueError, match="shut down"):
        p.submit(lambda: None)


async def test_gil_releasing_tasks_run_in_parallel():
    p = WorkerPool(workers=4, queue_size=10)
    barrier = threading.Barrier(4, timeout=5)  # breaks unless all 4 meet
    results = await asyncio.gather(*(p.run(barrier.wait) for _ in range(4)))
    assert sorted(results) == [0, 1, 2, 3]
    await p.aclose()


async def test_a_cancelled_caller_does_not_lose_the_pool():
    p = WorkerPool(workers=1, queue_size=10)
    started = threading.Event()

    def job():
        started.set()
        time.sleep(0.02)

    task = asyncio.create_task(p.run(job))
    # Running, not only taken: a task cancelled before it starts is
    # withdrawn, not completed.
    await until(started.is_set, what="the worker started it")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await p.run(lambda: "still works") == "still works"
    await p.aclose()
    assert p.stats()["completed"] == 2
    assert p.stats()["accepting"] is False


async def test_counters_under_stress(pool):
    async def client(k):
        return await asyncio.gather(*(pool.run(lambda i=i: i + k) for i in range(500)))

    results = await asyncio.gather(*(client(k * 1000) for k in range(10)))
    for k, r in enumerate(results):
        assert r == [i + k * 1000 for i in range(500)]
    await pool.aclose()  # joined: the counters are final
    s = pool.stats()
    assert s["completed"] == 5000 and s["queued"] == 0 and s["active"] == 0
    assert s["failed"] == 0 and s["average_latency_ms"] > 0


def test_one_pool_serves_several_event_loops():
    p = WorkerPool(workers=2, queue_size=1000)
    out = {}

    def in_thread(k):
        async def main():
            return await asyncio.gather(*(p.run(lambda i=i: (k, i)) for i in range(200)))

        out[k] = asyncio.run(main())

    threads = [threading.Thread(target=in_thread, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert out[k] == [(k, i) for i in range(200)]
    p.close()


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"workers": 0}, ValueError),
        ({"queue_size": 0}, ValueError),
        ({"task_timeout": -1}, ValueError),
        ({"workers": 1.5}, TypeError),
        # Values the native pool cannot hold: they overflowed its int and
        # int64 nanoseconds (pybind11 "incompatible arguments", or a message
        # about task_timeout_ns = -9223372036854775808).
        ({"workers": 2**31}, ValueError),
        ({"queue_size": 10**20}, ValueError),
        ({"task_timeout": float("nan")}, ValueError),
        ({"task_timeout": 1e300}, ValueError),
    ],
)
def test_bad_settings_are_refused(kwargs, exc):
    with pytest.raises(exc, match=r"^WorkerPool: ") as info:
        WorkerPool(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


# ------------------------------------------------------------ executor use


async def test_sync_steps_run_on_the_executors_pool():
    def blocking(x):
        time.sleep(0.001)
        return x * 2

    ex = ExecutorCore(OptimizationConfig(worker_pool_size=3, worker_pool_queue_size=50))
    results = await ex.execute_many(Step(blocking, "b"), range(40))
    assert [r.output for r in results] == [x * 2 for x in range(40)]
    wp = ex.get_optimization_stats()["concurrency"]["worker_pool"]
    assert wp["workers"] == 3 and wp["queue_size"] == 50 and wp["accepting"]
    pool = ex._pool
    await ex.aclose()
    assert ex.get_optimization_stats()["concurrency"]["worker_pool"] is None
    final = pool.stats()  # joined: the counters are final
    assert final["completed"] == 40 and final["workers"] == 3 and not final["accepting"]


async def test_sync_step_errors_and_timeouts_still_behave():
    def boom(x):
        raise ValueError("sync boom")

    ex = ExecutorCore()
    r = await ex.execute(Step(boom, "boom"), 1)
    assert not r.success and isinstance(r.error, ValueError)
    r = await ex.execute(Step(time.sleep, "sleepy", timeout_s=0.01), 0.2)
    assert not r.success and r.metadata.get("retry_stopped") is None
    assert "timed out" in r.feedback
    await ex.aclose()


async def test_a_given_pool_is_used_and_left_open():
    p = WorkerPool(workers=1, queue_size=10)
    ex = ExecutorCore(worker_pool=p)
    assert (await ex.execute(Step(lambda x: x + 1, "inc"), 1)).output == 2
    await ex.aclose()
    assert not p.closed
    await p.aclose()
    assert p.stats()["completed"] == 1  # final once the pool is joined


async def test_changing_the_pool_settings_replaces_the_pool():
    ex = ExecutorCore(OptimizationConfig(worker_pool_size=1))
    await ex.execute(Step(lambda x: x, "id"), 1)
    assert ex.get_optimization_stats()["concurrency"]["worker_pool"]["workers"] == 1
    await ex.apply_optimization_config(OptimizationConfig(worker_pool_size=2))
    await ex.execute(Step(lambda x: x, "id"), 1)
    assert ex.get_optimization_stats()["concurrency"]["worker_pool"]["workers"] == 2
    await ex.aclose()


def test_worker_pool_must_be_a_pool():
    with pytest.raises(TypeError, match="worker_pool"):
        ExecutorCore(worker_pool=object())


async def test_many_concurrent_sync_steps_each_get_their_own_result():
    # Plain, GIL-releasing and failing calls in flight at once, some inputs
    # repeated (single flight, cache hits): every execution gets the result
    # of its own input, whatever batch of completions it arrived in.
    def work(x):
        if x % 5 == 0:
            time.sleep(0.0001)  # releases the GIL
        if x % 7 == 0:
            raise ValueError(f"bad {x}")
        return (x, threading.get_ident())

    ex = ExecutorCore(OptimizationConfig(worker_pool_size=4))
    inputs = [i % 1500 for i in range(2000)]
    results = await asyncio.gather(*(ex.execute(Step(work, "work"), x) for x in inputs))
    for x, r in zip(inputs, results, strict=True):
        if x % 7 == 0:
            assert not r.success and isinstance(r.error, ValueError)
            assert str(r.error) == f"bad {x}"
        else:
            assert r.success and r.output[0] == x
    assert threading.get_ident() not in {r.output[1] for r in results if r.success}
    await ex.aclose()


async def test_one_call_at_a_time_wakes_an_idle_loop():
    # The loop has nothing else to do: only the pool's wake-up brings each
    # result in (wait_for turns a lost wake-up into a failure, not a hang).
    p = WorkerPool(workers=2, queue_size=10)
    for i in range(300):
        assert await asyncio.wait_for(p.run(lambda i=i: i * 3), 30) == i * 3
        if i % 50 == 0:
            await asyncio.sleep(0.001)  # let the workers fall asleep
    await p.aclose()


async def test_a_loop_in_debug_mode_gets_its_results_too():
    loop = asyncio.get_running_loop()
    p = WorkerPool(workers=2, queue_size=100)
    loop.set_debug(True)
    try:
        assert await asyncio.wait_for(
            asyncio.gather(*(p.run(lambda i=i: -i) for i in range(100))), 30
        ) == [-i for i in range(100)]
    finally:
        loop.set_debug(False)
    await p.aclose()


def test_a_result_for_a_closed_loop_is_dropped():
    p = WorkerPool(workers=1, queue_size=10)
    gate = threading.Event()

    async def submit_and_leave():
        p.submit(gate.wait, 30)  # never awaited: the loop closes first
        await asyncio.sleep(0)

    asyncio.run(submit_and_leave())
    gate.set()
    # The result of the first task found its loop closed and was dropped;
    # the pool (one worker, so after that task) still serves a new loop.
    assert asyncio.run(_run_on(p, lambda: 42)) == 42
    p.close()  # joined: the counters are final
    assert p.stats()["completed"] == 2


async def _run_on(pool, fn):
    return await pool.run(fn)
