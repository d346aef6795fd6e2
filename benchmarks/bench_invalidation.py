"""How long an invalidation takes to reach another process's in-process cache.

Two real processes share a Redis tier (a redis-server this script starts on
a free loopback port): this one invalidates, a child process with its own
executor (its L1 in front of the same tier) hears it. Per round, this
process calls ``executor.invalidate_by_tag(tag)`` with a new tag; the child
records the moment its tier's invalidation listener ran. The child's
executor registered its listener first, so at that moment its L1 has
already dropped the tag's entries. Times are ``time.monotonic_ns()``, one
clock for every process on Linux.

Side by side, interleaved round by round: the floor, a raw redis-py
``PUBLISH`` heard by a redis-py subscriber in the same child (what any
cross-process notification over Redis pays). Two scenarios: the child
idle, and the child busy (its event loop executing steps flat out, as a
worker would be).

    python benchmarks/bench_invalidation.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests_py"))  # the redis-server helper

RAW_CHANNEL = "bench-raw-notify"


# ------------------------------------------------------------- the child
async def child(url: str, prefix: str, busy: bool) -> None:
    import redis.asyncio as aioredis

    from caudal import ExecutorCore, OptimizationConfig, Step
    from caudal.integrations.redis import RedisCacheTier

    tier = RedisCacheTier(url, prefix=prefix, op_timeout_s=5.0)
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True), cache_l2=tier)
    heard: dict[str, int] = {}
    raw_heard: dict[str, int] = {}

    def listener(kind: str, name: str | None) -> None:
        if kind == "tag" and name is not None:
            heard[name] = time.monotonic_ns()

    tier.add_invalidation_listener(listener)  # after the executor's own
    step = Step(lambda x: {"x": x}, "enrich", tags=("users",))
    for i in range(64):  # an L1 with entries in it
        await ex.execute(step, i)
    await ex.flush()

    raw = aioredis.Redis.from_url(url)
    pubsub = raw.pubsub()
    await pubsub.subscribe(RAW_CHANNEL)

    async def raw_listen() -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None and msg.get("type") == "message":
                raw_heard[msg["data"].decode()] = time.monotonic_ns()

    async def work() -> None:  # the busy scenario: steps executed flat out
        async def one(x):
            await asyncio.sleep(0)
            return x

        busy_step = Step(one, "busy")
        i = 0
        while True:
            await ex.execute(busy_step, i)
            i += 1

    tasks = [asyncio.create_task(raw_listen())]
    if busy:
        tasks.append(asyncio.create_task(work()))
    for _ in range(2000):  # 20 s at most
        if tier.stats()["subscribed"]:
            break
        await asyncio.sleep(0.01)
    print("ready" if tier.stats()["subscribed"] else "not subscribed", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "dump"
    await asyncio.sleep(0.5)  # the last messages
    print(json.dumps({"caudal": heard, "raw": raw_heard}), flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pubsub.aclose()
    await raw.aclose()
    await ex.aclose()


# ------------------------------------------------------------- this process
def _quantiles(xs_ns: list[int]) -> dict:
    ms = sorted(x / 1e6 for x in xs_ns)
    if not ms:
        return {"n": 0}
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p90_ms": q[89],
        "p99_ms": q[98],
        "max_ms": ms[-1],
    }


async def scenario(url: str, prefix: str, proc: subprocess.Popen, rounds: int) -> dict:
    """Rounds against the child process ``proc`` (started with ``--child``)."""
    import redis.asyncio as aioredis

    from caudal import ExecutorCore, OptimizationConfig
    from caudal.integrations.redis import RedisCacheTier

    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"the child process did not start: {line!r}")
        config = OptimizationConfig(enable_cache_optimization=True)
        tier = RedisCacheTier(url, prefix=prefix, op_timeout_s=5.0)
        ex = ExecutorCore(config, cache_l2=tier)
        # The same, its message sent by a PUBLISH of its own after the removal.
        tier2 = RedisCacheTier(url, prefix=prefix, op_timeout_s=5.0)
        tier2._publish_with_removal = False
        ex2 = ExecutorCore(config, cache_l2=tier2)
        raw = aioredis.Redis.from_url(url)
        sent: dict[str, tuple[int, int]] = {}
        sent2: dict[str, tuple[int, int]] = {}
        raw_sent: dict[str, int] = {}

        async def caudal_round(i: int) -> None:
            tag = f"t{i}"
            t0 = time.monotonic_ns()
            await ex.invalidate_by_tag(tag)
            sent[tag] = (t0, time.monotonic_ns())

        async def separate_round(i: int) -> None:
            tag = f"s{i}"
            t0 = time.monotonic_ns()
            await ex2.invalidate_by_tag(tag)
            sent2[tag] = (t0, time.monotonic_ns())

        async def raw_round(i: int) -> None:
            msg = f"m{i}"
            t0 = time.monotonic_ns()
            await raw.publish(RAW_CHANNEL, msg)
            raw_sent[msg] = t0

        for _ in range(5):  # connections made, code paths warm
            await ex.invalidate_by_tag("warm")
            await ex2.invalidate_by_tag("warm")
            await raw.publish(RAW_CHANNEL, "warm")
        order = [caudal_round, separate_round, raw_round]
        rng = random.Random(7)
        for i in range(rounds):
            rng.shuffle(order)
            for contender in order:
                await contender(i)
                await asyncio.sleep(0.004)
        out = await asyncio.to_thread(proc.communicate, "dump\n", 60)
        heard = json.loads(out[0].strip().splitlines()[-1])
        await raw.aclose()
        await ex.aclose()
        await ex2.aclose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = heard["caudal"]
    call_to_heard = [got[t] - s[0] for t, s in sent.items() if t in got]
    return_to_heard = [got[t] - s[1] for t, s in sent.items() if t in got]
    separate = [got[t] - s[0] for t, s in sent2.items() if t in got]
    raw_delay = [heard["raw"][m] - t0 for m, t0 in raw_sent.items() if m in heard["raw"]]
    return {
        "caudal call to heard": _quantiles(call_to_heard),
        "caudal return to heard": _quantiles(return_to_heard),
        "caudal call": _quantiles([s[1] - s[0] for s in sent.values()]),
        "separate PUBLISH, call to heard": _quantiles(separate),
        "separate PUBLISH, call": _quantiles([s[1] - s[0] for s in sent2.values()]),
        "raw publish to heard": _quantiles(raw_delay),
        "not heard": {
            "caudal": len(sent) - len(call_to_heard),
            "separate PUBLISH": len(sent2) - len(separate),
            "raw": len(raw_sent) - len(raw_delay),
        },
    }


def table(res: dict) -> str:
    lines = [
        "Invalidation reaching another process's in-process cache (two processes, one "
        f"redis-server on loopback), ms over {res['rounds']} interleaved rounds",
        "",
        f"{'scenario':42} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}",
    ]
    for name, sc in res["scenarios"].items():
        for what in ("caudal call to heard", "caudal return to heard", "caudal call",
                     "separate PUBLISH, call to heard", "separate PUBLISH, call",
                     "raw publish to heard"):  # fmt: skip
            q = sc[what]
            lines.append(
                f"{name + ': ' + what:42} {q['median_ms']:8.3f} {q['p90_ms']:8.3f} "
                f"{q['p99_ms']:8.3f} {q['max_ms']:8.3f}"
            )
        raw = sc["raw publish to heard"]["median_ms"]
        ours = sc["caudal call to heard"]["median_ms"] / raw
        separate = sc["separate PUBLISH, call to heard"]["median_ms"] / raw
        lost = ", ".join(f"{k} {v}" for k, v in sc["not heard"].items())
        lines.append(
            f"{name + ': call to heard / raw (median)':42} {ours:8.2f}x (separate PUBLISH: "
            f"{separate:.2f}x)   not heard: {lost}"
        )
        lines.append("")
    lines.append(
        "'call to heard': from the start of executor.invalidate_by_tag() in this process to "
        "the other process's listener (its L1 already dropped the tag); 'return to heard': "
        "from its return (negative: heard before the call returned); 'separate PUBLISH': the "
        "same with the message sent in a round trip of its own after the removal (the "
        "tier's _publish_with_removal off); 'raw': redis-py PUBLISH to a redis-py "
        "subscriber in the same other process."
    )
    return "\n".join(lines)


def main(quick: bool) -> None:
    from _harness import save
    from _servers import RedisServer

    rounds = 40 if quick else 300
    res: dict = {"quick": quick, "rounds": rounds, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="caudal-bench-redis-") as d, RedisServer(d) as srv:
        for name, busy in (("idle", False), ("busy", True)):
            prefix = f"inv-{name}:"
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", srv.url, prefix] + (["--busy"] * busy),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            res["scenarios"][name] = asyncio.run(scenario(srv.url, prefix, proc, rounds))
    print(table(res))
    save("invalidation", res)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("URL", "PREFIX"))
    p.add_argument("--busy", action="store_true")
    args = p.parse_args()
    if args.child:
        asyncio.run(child(*args.child, args.busy))
    else:
        main(args.quick)
