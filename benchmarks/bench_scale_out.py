"""Scale-out on Ray: a CPU-bound step locally, on Ray, and on Dask distributed.

Workload: a pure-Python loop that holds the GIL for about 50 ms
(calibrated here), over 200 inputs (``--quick``: 40), all submitted at once
with ``asyncio.gather`` of ``executor.execute``, results cached off.

Contenders:
  local, sync def   the step as a plain ``def``: caudal runs it in asyncio's
                    thread pool; threads share one GIL, so one core works.
  local, async def  the step as an ``async def`` computing on the loop; no
                    thread switching at all. The faster of the two local
                    runs is the baseline for the speedups.
  ray, N CPU        ``Step(..., backend="ray")`` against a local Ray cluster
                    started here with ``num_cpus=N`` (N = 1, 2), workers
                    warmed up before timing; loopback only.
  plain ray, N CPU  the same with ``await f.remote(x)``, no caudal.
  dask, N CPU       Dask distributed: a LocalCluster of N worker processes
                    of one thread each, ``await client.submit(f, x)``.

Also measured, with ``num_cpus=2``:
  - the round trip of a no-op remote step, one at a time (median), through
    caudal and with a bare ``await f.remote()``: the latency Ray adds;
  - the driver's CPU per attempt with 2,000 no-op remote steps in flight
    (event-loop thread, and the whole driver process with Ray's own
    threads), through caudal and bare Ray: the driver's ceiling is
    1 / (loop-thread CPU per attempt);
  - caudal's own share: ``execute`` of a local no-op ``async def`` step.

    python benchmarks/bench_scale_out.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Loopback only (see tests_py/integrations/test_scale_out_ray.py): read when ray is
# first imported, so before caudal imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import psutil
import ray

from _floors import Floor, record
from _harness import save
from caudal import ExecutorCore, Step

TARGET_S = 0.050


def burn(x: int, *, iters: int) -> float:
    """Pure Python, holds the GIL throughout; returns the CPU time it took
    (its thread's, where it ran: time waiting for the GIL or a core is not
    counted)."""
    t0 = time.thread_time()
    acc = x
    for i in range(iters):
        acc = (acc * 1103515245 + i) & 0xFFFFFFFF
    return time.thread_time() - t0 + (acc & 0) * 1.0


async def burn_async(x: int, *, iters: int) -> int:
    return burn(x, iters=iters)


def noop(x: int) -> int:
    return x


async def noop_async(x: int) -> int:
    return x


def calibrate() -> tuple[int, float]:
    """Iterations for TARGET_S, and the measured time of one call."""
    iters = 100_000
    while True:
        t0 = time.perf_counter()
        burn(1, iters=iters)
        dt = time.perf_counter() - t0
        if dt > 0.02:
            break
        iters *= 2
    iters = int(iters * TARGET_S / dt)
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        burn(1, iters=iters)
        samples.append(time.perf_counter() - t0)
    return iters, statistics.median(samples)


def _busy_s() -> float:
    """CPU seconds the whole machine spent busy (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _ours_s() -> float:
    """CPU seconds of this process and its descendants (the Ray processes
    that ray.init started)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


async def fan_out(executor: ExecutorCore, step: Step, inputs: range) -> dict:
    """Wall time of the whole batch, the compute time the steps measured
    themselves (what an ideal scheduler would divide among the workers), and
    how many cores other programs on this shared machine kept busy meanwhile."""
    busy0, ours0 = _busy_s(), _ours_s()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(executor.execute(step, i) for i in inputs))
    wall = time.perf_counter() - t0
    others = (_busy_s() - busy0) - (_ours_s() - ours0)
    bad = [r for r in results if not r.success]
    if bad:
        raise RuntimeError(f"{len(bad)} executions failed, first: {bad[0].feedback}")
    return {
        "wall_s": wall,
        "compute_s": sum(r.output for r in results),
        "other_load_cores": max(0.0, others / wall),
    }


def start_ray(num_cpus: int) -> None:
    ray.init(
        # An instance of the benchmark's own, whatever cluster `ray start`
        # left recorded on the machine (without "local", ray.init() joins
        # it and refuses num_cpus).
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )


class _PlainRay:
    """``asyncio.gather`` of ``await f.remote(x)``: plain Ray, no caudal,
    shaped like an executor for fan_out."""

    def __init__(self, iters: int) -> None:
        self._remote = ray.remote(burn)
        self._iters = iters

    async def execute(self, _step: object, x: int) -> types.SimpleNamespace:
        out = await self._remote.remote(x, iters=self._iters)
        return types.SimpleNamespace(success=True, output=out, feedback="")


def dask_cluster(workers: int) -> object:
    """A Dask distributed cluster of this benchmark's own: ``workers``
    worker processes of one thread each (one CPU each, as Ray's
    ``num_cpus``), on loopback, no dashboard."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        asynchronous=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=50,  # logging.CRITICAL
    )


class _Dask:
    """``asyncio.gather`` of Dask futures (``client.submit``, one per
    input, awaited): Dask distributed, shaped like an executor for fan_out."""

    def __init__(self, client: object, iters: int) -> None:
        self._client = client
        self._iters = iters

    async def execute(self, _step: object, x: int) -> types.SimpleNamespace:
        out = await self._client.submit(burn, x, iters=self._iters, pure=False)
        return types.SimpleNamespace(success=True, output=out, feedback="")


async def dask_run(workers: int, iters: int, n: int) -> dict:
    from distributed import Client

    async with dask_cluster(workers) as cluster, Client(cluster, asynchronous=True) as client:
        executor = _Dask(client, iters)
        await fan_out(executor, None, range(-4 * workers, 0))  # workers warm
        return await fan_out(executor, None, range(n))


async def ray_run(num_cpus: int, iters: int, n: int, plain: bool = False) -> dict:
    start_ray(num_cpus)
    try:
        fn = functools.partial(burn, iters=iters)
        executor = _PlainRay(iters) if plain else ExecutorCore()
        step = Step(fn, "burn", backend="ray", cache=False)
        # Warm-up: start the workers and ship the function, untimed.
        await fan_out(executor, step, range(-4 * num_cpus, 0))
        return await fan_out(executor, step, range(n))
    finally:
        ray.shutdown()


async def ceiling(quick: bool) -> dict:
    """The driver's ceiling: no-op remote attempts per second with 2,000 in
    flight (a gather), interleaved rounds, medians: caudal with its defaults
    (the adaptive concurrency limit on), caudal without the limit, plain
    ``await f.remote()``, and Dask distributed (2 worker processes of one
    thread, alive beside Ray's 2 CPUs throughout, idle when not measured):
    ``client.submit`` per input, awaited, and ``client.map`` + ``gather``."""
    import random

    from distributed import Client

    from caudal import OptimizationConfig

    start_ray(2)
    cluster = await dask_cluster(2)
    client = await Client(cluster, asynchronous=True)
    try:
        default = ExecutorCore()
        open_ = ExecutorCore(OptimizationConfig(enable_concurrency_optimization=False))
        step = Step(noop, "noop", backend="ray", cache=False)
        bare = ray.remote(max_retries=0)(noop)
        many = 500 if quick else 2000

        async def via(name: str, base: int) -> None:
            xs = range(base, base + many)
            if name == "plain await f.remote()":
                await asyncio.gather(*(bare.remote(i) for i in xs))
                return
            if name == "dask, await client.submit()":
                await asyncio.gather(*(client.submit(noop, i, pure=False) for i in xs))
                return
            if name == "dask, client.map + gather":
                await client.gather(client.map(noop, xs, pure=False))
                return
            ex = default if name == "caudal, defaults" else open_
            rs = await asyncio.gather(*(ex.execute(step, i) for i in xs))
            assert all(r.success for r in rs)

        names = [
            "caudal, defaults",
            "caudal, no concurrency limit",
            "plain await f.remote()",
            "dask, await client.submit()",
            "dask, client.map + gather",
        ]
        for name in names:
            await via(name, -many)  # warm-up: workers, the function, the limit
        samples: dict[str, list[float]] = {k: [] for k in names}
        rng = random.Random(3)
        base = 0
        for _ in range(3 if quick else 9):
            rng.shuffle(names)
            for name in names:
                t0 = time.perf_counter()
                await via(name, base)
                samples[name].append(many / (time.perf_counter() - t0))
                base += many
        limit = default.get_optimization_stats()["concurrency"]["keys"]["noop"]["limit"]
        await default.aclose()
        await open_.aclose()
        return {
            "attempts_per_s": {k: statistics.median(v) for k, v in samples.items()},
            "in_flight": many,
            "adaptive_limit_after": limit,
        }
    finally:
        await client.close()
        await cluster.close()
        ray.shutdown()


async def overheads(quick: bool) -> dict:
    start_ray(2)
    try:
        executor = ExecutorCore()
        step = Step(noop, backend="ray", cache=False)
        bare = ray.remote(max_retries=0)(noop)
        for i in range(50):  # warm-up
            await executor.execute(step, i)
            await bare.remote(i)
        seq = 100 if quick else 400
        rt: dict[str, list[float]] = {"caudal": [], "bare": []}
        for i in range(seq):
            t0 = time.perf_counter()
            await executor.execute(step, i)
            rt["caudal"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await bare.remote(i)
            rt["bare"].append(time.perf_counter() - t0)
        many = 500 if quick else 2000
        cpu = {}
        for name in ("caudal", "bare", "caudal ", "bare "):  # twice each, keep the lower
            key = name.strip()

            async def one(i: int, key: str = key) -> object:
                if key == "caudal":
                    return (await executor.execute(step, i)).output
                return await bare.remote(i)

            t_thread, t_proc, t0 = time.thread_time(), time.process_time(), time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(many)))
            wall = time.perf_counter() - t0
            sample = {
                "loop_thread_us": (time.thread_time() - t_thread) / many * 1e6,
                "process_us": (time.process_time() - t_proc) / many * 1e6,
                "wall_us": wall / many * 1e6,
            }
            if key not in cpu or sample["loop_thread_us"] < cpu[key]["loop_thread_us"]:
                cpu[key] = sample
        # caudal's own per-execute cost, no Ray: a local no-op async step.
        local = Step(noop_async, cache=False)
        for i in range(1000):
            await executor.execute(local, i)
        k = 20_000 if quick else 100_000
        t0 = time.thread_time()
        for i in range(k):
            await executor.execute(local, i)
        caudal_local_us = (time.thread_time() - t0) / k * 1e6
        return {
            "round_trip_us": {n: statistics.median(v) * 1e6 for n, v in rt.items()},
            "driver_cpu_per_attempt": cpu,
            "caudal_local_execute_us": caudal_local_us,
            "in_flight": many,
        }
    finally:
        ray.shutdown()


async def main(quick: bool) -> dict:
    n = 40 if quick else 200
    rounds = 1 if quick else 3
    iters, one_s = calibrate()
    load_before = os.getloadavg()
    res: dict = {"quick": quick, "inputs": n, "iters": iters, "step_s": one_s, "rounds": rounds}
    executor = ExecutorCore()
    sync_step = Step(functools.partial(burn, iters=iters), "burn", cache=False)
    async_step = Step(functools.partial(burn_async, iters=iters), "burn_async", cache=False)
    await fan_out(executor, sync_step, range(-2, 0))
    contenders = {
        "local, sync def (threads)": lambda: fan_out(executor, sync_step, range(n)),
        "local, async def (loop)": lambda: fan_out(executor, async_step, range(n)),
        "ray, 1 CPU": lambda: ray_run(1, iters, n),
        "ray, 2 CPU": lambda: ray_run(2, iters, n),
        "plain ray, 1 CPU": lambda: ray_run(1, iters, n, plain=True),
        "plain ray, 2 CPU": lambda: ray_run(2, iters, n, plain=True),
        "dask, 1 CPU": lambda: dask_run(1, iters, n),
        "dask, 2 CPU": lambda: dask_run(2, iters, n),
    }
    # Each round runs every contender once; the best round counts (the
    # machine is shared: other work only ever slows a run down).
    samples: dict[str, list[dict]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            samples[name].append(await run())
    res["samples"] = samples
    res["runs"] = {k: min(v, key=lambda s: s["wall_s"]) for k, v in samples.items()}
    res["overheads"] = await overheads(quick)
    res["ceiling"] = await ceiling(quick)
    res["loadavg_before_after"] = [load_before[0], os.getloadavg()[0]]
    return res


def report(res: dict) -> None:
    n, step_s = res["inputs"], res["step_s"]
    runs = res["runs"]
    base_name = min(
        ("local, sync def (threads)", "local, async def (loop)"), key=lambda k: runs[k]["wall_s"]
    )
    base = n / runs[base_name]["wall_s"]
    print(
        f"CPU-bound step: {step_s * 1e3:.1f} ms of pure Python (GIL held), {n} inputs, "
        f"asyncio.gather of execute; {os.cpu_count()} cores; best of {res['rounds']} round(s)"
    )
    print()
    print(
        f"{'contender':26} {'wall s':>7} {'items/s':>8} {'vs local':>9} "
        f"{'step ms':>8} {'ideal s':>8} {'overhead/item ms':>17} {'other load':>10}"
    )
    for name, r in runs.items():
        wall, compute = r["wall_s"], r["compute_s"]
        workers = int(name.split(", ")[1].split()[0]) if "CPU" in name else 1
        ideal = compute / workers
        per_item = (wall - ideal) * workers / n * 1e3
        print(
            f"{name:26} {wall:7.2f} {n / wall:8.2f} {n / wall / base:8.2f}x "
            f"{compute / n * 1e3:8.1f} {ideal:8.2f} {per_item:17.2f} "
            f"{r['other_load_cores']:10.2f}"
        )
    print(
        f"(baseline: {base_name}; step ms: the step's CPU time where it ran; ideal: "
        "its sum / workers; overhead/item = (wall - ideal) x workers / items; other load: "
        "cores kept busy by other programs on the machine during the run)"
    )
    o = res["overheads"]
    print()
    rt = o["round_trip_us"]
    print(
        f"no-op remote step, one at a time (median): caudal {rt['caudal']:.0f} µs, "
        f"bare await f.remote() {rt['bare']:.0f} µs"
    )
    print(f"driver CPU per attempt, {o['in_flight']} no-op remote attempts in flight:")
    print(f"  {'':8} {'loop thread µs':>15} {'process µs':>11} {'wall µs':>8}")
    for name, c in o["driver_cpu_per_attempt"].items():
        print(f"  {name:8} {c['loop_thread_us']:15.1f} {c['process_us']:11.1f} {c['wall_us']:8.1f}")
    cpu = o["driver_cpu_per_attempt"]["caudal"]["loop_thread_us"]
    print(
        f"caudal execute of a local no-op step: {o['caudal_local_execute_us']:.2f} µs; "
        f"driver ceiling ~ 1 / {cpu:.0f} µs = {1e6 / cpu:,.0f} attempts/s "
        f"(= {1e6 / cpu * step_s:,.0f} busy {step_s * 1e3:.0f} ms workers)"
    )
    c = res["ceiling"]
    print(f"driver ceiling, {c['in_flight']} no-op remote attempts in flight (median attempts/s):")
    for name, v in c["attempts_per_s"].items():
        print(f"  {name:30} {v:8,.0f}")
    print(f"  (the adaptive limit after the runs: {c['adaptive_limit_after']})")
    la = res["loadavg_before_after"]
    print(f"load average (1 min) before/after: {la[0]:.2f} / {la[1]:.2f}")
    two = runs["ray, 2 CPU"]
    speed2 = (n / two["wall_s"]) / base
    scaling = runs["ray, 1 CPU"]["wall_s"] / two["wall_s"]
    plain_scaling = runs["plain ray, 1 CPU"]["wall_s"] / runs["plain ray, 2 CPU"]["wall_s"]
    dask_scaling = runs["dask, 1 CPU"]["wall_s"] / runs["dask, 2 CPU"]["wall_s"]
    print(
        f"2 CPU vs 1: caudal on Ray {scaling:.2f}x, plain Ray {plain_scaling:.2f}x, "
        f"Dask distributed {dask_scaling:.2f}x"
    )
    aps = c["attempts_per_s"]
    record(
        "scale_out",
        floors=[
            Floor(
                "driver ceiling: no-op remote attempts/s, caudal defaults / plain Ray",
                measured=aps["caudal, defaults"] / aps["plain await f.remote()"],
                limit=0.9,
                at_least=True,
                detail=(
                    f"{aps['caudal, defaults']:,.0f} vs {aps['plain await f.remote()']:,.0f} "
                    f"attempts/s, {c['in_flight']} in flight; without the concurrency limit "
                    f"{aps['caudal, no concurrency limit']:,.0f}; median of interleaved rounds"
                ),
            ),
            Floor(
                "2 CPU vs 1 CPU, caudal on Ray / plain Ray",
                measured=scaling / plain_scaling,
                limit=0.9,
                at_least=True,
                detail=f"{scaling:.2f}x vs {plain_scaling:.2f}x; best of {res['rounds']} round(s)",
            ),
        ],
    )
    print(
        f"floor: ray 2 CPU >= 1.7x local: {speed2:.2f}x -> {'met' if speed2 >= 1.7 else 'MISSED'}"
    )
    if two["other_load_cores"] > 0.3:
        print(
            f"  (other programs kept {two['other_load_cores']:.2f} of the {os.cpu_count()} cores "
            "busy during that run: two workers had less than two cores; rerun on an idle machine)"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="CI-sized run")
    args = ap.parse_args()
    result = asyncio.run(main(args.quick))
    report(result)
    path = save("scale_out", result)
    print(f"saved {path}")
