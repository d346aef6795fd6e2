"""Building pipelines: time against size for every form of definition.

Each form builds the same kind of graph from Step objects made beforehand
(making a Step is not building a pipeline), so what is timed is composition,
the duplicate checks and, where the form does it, the graph check (cycles,
missing dependencies, topological levels):

- ``>>`` chain: ``s0 >> s1 >> ... >> s(n-1)`` (a left fold, as Python reads
  it); ``>>`` does not check the graph, so also
- ``>>`` chain + validate(): the same, then the native graph check;
- constructor, chain: ``Pipeline(steps, depends_on={si: [s(i-1)]})`` (checks);
- constructor, Step-level depends_on: the chain with each Step naming its
  dependency;
- fan-in, depends_on: ``n - 1`` independent steps and one depending on all of
  them (``Pipeline(steps, depends_on={"z": names})``);
- fan-in, parallel >> z: ``Pipeline.parallel(*steps) >> z`` then validate();
- YAML: ``load_pipeline`` of a chain written with ``depends_on:`` (200 and
  2,000 steps: most of its time is PyYAML composing the document, about
  0.5 ms a step).

Times are the CPU time of the building thread (building is one thread's
work; on a shared machine the wall clock also counts whatever else ran),
wall clock printed beside. Floors: a 10,000-step ``>>`` chain in at most
50 ms, and linear growth: time(10n) / time(n) at most 12 for every form
(n = 1,000; 200 for YAML): 10x the work within 20% of noise, where a
quadratic form shows ~100x. The growth figure is the median over rounds of
that round's time(10n) / time(n): the two builds of a round run one after
the other, under the same load, where medians taken separately may come
from different phases of a shared machine.

    python benchmarks/bench_pipeline_build.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Curve, Floor, record
from _harness import median_ratio, save
from caudal import Pipeline, Step, load_pipeline


async def work(x):
    return x


def chain_rshift(steps: list[Step]) -> Callable[[], Pipeline]:
    def build() -> Pipeline:
        p = steps[0]
        for st in steps[1:]:
            p = p >> st
        return p

    return build


def chain_rshift_validated(steps: list[Step]) -> Callable[[], Pipeline]:
    b = chain_rshift(steps)
    return lambda: b().validate()


def ctor_chain(steps: list[Step]) -> Callable[[], Pipeline]:
    deps = {steps[i].name: [steps[i - 1].name] for i in range(1, len(steps))}
    return lambda: Pipeline(steps, depends_on=deps)


def ctor_step_deps(n: int) -> Callable[[], Pipeline]:
    steps = [Step(work, "c0")] + [
        Step(work, f"c{i}", depends_on=(f"c{i - 1}",)) for i in range(1, n)
    ]
    return lambda: Pipeline(steps)


def fan_in_depends_on(n: int) -> Callable[[], Pipeline]:
    steps = [Step(work, f"f{i}") for i in range(n - 1)] + [Step(work, "z")]
    deps = {"z": [f"f{i}" for i in range(n - 1)]}
    return lambda: Pipeline(steps, depends_on=deps)


def fan_in_parallel(n: int) -> Callable[[], Pipeline]:
    steps = [Step(work, f"f{i}") for i in range(n - 1)]
    z = Step(work, "z")
    return lambda: (Pipeline.parallel(*steps) >> z).validate()


def yaml_chain(n: int) -> Callable[[], Pipeline]:
    lines = ["name: chain", "steps:"]
    for i in range(n):
        lines.append(f"  - name: y{i}")
        lines.append("    uses: work")
        if i:
            lines.append(f"    depends_on: [y{i - 1}]")
    text = "\n".join(lines) + "\n"
    registry = {"work": work}
    return lambda: load_pipeline(text, registry)


def timed(builds: dict[int, Callable[[], Pipeline]], rounds: dict[int, int]) -> dict:
    """Median (CPU ms, wall ms) of each size's builds, and the median over
    rounds of the CPU-time ratio of the two smallest sizes ("ratio"). The
    sizes are interleaved: each round builds every size that still has
    rounds to go, in a shuffled order, so that the ratio of two sizes
    compares builds made under the same conditions (the two smallest get
    the same number of rounds). Building is one thread's CPU work, so the
    CPU time of this thread is its cost; on a shared machine the wall time
    also counts whatever else ran meanwhile. Garbage collection is off while
    timing, as timeit does: a collection triggered by earlier rounds'
    garbage is not this round's cost."""
    for build in builds.values():
        build()  # warm-up
    cpu: dict[int, list[float]] = {n: [] for n in builds}
    wall: dict[int, list[float]] = {n: [] for n in builds}
    small, big = sorted(builds)[:2]
    assert rounds[small] == rounds[big], "the ratio's two sizes need the same rounds"
    order = list(builds)
    rng = random.Random(11)
    for r in range(max(rounds.values())):
        rng.shuffle(order)
        for n in order:
            if r >= rounds[n]:
                continue
            gc.collect()
            gc.disable()
            try:
                c0, t0 = time.thread_time(), time.perf_counter()
                builds[n]()
                wall[n].append(time.perf_counter() - t0)
                cpu[n].append(time.thread_time() - c0)
            finally:
                gc.enable()
    med = statistics.median
    out: dict = {n: (med(cpu[n]) * 1e3, med(wall[n]) * 1e3) for n in builds}
    out["ratio"] = median_ratio(cpu[big], cpu[small])
    return out


FORMS = {
    ">> chain": lambda n, steps: chain_rshift(steps),
    ">> chain + validate()": lambda n, steps: chain_rshift_validated(steps),
    "constructor, chain depends_on": lambda n, steps: ctor_chain(steps),
    "constructor, Step-level depends_on": lambda n, steps: ctor_step_deps(n),
    "fan-in, depends_on": lambda n, steps: fan_in_depends_on(n),
    "fan-in, parallel >> z": lambda n, steps: fan_in_parallel(n),
    "YAML chain": lambda n, steps: yaml_chain(n),
}


YAML_SIZES = (200, 2_000)  # PyYAML composing the document dominates: seconds at 10,000


def main(quick: bool) -> dict:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    rounds = {1_000: 5 if quick else 15, 10_000: 5 if quick else 15, 100_000: 3}
    cpu: dict[str, dict[int, float]] = {form: {} for form in FORMS}
    wall: dict[str, dict[int, float]] = {form: {} for form in FORMS}
    ratio: dict[str, float] = {}
    steps = {n: [Step(work, f"c{i}") for i in range(n)] for n in sizes}
    for form, make in FORMS.items():
        if form == "YAML chain":
            got = timed(
                {n: yaml_chain(n) for n in YAML_SIZES}, dict.fromkeys(YAML_SIZES, 3 if quick else 7)
            )
        else:
            got = timed({n: make(n, steps[n]) for n in sizes}, rounds)
        ratio[form] = got.pop("ratio")
        for n, (c, w) in got.items():
            cpu[form][n], wall[form][n] = c, w
    return {"quick": quick, "build_cpu_ms": cpu, "build_wall_ms": wall, "growth_ratio": ratio}


def report(out: dict) -> None:
    cpu, wall = out["build_cpu_ms"], out["build_wall_ms"]
    sizes = sorted({n for v in cpu.values() for n in v})
    print("build time, CPU ms of the building thread (median; steps made beforehand)")
    print(f"{'form':<38}" + "".join(f"{n:>10,}" for n in sizes) + f"{'10x':>8}")
    growth = {}
    for form, v in cpu.items():
        small, big = sorted(v)[:2]
        growth[form] = (small, big, out["growth_ratio"][form])
        cells = "".join(f"{v[n]:>10.2f}" if n in v else f"{'':>10}" for n in sizes)
        print(f"{form:<38}{cells}{growth[form][2]:>7.1f}x")
    print("(10x: the median over rounds of each round's ratio, both sizes built in it)")
    chain10k = cpu[">> chain"][10_000]
    print(
        f"10,000-step >> chain, wall clock: {wall['>> chain'][10_000]:.1f} ms (CPU {chain10k:.1f})"
    )
    floors = [
        Floor(
            "10,000-step chain built with >>",
            measured=chain10k,
            limit=50,
            unit="ms",
            detail="median CPU time of s0 >> s1 >> ... (steps made beforehand); wall "
            f"clock {wall['>> chain'][10_000]:.1f} ms on this shared machine",
        )
    ]
    for form, (small, big, ratio) in growth.items():
        floors.append(
            Floor(
                f"build time {big:,} / {small:,} steps, {form}",
                measured=ratio,
                limit=12,
                unit="x",
                detail="10x the steps: linear within 20% (quadratic: ~100x); median over "
                "rounds of the round's ratio",
            )
        )
    curves = [
        Curve(f"build CPU ms against steps, {form}", "steps", "build ms", sorted(v.items()))
        for form, v in cpu.items()
    ]
    record("pipeline_build", floors=floors, curves=curves)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    result = main(args.quick)
    report(result)
    path = save("pipeline_build", result)
    print(f"saved {path}")
