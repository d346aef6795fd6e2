"""LatencyRecorder: percentiles and concurrency over time.

The native histograms hold every latency since the executor started (or
since ``reset_stats()``); they say nothing about *when*. A recorder reads
them every ``interval_s`` and keeps, per interval and per step, the count
and the p50/p95/p99 of the executions that finished in that interval (the
difference of two bucket read-outs, so each quantile is within about 3% of
a true sample, as the histogram's), plus each concurrency key's limit, in
flight and waiting. ``executor.plot_latency()`` and ``plot_concurrency()``
draw from it.

    recorder = executor.start_latency_recorder(interval_s=0.5)
    ... run things ...
    recorder.stop()
    executor.plot_latency()

Cost: one read-out of each step's histogram per interval, on the event
loop, nothing on the hot path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

Buckets = dict[tuple[int, int], int]


def quantile_ms(buckets: Buckets, q: float) -> float:
    """q-quantile (0..1) of a bucket map {(lower_ns, upper_ns): count}, read
    at the bucket's midpoint, in ms (0.0 when empty)."""
    total = sum(buckets.values())
    if total == 0:
        return 0.0
    rank = max(1, int(q * total + 0.999999))  # the ceil(q * total)-th value
    seen = 0
    for (lo, hi), n in sorted(buckets.items()):
        seen += n
        if seen >= rank:
            return (lo + hi) / 2 / 1e6
    lo, hi = max(buckets)
    return (lo + hi) / 2 / 1e6


class LatencyRecorder:
    """Samples an executor's latency histograms and concurrency limits at a
    fixed interval (see the module docstring). ``sample()`` takes one sample
    now (the background task calls it); ``samples(step)`` and
    ``concurrency_samples(key)`` return what was kept (the last
    ``max_samples`` intervals)."""

    def __init__(self, executor: Any, interval_s: float = 1.0, max_samples: int = 3600) -> None:
        if not (isinstance(interval_s, int | float) and interval_s > 0):
            raise ValueError(f"interval_s must be a number > 0, got {interval_s!r}")
        view = executor._monitor_view()
        self._engine = view.engine  # native read-outs, and the executor's clock
        self._sleep = view.sleep  # the executor's sleep
        self.interval_s = float(interval_s)
        self.started_at = self._now()
        self._last: dict[str | None, Buckets] = {}
        self.max_samples = int(max_samples)
        # Per step (None: all steps) and per concurrency key (None: the
        # executor as a whole), the last max_samples intervals each.
        self._latency: dict[str | None, deque[dict[str, Any]]] = {}
        self._concurrency: dict[str | None, deque[dict[str, Any]]] = {}
        self._task: asyncio.Task | None = None
        # The baseline: what happened before the recorder started is not an interval.
        for name in (None, *self._engine.step_stats()):
            self._last[name] = self._read(name)

    def _now(self) -> float:
        """The executor's time in seconds (monotonic unless a manual clock)."""
        return self._engine.now_ns() / 1e9

    def _read(self, name: str | None) -> Buckets:
        return {(lo, hi): n for lo, hi, n in self._engine.latency_buckets(name)}

    # ---------------------------------------------------------- sampling
    def sample(self) -> None:
        """Record one interval: since the previous sample, per step and for
        all steps together."""
        now = self._now()
        for name in (None, *self._engine.step_stats()):
            cur = self._read(name)
            prev = self._last.get(name, {})
            delta = {b: n - prev.get(b, 0) for b, n in cur.items() if n > prev.get(b, 0)}
            if any(cur.get(b, 0) < n for b, n in prev.items()):  # reset_stats() in between
                delta = cur
            self._last[name] = cur
            self._keep(
                self._latency,
                name,
                {
                    "time_s": now,
                    "step": name,
                    "count": sum(delta.values()),
                    "p50_ms": quantile_ms(delta, 0.50),
                    "p95_ms": quantile_ms(delta, 0.95),
                    "p99_ms": quantile_ms(delta, 0.99),
                },
            )
        conc = self._engine.concurrency_stats()
        for key, k in (conc.get("keys") or {}).items():
            self._keep(
                self._concurrency,
                key,
                {
                    "time_s": now,
                    "key": key,
                    "limit": k.get("limit"),
                    "in_flight": k.get("in_flight", 0),
                    "waiting": k.get("waiting", 0),
                },
            )
        self._keep(
            self._concurrency,
            None,
            {
                "time_s": now,
                "key": None,
                "limit": conc.get("max_concurrent_executions"),
                "in_flight": self._engine.in_flight,
                "waiting": conc.get("waiting", 0),
            },
        )

    def _keep(self, table: dict, name: str | None, sample: dict[str, Any]) -> None:
        q = table.get(name)
        if q is None:
            q = table[name] = deque(maxlen=self.max_samples)
        q.append(sample)

    def samples(self, step: str | None = None) -> list[dict[str, Any]]:
        """Per-interval latency of ``step`` (None: all steps): time_s
        (the executor's clock: monotonic unless a manual clock), count, p50_ms, p95_ms, p99_ms."""
        return list(self._latency.get(step, ()))

    def concurrency_samples(self, key: str | None = None) -> list[dict[str, Any]]:
        """Per-interval limit, in_flight and waiting of concurrency key
        ``key`` (None: the executor as a whole)."""
        return list(self._concurrency.get(key, ()))

    def concurrency_keys(self) -> list[str]:
        """The concurrency keys sampled so far."""
        return [k for k in self._concurrency if k is not None]

    # -------------------------------------------------------- background
    def start(self) -> LatencyRecorder:
        """Sample every ``interval_s`` on the running event loop until stop()."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await self._sleep(self.interval_s)
            self.sample()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        """Take a last sample and stop sampling."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self.sample()

    async def __aenter__(self) -> LatencyRecorder:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        n = len(self.samples(None))
        return f"LatencyRecorder(interval_s={self.interval_s:g}, {state}, {n} intervals)"


__all__ = ["LatencyRecorder", "quantile_ms"]
