"""caudal.integrations.prometheus: the collector against prometheus-client's own parser,
and a scrape of the real /metrics endpoint."""

import asyncio
import socket
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from caudal import ExecutorCore, OptimizationConfig, Step
from caudal.integrations.prometheus import BUCKETS, register, start_http_server


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def work(ex):
    async def ok(x):
        await asyncio.sleep(0.001)
        return x

    async def bad(x):
        raise ValueError("nope")

    await ex.execute_many(Step(ok, "ok", max_concurrency=4), range(30))
    cached = Step(ok, "cached", cache=True)
    for i in range(6):
        await ex.execute(cached, i % 2)
    await ex.execute_many(Step(bad, "bad", max_retries=1), range(3))


async def test_metrics_match_the_stats_and_parse():
    ex = ExecutorCore(
        OptimizationConfig(enable_cache_optimization=True, memory_pressure_threshold_mb=1e6)
    )
    await work(ex)
    registry = CollectorRegistry()
    register(ex, registry, const_labels={"executor": "test"})
    got = samples(generate_latest(registry).decode())
    lab = lambda **kw: tuple(sorted({"executor": "test", **kw}.items()))  # noqa: E731
    assert got[("caudal_executions_total", lab(step="ok", outcome="success"))] == 30
    assert got[("caudal_executions_total", lab(step="bad", outcome="failure"))] == 3
    assert got[("caudal_attempts_total", lab(step="bad"))] == 6
    assert got[("caudal_retries_total", lab(step="bad"))] == 3
    assert got[("caudal_cache_lookups_total", lab(step="cached", result="hit"))] == 4
    assert got[("caudal_cache_lookups_total", lab(step="cached", result="miss"))] == 2
    assert got[("caudal_concurrency_limit", lab(key="ok", mode="fixed"))] == 4
    assert got[("caudal_concurrency_limit", lab(key="bad", mode="adaptive"))] == 4  # its start
    assert got[("caudal_circuit_breaker_state", lab(breaker="bad"))] == 0
    assert got[("caudal_memory_pressure_level", lab())] == 0
    assert got[("caudal_memory_rss_bytes", lab())] > 0
    # The latency histogram: cumulative buckets ending in +Inf == count.
    stats = ex.get_optimization_stats()["execution"]["steps"]["ok"]
    assert got[("caudal_step_latency_seconds_count", lab(step="ok"))] == stats["executions"]
    assert got[("caudal_step_latency_seconds_bucket", lab(step="ok", le="+Inf"))] == 30
    # Every ok execution slept 1 ms: none fits under 0.5 ms, all under 0.1 s.
    assert got[("caudal_step_latency_seconds_bucket", lab(step="ok", le="0.0005"))] == 0
    assert got[("caudal_step_latency_seconds_bucket", lab(step="ok", le="0.1"))] == 30
    bounds = [
        float(dict(k[1])["le"])
        for k in got
        if k[0] == "caudal_step_latency_seconds_bucket"
        and dict(k[1])["step"] == "ok"
        and dict(k[1])["le"] != "+Inf"
    ]
    assert sorted(bounds) == sorted(BUCKETS)
    total_s = got[("caudal_step_latency_seconds_sum", lab(step="ok"))]
    assert abs(total_s - stats["total_time_ms"] / 1000) < 1e-9


async def test_the_metrics_endpoint_serves_a_scrape():
    ex = ExecutorCore(OptimizationConfig(memory_pressure_threshold_mb=1e6))
    await work(ex)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_http_server(ex, port)

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read()

    try:
        body = await asyncio.to_thread(scrape)
    finally:
        server.shutdown()
        server.server_close()
    got = samples(body.decode())
    assert got[("caudal_executions_total", (("outcome", "success"), ("step", "ok")))] == 30
    assert ("caudal_worker_pool_tasks", (("state", "active"),)) not in got  # no sync step ran


async def test_worker_pool_metrics_appear_once_sync_steps_ran():
    ex = ExecutorCore(OptimizationConfig(memory_pressure_threshold_mb=1e6))
    await ex.execute_many(Step(lambda x: x, "sync"), range(5))
    await ex.aclose()  # joined: its counters are final (the stats keep the pool: none)
    ex2 = ExecutorCore(OptimizationConfig(memory_pressure_threshold_mb=1e6))
    await ex2.execute_many(Step(lambda x: x, "sync"), range(5))
    registry = CollectorRegistry()
    register(ex2, registry)
    got = samples(generate_latest(registry).decode())
    assert got[("caudal_worker_pool_tasks", (("state", "queued"),))] == 0
    assert ("caudal_worker_pool_finished_total", (("outcome", "rejected"),)) in got
    await ex2.aclose()
