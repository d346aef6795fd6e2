"""The gauntlet: a batch through a real flaky, rate-limited HTTP API.

A local API (tests_py/_flaky_api.py, its own process, on loopback) serves at
most 8 requests at once and answers one more with HTTP 429 + Retry-After: 1;
of the requests it serves, 20 % answer HTTP 500 and 5 % take 2-5 s. Each
run sends 500 items (400 distinct keys, 100 of them asked twice) through
one client, which must return every item's correct value. Scenarios:

1. flaky     the API as above, capacity 8 throughout
2. outage    the same, and every request answers 503 for 3 s (from t = 2 s)
3. halving   capacity 8, then 4 from t = 3 s
4. doubling  capacity 8, then 16 from t = 3 s

Contenders (each against a freshly reset API with the same seed: a key's
n-th served request meets the same fate for every contender):

- caudal untuned: what a new user writes. httpx with raise_for_status(),
  ``Step(get, max_retries=5, timeout_s=3, cache=True)``, ``execute_many``;
  every other setting is caudal's default.
- caudal as docs/howto-http.md suggests when the server's limit is known:
  the same code with ``max_concurrency=8``.
- hand stack: httpx + tenacity (6 attempts, Retry-After honoured, else
  exponential back-off with jitter) + aiometer (max_at_once tuned to the
  true starting capacity, 8) + a cachetools TTLCache + a small breaker that
  ignores overload.

Reported per scenario and contender (median over rounds): items that
succeeded with the right value, items failed without any attempt, wall
time, requests the API received, 429s it sent. Then the floors for caudal
untuned: >= 99.8 % succeeded, no item failed with attempts=0, time <= 1.1x
the hand stack's, requests <= 1.05x, 429s <= 2x.

    python benchmarks/bench_gauntlet.py [--quick] [--rounds N] [--only SCENARIO]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests_py"))

import aiometer
import cachetools
import httpx
import tenacity

from _flaky_api import FlakyApi, value_of
from _harness import save
from caudal import ExecutorCore, Step

SCENARIOS: dict[str, dict[str, Any]] = {
    "flaky": {},
    "outage": {"outage": [2.0, 3.0]},
    "halving": {"capacity_changes": [[3.0, 4]]},
    "doubling": {"capacity_changes": [[3.0, 16]]},
}
TRUE_CAPACITY = 8


def batch(n: int, repeats: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    distinct = [f"k{i:04d}" for i in range(n - repeats)]
    keys = distinct + [rng.choice(distinct) for _ in range(repeats)]
    rng.shuffle(keys)
    return keys


def http_client(url: str) -> httpx.AsyncClient:
    # Connections enough for any contender (the API's capacity is the limit
    # under test, not the client's pool); no client-side timeout: each
    # contender sets its own per-attempt timeout.
    return httpx.AsyncClient(
        base_url=url,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        timeout=None,
    )


# ---------------------------------------------------------------- contenders
async def caudal_untuned(url: str, keys: list[str]) -> dict[str, Any]:
    """The obvious code: a retry budget, a timeout, caching; nothing else."""
    async with http_client(url) as client:

        async def get(key: str) -> dict:
            r = await client.get(f"/item/{key}")
            r.raise_for_status()
            return r.json()

        step = Step(get, max_retries=5, timeout_s=3, cache=True)
        async with ExecutorCore() as executor:
            results = await executor.execute_many(step, keys)
    return tally(keys, [r.output if r.success else None for r in results], results)


async def caudal_docs(url: str, keys: list[str]) -> dict[str, Any]:
    """docs/howto-http.md's code with its tuning advice for a server whose
    limit you know: tell caudal (max_concurrency=8)."""
    async with http_client(url) as client:

        async def get(key: str) -> dict:
            r = await client.get(f"/item/{key}")
            r.raise_for_status()
            return r.json()

        step = Step(get, max_retries=5, timeout_s=3, cache=True, max_concurrency=TRUE_CAPACITY)
        async with ExecutorCore() as executor:
            results = await executor.execute_many(step, keys)
    return tally(keys, [r.output if r.success else None for r in results], results)


class _Breaker:
    """A small consecutive-failure breaker, as teams write by hand: overload
    (429/503) is not failure; open for 5 s after 10 failures in a row."""

    def __init__(self, threshold: int = 10, recovery_s: float = 5.0) -> None:
        self.threshold, self.recovery_s = threshold, recovery_s
        self.failures = 0
        self.open_until = 0.0

    def check(self) -> None:
        if time.monotonic() < self.open_until:
            raise RuntimeError("circuit open")

    def success(self) -> None:
        self.failures = 0

    def failure(self, exc: BaseException) -> None:
        if _status(exc) in (429, 503):
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.recovery_s
            self.failures = 0


def _status(exc: BaseException) -> int:
    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return _status(exc) in (429, 500, 502, 503, 504)
    return isinstance(exc, (httpx.TransportError, TimeoutError, RuntimeError))


_backoff = tenacity.wait_exponential_jitter(initial=0.2, max=5.0)


def _wait(rs: tenacity.RetryCallState) -> float:
    exc = rs.outcome.exception() if rs.outcome else None
    if isinstance(exc, httpx.HTTPStatusError):
        ra = exc.response.headers.get("retry-after")
        if ra is not None:
            return float(ra) + random.uniform(0, 0.25)
    return _backoff(rs)


async def hand_stack(url: str, keys: list[str]) -> dict[str, Any]:
    """httpx + tenacity + aiometer + cachetools + a small breaker."""
    cache: cachetools.TTLCache = cachetools.TTLCache(maxsize=10_000, ttl=3600)
    breaker = _Breaker()
    async with http_client(url) as client:

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(6),
            wait=_wait,
            retry=tenacity.retry_if_exception(_retryable),
            reraise=True,
        )
        async def fetch(key: str) -> dict:
            breaker.check()
            try:
                r = await asyncio.wait_for(client.get(f"/item/{key}"), 3)
                r.raise_for_status()
            except Exception as exc:
                breaker.failure(exc)
                raise
            breaker.success()
            return r.json()

        async def one(key: str) -> Any:
            if key in cache:
                return cache[key]
            try:
                value = await fetch(key)
            except Exception:
                return None
            cache[key] = value
            return value

        outputs = await aiometer.run_all([partial(one, k) for k in keys], max_at_once=TRUE_CAPACITY)
    return tally(keys, outputs, None)


CONTENDERS = {
    "caudal untuned": caudal_untuned,
    "caudal told the limit": caudal_docs,
    "hand stack (tuned to 8)": hand_stack,
}


def tally(keys: list[str], outputs: list[Any], results: list[Any] | None) -> dict[str, Any]:
    ok = sum(
        1
        for k, o in zip(keys, outputs, strict=True)
        if isinstance(o, dict) and o.get("key") == k and o.get("value") == value_of(k)
    )
    out: dict[str, Any] = {"succeeded": ok, "items": len(keys)}
    if results is not None:
        failed = [r for r in results if not r.success]
        out["zero_attempts"] = sum(1 for r in failed if r.attempts == 0)
        kinds: dict[str, int] = {}
        for r in failed:
            name = type(r.error).__name__ if r.error is not None else "?"
            kinds[name] = kinds.get(name, 0) + 1
        out["failures"] = kinds
    else:
        out["zero_attempts"] = 0
    return out


async def one_run(api: FlakyApi, scenario: str, name: str, keys: list[str]) -> dict[str, Any]:
    api.scenario(**SCENARIOS[scenario])
    t0 = time.perf_counter()
    res = await asyncio.wait_for(CONTENDERS[name](api.url, keys), 300)
    res["time_s"] = time.perf_counter() - t0
    # Requests the contender left running at the API (abandoned after a
    # timeout) still count: wait for them to end before reading.
    for _ in range(100):
        st = api.stats()
        if st["in_flight"] == 0:
            break
        await asyncio.sleep(0.05)
    res["requests"] = st["requests"]
    res["429s"] = st["by_status"].get("429", 0)
    res["by_status"] = st["by_status"]
    return res


def median_of(runs: list[dict[str, Any]], field: str) -> float:
    return statistics.median(r[field] for r in runs)


async def main_async(args: argparse.Namespace) -> int:
    n = 200 if args.quick else 500
    keys = batch(n, n // 5)
    rounds = args.rounds or (1 if args.quick else 2)
    scenarios = [args.only] if args.only else list(SCENARIOS)
    contenders = [c for c in CONTENDERS if not args.contender or args.contender in c]
    rng = random.Random(5)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with FlakyApi() as api:
        for scenario in scenarios:
            for _ in range(rounds):
                order = list(contenders)
                rng.shuffle(order)
                for name in order:
                    r = await one_run(api, scenario, name, keys)
                    runs.setdefault((scenario, name), []).append(r)
                    if args.verbose:
                        print(f"  {scenario:9s} {name:26s} {r}", flush=True)

    print(
        f"{n} items ({n - n // 5} distinct), capacity {TRUE_CAPACITY}, median of {rounds} round(s)"
    )
    print()
    print("| scenario | contender | succeeded | attempts=0 | time (s) | requests | 429s |")
    print("|---|---|---|---|---|---|---|")
    table = []
    for (scenario, name), rs in runs.items():
        row = {
            "scenario": scenario,
            "contender": name,
            "succeeded": median_of(rs, "succeeded"),
            "worst_succeeded": min(r["succeeded"] for r in rs),
            "zero_attempts": max(r["zero_attempts"] for r in rs),
            "time_s": median_of(rs, "time_s"),
            "requests": median_of(rs, "requests"),
            "429s": median_of(rs, "429s"),
            "runs": rs,
        }
        table.append(row)
        print(
            f"| {scenario} | {name} | {row['worst_succeeded']:.0f} / {n} | {row['zero_attempts']} "
            f"| {row['time_s']:.1f} | {row['requests']:.0f} | {row['429s']:.0f} |"
        )
    print()
    verdicts = []
    if "caudal untuned" in contenders and "hand stack (tuned to 8)" in contenders:
        print("Floors for caudal untuned (vs the hand stack):")
        print()
        print(
            "| scenario | succeeded >= 99.8 % | attempts=0 | time ratio <= 1.1 "
            "| requests ratio <= 1.05 | 429s ratio <= 2 |"
        )
        print("|---|---|---|---|---|---|")
        by = {(r["scenario"], r["contender"]): r for r in table}
        for scenario in scenarios:
            c, h = by[(scenario, "caudal untuned")], by[(scenario, "hand stack (tuned to 8)")]
            ok_frac = c["worst_succeeded"] / n
            t = c["time_s"] / h["time_s"]
            q = c["requests"] / h["requests"]
            z = c["429s"] / max(h["429s"], 1)
            checks = [ok_frac >= 0.998, c["zero_attempts"] == 0, t <= 1.1, q <= 1.05, z <= 2.0]
            verdicts.append(all(checks))
            mark = ["ok" if x else "MISSED" for x in checks]
            print(
                f"| {scenario} | {ok_frac:.1%} {mark[0]} | {c['zero_attempts']} {mark[1]} "
                f"| {t:.2f} {mark[2]} | {q:.2f} {mark[3]} "
                f"| {c['429s']:.0f}/{h['429s']:.0f} = {z:.2f} {mark[4]} |"
            )
    save("gauntlet", {"items": n, "rounds": rounds, "table": table})
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--only", choices=list(SCENARIOS))
    p.add_argument("--contender", help="run only contenders whose name contains this")
    p.add_argument("-v", "--verbose", action="store_true")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
