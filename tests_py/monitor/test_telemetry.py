"""Native spans and their exporters: OpenTelemetry (the real SDK with its
InMemorySpanExporter), JSON lines, sampling, the flusher."""

from __future__ import annotations

import asyncio
import io
import json
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import caudal
from _probes import until
from caudal.integrations.otel import OpenTelemetryExporter
from caudal.telemetry import JsonLinesExporter, Span
from caudal.testing import ManualClock


class Collect:
    """An exporter that keeps what it is given (and how it was batched)."""

    def __init__(self) -> None:
        self.batches: list[list[Span]] = []
        self.flushed = 0
        self.event = threading.Event()

    def export(self, spans):
        self.batches.append(list(spans))
        self.event.set()

    def force_flush(self):
        self.flushed += 1

    @property
    def spans(self) -> list[Span]:
        return [s for b in self.batches for s in b]


def otel() -> tuple[TracerProvider, InMemorySpanExporter]:
    mem = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    return tp, mem


async def ok(x):
    return x + 1


async def bad(x):
    raise ValueError("no")


async def test_no_exporter_records_nothing():
    ex = caudal.ExecutorCore()
    for i in range(10):
        await ex.execute(caudal.Step(ok), i)
    t = ex.get_optimization_stats()["telemetry"]
    assert t["recording"] is False
    assert t["spans_recorded"] == 0
    assert t["exporters"] == []
    assert ex.flush_telemetry() == 0


async def test_spans_nest_inside_the_callers_opentelemetry_trace():
    tp, mem = otel()
    ex = caudal.ExecutorCore(span_exporters=[OpenTelemetryExporter(tp)])
    step, failing = caudal.Step(ok, name="enrich"), caudal.Step(bad, name="bad", max_retries=1)
    tracer = tp.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        for i in range(3):
            await ex.execute(step, i)
        await ex.execute(failing, 0)
    await ex.execute(step, 9)  # outside any trace: a root span
    assert ex.flush_telemetry() == 5
    spans = {(s.name, i): s for i, s in enumerate(mem.get_finished_spans())}
    caudal_spans = [s for (name, _), s in spans.items() if name != "request"]
    assert len(caudal_spans) == 5
    rctx = request.get_span_context()
    nested = [s for s in caudal_spans if s.parent is not None]
    assert len(nested) == 4
    for s in nested:
        assert s.parent.span_id == rctx.span_id
        assert s.context.trace_id == rctx.trace_id
    root = [s for s in caudal_spans if s.parent is None]
    assert len(root) == 1 and root[0].context.trace_id != rctx.trace_id
    failed = next(s for s in caudal_spans if s.name == "bad")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["caudal.attempts"] == 2
    assert failed.attributes["caudal.outcome"] == "error"
    assert failed.attributes["error.type"] == "builtins.ValueError"
    good = next(s for s in caudal_spans if s.name == "enrich")
    assert good.attributes["caudal.outcome"] == "ok"
    assert good.attributes["caudal.breaker_state"] == "closed"
    assert good.end_time >= good.start_time
    await ex.aclose()


async def test_parent_is_the_span_current_in_each_task():
    tp, mem = otel()
    ex = caudal.ExecutorCore(span_exporters=[OpenTelemetryExporter(tp)])
    tracer = tp.get_tracer("app")
    step = caudal.Step(ok)

    async def request(n: int):
        with tracer.start_as_current_span(f"req{n}") as parent:
            await asyncio.sleep(0)
            await ex.execute(step, n)
            return parent.get_span_context().span_id

    ids = await asyncio.gather(*(request(n) for n in range(20)))
    ex.flush_telemetry()
    parents = sorted(s.parent.span_id for s in mem.get_finished_spans() if s.name == "ok")
    assert parents == sorted(ids)


async def test_json_lines_exporter_writes_one_object_per_span(tmp_path):
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path)
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(enable_cache_optimization=True),
        span_exporters=[exporter],
    )
    step = caudal.Step(ok, cache=True)
    await ex.execute(step, 1)
    await ex.execute(step, 1)  # a cache hit
    ex.flush_telemetry()
    exporter.shutdown()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["outcome"] for r in lines] == ["ok", "cache_hit"]
    first = lines[0]
    assert first["step"] == "ok" and first["attempts"] == 1
    assert first["end_time_unix_nano"] >= first["start_time_unix_nano"] > 1.6e18
    assert len(first["span_id"]) == 16 and first["trace_id"] is None
    assert lines[1]["cache_hit"] is True and lines[1]["attempts"] == 0


def test_json_lines_exporter_refuses_a_non_stream():
    with pytest.raises(TypeError, match="path or a text stream"):
        JsonLinesExporter(42)


async def test_sampling_keeps_failures_and_slow_executions():
    sink = Collect()
    clock = ManualClock()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(telemetry_sampling_rate=0.0, slow_execution_threshold_ms=5),
        span_exporters=[sink],
        clock=clock,
    )

    async def slow(x):
        clock.advance(0.02)  # 20 ms on the executor's clock
        return x

    for i in range(50):
        await ex.execute(caudal.Step(ok), i)
    await ex.execute(caudal.Step(bad), 0)
    await ex.execute(caudal.Step(slow), 0)
    ex.flush_telemetry()
    assert [(s.step, s.outcome, s.slow, s.sampled) for s in sink.spans] == [
        ("bad", "error", False, False),
        ("slow", "ok", True, False),
    ]
    t = ex.get_optimization_stats()["telemetry"]
    assert t["spans_sampled_out"] == 50
    assert t["spans_recorded"] == 2
    assert t["sampling_rate"] == 0.0


async def test_sampled_fraction_follows_the_rate():
    sink = Collect()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(telemetry_sampling_rate=0.1), span_exporters=[sink]
    )
    step = caudal.Step(ok)
    for i in range(5000):
        await ex.execute(step, i)
    ex.flush_telemetry()
    # 500 expected; sd ~21: a 6-sigma band.
    assert 370 <= len(sink.spans) <= 630
    assert all(s.sampled for s in sink.spans)


async def test_batches_are_telemetry_batch_size():
    sink = Collect()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(telemetry_batch_size=7), span_exporters=[sink]
    )
    for i in range(30):
        await ex.execute(caudal.Step(ok), i)
    ex.flush_telemetry()
    assert [len(b) for b in sink.batches] == [7, 7, 7, 7, 2]
    assert sink.flushed == 1


async def test_flusher_exports_on_its_interval_without_being_asked():
    sink = Collect()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(telemetry_flush_interval_seconds=0.05), span_exporters=[sink]
    )
    await ex.execute(caudal.Step(ok), 1)
    assert await asyncio.to_thread(sink.event.wait, 10)
    assert [s.outcome for s in sink.spans] == ["ok"]
    assert ex.get_optimization_stats()["telemetry"]["last_flush_seconds_ago"] is not None


async def test_a_half_full_buffer_wakes_the_flusher_before_its_interval():
    sink = Collect()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(telemetry_flush_interval_seconds=3600, telemetry_buffer_size=64),
        span_exporters=[sink],
    )
    for i in range(32):
        await ex.execute(caudal.Step(ok), i)
    assert await asyncio.to_thread(sink.event.wait, 10)
    assert len(sink.spans) >= 32 - 1  # the 32nd made it half full


async def test_full_buffers_drop_and_count():
    sink = Collect()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(telemetry_flush_interval_seconds=3600, telemetry_buffer_size=4),
        span_exporters=[sink],
    )
    # Hold the flusher off: it exports under this lock.
    with ex._spans._lock:
        for i in range(20):
            await ex.execute(caudal.Step(ok), i)
        t = ex.get_optimization_stats()["telemetry"]
    assert t["spans_dropped"] > 0
    assert t["spans_recorded"] + t["spans_dropped"] == 20
    ex.flush_telemetry()
    assert len(sink.spans) == t["spans_recorded"]


async def test_a_failing_exporter_does_not_stop_the_others():
    class Broken:
        def export(self, spans):
            raise OSError("collector down")

    sink = Collect()
    ex = caudal.ExecutorCore(span_exporters=[Broken(), sink])
    await ex.execute(caudal.Step(ok), 1)
    ex.flush_telemetry()
    assert len(sink.spans) == 1
    t = ex.get_optimization_stats()["telemetry"]
    assert t["export_errors"] == 1
    assert "collector down" in t["last_export_error"]


async def test_remove_the_last_exporter_stops_recording():
    sink = Collect()
    ex = caudal.ExecutorCore()
    ex.add_span_exporter(sink)
    ex.add_span_exporter(sink)  # once only
    assert ex.span_exporters == [sink]
    await ex.execute(caudal.Step(ok), 1)
    assert ex.remove_span_exporter(sink) is True
    assert len(sink.spans) == 1  # exported before detaching
    await ex.execute(caudal.Step(ok), 2)
    assert ex.get_optimization_stats()["telemetry"]["recording"] is False
    assert ex.remove_span_exporter(sink) is False


def test_an_object_without_export_is_refused():
    with pytest.raises(TypeError, match="export"):
        caudal.ExecutorCore(span_exporters=[object()])


async def test_turning_telemetry_off_stops_recording_and_on_resumes():
    sink = Collect()
    ex = caudal.ExecutorCore(span_exporters=[sink])
    await ex.apply_optimization_config(caudal.OptimizationConfig(enable_optimized_telemetry=False))
    await ex.execute(caudal.Step(ok), 1)
    await ex.apply_optimization_config(caudal.OptimizationConfig())
    await ex.execute(caudal.Step(ok), 2)
    ex.flush_telemetry()
    assert len(sink.spans) == 1


async def test_timeouts_cancellations_and_rejections_have_their_outcome():
    sink = Collect()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(circuit_breaker_failure_threshold=1), span_exporters=[sink]
    )

    async def hang(x):
        await asyncio.sleep(10)  # timed out (on the loop's clock) or cancelled

    await ex.execute(caudal.Step(hang, name="slow_api", timeout_s=0.01), 0)
    await ex.execute(caudal.Step(hang, name="slow_api", timeout_s=0.01), 0)  # breaker open
    task = asyncio.ensure_future(ex.execute(caudal.Step(hang, name="cancelled"), 0))
    await until(
        lambda: ex.get_optimization_stats()["execution"]["in_flight"] == 1, what="hang running"
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ex.flush_telemetry()
    got = [(s.step, s.outcome, s.breaker_state) for s in sink.spans]
    assert got == [
        ("slow_api", "timeout", "open"),
        ("slow_api", "rejected", "open"),
        ("cancelled", "cancelled", "closed"),
    ]
    assert sink.spans[0].error_type.endswith("StepTimeoutError")


async def test_many_concurrent_executions_each_get_one_span():
    sink = Collect()
    ex = caudal.ExecutorCore(span_exporters=[sink])

    async def work(x):
        await asyncio.sleep(0)
        return x

    results = await ex.execute_many(caudal.Step(work), range(2000))
    assert all(r.success for r in results)
    ex.flush_telemetry()
    assert len(sink.spans) == 2000
    assert len({s.span_id for s in sink.spans}) == 2000


async def test_sync_steps_on_worker_threads_are_traced():
    sink = Collect()
    ex = caudal.ExecutorCore(span_exporters=[sink])

    def blocking(x):
        return x * 2

    for i in range(20):
        r = await ex.execute(caudal.Step(blocking), i)
        assert r.output == i * 2
    await ex.aclose()  # flushes
    assert len(sink.spans) == 20


async def test_health_reports_export_errors():
    class Broken:
        def export(self, spans):
            raise OSError("down")

    # (The pressure threshold is raised: an instrumented test process's RSS
    # must not make health() fail for another reason.)
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(memory_pressure_threshold_mb=1e6), span_exporters=[Broken()]
    )
    await ex.execute(caudal.Step(ok), 1)
    ex.flush_telemetry()
    h = await ex.health()
    assert h["telemetry"]["export_errors"] == 1
    assert h["telemetry"]["last_flush_ok"] is False
    # Degraded tracing is a warning: the executor still serves.
    assert h["ok"] is True
    assert any("span export failing" in w for w in h["warnings"])


def test_span_repr_and_dict():
    s = Span._from_native(
        ("s", 10, 2_000_010, 5, None, None, 0, 1, "ok", None, False, True, None), 0
    )
    assert "duration_ms=2.000" in repr(s)
    assert s.to_dict()["duration_ms"] == 2.0
    assert s.failed is False and s.cache_hit is False
    buf = io.StringIO()
    JsonLinesExporter(buf).export([s])
    assert json.loads(buf.getvalue())["span_id"] == "0000000000000005"


async def test_prometheus_collector_exposes_span_counts():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from caudal.integrations.prometheus import register

    sink = Collect()
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(telemetry_sampling_rate=0.0), span_exporters=[sink]
    )
    for i in range(4):
        await ex.execute(caudal.Step(ok), i)
    await ex.execute(caudal.Step(bad), 0)
    ex.flush_telemetry()
    reg = CollectorRegistry()
    register(ex, registry=reg)
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}
    fates = {s.labels["fate"]: s.value for s in fams["caudal_spans"].samples}
    assert fates == {"recorded": 1, "sampled_out": 4, "dropped": 0, "exported": 1}


async def test_latency_buckets_are_public():
    ex = caudal.ExecutorCore()
    step = caudal.Step(ok, name="b")
    for i in range(10):
        await ex.execute(step, i)
    buckets = ex.latency_buckets(step)
    assert sum(c for _, _, c in buckets) == 10
    assert all(lo < hi for lo, hi, _ in buckets)
    assert ex.latency_buckets("b") == buckets
    assert ex.latency_buckets() == buckets


_LIFECYCLE = """
import asyncio, gc, sys, threading
import caudal
from caudal.telemetry import JsonLinesExporter

async def ok(x):
    return x

async def main():
    ex = caudal.ExecutorCore(span_exporters=[JsonLinesExporter(sys.argv[1])])
    for i in range(10):
        await ex.execute(caudal.Step(ok), i)
    if sys.argv[2] == "drop":
        del ex  # dropped without aclose(): its finalizer stops the flusher
        gc.collect()
        print(sorted(t.name for t in threading.enumerate()))
    else:
        global keep
        keep = ex  # alive at exit, never closed: the atexit hook exports

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["drop", "exit"])
def test_spans_are_exported_when_an_executor_is_dropped_or_the_process_exits(tmp_path, how):
    import subprocess
    import sys

    path = tmp_path / "spans.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", _LIFECYCLE, str(path), how],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(path.read_text().splitlines()) == 10
    if how == "drop":
        assert "caudal-span-flusher" not in proc.stdout  # the thread is gone
