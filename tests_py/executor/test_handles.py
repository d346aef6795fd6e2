"""Execution handles: what crosses into Python is an opaque handle the core
validates on every call, never a record's address; queued sync work never
outlives its execution's record."""

import asyncio
import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from caudal import ExecutorCore, OptimizationConfig, QueueFullError, Step, StepResult, WorkerPool
from caudal._core import Engine, Next
from caudal._executor.core import _go_on
from caudal.errors import StaleHandleError
from caudal.resilience import immediate_retries


def _config(pool_on: bool, **kw) -> OptimizationConfig:
    return OptimizationConfig(
        worker_pool_size=1,
        enable_object_pool=pool_on,
        enable_cache_optimization=False,
        # Nine executions of one step at once (the adaptive limit starts
        # at 4).
        concurrency_initial_limit=20,
        **kw,
    )


async def _until(cond, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


# ------------------------------------------------- stale record reproduction
@pytest.mark.parametrize("pool_on", [True, False], ids=["object_pool", "no_object_pool"])
@pytest.mark.parametrize("end", ["timeout", "cancel"])
async def test_queued_sync_work_of_an_ended_execution_never_runs_with_another_record(pool_on, end):
    """A sync step whose execution ends (timeout, cancellation) while its
    work still waits in the worker pool's queue: that work must not later
    call the step of whatever execution reuses the record."""
    calls: list[tuple[str, str]] = []
    gate = threading.Event()

    def blocker(x):
        gate.wait(10)
        return x

    def step_a(x):
        calls.append(("A", x))
        return x

    def step_b(x):
        calls.append(("B", x))
        return x

    ex = ExecutorCore(_config(pool_on))
    blocked = asyncio.create_task(ex.execute(Step(blocker, "blocker"), "data-for-blocker"))
    await _until(lambda: ex._pool is not None and ex._pool.stats()["active"] == 1)
    a = Step(step_a, "A", timeout_s=0.01 if end == "timeout" else None)
    a_tasks = [asyncio.create_task(ex.execute(a, f"data-for-A-{i}")) for i in range(8)]
    await _until(lambda: ex._pool.stats()["queued"] == 8)
    if end == "cancel":
        for t in a_tasks:
            t.cancel()
    a_results = await asyncio.gather(*a_tasks, return_exceptions=True)
    assert ex._pool.stats()["queued"] == 0  # taken out of the queue at once
    for r in a_results:
        if end == "cancel":
            assert isinstance(r, asyncio.CancelledError)
        else:
            assert not r.success and "timed out" in str(r.error)
    # Executions of another step reuse the records (and their handles' slots).
    b = Step(step_b, "B")
    b_tasks = [asyncio.create_task(ex.execute(b, f"data-for-B-{i}")) for i in range(8)]
    await asyncio.sleep(0.01)
    gate.set()
    b_results = await asyncio.gather(*b_tasks)
    assert (await blocked).output == "data-for-blocker"
    assert [r.output for r in b_results] == [f"data-for-B-{i}" for i in range(8)]
    # Every call of every step received its own execution's input.
    for name, x in calls:
        assert x.startswith(f"data-for-{name}-"), calls
    assert sorted(x for name, x in calls if name == "B") == sorted(
        f"data-for-B-{i}" for i in range(8)
    )
    # The work of the ended executions was withdrawn, never run.
    assert [c for c in calls if c[0] == "A"] == []
    assert ex._pool.stats()["withdrawn"] == 8
    await ex.aclose()


async def test_a_sync_attempt_that_timed_out_while_queued_is_withdrawn_before_its_retry_runs():
    calls: list[str] = []
    gate = threading.Event()

    def blocker(x):
        gate.wait(10)
        return x

    def step_a(x):
        calls.append(x)
        return x

    ex = ExecutorCore(_config(True))
    blocked = asyncio.create_task(ex.execute(Step(blocker, "blocker"), 0))
    await _until(lambda: ex._pool is not None and ex._pool.stats()["active"] == 1)
    # Attempts time out while queued behind the blocker; each retry queues
    # a call of its own.
    task = asyncio.create_task(
        ex.execute(Step(step_a, "A", timeout_s=0.05, retry=immediate_retries(5)), "x")
    )
    await asyncio.sleep(0.12)  # two attempts timed out while queued
    gate.set()
    r = await task
    await blocked
    assert r.success and r.output == "x" and r.attempts >= 3
    withdrawn = ex._pool.stats()["withdrawn"]
    assert withdrawn >= 2  # the attempts that timed out while queued
    # Every attempt's work either was withdrawn or ran (with its own input).
    assert calls == ["x"] * (r.attempts - withdrawn)
    await ex.aclose()


async def test_a_running_sync_attempt_that_timed_out_finishes_and_its_result_is_dropped():
    started = threading.Event()
    release = threading.Event()
    seen: list[str] = []

    def slow(x):
        started.set()
        release.wait(10)
        seen.append(x)
        return x

    ex = ExecutorCore(_config(True))
    r = await ex.execute(Step(slow, "slow", timeout_s=0.02), "mine")
    assert not r.success and "timed out" in str(r.error)
    assert started.is_set()
    release.set()
    await _until(lambda: seen == ["mine"])
    await _until(lambda: ex._pool.stats()["active"] == 0)
    await ex.aclose()


# --------------------------------------------------------- garbage handles
HANDLE_METHODS = {
    "_timeout_s": lambda e, h: e._timeout_s(h),
    "_sync_call": lambda e, h: e._sync_call(h, 1, None, None),
    "_succeed": lambda e, h: e._succeed(h, 1),
    "_fast_succeed": lambda e, h: e._fast_calls(_go_on)[1](h, 1),
    "_failed": lambda e, h: e._failed(h, ValueError("x"), False),
    "_fast_fail": lambda e, h: e._fast_calls(_go_on)[2](h, ValueError("x"), False, 1, None, None),
    "_restart": lambda e, h: e._restart(h, 1, None, None, ValueError("x")),
    "_fallback_done": lambda e, h: e._fallback_done(h, ValueError("x"), None),
    "_cancel": lambda e, h: e._cancel(h),
}


def _sync(x):
    return x


def _live_handle(engine: Engine) -> int:
    rec, aw, next_ = engine._begin(Step(_sync, "sync"), 1, None, None)
    assert next_ is Next.RUN_SYNC and aw is None
    return rec


@pytest.mark.parametrize("method", sorted(HANDLE_METHODS))
def test_garbage_handles_raise_a_clear_error(method):
    call = HANDLE_METHODS[method]
    engine = Engine(OptimizationConfig())
    rng = random.Random(1234)
    garbage = [0, 16, 1, 2**63 - 1, 2**64 - 1] + [rng.getrandbits(64) for _ in range(50)]
    garbage += [rng.getrandbits(32) for _ in range(50)]
    for h in garbage:
        with pytest.raises(StaleHandleError, match="execution handle"):
            call(engine, h)
    for bad in (-1, 2**64, 2**80, 1.5, "16", None, object()):
        with pytest.raises((StaleHandleError, TypeError)):
            call(engine, bad)


def test_engine_timeout_s_of_a_small_int_is_an_error_not_a_crash():
    with pytest.raises(StaleHandleError, match="stale or unknown execution handle"):
        Engine(OptimizationConfig())._timeout_s(16)


@pytest.mark.parametrize("pool_on", [True, False], ids=["object_pool", "no_object_pool"])
@pytest.mark.parametrize("method", sorted(HANDLE_METHODS))
def test_a_handle_after_its_execution_ended_is_stale(method, pool_on):
    engine = Engine(OptimizationConfig(enable_object_pool=pool_on))
    h = _live_handle(engine)
    assert engine._timeout_s(h) == 0.0  # live: valid
    engine._cancel(h)
    with pytest.raises(StaleHandleError, match="execution handle"):
        HANDLE_METHODS[method](engine, h)
    # The record (and its slot) is reused by the next execution: the old
    # handle stays stale, the new one is valid.
    h2 = _live_handle(engine)
    assert h2 != h
    with pytest.raises(StaleHandleError):
        HANDLE_METHODS[method](engine, h)
    assert engine._timeout_s(h2) == 0.0
    engine._cancel(h2)


@pytest.mark.parametrize("method", sorted(HANDLE_METHODS))
def test_a_handle_from_another_executor_is_refused(method):
    one = Engine(OptimizationConfig())
    other = Engine(OptimizationConfig())
    h = _live_handle(one)
    h_other = _live_handle(other)
    with pytest.raises(StaleHandleError, match="execution handle"):
        HANDLE_METHODS[method](other, h)
    with pytest.raises(StaleHandleError, match="execution handle"):
        HANDLE_METHODS[method](one, h_other)
    one._cancel(h)
    other._cancel(h_other)


def test_wait_state_is_an_owned_object_not_an_address():
    engine = Engine(OptimizationConfig(max_concurrent_executions=1))

    async def main():
        step = Step(_sync, "sync")
        h = _live_handle(engine)  # holds the only slot
        state, fut, next_ = engine._begin(step, 2, None, None)
        assert next_ is Next.WAIT_FOR_PERMIT
        assert not isinstance(state, int | tuple)
        for forged in (16, (None, False, False, True, 16), ("x",)):
            with pytest.raises((StaleHandleError, TypeError)):
                engine._begin_permitted(forged, 2, None, None)
            with pytest.raises((StaleHandleError, TypeError)):
                engine._cancel_wait(forged, fut)
        other = Engine(OptimizationConfig(max_concurrent_executions=1))
        with pytest.raises(StaleHandleError, match="another executor"):
            other._begin_permitted(state, 2, None, None)
        engine._cancel(h)  # hands the slot to the waiter
        await fut
        rec, aw, next_ = engine._begin_permitted(state, 2, None, None)
        assert next_ is Next.RUN_SYNC
        # A state is used once.
        with pytest.raises(StaleHandleError, match="already used"):
            engine._begin_permitted(state, 2, None, None)
        with pytest.raises(StaleHandleError, match="already used"):
            engine._cancel_wait(state, fut)
        engine._cancel(rec)

    asyncio.run(main())


def test_shared_tier_admission_is_an_owned_object_not_a_key():
    """The cache key and the flight a shared-tier lookup leads stay native:
    Python holds an _Admission that names its engine and is taken once."""
    engine = Engine(OptimizationConfig(enable_cache_optimization=True))
    engine.set_l2(True)
    step = Step(_sync, "sync", cache=True)
    adm, aw, next_ = engine._begin(step, 7, None, None)
    assert next_ is Next.ASK_SHARED_TIER and aw is None
    assert isinstance(adm.key, bytes) and len(adm.key) == 16
    for forged in (adm.key, 16, None):
        with pytest.raises((StaleHandleError, TypeError)):
            engine._begin_leader(forged, 7, None, None)
        with pytest.raises((StaleHandleError, TypeError)):
            engine._abandon_flight(forged)
    with pytest.raises(StaleHandleError, match="not waiting for this call"):
        engine._begin_permitted(adm, 7, None, None)
    other = Engine(OptimizationConfig(enable_cache_optimization=True))
    with pytest.raises(StaleHandleError, match="another executor"):
        other._begin_leader(adm, 7, None, None)
    rec, aw, next_ = engine._begin_leader(adm, 7, None, None)
    assert next_ is Next.RUN_SYNC
    with pytest.raises(StaleHandleError, match="already used"):
        engine._l2_fill(adm, 1, 0.0, engine._cache_epoch())
    engine._cancel(rec)


# ------------------------------------------------------ the pending result
# An attempt awaited as it is comes back from _begin as a pending
# StepResult: it carries the attempt's awaitable (`_aw`) and stands for the
# execution until _succeed fills it in. Once filled in it stands for none.
async def _echo(x):
    return x


def _pending(engine: Engine, data: object) -> StepResult:
    r = engine._begin(Step(_echo, "echo"), data, None, None)
    assert r.__class__ is StepResult and r._aw is not None, r
    return r


@pytest.mark.parametrize("method", sorted(HANDLE_METHODS))
def test_a_pending_result_stands_for_its_execution_only_until_it_ends(method):
    engine = Engine(OptimizationConfig())

    async def main():
        r = _pending(engine, "mine")
        assert engine._timeout_s(r) == 0.0  # live: a valid handle
        done = engine._fast_calls(_go_on)[1](r, await r._aw)
        assert done is r and r.output == "mine" and r.success and r._aw is None
        with pytest.raises(StaleHandleError, match="stands for no running execution"):
            HANDLE_METHODS[method](engine, r)
        # The record and its slot serve the next execution: the old result
        # stays stale and is never filled in with the next one's output.
        r2 = _pending(engine, "theirs")
        with pytest.raises(StaleHandleError):
            HANDLE_METHODS[method](engine, r)
        assert r.output == "mine" and r._aw is None
        assert engine._fast_calls(_go_on)[1](r2, await r2._aw).output == "theirs"
        assert r.output == "mine"

    asyncio.run(main())


@pytest.mark.parametrize("method", sorted(HANDLE_METHODS))
def test_a_result_made_by_hand_or_by_another_executor_is_refused(method):
    engine, other = Engine(OptimizationConfig()), Engine(OptimizationConfig())

    async def main():
        for made in (StepResult(), StepResult(name="echo", output=1)):
            with pytest.raises(StaleHandleError, match="stands for no running execution"):
                HANDLE_METHODS[method](engine, made)
        theirs = _pending(other, 1)
        h = _live_handle(engine)  # this engine's record 1 is live too
        with pytest.raises(StaleHandleError, match="execution handle"):
            HANDLE_METHODS[method](engine, theirs)
        assert theirs._aw is not None and theirs.output is None  # untouched
        other._cancel(theirs)
        engine._cancel(h)
        theirs._aw.close()

    asyncio.run(main())


def test_a_cancelled_pending_execution_leaves_no_handle_behind():
    engine = Engine(OptimizationConfig())
    r = _pending(engine, 1)
    engine._cancel(r)
    r._aw.close()
    with pytest.raises(StaleHandleError):
        engine._cancel(r)
    assert engine.step_stats()["echo"]["cancelled"] == 1


async def _slow_echo(x):
    await asyncio.sleep((x * 7919 % 13) / 6000)  # finishes out of order
    return ("out", x)


@pytest.mark.parametrize("cache", [False, True], ids=["cache_off", "cache_forced"])
def test_every_concurrent_execution_gets_its_own_filled_in_result(cache):
    ex = ExecutorCore(
        OptimizationConfig(enable_cache_optimization=True, memory_pressure_threshold_mb=1e6)
    )
    step = Step(_slow_echo, "slow_echo", cache=cache)

    async def main():
        results = await asyncio.gather(*(ex.execute(step, i) for i in range(500)))
        assert [r.output for r in results] == [("out", i) for i in range(500)]
        assert len({id(r) for r in results}) == 500
        assert all(r._aw is None and r.success and r.attempts == 1 for r in results)
        again = await ex.execute(step, 3)
        assert again.output == ("out", 3) and again.cache_hit == cache

    asyncio.run(main())


# ------------------------------------------------------ cancellation storm
STORM = textwrap.dedent(
    """
    import asyncio, random, sys, time
    from caudal import CircuitOpenError, ExecutorCore, OptimizationConfig, RetryStrategy, Step
    from caudal import StepTimeoutError

    async def storm(seed, n, pool_on, workers, slots=None):
        rng = random.Random(seed)
        ex = ExecutorCore(OptimizationConfig(
            worker_pool_size=workers, enable_object_pool=pool_on,
            enable_cache_optimization=False, max_concurrent_executions=slots,
            # The breaker opens on the timeouts: refused executions wait
            # for its probe (cancelled while waiting, too).
            circuit_breaker_recovery_timeout_seconds=0.004))
        seen = []

        def make_sync(name):
            def f(x):
                seen.append((name, x))
                time.sleep(0.0005 * (x[1] % 4))
                return (name, x)
            f.__qualname__ = name
            return f

        def make_async(name):
            async def f(x):
                seen.append((name, x))
                await asyncio.sleep(0.0005 * (x[1] % 4))
                return (name, x)
            f.__qualname__ = name
            return f

        steps = []
        for i in range(6):
            name = f"s{i}"
            fn = make_sync(name) if i % 2 == 0 else make_async(name)
            retry = RetryStrategy(max_attempts=rng.choice([1, 2, 3]), base_delay=0.0005,
                                  max_backoff=0.01)
            steps.append(Step(fn, name, timeout_s=rng.choice([None, 0.001, 0.003]),
                              retry=retry))
        loop = asyncio.get_running_loop()
        tasks = []
        for i in range(n):
            step = rng.choice(steps)
            x = (step.name, i)
            t = loop.create_task(ex.execute(step, x))
            tasks.append((t, step.name, x))
            if rng.random() < 0.35:
                loop.call_later(rng.uniform(0, 0.004), t.cancel)
            if i % 16 == 0:
                await asyncio.sleep(rng.uniform(0, 0.002))
        results = await asyncio.gather(*(t for t, _, _ in tasks), return_exceptions=True)
        counts = {"ok": 0, "failed": 0, "cancelled": 0}
        for (t, name, x), r in zip(tasks, results):
            if isinstance(r, asyncio.CancelledError):
                counts["cancelled"] += 1
                continue
            assert not isinstance(r, BaseException), r
            if r.success:
                counts["ok"] += 1
                assert r.output == (name, x), (r.output, name, x)
            else:
                counts["failed"] += 1
                assert isinstance(r.error, (StepTimeoutError, CircuitOpenError)), r.error
        for name, x in seen:
            assert x[0] == name, (name, x)
        await ex.aclose()
        assert ex._engine.in_flight == 0
        conc = ex._engine.concurrency_stats()
        assert conc["slots_in_use"] == 0 and conc["waiting"] == 0, conc
        return counts

    def main(seed, n):
        totals = {"ok": 0, "failed": 0, "cancelled": 0}
        configs = [(True, 1, None), (False, 1, None), (True, 3, None), (False, 2, None),
                   (True, 2, 3)]  # the last: waits for a concurrency slot too
        for k, (pool_on, workers, slots) in enumerate(configs):
            c = asyncio.run(storm(seed + k, n, pool_on, workers, slots))
            for key in totals:
                totals[key] += c[key]
        return totals

    if __name__ == "__main__":
        print(main(int(sys.argv[1]), int(sys.argv[2])))
    """
)


def _storm_module(tmp_path):
    path = tmp_path / "storm.py"
    path.write_text(STORM)
    return path


def test_cancellation_storm_in_process(tmp_path):
    sys.path.insert(0, str(tmp_path))
    try:
        _storm_module(tmp_path)
        import storm

        totals = storm.main(7, 300)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("storm", None)
    assert totals["ok"] > 0 and totals["cancelled"] > 0 and totals["failed"] > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cancellation_storm_in_a_subprocess_does_not_crash(tmp_path, seed):
    path = _storm_module(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(path), str(seed * 101), "300"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])


# ------------------------------------------------------------- the pool
async def test_pool_withdraws_a_queued_task_whose_future_was_cancelled():
    pool = WorkerPool(workers=1, queue_size=10)
    gate = threading.Event()
    ran: list[int] = []
    blocker = pool.submit(gate.wait, 5)
    while pool.stats()["active"] == 0:
        await asyncio.sleep(0.001)
    futs = [pool.submit(ran.append, i) for i in range(4)]
    futs[1].cancel()
    futs[3].cancel()
    gate.set()
    assert await blocker is True
    assert await futs[0] is None and await futs[2] is None
    await pool.aclose()
    assert ran == [0, 2]
    s = pool.stats()
    assert s["withdrawn"] == 2 and s["completed"] == 3


async def test_pool_run_cancelled_while_queued_frees_its_place_at_once():
    pool = WorkerPool(workers=1, queue_size=2)
    gate = threading.Event()
    ran: list[int] = []
    blocker = pool.submit(gate.wait, 5)
    while pool.stats()["active"] == 0:
        await asyncio.sleep(0.001)
    first = asyncio.create_task(pool.run(ran.append, 1))
    second = asyncio.create_task(pool.run(ran.append, 2))
    await _until(lambda: pool.stats()["queued"] == 2)
    with pytest.raises(QueueFullError):
        pool.submit(ran.append, 3)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert pool.stats()["queued"] == 1
    third = pool.submit(ran.append, 3)  # the withdrawn task's place
    gate.set()
    assert await blocker is True
    assert await second is None and await third is None
    await pool.aclose()
    assert ran == [2, 3]
    assert pool.stats()["withdrawn"] == 1
