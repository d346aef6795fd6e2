"""Concurrency: adaptive limits, fan-out and the worker pool (issue: concurrency).

1. Overloaded backend. An in-process backend with a hidden capacity C:
   a request admitted while n are in flight takes base * max(1, n / C)
   (uniform jitter of +-20 %), and beyond C it fails with an overload error
   (HTTP 503) with probability min(0.5, 0.5 * (n - C) / C), after a fifth of
   that time. Closed-loop clients (2x and 5x C of them) call it back to back
   through each contender: no limit, asyncio.Semaphore at C/2, C and 2C,
   aiometer at C (a fixed limit that must be told C), and caudal's executor
   with its default config (adaptive, not told C). Reported: goodput
   (successes/s), p50/p99 latency of successful backend calls, error rate,
   and for caudal the time until its limit settled within [0.75, 1.5] x C.
   Unloaded p99: the same backend with C/2 clients and no limit.
   Floors: adaptive goodput >= 90 % of the best fixed limit's, p99 <= 1.5x
   the unloaded p99. A plot of caudal's limit and goodput over time goes to
   benchmarks/results/concurrency_adaptive.png.
2. Fan-out of N trivial steps under a limit of 100: executor.execute_many
   against asyncio.gather over executor.execute wrapped in a Semaphore
   (the usual hand-written form), interleaved, median per step.
   Floor: execute_many no slower per step.
3. Sync steps: caudal.WorkerPool against loop.run_in_executor with a
   ThreadPoolExecutor of the same size: dispatch latency (one no-op task
   round trip at a time) and throughput for GIL-holding and GIL-releasing
   tasks. Floor: lower dispatch latency, at least equal throughput.

    python benchmarks/bench_concurrency.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import RESULTS, save
from caudal import (
    ExecutorCore,
    OptimizationConfig,
    OverloadedError,
    Step,
    WorkerPool,
)

BASE_S = 0.020


class Backend:
    """The overloaded backend of part 1 (see the module docstring)."""

    def __init__(self, capacity: int, seed: int = 11) -> None:
        self.capacity = capacity
        self.active = 0
        self.rng = random.Random(seed)
        self.log: list[tuple[float, float, bool]] = []  # (end, latency, ok)

    async def __call__(self, x: int) -> int:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.active += 1
        try:
            n = self.active
            latency = BASE_S * max(1.0, n / self.capacity) * (0.8 + 0.4 * self.rng.random())
            p_err = min(0.5, 0.5 * (n - self.capacity) / self.capacity) if n > self.capacity else 0
            if self.rng.random() < p_err:
                await asyncio.sleep(latency / 5)
                self.log.append((loop.time(), loop.time() - t0, False))
                raise OverloadedError("503: backend overloaded")
            await asyncio.sleep(latency)
            self.log.append((loop.time(), loop.time() - t0, True))
            return x
        finally:
            self.active -= 1


def summarise(backend: Backend, t_from: float, t_to: float) -> dict:
    ok = [lat for end, lat, good in backend.log if t_from <= end < t_to and good]
    bad = sum(1 for end, _, good in backend.log if t_from <= end < t_to and not good)
    ok.sort()
    q = (lambda p: ok[min(len(ok) - 1, int(len(ok) * p))] * 1000) if ok else (lambda p: 0.0)
    return {
        "goodput": len(ok) / (t_to - t_from),
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "error_rate": bad / (len(ok) + bad) if ok or bad else 0.0,
    }


async def closed_loop(call, clients: int, duration: float) -> float:
    """`clients` coroutines calling `call` back to back until `duration`;
    returns the start time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop = start + duration

    async def client(k: int) -> None:
        i = 0
        while loop.time() < stop:
            try:
                await call(k * 1_000_000 + i)
            except OverloadedError:
                pass
            i += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    return start


async def overload_case(capacity: int, multiple: int, duration: float) -> dict:
    clients = capacity * multiple
    warm = duration / 3
    rows: dict[str, dict] = {}

    async def run(name: str, make_call) -> Backend:
        backend = Backend(capacity)
        call = await make_call(backend)
        start = await closed_loop(call, clients, duration)
        rows[name] = summarise(backend, start + warm, start + duration)
        return backend

    async def unlimited(b):
        return b

    def semaphore(limit):
        async def make(b):
            sem = asyncio.Semaphore(limit)

            async def call(x):
                async with sem:
                    return await b(x)

            return call

        return make

    async def run_aiometer(limit: int) -> None:
        # aiometer limits a batch (a Sequence), not open-ended callers: the
        # same load as batches of 50 x C requests with max_at_once = C.
        import aiometer

        backend = Backend(capacity)
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop = start + duration

        async def job(x):
            try:
                await backend(x)
            except OverloadedError:
                pass

        i = 0
        while loop.time() < stop:
            await aiometer.run_on_each(job, range(i, i + 50 * capacity), max_at_once=limit)
            i += 50 * capacity
        rows[f"aiometer({limit})"] = summarise(backend, start + warm, start + duration)

    # Unloaded reference: C/2 clients, no limit.
    ref = Backend(capacity)
    start = await closed_loop(ref, max(1, capacity // 2), duration / 2)
    unloaded = summarise(ref, start + warm / 2, start + duration / 2)

    await run("no limit", unlimited)
    for limit in (capacity // 2, capacity, 2 * capacity):
        await run(f"Semaphore({limit})", semaphore(limit))
    await run_aiometer(capacity)

    ex = ExecutorCore(OptimizationConfig())  # defaults: adaptive, not told C
    backend = Backend(capacity)
    step = Step(backend, "backend")

    async def via_caudal(x):
        r = await ex.execute(step, x)
        if not r.success and not isinstance(r.error, OverloadedError):
            raise r.error
        return r.output

    t0 = asyncio.get_running_loop().time()
    start = await closed_loop(via_caudal, clients, duration)
    rows["caudal adaptive"] = summarise(backend, start + warm, start + duration)
    history = ex.concurrency_history()
    settle = 0.0
    for h in history:
        lim = h["to"] if h["to"] is not None else 1 << 30
        if not (0.75 * capacity <= lim <= 1.5 * capacity):
            settle = h["time_s"] - t0
    k = ex.get_optimization_stats()["concurrency"]["keys"]["backend"]
    rows["caudal adaptive"]["settle_s"] = max(0.0, settle)
    rows["caudal adaptive"]["final_limit"] = k["limit"]
    best = max(
        (r for n, r in rows.items() if n.startswith(("Semaphore", "aiometer"))),
        key=lambda r: r["goodput"],
    )
    ad = rows["caudal adaptive"]
    return {
        "capacity": capacity,
        "clients": clients,
        "unloaded": unloaded,
        "rows": rows,
        "adaptive_vs_best_fixed": ad["goodput"] / best["goodput"],
        "adaptive_p99_vs_unloaded": ad["p99_ms"] / unloaded["p99_ms"],
        "history": [(h["time_s"] - t0, h["to"]) for h in history],
        "log": [(end - t0, ok) for end, _, ok in backend.log],
        "duration": duration,
    }


def plot(case: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(8, 4))
    xs, ys = [0.0], [20]
    for t, lim in case["history"]:
        xs += [t, t]
        ys += [ys[-1], lim if lim is not None else ys[-1]]
    xs.append(case["duration"])
    ys.append(ys[-1])
    ax1.plot(xs, ys, color="tab:blue", label="caudal limit")
    ax1.axhline(case["capacity"], color="tab:gray", ls="--", label="hidden capacity")
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("concurrency limit")
    ax2 = ax1.twinx()
    bucket = 0.25
    n = int(case["duration"] / bucket)  # whole buckets only
    good = [0] * n
    for t, ok in case["log"]:
        if ok and 0 <= t < n * bucket:
            good[int(t / bucket)] += 1
    ax2.plot(
        [i * bucket for i in range(n)],
        [g / bucket for g in good],
        color="tab:green",
        alpha=0.7,
        label="goodput (req/s)",
    )
    ax2.set_ylabel("goodput (successes/s)")
    lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(lines, labels, loc="lower right")
    ax1.set_title(
        f"caudal adaptive limit, backend capacity {case['capacity']}, {case['clients']} clients"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ fan-out


async def fan_out(sizes: list[int], rounds: int) -> dict:
    async def trivial(x):
        return x + 1

    ex = ExecutorCore(OptimizationConfig(enable_concurrency_optimization=False))
    step = Step(trivial, "trivial")

    async def gather_sem(n):
        sem = asyncio.Semaphore(100)

        async def one(x):
            async with sem:
                return await ex.execute(step, x)

        return await asyncio.gather(*(one(i) for i in range(n)))

    async def many(n):
        return await ex.execute_many(step, range(n), max_concurrency=100)

    out = {}
    for n in sizes:
        samples = {"gather+Semaphore": [], "execute_many": []}
        await gather_sem(min(n, 1000))
        await many(min(n, 1000))
        for r in range(rounds):
            order = list(samples)
            if r % 2:
                order.reverse()
            for name in order:
                fn = gather_sem if name == "gather+Semaphore" else many
                t0 = time.perf_counter()
                res = await fn(n)
                samples[name].append((time.perf_counter() - t0) / n * 1e6)
                assert len(res) == n
        out[n] = {k: statistics.median(v) for k, v in samples.items()}
    return out


# -------------------------------------------------------------- sync steps


def spin(n: int) -> int:
    s = 0
    for i in range(n):  # holds the GIL
        s += i
    return s


async def pool_bench(workers: int, quick: bool) -> dict:
    loop = asyncio.get_running_loop()
    tpe = ThreadPoolExecutor(max_workers=workers)
    pool = WorkerPool(workers=workers, queue_size=100_000)

    def noop():
        return None

    async def via_tpe(fn, *a):
        return await loop.run_in_executor(tpe, fn, *a)

    async def via_pool(fn, *a):
        return await pool.run(fn, *a)

    contenders = {"ThreadPoolExecutor": via_tpe, "caudal WorkerPool": via_pool}
    # Dispatch latency: one no-op round trip at a time.
    lat = {k: [] for k in contenders}
    for c in contenders.values():
        for _ in range(200):
            await c(noop)
    n_rt = 300 if quick else 2000
    for r in range(10):
        for name in contenders if r % 2 else reversed(list(contenders)):
            call = contenders[name]
            t0 = time.perf_counter()
            for _ in range(n_rt // 10):
                await call(noop)
            lat[name].append((time.perf_counter() - t0) / (n_rt // 10) * 1e6)
    dispatch = {k: statistics.median(v) for k, v in lat.items()}

    # Throughput: a batch in flight at once.
    n_tasks = 400 if quick else 2000
    work = {
        "GIL-holding (spin 20k)": (spin, 20_000),
        "GIL-releasing (sleep 1 ms)": (time.sleep, 0.001),
    }
    thr: dict[str, dict[str, float]] = {}
    for label, (fn, arg) in work.items():
        samples = {k: [] for k in contenders}
        for r in range(5 if quick else 7):
            for name in contenders if r % 2 else reversed(list(contenders)):
                call = contenders[name]
                t0 = time.perf_counter()
                await asyncio.gather(*(call(fn, arg) for _ in range(n_tasks)))
                samples[name].append(n_tasks / (time.perf_counter() - t0))
        thr[label] = {k: statistics.median(v) for k, v in samples.items()}
    tpe.shutdown()
    await pool.aclose()
    return {"workers": workers, "dispatch_us": dispatch, "throughput": thr}


async def main(quick: bool) -> int:
    # --quick: the two 5x cases, shorter (a CI-sized smoke run of the same
    # workloads; judge the floors on the full run).
    duration = 1.5 if quick else 8.0
    multiples = (5,) if quick else (2, 5)
    cases = []
    for capacity in (20, 60):
        for multiple in multiples:
            cases.append(await overload_case(capacity, multiple, duration))

    print("1. overloaded backend (closed-loop clients; base latency 20 ms; default caudal config)")
    for c in cases:
        u = c["unloaded"]
        print(
            f"   capacity {c['capacity']}, {c['clients']} clients "
            f"(unloaded p99 {u['p99_ms']:.1f} ms, goodput at C/2 {u['goodput']:.0f}/s)"
        )
        print(f"   {'contender':<22}{'goodput/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for name, r in c["rows"].items():
            extra = ""
            if name == "caudal adaptive":
                extra = f"   settled in {r['settle_s']:.2f} s, limit now {r['final_limit']}"
            print(
                f"   {name:<22}{r['goodput']:>10.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
                f"{r['error_rate']:>8.1%}{extra}"
            )
        print(
            f"   adaptive / best fixed goodput: {c['adaptive_vs_best_fixed']:.2f} (floor 0.90); "
            f"p99 / unloaded p99: {c['adaptive_p99_vs_unloaded']:.2f} (floor 1.50)"
        )
    plot_path = RESULTS / "concurrency_adaptive.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(max(cases, key=lambda c: (c["capacity"], c["clients"])), plot_path)
    print(f"   plot: {plot_path.relative_to(RESULTS.parent.parent)}")

    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    fo = await fan_out(sizes, rounds=3 if quick else 5)
    print("\n2. fan-out of trivial steps under a limit of 100 (median us per step)")
    print(f"   {'steps':>8}{'gather+Semaphore':>18}{'execute_many':>14}{'ratio':>8}")
    for n, r in fo.items():
        print(
            f"   {n:>8}{r['gather+Semaphore']:>18.2f}{r['execute_many']:>14.2f}"
            f"{r['gather+Semaphore'] / r['execute_many']:>7.1f}x"
        )

    pb = await pool_bench(4, quick)
    print(f"\n3. sync steps on {pb['workers']} threads")
    d = pb["dispatch_us"]
    print(
        f"   dispatch round trip (median us): ThreadPoolExecutor {d['ThreadPoolExecutor']:.1f}, "
        f"caudal WorkerPool {d['caudal WorkerPool']:.1f} "
        f"({d['ThreadPoolExecutor'] / d['caudal WorkerPool']:.2f}x lower)"
    )
    for label, r in pb["throughput"].items():
        print(
            f"   {label:<28} tasks/s: ThreadPoolExecutor {r['ThreadPoolExecutor']:.0f}, "
            f"caudal WorkerPool {r['caudal WorkerPool']:.0f} "
            f"({r['caudal WorkerPool'] / r['ThreadPoolExecutor']:.2f}x)"
        )

    save(
        "concurrency",
        {
            "overload": [{k: v for k, v in c.items() if k not in ("log",)} for c in cases],
            "fan_out_us_per_step": fo,
            "worker_pool": pb,
        },
    )
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    sys.exit(asyncio.run(main(p.parse_args().quick)))
