"""Per-execute cost of a trivial async step (issue: ExecutorCore API).

Rows, all in one process and one event loop, interleaved:
  (a) bare ``await fn(x)``
  (b) caudal, every optimization off
  (c) caudal, the defaults
  (d) caudal, every optimization on (distinct inputs: cache misses)
  (e) flujo's own ExecutorCore (PyPI 0.6.11) on the same step, as a flujo Step,
      with flujo's defaults (its result cache is on: a miss and a store per call)
  (f) flujo's ExecutorCore with enable_cache=False (its cheapest configuration)
  (g) caudal, every optimization on, the same input every call (cache hits),
      on an executor and a step of their own
  (h) caudal, every optimization on, a step with the cache forced on
      (``Step(fn, cache=True)``): a lookup, a miss and a store every call.
      (d)'s step is cached by the config's default, so the cache admission
      stops looking it up once its inputs never repeat.
  (i) not caudal: the least an execute can do on this interpreter, in
      caudal's shape. An ``async def`` method makes one native call
      (benchmarks/reference_shape.c, built here into build/bench/) that
      reads the monotonic clock, calls the step, sends its coroutine its
      first value, reads the clock again and returns a new result object.
      No admission, statistics, record or cache: what is left of (d) above
      (i) is caudal's own work. Skipped when no C compiler is found.
  (j) not caudal: (i) without the ``async def`` frame. ``execute`` is the
      native call itself and returns a finished awaitable holding the
      result; awaiting it hands the result back in a StopIteration (the
      only way an awaitable that is not a coroutine can on CPython 3.11 to
      3.13). The shape caudal would take if it were cheaper than (i).
Every row, (a) included, is called through the same lambda by the harness.
Prints each row's cost above (a) and its speed-up over (e).

Then the retry path: one execution of a step that raises ValueError on its
first N attempts and returns on attempt N+1 (``RetryStrategy`` with no
delay, the defaults config; the breaker is consulted on every attempt and
told to ignore ValueError, so that it stays closed), against the same
execution with N = 0, and a bare Python loop that calls the same coroutine
function and catches, N+1 times and once. The cost of one retry attempt is
the difference of the two divided by N, for caudal and for the loop; the
floor is caudal's minus the loop's.

Two interleaved blocks in one process: (a)-(d) together, then (a), (e), (f)
together. flujo's executions allocate heavily (hundreds of objects each) and
interleaving them batch by batch with caudal's inflates caudal's figures by
up to 0.5 µs through garbage collection and cache pollution that caudal does
not cause; (a) is measured in both blocks.

    python benchmarks/bench_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Floor, record
from _harness import interleaved, save
from caudal import ExecutorCore, OptimizationConfig, RetryStrategy, Step

# The optimizations are the enable_* switches. Other booleans are policies,
# not optimizations (cache_copy_outputs deep-copies outputs for safety;
# cache_compression only concerns the shared tier) and keep their defaults.
FLAGS = [
    f["name"]
    for f in OptimizationConfig.fields()
    if f["type"] == "bool" and f["name"].startswith("enable_")
]


def config_all(value: bool) -> OptimizationConfig:
    return OptimizationConfig(**{name: value for name in FLAGS})


async def step(x):
    return x + 1


class IncAgent:
    async def run(self, data, **kwargs):
        return data + 1


def flujo_contender():
    try:
        from flujo.application.core.executor_core import ExecutorCore as FlujoExecutor
        from flujo.domain.dsl.step import Step as FlujoStep
    except Exception as e:
        print(f"flujo unavailable ({type(e).__name__}: {e}); row (e) skipped", file=sys.stderr)
        return None
    logging.getLogger("flujo").setLevel(logging.WARNING)
    fstep = FlujoStep(name="inc", agent=IncAgent())
    default = FlujoExecutor()  # flujo's default: result cache on (miss + store here)
    nocache = FlujoExecutor(enable_cache=False)

    async def call_default(x):
        return await default.execute(fstep, x)

    async def call_nocache(x):
        return await nocache.execute(fstep, x)

    return call_default, call_nocache


async def hit_step(x):
    return x + 1


def reference_shape():
    """benchmarks/reference_shape.c as a module, built into build/bench/
    with the interpreter's compiler when missing or older than its source;
    None (row (i) skipped) when it cannot be built."""
    src = Path(__file__).resolve().parent / "reference_shape.c"
    out_dir = Path(__file__).resolve().parents[1] / "build" / "bench"
    out = out_dir / ("reference_shape" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out_dir.mkdir(parents=True, exist_ok=True)
        cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
        cmd = [*cc, "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}"]
        try:
            subprocess.run([*cmd, str(src), "-o", str(out)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            print(f"row (i) skipped: cannot build {src.name} ({e}) {detail.decode()[-300:]}")
            return None
    spec = importlib.util.spec_from_file_location("reference_shape", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LeastExecute:
    """Row (i): caudal's execute without caudal. The same wrapper, the same
    one native call and the same check on what it returns as caudal's fast
    path (python/caudal/_executor/core.py); the call does only what no
    execute can skip (reference_shape.c)."""

    def __init__(self, module) -> None:
        self._start = module.start

    async def execute(self, step, data=None, context=None, resources=None):
        t = self._start(step, data, context, resources)
        if t.__class__ is tuple:
            return t
        raise RuntimeError("unreachable: the reference returns a tuple or raises")


LEAST = "(i) reference: the least an execute does"
NO_FRAME = "(j) reference, no async def frame"


class LeastAwaitable:
    """Row (j): (i) with no ``async def`` frame: ``execute`` is the native
    call, and what it returns is awaited directly."""

    def __init__(self, module) -> None:
        self.execute = module.start_awaitable


async def main(quick: bool) -> dict:
    off = ExecutorCore(config_all(False))
    defaults = ExecutorCore(OptimizationConfig())
    on = ExecutorCore(config_all(True))
    # The hits have an executor and a step of their own: sharing (d)'s, the
    # cache admission would judge the step by (d)'s misses too, stop
    # looking it up, and (g) would time executions that run the step.
    on_hits = ExecutorCore(config_all(True))
    # (d)'s distinct inputs never hit, so the cache admission soon stops
    # looking the step up (what a user with such a workload gets); (h)
    # forces the cache on for its step: a lookup, a miss and a store on
    # every call.
    forced = Step(step, "forced", cache=True)
    reference = reference_shape()
    # Every contender, (a) included, is called through a lambda by the
    # harness: the figures above (a) are caudal's, not the lambda's.
    contenders = {
        "(a) bare await": lambda x: step(x),
        "(b) caudal, all off": lambda x: off.execute(step, x),
        "(c) caudal, defaults": lambda x: defaults.execute(step, x),
        "(d) caudal, all on (misses)": lambda x: on.execute(step, x),
        "(g) caudal, all on (hits)": lambda x: on_hits.execute(hit_step, -1),
        "(h) caudal, all on, cache forced (misses)": lambda x: on.execute(forced, x),
    }
    if reference is not None:
        least = LeastExecute(reference)
        contenders[LEAST] = lambda x: least.execute(step, x)
        bare_native = LeastAwaitable(reference)
        contenders[NO_FRAME] = lambda x: bare_native.execute(step, x, None, None)
    flujo = flujo_contender()
    # Check every contender really works before timing it.
    for name, call in contenders.items():
        hits = name.startswith("(g)")
        r = await call(1)
        out = r[1] if name in (LEAST, NO_FRAME) else getattr(r, "output", r)
        assert out == (0 if hits else 2), (name, r)
        if hits:
            assert (await call(1)).cache_hit, name
    # 301 rounds: the timed block lasts a few seconds, not a fraction of one,
    # so that a short slow phase of a shared machine does not set the median.
    rounds, batch = (15, 200) if quick else (301, 1000)
    res = await interleaved(contenders, rounds=rounds, batch=batch)
    # What the rows measured: (g) only hits, (d) only misses (distinct
    # inputs; the admission may stop looking a step up that never hits).
    hits = on_hits.get_optimization_stats()["execution"]["steps"]["hit_step"]
    assert hits["cache_hits"] == hits["executions"] - 1, hits
    # (The harness's inputs start again from 0 after its 200 warm-up calls:
    # at most those 200, and the check's input, are met twice.)
    rows_of = on.get_optimization_stats()["execution"]["steps"]
    assert rows_of["step"]["cache_hits"] <= 201, rows_of["step"]
    forced_row = rows_of["forced"]
    assert forced_row["cache_hits"] <= 201 < rounds * batch <= forced_row["cache_misses"]
    if flujo is not None:
        block = {
            "(a) bare await": lambda x: step(x),
            "(e) flujo ExecutorCore": flujo[0],
            "(f) flujo, enable_cache=False": flujo[1],
        }
        for name in ("(e) flujo ExecutorCore", "(f) flujo, enable_cache=False"):
            r = await block[name](1)
            assert r.output == 2, (name, r)
        fres = await interleaved(block, rounds=max(7, rounds // 3), batch=max(50, batch // 10))
        scale = res["(a) bare await"]["median_us"] / fres["(a) bare await"]["median_us"]
        for name in ("(e) flujo ExecutorCore", "(f) flujo, enable_cache=False"):
            res[name] = fres[name]
        res["(a) bare await"]["flujo_block_bare_us"] = fres["(a) bare await"]["median_us"]
        res["(a) bare await"]["block_scale"] = scale
    base = res["(a) bare await"]["median_us"]
    ref = res.get("(e) flujo ExecutorCore", {}).get("median_us")
    rows = []
    print(f"{'contender':32} {'median µs':>10} {'above (a) µs':>13} {'vs (e)':>9}")
    for name, r in res.items():
        above = r["median_us"] - base
        ratio = ref / r["median_us"] if ref else None
        rows.append({"contender": name, **r, "above_bare_us": above, "speedup_vs_flujo": ratio})
    rows.sort(key=lambda r: r["contender"])
    by_name = {r["contender"]: r for r in rows}
    for r in rows:
        ratio = f"{r['speedup_vs_flujo']:.0f}x" if r["speedup_vs_flujo"] else "-"
        print(f"{r['contender']:32} {r['median_us']:10.3f} {r['above_bare_us']:13.3f} {ratio:>9}")
    least = by_name.get(LEAST)
    engine_work = None
    if least is not None:
        engine_work = {
            "least_above_bare_us": least["above_bare_us"],
            **{
                what: by_name[row]["median_us"] - least["median_us"]
                for what, row in (
                    ("miss_above_least_us", "(d) caudal, all on (misses)"),
                    ("forced_above_least_us", "(h) caudal, all on, cache forced (misses)"),
                    ("hit_above_least_us", "(g) caudal, all on (hits)"),
                )
            },
        }
        no_frame = by_name[NO_FRAME]  # built with (i), from the same module
        engine_work["no_frame_above_bare_us"] = no_frame["above_bare_us"]
        engine_work["no_frame_above_least_us"] = no_frame["median_us"] - least["median_us"]
        print(
            f"\nthe least an execute does here, (i): {least['above_bare_us']:.3f} µs above (a);"
            f" caudal's own work above (i): all on {engine_work['miss_above_least_us']:.3f},"
            f" cache forced {engine_work['forced_above_least_us']:.3f},"
            f" hit {engine_work['hit_above_least_us']:.3f} µs"
        )
        print(
            "the same without the async def frame, (j):"
            f" {engine_work['no_frame_above_bare_us']:.3f} µs above (a),"
            f" {engine_work['no_frame_above_least_us']:+.3f} µs against (i)"
        )
    retry = await retry_cost(quick)
    path = save(
        "overhead", {"quick": quick, "rows": rows, "retry": retry, "engine_work": engine_work}
    )
    print(f"saved {path}")
    by = by_name
    detail = f"median of {rounds} interleaved rounds of {batch} calls"
    record(
        "overhead",
        floors=[
            *(
                Floor(
                    f"fast path, every optimization on, {what}: above a bare await",
                    measured=by[row]["above_bare_us"],
                    limit=0.30,
                    unit="µs",
                    detail=detail,
                )
                for what, row in (
                    ("cache miss", "(d) caudal, all on (misses)"),
                    (
                        "cache forced on, miss and store",
                        "(h) caudal, all on, cache forced (misses)",
                    ),
                    ("cache hit", "(g) caudal, all on (hits)"),
                )
            ),
            Floor(
                "a retry attempt: above a bare raise-and-catch",
                measured=retry["above_bare_us"],
                limit=0.5,
                unit="µs",
                detail=f"defaults, {RETRIES} retries per execution, no delay; {retry['how']}",
            ),
        ],
    )
    return {"rows": rows, "retry": retry}


RETRIES = 4  # failed attempts per execution in the retry rows


async def retry_cost(quick: bool) -> dict:
    left = [0]

    async def flaky(x):
        if left[0]:
            left[0] -= 1
            raise ValueError("not yet")
        return x

    ex = ExecutorCore(OptimizationConfig())
    fstep = Step(
        flaky,
        "flaky",
        retry=RetryStrategy(max_attempts=RETRIES + 1, base_delay=0.0, max_backoff=0.0),
        breaker_exclude=(ValueError,),
    )

    def bare_loop(n: int):
        async def run(x):
            left[0] = n
            for _ in range(n + 1):
                try:
                    return await flaky(x)
                except ValueError:
                    pass
            return None

        return run

    def caudal(n: int):
        async def run(x):
            left[0] = n
            return await ex.execute(fstep, x)

        return run

    contenders = {
        "bare loop, 1 call": bare_loop(0),
        f"bare loop, {RETRIES + 1} calls": bare_loop(RETRIES),
        "caudal, 1 attempt": caudal(0),
        f"caudal, {RETRIES + 1} attempts": caudal(RETRIES),
    }
    # The error pattern is seen to recover once first: a pattern retried
    # error_pattern_min_observations times without recovering fails fast.
    left[0] = 1
    assert (await ex.execute(fstep, 0)).attempts == 2
    r = await contenders[f"caudal, {RETRIES + 1} attempts"](1)
    assert r.success and r.attempts == RETRIES + 1 and r.output == 1, r
    rounds, batch = (15, 100) if quick else (41, 500)
    res = await interleaved(contenders, rounds=rounds, batch=batch)

    def med(name: str) -> float:
        return res[name]["median_us"]

    bare = (med(f"bare loop, {RETRIES + 1} calls") - med("bare loop, 1 call")) / RETRIES
    caudal_per = (med(f"caudal, {RETRIES + 1} attempts") - med("caudal, 1 attempt")) / RETRIES
    print(f"\nretry attempts ({RETRIES} retries per execution, no delay; median µs per execution)")
    for name, row in res.items():
        print(f"  {name:28} {row['median_us']:10.3f}")
    print(
        f"  per attempt: caudal {caudal_per:.3f} µs, bare loop {bare:.3f} µs, "
        f"above: {caudal_per - bare:.3f} µs"
    )
    return {
        "rows": res,
        "caudal_per_attempt_us": caudal_per,
        "bare_per_attempt_us": bare,
        "above_bare_us": caudal_per - bare,
        "how": f"median of {rounds} interleaved rounds of {batch} executions",
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
