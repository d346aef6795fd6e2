"""Shared (L2) Redis tier: get-hit latency (issue: redis cache tier).

For a small dict and two ~100 KB values (a text, and a list of records),
with compression off and on, times
``RedisCacheTier.get`` of a stored key against a raw redis-py ``GET`` of
exactly the bytes the tier stored (the floor: one round trip, no decoding),
and the decoding alone (``pickle.loads``, plus ``_core.decompress`` when
compressed). All contenders run interleaved in one event loop
(``_harness.interleaved``) against a redis-server this script starts on a
free loopback port and stops at the end.

    python benchmarks/bench_cache_l2.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests_py"))  # the redis-server helper

import redis.asyncio as aioredis  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402

from _harness import interleaved, save  # noqa: E402
from _servers import RedisServer  # noqa: E402
from caudal import _core  # noqa: E402
from caudal.integrations.redis import RedisCacheTier  # noqa: E402

SMALL = {"user": 42, "query": "weather in Lisbon", "score": 0.93, "tags": ["a", "b"]}
# ~100 KB pickled each: a text (an LLM answer, a page) and 2,200 small
# records (a query result), where unpickling the objects dominates.
TEXT = " ".join(f"sentence {i} says something about topic {i % 37} at length." for i in range(2000))
RECORDS = [
    {"id": i, "name": f"item-{i}", "price": round(i * 1.07, 2), "tags": ["x", "y"], "ok": True}
    for i in range(2200)
]


async def measure(url: str, quick: bool) -> dict:
    raw = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    tiers = {
        "off": RedisCacheTier(url, prefix="bench-off:", op_timeout_s=1.0),
        "on": RedisCacheTier(url, prefix="bench-on:", compression=True, op_timeout_s=1.0),
    }
    values = {"small dict": SMALL, "100 KB text": TEXT, "100 KB records": RECORDS}
    contenders = {}
    cases = {}
    for vname, value in values.items():
        pickled = pickle.dumps(value, protocol=5)
        for mode, tier in tiers.items():
            k = _core.cache_key(vname, "bench")
            assert await tier.set(k, value, ttl_s=3600)
            name = tier._value_key(k)
            stored = await raw.get(name)
            case = f"{vname}, compression {mode}"
            cases[case] = {
                "pickled_bytes": len(pickled),
                "stored_bytes": len(stored),
                # Format 2 header: version, codec, auth (no secret here), frame.
                "compressed": stored[3] == 0xC1,
            }

            async def raw_get(_i, name=name):
                return await raw.get(name)

            async def tier_get(_i, tier=tier, k=k):
                return await tier.get(k)

            contenders[f"{case} | raw GET"] = raw_get
            contenders[f"{case} | tier get"] = tier_get

            async def decode(_i, tier=tier, name=name, stored=stored):
                return tier._codec.decode(name, stored)  # frame check, decompress, codec

            contenders[f"{case} | decode only"] = decode

    rounds, batch = (7, 60) if quick else (21, 200)
    results = await interleaved(contenders, rounds=rounds, batch=batch, warmup=50)
    for tier in tiers.values():
        s = tier.stats()
        # A timeout or miss would make the tier look faster than it is.
        assert s["misses"] == 0 and s["timeouts"] == 0 and s["errors"] == 0, s
        await tier.close()
    await raw.aclose()
    for case in cases:
        for what in ("raw GET", "tier get", "decode only"):
            cases[case][what] = results[f"{case} | {what}"]
    return {"cases": cases, "rounds": rounds, "batch": batch}


def table(res: dict) -> str:
    lines = [
        f"L2 get-hit latency, median µs per call over {res['rounds']} interleaved rounds "
        f"x {res['batch']} calls (p10-p90 in brackets)",
        "",
        f"{'value, compression':34} {'stored B':>9} {'raw GET':>16} {'tier get':>16} "
        f"{'decode':>8} {'tier - raw':>10}",
    ]
    for case, c in res["cases"].items():

        def cell(r):
            return f"{r['median_us']:6.1f} [{r['p10_us']:.0f}-{r['p90_us']:.0f}]"

        over = c["tier get"]["median_us"] - c["raw GET"]["median_us"]
        lines.append(
            f"{case:34} {c['stored_bytes']:>9} {cell(c['raw GET']):>16} "
            f"{cell(c['tier get']):>16} {c['decode only']['median_us']:8.1f} {over:+10.1f}"
        )
    return "\n".join(lines)


def main(quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="caudal-bench-redis-") as d, RedisServer(d) as srv:
        res = asyncio.run(measure(srv.url, quick))
    print(table(res))
    save("cache_l2", {"quick": quick, **res})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    main(p.parse_args().quick)
