"""Keying one large payload: caudal's native key against pickle + xxh3.

The cache key of a step called with one large value, from 1 KB to 16 MB:
``caudal._core.cache_key(value, "step")`` (what the executor computes on a
cache lookup) against ``xxhash.xxh3_128_digest(pickle.dumps(value,
protocol=5))``, the reference bench_cache.py uses. Median µs per key over
interleaved rounds, one process.

1. Curve: an ASCII str of 1 KB ... 16 MB.
2. At 1 MB: str of each storage kind (ASCII, Latin-1, UCS-2, UCS-4), bytes
   and bytearray. Non-ASCII strings are fresh objects on every call (keying
   a str encodes it to UTF-8, and CPython keeps that encoding on the object:
   hashing the same object again would skip the work a new input pays).

Floor: a single 1 MB str at most 0.5x pickle + xxh3.

``--quick``: fewer sizes and rounds (a few seconds).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time

import xxhash

from _floors import Curve, Floor, record
from _harness import save
from caudal import _core


def caudal_key(x):
    return _core.cache_key(x, "step")


def pickle_xxh3(x):
    return xxhash.xxh3_128_digest(pickle.dumps(x, protocol=5))


CONTENDERS = {"caudal cache_key": caudal_key, "pickle + xxh3_128": pickle_xxh3}


def reps_for(nbytes: int, quick: bool) -> int:
    r = max(3, min(200, 20_000_000 // max(nbytes, 1)))
    return max(3, r // 4) if quick else r


def measure(make, nbytes: int, quick: bool, fresh: bool) -> dict[str, float]:
    """Median µs per key of each contender over interleaved rounds. `make(i)`
    builds the value; with `fresh`, a new value for every call (built before
    the timed batch)."""
    reps = reps_for(nbytes, quick)
    rounds = 5 if quick else 11
    shared = make(0)
    samples: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    for r in range(rounds):
        order = list(CONTENDERS) if r % 2 else list(reversed(CONTENDERS))
        for name in order:
            fn = CONTENDERS[name]
            values = [make(r * reps + i) for i in range(reps)] if fresh else [shared] * reps
            t0 = time.perf_counter_ns()
            for v in values:
                fn(v)
            samples[name].append((time.perf_counter_ns() - t0) / reps / 1000.0)
            del values
    return {k: statistics.median(v) for k, v in samples.items()}


def ascii_str(n: int):
    return lambda i: "x" * n


def kinds_1mb() -> dict[str, tuple]:
    n = 1_000_000
    return {
        # (maker, bytes of storage, fresh objects)
        "str, ASCII": (lambda i: "x" * n, n, False),
        "str, Latin-1 (é)": (lambda i: "é" * (n - 1) + chr(0xE0 + i % 16), n, True),
        "str, UCS-2 (€)": (lambda i: "€" * (n // 2 - 1) + chr(0x20A0 + i % 16), n, True),
        "str, UCS-4 (emoji)": (lambda i: "😀" * (n // 4 - 1) + chr(0x1F600 + i % 16), n, True),
        "bytes": (lambda i: b"x" * n, n, False),
        "bytearray": (lambda i: bytearray(b"x" * n), n, False),
    }


def main(quick: bool) -> None:
    sizes = (
        [1 << 10, 1 << 14, 1 << 20, 1 << 24]
        if quick
        else [
            1 << 10,
            1 << 12,
            1 << 14,
            1 << 16,
            1 << 18,
            1 << 20,
            1 << 22,
            1 << 24,
        ]
    )
    curve: dict[int, dict[str, float]] = {}
    print("1. one ASCII str as the input (median µs per key)")
    print(f"   {'size':>10} {'caudal':>10} {'pickle+xxh3':>12} {'ratio':>7}")
    for n in sizes:
        row = measure(ascii_str(n), n, quick, fresh=False)
        curve[n] = row
        a, b = row["caudal cache_key"], row["pickle + xxh3_128"]
        print(f"   {n:10,d} {a:10.2f} {b:12.2f} {a / b:7.2f}", flush=True)
    mb = measure(ascii_str(1_000_000), 1_000_000, quick, fresh=False)
    print("2. one 1 MB value of each kind (median µs per key)")
    kinds: dict[str, dict[str, float]] = {}
    for label, (make, nbytes, fresh) in kinds_1mb().items():
        row = measure(make, nbytes, quick, fresh)
        kinds[label] = row
        a, b = row["caudal cache_key"], row["pickle + xxh3_128"]
        print(f"   {label:22} {a:10.1f} {b:12.1f} {a / b:7.2f}", flush=True)
    ratio = mb["caudal cache_key"] / mb["pickle + xxh3_128"]
    record(
        "hashing",
        floors=[
            Floor(
                "key of one 1 MB str / pickle+xxh3_128",
                measured=ratio,
                limit=0.5,
                detail=(
                    f"{mb['caudal cache_key']:.1f} vs {mb['pickle + xxh3_128']:.1f} µs; "
                    "median of interleaved rounds, one process"
                ),
            )
        ],
        curves=[
            Curve(
                "key of one ASCII str, caudal",
                x_label="bytes",
                y_label="µs per key",
                points=[(n, r["caudal cache_key"]) for n, r in curve.items()],
            ),
            Curve(
                "key of one ASCII str, pickle + xxh3_128",
                x_label="bytes",
                y_label="µs per key",
                points=[(n, r["pickle + xxh3_128"]) for n, r in curve.items()],
            ),
        ],
    )
    save(
        "hashing",
        {
            "quick": quick,
            "ascii_str_us": {str(n): r for n, r in curve.items()},
            "one_mb_us": kinds,
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    main(p.parse_args().quick)
