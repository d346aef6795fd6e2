"""The step table and the step analysis: a bounded table that evicts the
least recently used step, an analysis shared by every function object of
one code object, and an identity that stays exact whichever way it was
computed (closures over different values never share results)."""

from __future__ import annotations

import asyncio
import functools
import gc
import types
import weakref

import pytest

from caudal import ExecutorCore, OptimizationConfig, RetryStrategy, Step, _core, _identity, _steps
from caudal.testing import ManualClock

CAPACITY = 4096  # the step table's (StepTable::kDefaultCapacity)
MORE = CAPACITY + 300  # enough distinct steps to evict some


# The executor's time: steps "take" 1 ms on it, so that caching them always
# pays (the cache admission would otherwise stop caching steps this cheap
# that never hit) and these tests see every hit the keys allow.
CLOCK = ManualClock()


def executor(cache: bool = False) -> ExecutorCore:
    return ExecutorCore(
        OptimizationConfig(
            enable_cache_optimization=cache,
            cache_max_size=4 * MORE,  # room for every result these tests store
            cache_ttl_seconds=1e6,
            memory_pressure_threshold_mb=1e6,
        ),
        clock=CLOCK,
    )


def make_adder(k):
    async def add(x):
        CLOCK.advance(0.001)
        return x + k

    return add


def analysis(ex: ExecutorCore) -> dict:
    return ex.get_optimization_stats()["execution"]["step_analysis"]


# ---- identity: what the cache key includes for a step ----


async def test_closures_over_different_values_never_share_results():
    ex = executor(cache=True)
    # Two rounds over more closures than the table holds: the second round
    # meets every closure again after its entry was evicted.
    for rnd in range(2):
        for k in range(MORE):
            r = await ex.execute(make_adder(k), 1000)
            assert r.success and r.output == 1000 + k, (rnd, k, r.output)
            # A fresh closure over the same value is the same function.
            assert r.cache_hit == (rnd == 1), (rnd, k)
    await ex.aclose()


async def test_closures_with_the_same_values_share_across_objects():
    ex = executor(cache=True)
    first = await ex.execute(make_adder(5), 1)
    again = await ex.execute(make_adder(5), 1)  # another object, same code and value
    other = await ex.execute(make_adder(6), 1)
    assert (first.output, first.cache_hit) == (6, False)
    assert (again.output, again.cache_hit) == (6, True)
    assert (other.output, other.cache_hit) == (7, False)
    await ex.aclose()


async def test_fresh_lambda_per_call_with_cache_on_keys_each_input():
    ex = executor(cache=True)
    for i in range(3000):
        r = await ex.execute(lambda x: CLOCK.advance(0.001) or x * 3, i % 50)
        assert r.success and r.output == (i % 50) * 3
        assert r.cache_hit == (i >= 50)
    # A fresh lambda over a loop variable: the captured value is part of
    # its identity.
    for i in range(600):
        k = i % 7
        r = await ex.execute(lambda x, k=k: CLOCK.advance(0.001) or x + k, 100)
        assert r.output == 100 + k
        assert r.cache_hit == (i >= 7)
    for i in range(600):
        k = i % 7

        def plus(x):
            CLOCK.advance(0.001)
            return x + k + 1000  # noqa: B023 - run before k changes: the point

        r = await ex.execute(plus, 100)
        assert r.output == 1100 + k, (i, r.output)
    await ex.aclose()


async def test_unplain_captured_values_still_get_the_full_walk():
    class Scale:
        def __init__(self, n):
            self.n = n

    def make(s):
        async def scaled(x):
            CLOCK.advance(0.001)
            return x * s.n

        return scaled

    ex = executor(cache=True)
    got = [(await ex.execute(make(Scale(n)), 2)) for n in (1, 2, 1)]
    assert [(r.output, r.cache_hit) for r in got] == [(2, False), (4, False), (2, True)]
    await ex.aclose()


def test_native_and_python_identities_agree():
    """The executor computes a plain function's identity natively
    (function_key under the code's static digest); caudal._identity's walk
    gives the same namespace, for functions met alone or nested."""
    for fn in (make_adder(3), make_adder("a"), lambda x, d=(1, 2.5, None): x, lambda: None):
        static = _identity.function_static(fn)
        key = _core.function_key(fn, static)
        assert key is not None and len(key) == 16
        assert _identity.namespace("s", fn, None) == (f"s\x1f{key.hex()}", None)
    a, b = make_adder(3), make_adder(4)
    assert _identity.namespace("s", a, None) != _identity.namespace("s", b, None)
    assert _identity.namespace("s", a, None) == _identity.namespace("s", make_adder(3), None)
    # Not plain data: no native key; the walk decides.
    obj = object()
    assert _core.function_key((lambda: obj), _identity.function_static(lambda: obj)) is None
    # Types are exact: 1 and True and 1.0 are three identities.
    keys = {_identity.namespace("s", make_adder(v), None) for v in (1, True, 1.0)}
    assert len(keys) == 3


# ---- the analysis shared by code object ----


async def test_same_code_with_different_defaults_is_analysed_apart():
    seen = []

    def base(x, y):
        seen.append(y)
        return x

    code = base.__code__
    cells = base.__closure__
    # One code, one name: only the defaults tell them apart.
    two_args = types.FunctionType(code, globals(), "base", None, cells)
    one_arg = types.FunctionType(code, globals(), "base", ("dflt",), cells)
    ex = executor()
    r1 = await ex.execute(two_args, 1, context="ctx")  # fn(data, context)
    r2 = await ex.execute(one_arg, 2, context="ctx")  # fn(data): y defaulted
    r3 = await ex.execute(types.FunctionType(code, globals(), "base", None, cells), 3, "c3")
    assert r1.success and r2.success and r3.success, (r1.error, r2.error, r3.error)
    assert seen == ["ctx", "dflt", "c3"]
    assert ex.get_optimization_stats()["execution"]["steps"]["base"]["executions"] == 3
    await ex.aclose()


async def test_a_renamed_or_wrapped_function_is_analysed_as_it_is():
    def make():
        async def work(x):
            return x

        return work

    renamed = make()
    renamed.__name__ = "renamed"
    ex = executor()
    await ex.execute(make(), 1)
    await ex.execute(renamed, 1)
    steps = ex.get_optimization_stats()["execution"]["steps"]
    assert steps["work"]["executions"] == 1 and steps["renamed"]["executions"] == 1

    # A function with attributes of its own (functools.wraps) is analysed
    # on its own: its signature is the wrapped one's.
    async def inner(x, context):
        return (x, context)

    @functools.wraps(inner)
    async def wrapper(*args, **kw):
        return await inner(*args, **kw)

    r = await ex.execute(wrapper, 1, context="c")
    assert r.output == (1, "c")
    await ex.aclose()


@pytest.fixture
def analyse_calls(monkeypatch):
    """The names caudal._steps.analyse was called for (executors made after
    the fixture look it up)."""
    calls = []
    real = _steps.analyse

    def counting(obj, *args):
        a = real(obj, *args)
        calls.append(a.name)
        return a

    monkeypatch.setattr(_steps, "analyse", counting)
    return calls


async def test_one_analysis_per_code_object_and_per_step(analyse_calls):
    ex = executor(cache=True)
    for i in range(MORE):
        assert (await ex.execute(lambda x: x - 1, i)).output == i - 1
    assert analyse_calls == ["<lambda>"]
    analyse_calls.clear()
    steps = [Step(make_adder(i), f"n{i}") for i in range(MORE)]
    for _ in range(2):  # the second round meets every step evicted
        for i, s in enumerate(steps):
            assert (await ex.execute(s, 1)).output == 1 + i
    assert len(analyse_calls) == MORE
    await ex.aclose()


async def test_a_remembered_step_is_not_kept_alive():
    ex = executor(cache=True)

    def make():
        box = []

        async def refers_to_its_step(x):
            return box[0].name  # the step, through the closure: a cycle

        s = Step(refers_to_its_step, "cyclic", fallback=Step(make_adder(1), "fb"))
        box.append(s)
        return s

    s = make()
    assert (await ex.execute(s, 1)).output == "cyclic"
    for k in range(MORE):  # evicted
        await ex.execute(make_adder(k), 0)
    assert (await ex.execute(s, 1)).output == "cyclic"  # remembered
    ref = weakref.ref(s)
    del s
    await ex.aclose()
    del ex
    gc.collect()
    assert ref() is None


# ---- eviction ----


async def test_eviction_is_of_single_entries_and_analyses_stay_bounded():
    ex = executor()
    hot = make_adder(0)
    for k in range(MORE):
        assert (await ex.execute(make_adder(k), 1)).output == 1 + k
        await ex.execute(hot, 1)  # kept the most recently used
    a = analysis(ex)
    assert a["size"] == CAPACITY
    before = a["analyses"]
    await ex.execute(hot, 1)
    assert analysis(ex)["analyses"] == before  # never evicted: no new analysis
    await ex.aclose()


async def test_steps_of_one_name_over_different_closures_never_share():
    ex = executor(cache=True)
    for rnd in range(2):
        for k in range(MORE):
            r = await ex.execute(Step(make_adder(k), "same"), 0)
            assert r.output == k and r.cache_hit == (rnd == 1), (rnd, k)
    await ex.aclose()


async def test_stats_per_name_stay_exact_across_evictions():
    ex = executor(cache=True)
    names = [f"s{i}" for i in range(MORE)]
    for _ in range(2):
        for i, name in enumerate(names):
            r = await ex.execute(Step(make_adder(i), name), i)
            assert r.output == 2 * i
    # Closures of one factory share one name: its count is every call's.
    for k in range(MORE):
        await ex.execute(make_adder(k), 0)
    st = ex.get_optimization_stats()["execution"]
    steps = st["steps"]
    assert all(steps[n]["executions"] == 2 for n in names)
    assert all(steps[n]["cache_hits"] == 1 for n in names)
    assert steps["add"]["executions"] == MORE
    assert st["total_executions"] == 3 * MORE
    await ex.aclose()


async def test_a_step_evicted_while_in_flight_completes():
    ex = executor(cache=True)
    gate = asyncio.Event()
    calls = []

    async def slow(x):
        calls.append(x)
        await gate.wait()
        CLOCK.advance(0.001)
        return x * 2

    task = asyncio.create_task(ex.execute(slow, 21))
    await asyncio.sleep(0)
    assert calls == [21]
    for k in range(MORE):  # evicts `slow` from the table
        await ex.execute(make_adder(k), 0)
    gate.set()
    r = await task
    assert r.success and r.output == 42 and not r.cache_hit
    # Its result was stored under its identity: the same function hits.
    again = await ex.execute(slow, 21)
    assert again.output == 42 and again.cache_hit
    assert calls == [21]
    steps = ex.get_optimization_stats()["execution"]["steps"]
    assert steps["slow"]["executions"] == 2 and steps["slow"]["in_flight"] == 0
    await ex.aclose()


async def test_a_step_remembered_by_one_executor_keeps_another_executors_state_apart():
    calls = []

    async def fetch(x):
        calls.append(x)
        CLOCK.advance(0.001)
        return x

    step = Step(fetch, "fetch")
    a, b = executor(cache=True), executor(cache=True)
    await a.execute(step, 1)
    assert not (await b.execute(step, 1)).cache_hit  # b's own cache
    # b records the step's name for its own prefix invalidations.
    assert await b.invalidate_prefix("fet") >= 1
    assert not (await b.execute(step, 1)).cache_hit
    assert (await a.execute(step, 1)).cache_hit  # a's cache is a's
    assert calls == [1, 1, 1]
    await a.aclose()
    await b.aclose()


# ---- a full table reuses entries instead of making new ones ----

GATED: dict = {}


async def test_a_closure_in_flight_is_never_refitted_for_another():
    """On a full table a new closure of a factory takes over the least
    recently used entry of the same code (StepTable::Refit) — but never one
    an execution still holds: that execution must go on with its own
    function and identity."""
    ex = ExecutorCore(
        OptimizationConfig(
            enable_cache_optimization=True,
            cache_max_size=4 * MORE,
            cache_ttl_seconds=1e6,
            memory_pressure_threshold_mb=1e6,
        ),
        retry_strategy=RetryStrategy(max_attempts=2, base_delay=0.0, max_backoff=0.0),
        clock=CLOCK,
    )
    # Module globals, not captured values: the closures stay plain data,
    # so that their results are cached under their identity.
    GATED["gate"] = gate = asyncio.Event()
    GATED["attempts"] = attempts = []

    def make_gated(k):
        async def gated(x):
            if k == 0:
                GATED["attempts"].append(x)
                if len(GATED["attempts"]) == 1:
                    await GATED["gate"].wait()
                    # The retry calls the entry's function again: its own.
                    raise ValueError("first attempt fails")
            CLOCK.advance(0.001)
            return x + k

        return gated

    first = make_gated(0)
    task = asyncio.create_task(ex.execute(first, 100))
    await asyncio.sleep(0)
    # Enough closures of the same code to make `first`'s entry the least
    # recently used of a full table, and then to pass it.
    for k in range(1, MORE):
        r = await ex.execute(make_gated(k), 100)
        assert r.output == 100 + k and not r.cache_hit, k
    gate.set()
    r = await task
    assert r.success and r.output == 100 and not r.cache_hit
    assert r.attempts == 2 and attempts == [100, 100]
    # Its result was stored under its own identity, not a refitted one's.
    again = await ex.execute(make_gated(0), 100)
    assert again.output == 100 and again.cache_hit
    other = await ex.execute(make_gated(7), 100)
    assert other.output == 107
    await ex.aclose()


async def test_steps_met_again_after_eviction_grow_the_table():
    """A working set of caudal.Steps larger than the table (a big pipeline
    run again) would evict on every pass what the next pass needs: the
    table grows instead, and each step keeps its own results."""
    ex = executor(cache=True)
    n = CAPACITY + CAPACITY // 2
    steps = [Step(make_adder(i), f"g{i}") for i in range(n)]
    assert analysis(ex)["capacity"] == CAPACITY
    for rnd in range(3):
        for i, s in enumerate(steps):
            r = await ex.execute(s, 1)
            assert r.output == 1 + i and r.cache_hit == (rnd > 0), (rnd, i)
    a = analysis(ex)
    assert a["capacity"] > n and a["size"] == n
    evictions = a["evictions"]
    for s in steps:
        await ex.execute(s, 2)
    assert analysis(ex)["evictions"] == evictions  # the pass fits now
    stats = ex.get_optimization_stats()["execution"]["steps"]
    assert all(stats[f"g{i}"]["executions"] == 4 for i in range(n))
    await ex.aclose()


async def test_closures_never_grow_the_table():
    ex = executor()
    for _ in range(2):
        for k in range(MORE):
            await ex.execute(make_adder(k), 0)
    a = analysis(ex)
    assert (a["capacity"], a["size"]) == (CAPACITY, CAPACITY)
    assert a["evictions"] == 2 * MORE - CAPACITY
    await ex.aclose()


async def test_an_evicted_step_is_not_kept_alive_by_a_live_executor():
    ex = executor(cache=True)
    box = []

    async def refers_to_its_step(x):
        return box[0].name  # the step, through the closure: a cycle

    s = Step(refers_to_its_step, "cyclic")
    box.append(s)
    assert (await ex.execute(s, 1)).output == "cyclic"
    for k in range(MORE):  # evicted: its entry is kept for it, without it
        await ex.execute(make_adder(k), 0)
    ref = weakref.ref(s)
    del s, box[:]
    del refers_to_its_step
    gc.collect()
    assert ref() is None
    assert (await ex.execute(make_adder(1), 1)).output == 2  # still sound
    await ex.aclose()


async def test_a_refitted_entry_follows_what_its_code_learnt_about_caching():
    """The cache admission judges a step by its name's recent lookups and
    marks the entry it is judging; an entry refitted for a new closure
    takes the template's latest verdict, as a new entry would, so that
    closures cycled through a full table stop looking up results that
    never hit once the verdict changed."""
    ex = ExecutorCore(
        OptimizationConfig(
            enable_cache_optimization=True,
            cache_max_size=100,
            cache_ttl_seconds=1e6,
            memory_pressure_threshold_mb=1e6,  # an instrumented build's memory is no pressure
        ),
        clock=CLOCK,
    )

    def make(k):
        async def ten_us(x):  # below the "always cache" latency
            CLOCK.advance(0.00001)
            return x + k

        return ten_us

    # A full table of entries whose caching pays: 50 values, met again.
    for i in range(CAPACITY + CAPACITY // 4):
        assert (await ex.execute(make(i % 50), 0)).output == i % 50
    before = ex.get_optimization_stats()["execution"]["steps"]["ten_us"]
    assert before["cache_hits"] > CAPACITY and before["cache_bypassed"] == 0
    # New values only: no lookup hits, and caching stops paying.
    calls = 2 * MORE
    for i in range(calls):
        assert (await ex.execute(make(1000 + i), 0)).output == 1000 + i
    row = ex.get_optimization_stats()["execution"]["steps"]["ten_us"]
    assert row["cache_bypassed"] > calls // 2, row
    await ex.aclose()
