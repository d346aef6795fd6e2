"""Plots render to PNG without a display; their content is checked through
matplotlib's objects (titles, labels, bars, lines), not pixels."""

import asyncio
import io
import itertools
import subprocess
import sys
import textwrap

import pytest
from matplotlib.figure import Figure

from _probes import until
from caudal import ExecutorCore, LatencyRecorder, Pipeline, Step
from caudal._executor.recorder import quantile_ms

PNG = b"\x89PNG\r\n\x1a\n"


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


async def sleepy(x):
    await asyncio.sleep(0.001 * (x % 5))
    return x


async def test_latency_buckets_readout_matches_the_stats():
    ex = ExecutorCore()
    await ex.execute_many(Step(sleepy, name="s"), range(30))
    buckets = ex._engine.latency_buckets("s")
    assert sum(n for _, _, n in buckets) == 30
    assert all(lo < hi for lo, hi, _ in buckets)
    assert [b[0] for b in buckets] == sorted(b[0] for b in buckets)
    assert ex._engine.latency_buckets(None) == buckets  # one step: total == step
    assert ex._engine.latency_buckets("unknown") == []
    # The p95 from the buckets agrees with the native one (same histogram).
    p95 = quantile_ms({(lo, hi): n for lo, hi, n in buckets}, 0.95)
    native = ex.get_optimization_stats()["execution"]["steps"]["s"]["p95_ms"]
    assert abs(p95 - native) <= 0.07 * native


def test_quantile_of_buckets():
    b = {(0, 2): 1, (10, 12): 8, (100, 120): 1}
    assert quantile_ms(b, 0.0) == 1 / 1e6
    assert quantile_ms(b, 0.5) == 11 / 1e6
    assert quantile_ms(b, 0.99) == 110 / 1e6
    assert quantile_ms({}, 0.5) == 0.0


async def test_recorder_keeps_each_interval():
    ex = ExecutorCore()
    step = Step(sleepy, name="s")
    await ex.execute_many(step, range(5))  # before the recorder: not an interval
    rec = LatencyRecorder(ex, interval_s=1.0)
    await ex.execute_many(step, range(10))
    rec.sample()
    await ex.execute_many(step, range(4))
    rec.sample()
    rec.sample()  # nothing happened in this one
    counts = [s["count"] for s in rec.samples("s")]
    assert counts == [10, 4, 0]
    assert [s["count"] for s in rec.samples(None)] == [10, 4, 0]
    assert rec.samples("s")[0]["p50_ms"] > 0 and rec.samples("s")[2]["p99_ms"] == 0.0
    ex.reset_stats()
    await ex.execute_many(step, range(3))
    rec.sample()
    assert rec.samples("s")[-1]["count"] == 3
    limit = ex.get_optimization_stats()["concurrency"]["keys"]["s"]["limit"]
    assert rec.concurrency_samples("s")[-1]["limit"] == limit
    with pytest.raises(ValueError, match="interval_s"):
        LatencyRecorder(ex, interval_s=0)


async def test_recorder_keeps_the_last_max_samples_intervals_per_step():
    ex = ExecutorCore()
    for j in range(3):
        await ex.execute(Step(sleepy, name=f"s{j}"), 0)
    rec = LatencyRecorder(ex, max_samples=4)
    for _ in range(10):
        await ex.execute(Step(sleepy, name="s0"), 0)
        rec.sample()
    assert [len(rec.samples(n)) for n in (None, "s0", "s1", "s2")] == [4, 4, 4, 4]
    assert [s["count"] for s in rec.samples("s0")] == [1, 1, 1, 1]
    assert sorted(rec.concurrency_keys()) == ["s0", "s1", "s2"]  # native map order


def test_plots_without_matplotlib_say_what_to_install():
    # A real interpreter in which matplotlib cannot be imported.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["matplotlib"] = None
        from caudal import ExecutorCore
        try:
            ExecutorCore().plot_latency()
        except ImportError as e:
            print(e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "caudal's plots need matplotlib: pip install 'caudal[plot]'"


async def test_plot_latency_histogram_and_percentiles_over_time():
    ex = ExecutorCore()
    step = Step(sleepy, name="s")
    rec = ex.start_latency_recorder(interval_s=0.01)
    for _ in range(3):
        await ex.execute_many(step, range(20))
        # The recorder samples on the loop's clock: wait for its next sample.
        n = len(rec.samples("s"))
        await until(lambda n=n: len(rec.samples("s")) > n, what="the recorder's next sample")
    rec.stop()
    assert not rec.running and len(rec.samples("s")) >= 2
    fig = ex.plot_latency(step)
    assert png_bytes(fig).startswith(PNG)
    hist, over_time = fig.axes
    assert hist.get_title() == "Latency of step 's' (60 executions)"
    assert hist.get_xlabel() == "latency" and hist.get_ylabel() == "executions"
    assert len(hist.patches) == len(ex._engine.latency_buckets("s"))
    assert sum(p.get_height() for p in hist.patches) == 60
    labels = [ln.get_label() for ln in hist.get_lines()]
    assert [lb.split()[0] for lb in labels] == ["p50", "p95", "p99"]
    assert over_time.get_xlabel() == "time (s)"
    assert [ln.get_label() for ln in over_time.get_lines()] == ["p50", "p95", "p99"]
    assert len(over_time.get_lines()[0].get_xdata()) == len(rec.samples("s"))


def _overlapping(labels) -> list[tuple[str, str]]:
    """Pairs of drawn tick labels whose boxes overlap on the canvas."""
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels if t.get_text()]
    boxes.sort(key=lambda b: b[1].x0)
    return [(a, b) for (a, ba), (b, bb) in itertools.pairwise(boxes) if ba.x1 > bb.x0]


@pytest.mark.parametrize(
    "latencies_s",
    [
        [10.0**-k for k in range(0, 7)] * 3,  # 1 µs to 1 s: six decades
        [0.002, 0.003, 0.005, 0.008, 0.012, 0.02],  # one decade, in ms
        [2e-6, 3e-6, 5e-6, 9e-6, 2e-5],  # microseconds
    ],
    ids=["six-decades", "milliseconds", "microseconds"],
)
def test_latency_axis_labels_are_readable_at_every_scale(latencies_s):
    from caudal.testing import ManualClock

    clock = ManualClock()

    async def main():
        ex = ExecutorCore(clock=clock)

        async def timed(seconds):
            clock.advance(seconds)  # the engine reads its latencies from this clock
            return seconds

        for s in latencies_s:
            assert (await ex.execute(Step(timed, name="t"), s)).success
        return ex

    ex = asyncio.run(main())
    fig = ex.plot_latency("t")
    fig.canvas.draw()
    (hist,) = fig.axes
    ticks = [t for t in hist.get_xticklabels(minor=False) if t.get_visible()]
    minor = [t for t in hist.get_xticklabels(minor=True) if t.get_visible()]
    drawn = [t for t in ticks + minor if t.get_text()]
    assert len(drawn) >= 2, [t.get_text() for t in ticks + minor]
    assert not _overlapping(ticks + minor)
    for t in drawn:
        assert "e+" not in t.get_text() and "e-" not in t.get_text(), t.get_text()
        assert t.get_text().split()[-1] in ("ns", "µs", "ms", "s"), t.get_text()
    legend = [t.get_text() for t in hist.get_legend().get_texts()]
    assert [x.split()[0] for x in legend] == ["p50", "p95", "p99"]
    for text in legend:
        assert "e+" not in text and "e-" not in text, text
        assert text.split()[-1] in ("ns", "µs", "ms", "s"), text


def test_durations_read_in_their_unit():
    from caudal.integrations.plots import duration_ms

    assert duration_ms(3150.0) == "3.15 s"
    assert duration_ms(12.5) == "12.5 ms"
    assert duration_ms(0.25) == "250 µs"
    assert duration_ms(0.00085) == "850 ns"


def test_plot_latency_without_executions_or_recorder():
    fig = ExecutorCore().plot_latency()
    (ax,) = fig.axes
    assert ax.get_title() == "Latency of all steps (0 executions)"
    assert "no executions recorded" in [t.get_text() for t in ax.texts]
    assert png_bytes(fig).startswith(PNG)


async def test_plot_concurrency_limit_and_in_flight():
    ex = ExecutorCore()
    rec = ex.start_latency_recorder(interval_s=0.005)

    async def io_bound(x):
        await asyncio.sleep(0.002)
        return x

    await ex.execute_many(Step(io_bound, name="backend"), range(300))
    rec.stop()
    history = ex.concurrency_history()
    assert history  # slow start raised the limit
    fig = ex.plot_concurrency()
    assert png_bytes(fig).startswith(PNG)
    (ax,) = fig.axes
    assert ax.get_title() == "Concurrency: limit and executions in flight"
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "executions"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"limit (backend)", "in flight (backend)"}
    # The limit line steps through every recorded change.
    limit_y = list(lines["limit (backend)"].get_ydata())
    assert [h["to"] for h in history] == limit_y[1 : 1 + len(history)]
    assert len(lines["in flight (backend)"].get_xdata()) == len(rec.concurrency_samples("backend"))


def test_plot_concurrency_with_nothing_recorded():
    fig = ExecutorCore().plot_concurrency()
    assert "no concurrency limits recorded" in [t.get_text() for t in fig.axes[0].texts]


async def test_gantt_of_a_run():
    async def fetch(x):
        await asyncio.sleep(0.003)
        return x

    async def flaky(x, _state={"n": 0}):  # noqa: B006 - fails once, then works
        _state["n"] += 1
        if _state["n"] == 1:
            raise ConnectionError("once")
        await asyncio.sleep(0.002)
        return x

    async def broken(x):
        raise RuntimeError("no")

    p = Pipeline(
        [
            Step(fetch, name="fetch"),
            Step(flaky, name="parse", max_retries=2),
            Step(broken, name="score"),
            Step(fetch, name="report"),
        ],
        depends_on={"parse": ["fetch"], "score": ["fetch"], "report": ["parse", "score"]},
    )
    run = await p.run(1, executor=ExecutorCore(), store=False)
    fig = run.plot_gantt()
    assert png_bytes(fig).startswith(PNG)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fetch", "parse", "score", "report"]
    assert ax.get_xlabel() == "time since run start (ms)"
    assert ax.get_title().startswith(f"pipeline run {run.run_id}: failed")
    assert len(ax.patches) == 3  # report never ran
    texts = [t.get_text() for t in ax.texts]
    assert " x2" in texts and " skipped" in texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["completed", "failed", "skipped"]
    # Bars start where the steps started: parse and score after fetch.
    fetch_bar, parse_bar = ax.patches[0], ax.patches[1]
    assert parse_bar.get_x() >= fetch_bar.get_x() + fetch_bar.get_width() * 0.9
