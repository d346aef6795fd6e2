"""The performance monitor: CPU usage, regression detection, the
recommendation rules and automatic optimization with its hysteresis
(docs/monitoring.md)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from _probes import drive
from caudal import ExecutorCore, OptimizationConfig, Step
from caudal._executor import tuner as _tuner
from caudal._executor.stats import recommend
from caudal._executor.tuner import BOUNDS, COOLDOWN, REVERSAL_COOLDOWN, REVERSAL_PERSISTENCE
from caudal.resilience import immediate_retries
from caudal.testing import ManualClock


def executor(clock=None, **kw) -> ExecutorCore:
    # Recommendation lists are asserted exactly: the pressure level must not
    # depend on this test process's RSS.
    kw.setdefault("memory_pressure_threshold_mb", 1e6)
    return ExecutorCore(OptimizationConfig(**kw), clock=clock)


async def echo(x):
    return x


async def yielding(x):
    await asyncio.sleep(0)
    return x


# ------------------------------------------------------------------ CPU
async def test_cpu_percent_of_the_allowed_cpus_and_its_rule():
    ex = executor(cpu_usage_threshold_percent=80)
    cpu = [0]
    ex._engine._set_cpu_source(lambda: cpu[0], allowed_cpus=4)
    ex.get_optimization_stats()  # first sample
    # Real time: the CPU sampler reads the monotonic clock, not the executor's.
    await asyncio.sleep(0.15)  # more than the 0.1 s a figure needs
    system = ex.get_optimization_stats()["system"]
    assert system["cpu_percent"] == 0.0 and system["allowed_cpus"] == 4
    assert system["cpu_window_s"] > 0.1
    recs = ex.get_performance_recommendations()
    assert not [r for r in recs if r["description"].startswith("CPU")]
    cpu[0] = 10**12  # 1000 CPU seconds in a fraction of a second: saturated
    system = ex.get_optimization_stats()["system"]
    assert system["cpu_percent"] == 100.0  # the share of 4 CPUs, capped
    assert system["cpu_percent_per_core"] > 400.0
    assert system["cpu_usage_threshold_percent"] == 80
    (rec,) = [r for r in ex.get_performance_recommendations() if r["description"].startswith("CPU")]
    assert rec["automatic"] is False and rec["priority"] == "medium"
    assert "of its 4 CPUs" in rec["description"]


async def test_the_real_process_clock():
    ex = executor()
    for i in range(50):
        await ex.execute(echo, i)
    system = ex.get_optimization_stats()["system"]
    assert system["cpu_seconds"] > 0 and system["allowed_cpus"] >= 1
    assert system["cpu_read_errors"] == 0


# ------------------------------------------------------- regressions
async def test_a_step_that_slows_down_is_a_regression():
    # On the manual clock: fast executions take 1 ms, the slow phase 200 ms.
    # No adaptive limit: it would read the slowdown as a saturated backend
    # and serialise the slow phase.
    clock = ManualClock()
    ex = executor(
        clock,
        performance_window_seconds=0.2,
        performance_degradation_threshold=3.0,
        enable_concurrency_optimization=False,
    )
    ex._engine._set_memory_interval(0.005)  # housekeeping (and checkpoints) often
    took = [0.001]  # how long an execution takes; the clock moves in such steps

    async def work(x):
        await clock.sleep(took[0])
        return x

    step = Step(work, "work")
    async with ex.events(types=("regression_detected", "regression_cleared")) as events:
        t0 = clock.now()
        while clock.now() < t0 + 0.7:  # baseline: fast
            await drive(clock, asyncio.gather(*(ex.execute(step, i) for i in range(8))), took[0])
        trend = ex.get_optimization_stats()["execution"]["steps"]["work"]["trend"]
        assert trend["evaluated"] and not trend["regressed"]
        took[0] = 0.2
        t1 = clock.now()
        while not ex.get_optimization_stats()["execution"]["regressions"]:
            assert clock.now() < t1 + 5, (
                "no regression detected: "
                f"{ex.get_optimization_stats()['execution']['steps']['work']['trend']}"
            )
            await drive(clock, asyncio.gather(*(ex.execute(step, i) for i in range(64))), took[0])
        event = await anext(events)
    assert (event.type, event.step) == ("regression_detected", "work")
    assert event.value >= 0.19 and event.value > 4 * event.value2
    reg = ex.get_optimization_stats()["execution"]["regressions"]["work"]
    # (Later checkpoints may hold fewer than 20 recent executions: the
    # verdict then stays as it was.)
    assert reg["recent_executions"] > 0 and reg["baseline_executions"] >= 20
    assert reg["throughput_per_s"] > 0 and reg["regressed_since_s"] is not None
    (rec,) = [r for r in ex.get_performance_recommendations() if "regressed" in r["description"]]
    assert rec["step"] == "work" and rec["priority"] == "high" and not rec["automatic"]
    det = ex.get_optimization_stats()["execution"]["regression_detection"]
    assert det["min_executions"] == 20 and det["checkpoints"] > 4


async def test_no_checkpoints_with_monitoring_off():
    clock = ManualClock()
    ex = executor(clock, enable_performance_monitoring=False)
    ex._engine._set_memory_interval(0.001)
    for i in range(20):
        await ex.execute(echo, i)
        clock.advance(0.002)
    stats = ex.get_optimization_stats()
    assert stats["execution"]["regression_detection"]["checkpoints"] == 0
    assert stats["execution"]["steps"]["echo"]["trend"] is None


# --------------------------------------------------------------- rules
async def test_a_cache_without_hits():
    ex = executor(enable_cache_optimization=True)
    for i in range(150):  # every input new
        await ex.execute(echo, i)
    (rec,) = ex.get_performance_recommendations()
    assert rec["step"] == "echo" and rec["priority"] == "low" and not rec["automatic"]
    assert "150 cache lookups and not one hit" in rec["description"]


async def test_no_hits_with_evictions_is_not_called_inputs_that_never_repeat():
    # 200 inputs in a cycle through an LRU cache of 100: every input repeats,
    # yet each comes back just after it was evicted, so not one hit. Raising
    # cache_max_size would fix it; "its inputs do not repeat" would be false.
    ex = executor(enable_cache_optimization=True, cache_max_size=100)
    step = Step(echo, "cycling", cache=True)
    for _ in range(2):
        for i in range(200):
            await ex.execute(step, i)
    (rec,) = ex.get_performance_recommendations()
    assert rec["step"] == "cycling" and not rec["automatic"]
    text = rec["description"]
    assert "400 cache lookups and not one hit" in text
    assert "do not repeat" not in text or "either" in text, text
    assert "evicted 300" in text and "cache_max_size" in text, text


async def test_a_breaker_that_keeps_opening():
    clock = ManualClock()
    ex = executor(
        clock,
        circuit_breaker_failure_threshold=1,
        circuit_breaker_minimum_calls=1,
        circuit_breaker_recovery_timeout_seconds=10,
    )

    async def down(x):
        raise ConnectionError("backend down")

    step = Step(down, "down")
    for _ in range(3):
        await ex.execute(step, 1)  # opens (again: the probe failed)
        clock.advance(10)
    assert ex.get_optimization_stats()["circuit_breaker"]["open_count"] == 3
    recs = [r for r in ex.get_performance_recommendations() if r.get("key") == "down"]
    (rec,) = recs
    assert rec["priority"] == "high" and not rec["automatic"]
    assert "circuit_breaker_recovery_timeout_seconds" in rec["description"]
    # Judged since the last analysis: right after one, nothing new.
    await ex.run_optimization_analysis()
    assert not [r for r in ex.get_performance_recommendations() if r.get("key") == "down"]


async def test_a_worker_pool_queue_that_is_often_full():
    ex = executor(worker_pool_size=1, worker_pool_queue_size=1)

    def blocking(x):
        time.sleep(0.002)
        return x

    results = await asyncio.gather(*(ex.execute(blocking, i) for i in range(30)))
    assert all(r.success for r in results)
    (rec,) = [r for r in ex.get_performance_recommendations() if "Worker pool" in r["description"]]
    assert rec["automatic"] is True
    assert rec["action"] == {"field": "worker_pool_queue_size", "value": 2, "current": 1}
    (change,) = await ex.run_optimization_analysis()
    # Doubled, then raised to the lower bound.
    assert (change["field"], change["old"], change["new"]) == ("worker_pool_queue_size", 1, 16)
    assert ex.optimization_config.worker_pool_queue_size == 16
    await ex.aclose()


async def test_a_concurrency_limit_pinned_at_its_maximum():
    ex = executor(
        enable_concurrency_optimization=True,
        concurrency_initial_limit=2,
        concurrency_min_limit=1,
        concurrency_max_limit=2,
    )
    gate = asyncio.Event()

    async def held(x):
        await gate.wait()
        return x

    step = Step(held, "held")
    tasks = [asyncio.create_task(ex.execute(step, i)) for i in range(6)]
    for _ in range(5):
        await asyncio.sleep(0)
    key = ex.get_optimization_stats()["concurrency"]["keys"]["held"]
    assert (key["limit"], key["in_flight"], key["waiting"]) == (2, 2, 4)
    (rec,) = ex.get_performance_recommendations()
    assert rec["key"] == "held" and rec["automatic"]
    assert rec["action"] == {"field": "concurrency_max_limit", "value": 4, "current": 2}
    (change,) = await ex.run_optimization_analysis()
    assert (change["field"], change["old"], change["new"]) == ("concurrency_max_limit", 2, 4)
    gate.set()
    assert all(r.success for r in await asyncio.gather(*tasks))


async def test_telemetry_overhead_rule_reads_the_telemetry_section():
    ex = executor()
    await ex.execute(echo, 1)
    stats = ex.get_optimization_stats()
    cfg = ex.optimization_config
    # Without the exporter's keys the rule says nothing.
    assert recommend(stats, cfg, None) == []
    stats["telemetry"] = {"spans_exported": 5000, "export_seconds": 0.6, "uptime_seconds": 10.0}
    (rec,) = recommend(stats, cfg, None)
    assert rec["automatic"] is True and "6%" in rec["description"]
    assert rec["action"] == {"field": "telemetry_sampling_rate", "value": 0.5, "current": 1.0}
    stats["telemetry"]["export_seconds"] = 0.4  # 4%: fine
    assert recommend(stats, cfg, None) == []
    # With marks, only the time since the last analysis counts.
    marks = {"export_seconds": 0.35, "uptime_seconds": 5.0}
    stats["telemetry"]["export_seconds"] = 0.7  # 0.35 s of the last 5 s: 7%
    assert [r["action"]["field"] for r in recommend(stats, cfg, marks)] == [
        "telemetry_sampling_rate"
    ]


# ------------------------------------------------ automatic optimization
async def run_cached(ex: ExecutorCore, step: Step, keys: int) -> None:
    """A working set of `keys` inputs, each asked three times in a row:
    two hits in three lookups, and an eviction per new key once full."""
    for i in range(keys):
        for _ in range(3):
            await ex.execute(step, i)


def field_changes(ex: ExecutorCore, field: str) -> list[dict]:
    return [
        c
        for c in ex.get_optimization_stats()["automatic_optimization"]["changes"]
        if c["field"] == field
    ]


def cache_with_rss() -> tuple[ExecutorCore, Step, list[int]]:
    """A cached step on an executor whose RSS reading is rss[0] bytes
    (10 MB, under its 100 MB pressure threshold, until a test sets it)."""
    ex = executor(
        enable_cache_optimization=True,
        cache_max_size=100,
        memory_pressure_threshold_mb=100,
    )
    rss = [10 * 2**20]
    ex._engine._set_rss_source(lambda: rss[0])
    return ex, Step(echo, "cached", cache=True), rss


async def test_alternating_load_does_not_make_the_tuner_flip_flop(monkeypatch):
    # The E phase's inputs never come back once evicted, so a raise never
    # pays and the tuner would stop after the first one
    # (test_input_limits.py checks that); here every raise counts as paid,
    # to watch the hysteresis alone.
    monkeypatch.setattr(_tuner, "CACHE_MIN_GAIN", -1.0)
    ex, step, rss = cache_with_rss()

    async def phase(kind: str) -> list[dict]:
        if kind == "E":  # evictions with a good hit rate, memory normal
            rss[0] = 10 * 2**20
            ex._engine.memory_stats()  # act on the reading now
            await run_cached(ex, step, 1000)
        else:  # memory pressure (critical), no cache traffic
            rss[0] = 200 * 2**20
        return await ex.run_optimization_analysis()

    async with ex.events(types="optimization_applied") as events:
        # A naive tuner would go 100 -> 200 -> 100 -> 200 ...
        script = "EP" * 6 + "PPPP" + "E" * 8
        applied = {}
        for n, kind in enumerate(script, start=1):
            for c in await phase(kind):
                applied[n] = c
        changes = field_changes(ex, "cache_max_size")
        published = [await anext(events) for _ in changes]
    steps = [(c["analysis"], c["old"], c["new"]) for c in changes]
    # Alternating: only the direction it started with, one cooldown apart
    # (5 and 9 are E analyses after the cooldown; a reversal never persists).
    # Sustained pressure (12..16): the reversal waits for 3 consecutive
    # analyses (12, 13, 14); the E phase after it (17..) reverses again
    # only once its condition persisted and the longer cooldown (14 + 6)
    # is over.
    assert steps == [
        (1, 100, 200),
        (5, 200, 400),
        (9, 400, 800),
        (14, 800, 400),
        (20, 400, 800),
    ]
    assert [c["reversal"] for c in changes] == [False, False, False, True, True]
    lo, hi = BOUNDS["cache_max_size"]
    for c in changes:
        assert lo <= c["new"] <= hi
    # Never A -> B -> A within a cooldown, and each reversal persisted.
    for prev, cur in itertools.pairwise(changes):
        gap = cur["analysis"] - prev["analysis"]
        assert gap >= (REVERSAL_COOLDOWN if prev["reversal"] else COOLDOWN)
        if cur["reversal"]:
            assert script[cur["analysis"] - REVERSAL_PERSISTENCE : cur["analysis"]] in (
                "PPP",
                "EEE",
            )
    assert ex.optimization_config.cache_max_size == 800
    assert [(e.step, e.value, e.value2) for e in published] == [
        ("cache_max_size", float(new), float(old)) for _, old, new in steps
    ]
    auto = ex.get_optimization_stats()["automatic_optimization"]
    assert auto["analyses"] == len(script) and auto["failed"] == 0
    assert auto["enabled"] is False  # the analyses here were asked for


async def test_no_cache_raise_under_memory_pressure():
    ex, step, rss = cache_with_rss()
    await run_cached(ex, step, 1000)
    assert [c["field"] for c in await ex.run_optimization_analysis(dry_run=True)] == [
        "cache_max_size"
    ]
    assert ex.get_optimization_stats()["automatic_optimization"]["analyses"] == 0  # dry run
    rss[0] = 110 * 2**20  # elevated: only the cut
    (change,) = await ex.run_optimization_analysis()
    assert (change["old"], change["new"]) == (100, 64)  # halved, raised to the bound


async def fresh_inputs(ex: ExecutorCore, step: Step, fresh, n: int) -> None:
    """`n` new inputs, each asked three times in a row and never again: two
    hits in three lookups at any cache size, an eviction per input."""
    for _ in range(n):
        i = next(fresh)
        for _ in range(3):
            await ex.execute(step, i)


async def test_no_cache_raise_is_recommended_after_a_raise_that_did_not_pay():
    ex, step, _ = cache_with_rss()
    fresh = itertools.count()
    await fresh_inputs(ex, step, fresh, 1000)
    (raised,) = ex.get_performance_recommendations()
    assert raised["action"]["field"] == "cache_max_size"  # the evidence so far
    (change,) = await ex.run_optimization_analysis()
    assert (change["old"], change["new"]) == (100, 200)
    for analysis in range(2, 2 + COOLDOWN + 1):
        # Same hit rate at 200 as at 100: the evicted inputs never came back.
        await fresh_inputs(ex, step, fresh, 1000)
        recs = ex.get_performance_recommendations()
        assert not [r for r in recs if (r.get("action") or {}).get("field") == "cache_max_size"]
        (rec,) = recs
        assert rec["automatic"] is False and "action" not in rec
        text = rec["description"]
        assert "Raise cache_max_size" not in text, text
        assert "100 -> 200" in text and "did not raise the hit rate" in text, text
        assert "cache_max_size=100 did about as well" in text, text
        # The tuner agrees: it holds the raise (first for its cooldown), then
        # for the same reason.
        assert await ex.run_optimization_analysis() == []
        last = ex.get_optimization_stats()["automatic_optimization"]["last_analysis"]
        (held,) = last["held"]
        why = "cooldown" if analysis - 1 < COOLDOWN else "did not raise the hit rate"
        assert why in held["reason"], (analysis, held)
    assert ex.optimization_config.cache_max_size == 200


async def test_the_interval_driver_applies_on_the_loop_thread():
    ex = executor(
        enable_cache_optimization=True,
        cache_max_size=100,
        enable_automatic_optimization=True,
        optimization_analysis_interval_seconds=0.05,
    )
    ex._engine._set_memory_interval(0.005)
    step = Step(yielding, "cached", cache=True)
    loop_thread = threading.get_ident()
    seen = []
    async with ex.events(types=("optimization_applied", "config_changed")) as events:
        deadline = time.monotonic() + 20
        while not field_changes(ex, "cache_max_size"):
            assert time.monotonic() < deadline, "no automatic change"
            await run_cached(ex, step, 300)
        seen = [await anext(events), await anext(events)]
        assert threading.get_ident() == loop_thread
    auto = ex.get_optimization_stats()["automatic_optimization"]
    assert auto["enabled"] is True and auto["analyses"] >= 1
    (change,) = field_changes(ex, "cache_max_size")
    assert (change["old"], change["new"]) == (100, 200)
    assert ex.optimization_config.cache_max_size == 200
    assert [e.type for e in seen] == ["config_changed", "optimization_applied"]
    assert seen[0].detail == "cache_max_size"


async def test_automatic_optimization_off_runs_no_analysis():
    clock = ManualClock()
    ex = executor(clock, enable_cache_optimization=True, cache_max_size=100)
    ex._engine._set_memory_interval(0.001)
    step = Step(yielding, "cached", cache=True)
    for _ in range(3):
        await run_cached(ex, step, 300)
        clock.advance(60)
    assert ex.get_optimization_stats()["automatic_optimization"]["analyses"] == 0
    assert ex.optimization_config.cache_max_size == 100


def test_an_analysis_lost_with_its_loop_does_not_stop_later_ones():
    # The loop closes between scheduling an analysis and running it: the
    # pending mark goes stale and the next due time schedules anew.
    ex = ExecutorCore(OptimizationConfig(enable_automatic_optimization=True))
    due = ex._tuner.hook(ex)

    loop = asyncio.new_event_loop()
    loop.call_soon(due)
    loop.call_soon(loop.stop)  # stops before the analysis due() schedules
    loop.run_forever()
    loop.close()  # the analysis never ran
    assert ex._tuner._scheduled is not None
    ex._tuner._scheduled = time.monotonic() - 60  # as if long ago

    async def again():
        due()
        await asyncio.sleep(0)  # the scheduled analysis runs

    asyncio.run(again())
    assert ex._tuner._scheduled is None
    assert ex.get_optimization_stats()["automatic_optimization"]["analyses"] == 1


def step_recs(ex: ExecutorCore, name: str) -> list[str]:
    return [r["description"] for r in ex.get_performance_recommendations() if r.get("step") == name]


async def test_a_slow_step_is_not_told_to_set_what_it_already_has():
    # Every execution is "slow" against a tiny threshold; the inputs differ,
    # so the cached step misses every time.
    ex = executor(slow_execution_threshold_ms=0.0001)
    bare = Step(yielding, "bare")
    guarded = Step(yielding, "guarded", timeout_s=5.0, cache=True)
    timed = Step(yielding, "timed", timeout_s=5.0)
    for i in range(10):
        await ex.execute(bare, i)
        await ex.execute(guarded, i)
        await ex.execute(timed, i)

    (text,) = step_recs(ex, "bare")
    assert "Set a timeout_s on the step" in text and "cache it" in text

    (text,) = step_recs(ex, "guarded")
    assert "Set a timeout_s" not in text and "cache it" not in text
    assert "timeout_s=5" in text and "cached" in text

    (text,) = step_recs(ex, "timed")
    assert "Set a timeout_s" not in text and "cache it if its inputs repeat" in text


async def test_a_failing_step_without_a_breaker_is_not_told_to_enable_one():
    ex = executor(enable_circuit_breaker=False)

    async def boom(x):
        raise ValueError(x)

    for step in (Step(boom, "opted_out", breaker=False), Step(boom, "breakable")):
        for i in range(10):
            await ex.execute(step, i)
    assert step_recs(ex, "opted_out") == []
    (text,) = step_recs(ex, "breakable")
    assert "Enable the circuit breaker" in text


async def test_timeout_and_retry_advice_names_the_current_values():
    ex = executor()

    async def hang(x):
        await asyncio.sleep(1)  # timed out: timeout_s runs on the loop's clock

    async def boom(x):
        raise ValueError(x)

    hangs = Step(hang, "hangs", timeout_s=0.01)
    fails = Step(boom, "fails", retry=immediate_retries(1))
    for i in range(10):
        await ex.execute(hangs, i)
        await ex.execute(fails, i)
    (text,) = [t for t in step_recs(ex, "hangs") if "timed out" in t]
    assert "Raise the step's timeout_s (now 0.01)" in text
    (text,) = step_recs(ex, "fails")
    assert "retries never recovered" in text and "lower max_retries (now 1)" in text


# ------------------------------------------- the native rules' boundary
def test_step_names_in_recommendations_are_spelled_as_repr_does():
    # The rules are native; their text quotes names as Python's repr().
    stats_step = {
        "executions": 10,
        "attempts": 10,
        "errors": 0,
        "retries": 0,
        "recovered": 0,
        "timeouts": 0,
        "cache_hits": 0,
        "cache_misses": 0,
        "shared_flights": 0,
        "p95_ms": 5000.0,
    }
    names = ["plain", "it's", 'say "hi"', "both ' and \"", "tab\there", "naïve", "back\\slash"]
    stats = {
        "execution": {"steps": {n: dict(stats_step) for n in names}, "regressions": {}},
        "circuit_breaker": {"breakers": {}},
        "concurrency": {"keys": {}, "worker_pool": None},
        "cache": {},
        "memory": {"memory_pressure_level": "normal"},
    }
    recs = recommend(stats, OptimizationConfig(), None)
    assert [r["description"].split(": p95")[0] for r in recs] == [f"Step {n!r}" for n in names]
    assert all(r["step"] == n for r, n in zip(recs, names, strict=True))


async def test_the_public_recommendations_are_the_native_rules_over_the_stats():
    ex = executor(enable_circuit_breaker=False, slow_execution_threshold_ms=0.0001)

    async def failing(x):
        await asyncio.sleep(0)
        raise ValueError(x)

    for i in range(12):
        await ex.execute(yielding, i)
        await ex.execute(Step(failing, "failing"), i)
    public = ex.get_performance_recommendations()
    assert {r.get("step") for r in public} == {"yielding", "failing"}
    stats = ex.get_optimization_stats()
    cfg = ex.optimization_config
    assert list(public) == recommend(stats, cfg, None)
    # After an analysis, the public ones are judged since its marks.
    await ex.run_optimization_analysis()
    marks = ex._tuner.marks
    assert marks is not None and set(marks) >= {"cache_hits", "breaker_opens"}
    assert list(ex.get_performance_recommendations()) == recommend(
        ex.get_optimization_stats(), ex.optimization_config, marks
    )
