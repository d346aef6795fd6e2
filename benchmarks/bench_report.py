"""The five metrics of flujo's tuning report, done right: the ablation matrix
(issue: report).

flujo's own tuning report measured it with its optimizations on and found every
metric 3x to 58x worse. This benchmark measures the same five metrics for:
caudal with every optimization off (the baseline, twice: the spread between
the two copies is the noise band), each optimization on alone, all on, and
flujo's own ExecutorCore (PyPI) where the workload is expressible with it.
Then each optimization on the workload it exists for, on against off.

The five workloads (docs/performance.md explains each):

- execution: median us per ``await executor.execute(step, x)`` of a trivial
  async step, one at a time.
- memory: Python memory (tracemalloc) held per execution while 500
  executions are in flight at once (each awaiting one shared event), in KB.
- concurrent: us per execution for 1,000 executions of the trivial step
  started at once with asyncio.gather.
- cache: us per execution of a step costing about 30 us of CPU (sha256 of
  8 KB), over 64 distinct inputs repeated.
- context: us per run of a 4-step chain pipeline over a context of 1,000
  keys, each step reading the input and writing one key.

All configurations are measured in one process, interleaved round by round
(shuffled order), and each figure is the median over rounds. flujo's
executions allocate heavily and disturb their neighbours' caches, so flujo is
measured in its own interleaved block with a caudal baseline copy, and its
figures are scaled by the ratio of the two baseline copies.

    python benchmarks/bench_report.py [--quick]

Writes benchmarks/results/report.json, report.md (the tables) and
ablation.png.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import logging
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import RESULTS, machine, save
from caudal import ExecutorCore, OptimizationConfig, Pipeline, Step
from caudal.resilience import immediate_retries

FLAGS = [
    f["name"]
    for f in OptimizationConfig.fields()
    if f["type"] == "bool" and f["name"].startswith("enable_")
]
METRICS = ["execution", "memory", "concurrent", "cache", "context"]
# Switches with no effect on these workloads by construction (docs/performance.md).
NO_EFFECT = ["step_optimization", "algorithm_optimization", "optimized_telemetry"]
UNITS = {
    "execution": "us/exec",
    "memory": "KB/exec",
    "concurrent": "us/exec",
    "cache": "us/exec",
    "context": "us/run",
}
# What each optimization exists for (its target metric or workload).
TARGETS = {
    "enable_cache_optimization": "cache",
    "enable_context_optimization": "context",
    "enable_object_pool": "execution",
    "enable_concurrency_optimization": "overloaded backend (goodput)",
    "enable_circuit_breaker": "failing backend (calls made to it)",
    "enable_optimized_error_handling": "errors that never recover (attempts wasted)",
    "enable_memory_optimization": "memory pressure (docs/memory.md)",
}


def config(on: set[str]) -> OptimizationConfig:
    cfg = {name: name in on for name in FLAGS}
    if "enable_automatic_optimization" in on:
        cfg["enable_performance_monitoring"] = True  # required by validate()
    return OptimizationConfig(**cfg)


def configurations() -> dict[str, OptimizationConfig]:
    out = {"baseline (all off)": config(set()), "baseline, 2nd copy": config(set())}
    for f in FLAGS:
        out[f"+ {f.removeprefix('enable_')}"] = config({f})
    out["all on"] = config(set(FLAGS))
    return out


# ------------------------------------------------------------------ steps


async def trivial(x):
    return x + 1


PAYLOAD = bytes(range(256)) * 32  # 8 KB


async def costly(x):
    h = hashlib.sha256(PAYLOAD)
    for _ in range(3):
        h.update(PAYLOAD)
    return (x, h.hexdigest()[:8])


def context_pipeline() -> Pipeline:
    def make(i):
        async def write(data, context):
            context[f"s{i}"] = data
            return data

        return Step(write, f"ctx{i}")

    p = make(0) >> make(1)
    p = p >> make(2)
    return p >> make(3)


BIG_CONTEXT = {f"k{i}": i for i in range(1000)}


# ---------------------------------------------------------------- metrics


class Contender:
    """One configuration's callables for the five metrics."""

    def __init__(self, name: str, cfg: OptimizationConfig | None = None, flujo=None):
        self.name = name
        self.flujo = flujo
        if cfg is not None:
            self.ex = ExecutorCore(cfg)
            self.trivial = Step(trivial, "trivial")
            self.costly = Step(costly, "costly")
            self.pipeline = context_pipeline()

    async def execution(self, n: int) -> float:
        call = self.flujo.trivial if self.flujo else _bind(self.ex, self.trivial)
        t0 = time.perf_counter_ns()
        for i in range(n):
            await call(i)
        return (time.perf_counter_ns() - t0) / n / 1000

    async def concurrent(self, n: int) -> float:
        call = self.flujo.trivial if self.flujo else _bind(self.ex, self.trivial)
        t0 = time.perf_counter_ns()
        await asyncio.gather(*(call(i) for i in range(n)))
        return (time.perf_counter_ns() - t0) / n / 1000

    async def concurrent_many(self, n: int) -> float:
        """The concurrent workload through caudal's batch API."""
        t0 = time.perf_counter_ns()
        await self.ex.execute_many(self.trivial, range(n))
        return (time.perf_counter_ns() - t0) / n / 1000

    async def cache(self, n: int) -> float:
        call = self.flujo.costly if self.flujo else _bind(self.ex, self.costly)
        t0 = time.perf_counter_ns()
        for i in range(n):
            await call(i % 64)
        return (time.perf_counter_ns() - t0) / n / 1000

    async def memory(self, n: int) -> float:
        gate = asyncio.Event()

        async def waits(x):
            await gate.wait()
            return x

        if self.flujo:
            call = self.flujo.make_waiting(gate)
        else:
            st = Step(waits, "waits")
            call = _bind(self.ex, st)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.ensure_future(call(i)) for i in range(n)]
        for _ in range(5):
            await asyncio.sleep(0)
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        gate.set()
        await asyncio.gather(*tasks)
        return held / n / 1024

    async def context(self, n: int) -> float:
        t0 = time.perf_counter_ns()
        for i in range(n):
            run = await self.pipeline.run(
                i, executor=self.ex, context=dict(BIG_CONTEXT), store=False
            )
            assert run.status == "completed", run.error
        return (time.perf_counter_ns() - t0) / n / 1000


async def _bare(metric: str, n: int) -> float:
    t0 = time.perf_counter_ns()
    if metric == "execution":
        for i in range(n):
            await trivial(i)
    else:
        await asyncio.gather(*(trivial(i) for i in range(n)))
    return (time.perf_counter_ns() - t0) / n / 1000


def _bind(ex, step):
    return lambda x: ex.execute(step, x)


class FlujoCalls:
    """flujo's ExecutorCore on the same steps, as flujo Steps (defaults)."""

    def __init__(self) -> None:
        from flujo.application.core.executor_core import ExecutorCore as FlujoExecutor
        from flujo.domain.dsl.step import Step as FlujoStep

        logging.getLogger("flujo").setLevel(logging.WARNING)
        self._step = FlujoStep
        self.ex = FlujoExecutor()

        class Inc:
            async def run(self, data, **kw):
                return data + 1

        class Costly:
            async def run(self, data, **kw):
                return await costly(data)

        inc = FlujoStep(name="inc", agent=Inc())
        cst = FlujoStep(name="costly", agent=Costly())
        self.trivial = lambda x: self.ex.execute(inc, x)
        self.costly = lambda x: self.ex.execute(cst, x)

    def make_waiting(self, gate):
        class Waits:
            async def run(self, data, **kw):
                await gate.wait()
                return data

        st = self._step(name="waits", agent=Waits())
        return lambda x: self.ex.execute(st, x)


async def check(c: Contender) -> None:
    """Every contender really does the work before it is timed."""
    call = c.flujo.trivial if c.flujo else _bind(c.ex, c.trivial)
    r = await call(1)
    assert r.output == 2, (c.name, r)
    call = c.flujo.costly if c.flujo else _bind(c.ex, c.costly)
    assert (await call(3)).output[0] == 3


SIZES = {
    # metric: (quick n, full n) per round; flujo gets a tenth of the calls.
    "execution": (500, 2000),
    "memory": (300, 500),
    "concurrent": (500, 1000),
    "cache": (300, 1000),
    "context": (20, 60),
}


EXTRA_ROUNDS = {"execution": 6, "concurrent": 3}


async def matrix(contenders: list[Contender], rounds: int, quick: bool) -> dict:
    rng = random.Random(3)
    samples = {c.name: {m: [] for m in METRICS} for c in contenders}
    for c in contenders:  # warm-up
        for m in METRICS:
            if c.flujo and m == "context":
                continue
            await getattr(c, m)(20 if m != "context" else 2)
    # The trivial-step metrics take milliseconds a round: they get more
    # rounds, so that their medians (and the noise band) are tighter.
    most = rounds * max(EXTRA_ROUNDS.values())
    for r in range(most):
        for m in METRICS:
            if r >= rounds * EXTRA_ROUNDS.get(m, 1):
                continue
            order = list(contenders)
            rng.shuffle(order)
            for c in order:
                if c.flujo and m == "context":
                    continue
                n = SIZES[m][0 if quick else 1]
                if c.flujo:
                    n = max(20, n // 10) if m != "memory" else n
                samples[c.name][m].append(await getattr(c, m)(n))
    out = {}
    for name, per in samples.items():
        out[name] = {}
        for m, s in per.items():
            if not s:
                continue
            s.sort()
            out[name][m] = {
                "median": statistics.median(s),
                "p10": s[len(s) // 10],
                "p90": s[(len(s) * 9) // 10],
            }
    return out


# ------------------------------------------------------ target workloads


async def target_workloads(quick: bool) -> dict:
    out = {}
    # Circuit breaker: a backend that is down; every call fails after 1 ms.
    calls = {"on": 0, "off": 0}

    def down(key):
        async def backend(x):
            calls[key] += 1
            await asyncio.sleep(0.001)
            raise ConnectionError("backend down")

        return backend

    n = 300 if quick else 1000
    for key, on in (("off", False), ("on", True)):
        ex = ExecutorCore(
            OptimizationConfig(
                enable_circuit_breaker=on,
                circuit_breaker_failure_threshold=5,
                circuit_breaker_recovery_timeout_seconds=0.5,
            )
        )
        st = Step(down(key), "down")
        t0 = time.perf_counter()
        for i in range(n):
            await ex.execute(st, i)
        out.setdefault("circuit breaker", {})[key] = {
            "backend_calls": calls[key],
            "us_per_execution": (time.perf_counter() - t0) / n * 1e6,
        }

    # Error handling: an error retries never fix (max_retries=3).
    attempts = {"on": 0, "off": 0}

    def hopeless(key):
        async def step(x):
            attempts[key] += 1
            raise ValueError("schema mismatch in field 'id'")

        return step

    for key, on in (("off", False), ("on", True)):
        ex = ExecutorCore(
            OptimizationConfig(enable_optimized_error_handling=on, enable_circuit_breaker=False)
        )
        # Immediate retries, as flujo's max_retries=3: the attempts are the
        # figure, not the back-off.
        st = Step(hopeless(key), "hopeless", retry=immediate_retries(3))
        t0 = time.perf_counter()
        for i in range(n):
            await ex.execute(st, i)
        out.setdefault("error handling", {})[key] = {
            "attempts": attempts[key],
            "us_per_execution": (time.perf_counter() - t0) / n * 1e6,
        }

    # Memory optimization: the cache holds 2,000 outputs of 8 KB; then the
    # pressure threshold drops below the process's RSS (critical: the cache
    # keeps a tenth). Python memory held, traced by tracemalloc.
    async def blob(x):
        return bytes(8192) + str(x).encode()

    for key, on in (("off", False), ("on", True)):
        cfg = dict(
            enable_cache_optimization=True, enable_memory_optimization=on, cache_max_size=2000
        )
        ex = ExecutorCore(OptimizationConfig(**cfg))
        st = Step(blob, "blob", cache=True)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(2000):
            await ex.execute(st, i)
        filled = tracemalloc.get_traced_memory()[0] - base
        await ex.apply_optimization_config(
            OptimizationConfig(**cfg, memory_pressure_threshold_mb=1.0)
        )
        stats = ex.get_optimization_stats()  # a stats read also reads RSS
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out.setdefault("memory pressure", {})[key] = {
            "filled_mb": filled / 2**20,
            "after_mb": held / 2**20,
            "cache_size": stats["cache"]["size"],
            "level": stats["memory"]["memory_pressure_level"],
        }
        del ex, st

    # Concurrency: the overloaded backend of bench_concurrency (capacity 20,
    # 100 clients), adaptive on against off (no limit).
    from bench_concurrency import Backend, closed_loop, summarise

    duration = 2.0 if quick else 5.0
    for key, on in (("off", False), ("on", True)):
        ex = ExecutorCore(
            OptimizationConfig(enable_concurrency_optimization=on, enable_circuit_breaker=False)
        )
        backend = Backend(20)
        st = Step(backend, "backend")

        async def via(x, ex=ex, st=st):
            return await ex.execute(st, x)

        start = await closed_loop(via, 100, duration)
        out.setdefault("concurrency", {})[key] = summarise(
            backend, start + duration / 3, start + duration
        )
    return out


# ---------------------------------------------------------------- output


def render(res: dict, targets: dict, flujo_scale: float | None) -> tuple[str, list[str]]:
    base = res["baseline (all off)"]
    twin = res["baseline, 2nd copy"]
    noise = {}
    # Copies of the baseline: the second baseline executor, and the switches
    # that by construction change nothing on these workloads (step analysis
    # and native keys are always on; telemetry export is not built). Their
    # spread around the baseline is the run's noise.
    copies = [twin] + [res[f"+ {n}"] for n in NO_EFFECT if f"+ {n}" in res]
    for m in METRICS:
        b = base[m]["median"]
        spread = (base[m]["p90"] - base[m]["p10"]) / (2 * b) if b else 0
        dev = max(abs(c[m]["median"] - b) / b for c in copies) if b else 0
        noise[m] = max(dev, spread, 0.02)
    lines = [
        "| configuration | " + " | ".join(f"{m} ({UNITS[m]})" for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    worse = []
    for name, per in res.items():
        if name in ("all on, execute_many", "asyncio alone"):
            continue
        cells = []
        for m in METRICS:
            if m not in per:
                cells.append("n/a")
                continue
            v = per[m]["median"]
            ratio = v / base[m]["median"]
            mark = ""
            if name not in ("baseline (all off)", "flujo ExecutorCore") and ratio > 1 + noise[m]:
                mark = " ▲"
                worse.append(f"{name}: {m} {ratio:.2f}x the baseline (noise band {noise[m]:.0%})")
            cells.append(f"{v:.2f} ({ratio:.2f}x){mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Noise band per metric (the largest deviation from the baseline among its copies — "
        "the second baseline and the three switches that change nothing here: "
        "step_optimization, algorithm_optimization, optimized_telemetry — or half the "
        "baseline's p10-p90 spread if larger, at least 2 %): "
        + ", ".join(f"{m} {noise[m]:.0%}" for m in METRICS)
        + ". ▲ marks a figure worse than the baseline beyond its noise band."
    )
    if flujo_scale is not None:
        lines.append(
            f"flujo was measured in its own block; its figures are scaled by {flujo_scale:.2f} "
            "(baseline in the main block / baseline in flujo's block)."
        )
    lines.append("")
    flujo = res.get("flujo ExecutorCore")
    allon = res["all on"]
    if flujo:
        lines += [
            "| metric | caudal all on | flujo ExecutorCore | caudal faster by |",
            "|---|---|---|---|",
        ]
        for m in METRICS:
            if m in flujo:
                lines.append(
                    f"| {m} ({UNITS[m]}) | {allon[m]['median']:.2f} | {flujo[m]['median']:.2f} | "
                    f"{flujo[m]['median'] / allon[m]['median']:.0f}x |"
                )
            else:
                lines.append(
                    f"| {m} | {allon[m]['median']:.2f} | not comparable (flujo runs pipelines "
                    "through its own runner, not ExecutorCore) | - |"
                )
        many = res.get("all on, execute_many")
        if many and "concurrent" in flujo:
            lines.append(
                f"| concurrent, each library's batch form (caudal execute_many; flujo has none: "
                f"gather) | {many['concurrent']['median']:.2f} | "
                f"{flujo['concurrent']['median']:.2f} | "
                f"{flujo['concurrent']['median'] / many['concurrent']['median']:.0f}x |"
            )
        bare = res.get("asyncio alone")
        if bare:
            for m in ("execution", "concurrent"):
                lines.append(
                    f"| {m}: asyncio alone, no executor (the bound for any executor) | "
                    f"{bare[m]['median']:.2f} | {flujo[m]['median']:.2f} | "
                    f"at most {flujo[m]['median'] / bare[m]['median']:.0f}x |"
                )
        lines.append("")
        if bare:
            own = allon["concurrent"]["median"] - bare["concurrent"]["median"]
            bound = flujo["concurrent"]["median"] / bare["concurrent"]["median"]
            flujo_own = flujo["concurrent"]["median"] - bare["concurrent"]["median"]
            lines.append(
                f"With `asyncio.gather`, asyncio's own task per coroutine costs "
                f"{bare['concurrent']['median']:.2f} us, so no executor can beat flujo there "
                f"by more than {bound:.0f}x; "
                f"above that floor caudal adds {own:.2f} us per execution and flujo "
                f"{flujo_own:.2f} us ({flujo_own / max(own, 0.01):.0f}x)."
            )
            lines.append("")
    lines += [
        "Each optimization on the workload it exists for (on against off, same run):",
        "",
        "| optimization | workload | off | on |",
        "|---|---|---|---|",
    ]
    for flag, target in TARGETS.items():
        short = flag.removeprefix("enable_")
        if target in METRICS:
            off = base[target]["median"]
            on = res[f"+ {short}"][target]["median"]
            lines.append(
                f"| {short} | {target} ({UNITS[target]}) | {off:.2f} | {on:.2f} ({off / on:.2f}x) |"
            )
    cb = targets["circuit breaker"]
    lines.append(
        f"| circuit_breaker | backend down: calls made to it / us per execution | "
        f"{cb['off']['backend_calls']} / {cb['off']['us_per_execution']:.0f} | "
        f"{cb['on']['backend_calls']} / {cb['on']['us_per_execution']:.0f} |"
    )
    eh = targets["error handling"]
    lines.append(
        f"| optimized_error_handling | error retries never fix, max_retries=3: attempts / "
        f"us per execution | {eh['off']['attempts']} / {eh['off']['us_per_execution']:.0f} | "
        f"{eh['on']['attempts']} / {eh['on']['us_per_execution']:.0f} |"
    )
    cc = targets["concurrency"]
    lines.append(
        f"| concurrency_optimization | overloaded backend (capacity 20, 100 clients): "
        f"goodput/s, p99 ms, errors | {cc['off']['goodput']:.0f}, {cc['off']['p99_ms']:.0f}, "
        f"{cc['off']['error_rate']:.0%} | {cc['on']['goodput']:.0f}, {cc['on']['p99_ms']:.0f}, "
        f"{cc['on']['error_rate']:.0%} |"
    )
    mp = targets["memory pressure"]
    lines.append(
        f"| memory_optimization | RSS above memory_pressure_threshold_mb with 2,000 cached "
        f"8 KB outputs: Python memory held (MB), cache entries | "
        f"{mp['off']['after_mb']:.1f}, {mp['off']['cache_size']} | "
        f"{mp['on']['after_mb']:.1f}, {mp['on']['cache_size']} ({mp['on']['level']}) |"
    )
    alloc = RESULTS / "memory_context_alloc.json"
    if alloc.exists():
        import json

        a = json.loads(alloc.read_text())["executor_memory"]["allocations_per_execute"]
        lines.append(
            f"| object_pool | native allocations per execute (make bench-alloc) | "
            f"{a['pool_off']:.3f} | {a['pool_on']:.3f} |"
        )
    else:
        lines.append(
            "| object_pool | native allocations per execute | 1 | 0 (counted by the gtest "
            "build's operator new, tests_cpp/executor/executor_memory_test.cc; "
            "`make bench-alloc` for the Python module) |"
        )
    return "\n".join(lines), worse


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = res["baseline (all off)"]
    skip = ("baseline (all off)", "flujo ExecutorCore", "all on, execute_many", "asyncio alone")
    names = [n for n in res if n not in skip]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(15, 5), sharey=True)
    for ax, m in zip(axes, METRICS, strict=True):
        vals = [res[n][m]["median"] / base[m]["median"] for n in names]
        colors = ["tab:red" if v > 1.1 else "tab:green" if v < 0.9 else "tab:gray" for v in vals]
        ax.barh(range(len(names)), vals, color=colors)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(f"{m}\n(x baseline, lower is better)", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlim(0.05, 2.0)
        ticks = [0.1, 0.25, 0.5, 1, 2]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}x" for t in ticks], fontsize=8)
        ax.minorticks_off()
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=8)
    fig.suptitle(
        "caudal ablation: each optimization alone vs all off"
        " (the five metrics of flujo's tuning report)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def main(quick: bool) -> int:
    rounds = 5 if quick else 9
    cfgs = configurations()
    contenders = [Contender(name, cfg) for name, cfg in cfgs.items()]
    for c in contenders:
        await check(c)
    res = await matrix(contenders, rounds, quick)
    allon = next(c for c in contenders if c.name == "all on")
    many = []
    for _ in range(rounds):
        many.append(await allon.concurrent_many(SIZES["concurrent"][0 if quick else 1]))
    many.sort()
    res["all on, execute_many"] = {
        "concurrent": {"median": statistics.median(many), "p10": many[0], "p90": many[-1]}
    }
    # asyncio alone: the same trivial coroutine awaited and gathered with no
    # executor, interleaved with all-on (the floor any executor sits on).
    bare: dict[str, list[float]] = {"execution": [], "concurrent": []}
    for _ in range(rounds):
        for m in ("execution", "concurrent"):
            bare[m].append(await _bare(m, SIZES[m][0 if quick else 1]))
    res["asyncio alone"] = {}
    for m, v in bare.items():
        v.sort()
        res["asyncio alone"][m] = {"median": statistics.median(v), "p10": v[0], "p90": v[-1]}
    flujo_scale = None
    try:
        flujo = Contender("flujo ExecutorCore", flujo=FlujoCalls())
        await check(flujo)
    except Exception as e:
        print(
            f"flujo unavailable ({type(e).__name__}: {e}); its rows are left out", file=sys.stderr
        )
        flujo = None
    if flujo is not None:
        twin = Contender("baseline in flujo's block", cfgs["baseline (all off)"])
        fres = await matrix([flujo, twin], max(3, rounds // 2), quick)
        scaled = {}
        for m, v in fres["flujo ExecutorCore"].items():
            scale = (
                res["baseline (all off)"][m]["median"]
                / fres["baseline in flujo's block"][m]["median"]
            )
            scaled[m] = {k: x * scale for k, x in v.items()}
        flujo_scale = statistics.median(
            res["baseline (all off)"][m]["median"] / fres["baseline in flujo's block"][m]["median"]
            for m in fres["flujo ExecutorCore"]
        )
        res["flujo ExecutorCore"] = scaled
    targets = await target_workloads(quick)
    table, worse = render(res, targets, flujo_scale)
    print(table)
    if worse:
        print("\nworse than the baseline beyond noise:\n  " + "\n  ".join(worse))
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(res, RESULTS / "ablation.png")
    m = machine()
    (RESULTS / "report.md").write_text(
        f"Measured {m['date']} on {m['processor']}, {m['cpus']} CPUs, Python {m['python']}"
        f"{' (--quick)' if quick else ''}.\n\n" + table + "\n\n![ablation](ablation.png)\n"
    )
    save("report", {"quick": quick, "matrix": res, "targets": targets, "worse": worse})
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    sys.exit(asyncio.run(main(p.parse_args().quick)))
