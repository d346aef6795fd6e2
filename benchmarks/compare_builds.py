"""Two builds of caudal side by side: the hot paths' cost in each.

A change to the core (a new check on every call, a different key walk) is
judged against the build without it. Two builds cannot share a process (both
are ``caudal._core``), so this runs each in its own child process,
alternating A and B round after round, and reports the median of each path
and the ratio B/A with the spread of the per-round ratios. Paths:

- execute, trivial async step (cache off)
- cache hit
- cache miss + store (a new input each call)
- sync step (a plain ``def``, through the worker pool)
- execute_many, per item
- a fresh ``lambda`` per call (a step object met for the first time: its
  analysis), cache off and on

    python benchmarks/compare_builds.py --baseline DIR [--candidate DIR] [--rounds N]

DIR is a directory to put first on ``sys.path`` holding a ``caudal`` package
with its built ``_core`` (a staged build, as ``make test-asan`` makes one);
without ``--candidate`` the installed caudal is B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time


def child() -> None:
    # A staged build: drop an editable install's import hook so the caudal
    # found first on sys.path is the one imported.
    if os.environ.get("CAUDAL_COMPARE_STAGED"):
        sys.meta_path[:] = [
            f for f in sys.meta_path if not type(f).__module__.startswith("_editable_skbc_")
        ]
    from caudal import ExecutorCore, OptimizationConfig, Step

    async def triv(x):
        return x

    def sync_triv(x):
        return x

    async def main() -> dict[str, float]:
        n = 20_000
        off = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
        on = ExecutorCore(OptimizationConfig(enable_cache_optimization=True))
        plain, cached, sync = Step(triv, "triv"), Step(triv, "trivc", cache=True), Step(sync_triv)
        await on.execute(cached, 1)
        base = time.perf_counter_ns()

        async def p_plain(k):
            for i in range(k):
                await off.execute(plain, i)

        async def p_hit(k):
            for _ in range(k):
                await on.execute(cached, 1)

        async def p_miss(k):
            for i in range(k):
                await on.execute(cached, (base, k, i, time.perf_counter_ns()))

        async def p_sync(k):
            for i in range(k // 10):
                await off.execute(sync, i)

        async def p_many(k):
            await off.execute_many(plain, range(k), progress=False)

        async def p_fresh_off(k):
            for i in range(k // 10):
                await off.execute(lambda x: x, i)

        async def p_fresh_on(k):
            for i in range(k // 10):
                await on.execute(lambda x: x, i)

        paths = {
            "execute, trivial async step": (p_plain, 1),
            "cache hit": (p_hit, 1),
            "cache miss + store": (p_miss, 1),
            "sync step (worker pool)": (p_sync, 10),
            "execute_many, per item": (p_many, 1),
            "fresh lambda per call, cache off": (p_fresh_off, 10),
            "fresh lambda per call, cache on": (p_fresh_on, 10),
        }
        out: dict[str, list[float]] = {k: [] for k in paths}
        for fn, _ in paths.values():  # warm-up
            await fn(n // 10)
        for _ in range(5):
            for name, (fn, div) in paths.items():
                t = time.perf_counter()
                await fn(n)
                out[name].append((time.perf_counter() - t) / (n // div) * 1e6)
        await off.aclose()
        await on.aclose()
        return {k: statistics.median(v) for k, v in out.items()}

    print(json.dumps(asyncio.run(main())))


def run(path: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["CAUDAL_COMPARE_STAGED"] = "1"
    proc = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--baseline", help="sys.path entry of build A (default: installed)")
    ap.add_argument("--candidate", help="sys.path entry of build B (default: installed)")
    ap.add_argument("--rounds", type=int, default=6, help="A/B pairs (default 6)")
    args = ap.parse_args()
    if args.child:
        child()
        return
    a: list[dict[str, float]] = []
    b: list[dict[str, float]] = []
    for _ in range(args.rounds):
        a.append(run(args.baseline))
        b.append(run(args.candidate))
    print(f"| path (median µs per execute) | A | B | B/A (per-pair range) | pairs: {args.rounds} |")
    print("|---|---|---|---|---|")
    for name in a[0]:
        ma = statistics.median(r[name] for r in a)
        mb = statistics.median(r[name] for r in b)
        ratios = [rb[name] / ra[name] for ra, rb in zip(a, b, strict=True)]
        print(
            f"| {name} | {ma:.3f} | {mb:.3f} | {mb / ma:.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | |"
        )


if __name__ == "__main__":
    main()
