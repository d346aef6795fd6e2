"""Side-by-side timing harness shared by the benchmarks.

Contenders run in one process and one event loop, interleaved: each round
times one batch of every contender in a shuffled order, and the figure
reported is the median over rounds of the per-call time. Shared, noisy
machines move all contenders together within a round, so ratios taken this
way are far steadier than separate runs.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

Contender = Callable[[int], Awaitable[object]]


def summarise(samples: list[float], batch: int) -> dict:
    """Median, p10 and p90 of per-call times (µs) over rounds, and the
    rounds' own figures in round order ("samples_us"), for ratios taken
    within a round (`round_ratio`)."""
    s = sorted(samples)
    return {
        "median_us": statistics.median(s),
        "p10_us": s[len(s) // 10],
        "p90_us": s[(len(s) * 9) // 10],
        "rounds": len(s),
        "batch": batch,
        "samples_us": list(samples),
    }


def median_ratio(nums: list[float], dens: list[float]) -> float:
    """The median over rounds of nums[r] / dens[r], two contenders' figures
    from the same rounds. Contenders of one round run one after the other,
    under the same load; two medians taken separately may come from
    different phases of a shared machine, and their ratio mixes those
    phases."""
    return statistics.median(x / y for x, y in zip(nums, dens, strict=True))


def round_ratio(results: dict[str, dict], num: str, den: str) -> float:
    """`median_ratio` of two contenders of an `interleaved` run."""
    return median_ratio(results[num]["samples_us"], results[den]["samples_us"])


async def interleaved(
    contenders: dict[str, Contender], *, rounds: int, batch: int, warmup: int = 200, seed: int = 7
) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    for call in contenders.values():
        for i in range(warmup):
            await call(i)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    x = 0
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            call = contenders[name]
            t0 = time.perf_counter_ns()
            for _ in range(batch):
                await call(x)
                x += 1
            samples[name].append((time.perf_counter_ns() - t0) / batch / 1000.0)
    return {name: summarise(s, batch) for name, s in samples.items()}


def interleaved_sync(
    contenders: dict[str, Callable[[int], object]],
    *,
    rounds: int,
    batch: int | dict[str, int],
    warmup: int = 20,
    seed: int = 7,
) -> dict[str, dict[str, float]]:
    """`interleaved` for plain functions. `batch` may differ per contender
    (a dict), so that a slow contender's batch takes about as long as a fast
    one's; figures are still per call."""
    rng = random.Random(seed)
    batches = batch if isinstance(batch, dict) else dict.fromkeys(contenders, batch)
    for call in contenders.values():
        for i in range(warmup):
            call(i)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    x = 0
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            call, n = contenders[name], batches[name]
            t0 = time.perf_counter_ns()
            for _ in range(n):
                call(x)
                x += 1
            samples[name].append((time.perf_counter_ns() - t0) / n / 1000.0)
    return {name: summarise(s, batches[name]) for name, s in samples.items()}


def calibrate(call: Callable[[int], object], target_s: float) -> tuple[int, float]:
    """(batch size taking about target_s, seconds per call) for `call`."""
    n, t = 0, 0.0
    t0 = time.perf_counter()
    while t < min(target_s, 0.05) or n < 1:
        call(n)
        n += 1
        t = time.perf_counter() - t0
    per_call = t / n
    return max(1, int(target_s / per_call)), per_call


def machine() -> dict[str, str]:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2))
    return path
