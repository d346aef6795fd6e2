"""flujo's steps run both ways: by flujo 0.6.11 alone, and with caudal.

caudal runs a flujo step with flujo's behaviour by running flujo's own step
logic, its agent calls executed by caudal's engine (docs/flujo.md). This
measures what that costs or saves, on the same flujo objects, interleaved in
one process (medians over rounds):

1. ``execute`` of one flujo ``Step`` (an async agent returning ``x + 1``):
   flujo's ``ExecutorCore`` and ``caudal.executor_core.ExecutorCore``, both
   with their defaults (flujo's result cache on), new inputs on every call
   and the same input again (flujo's cache hits).
2. A five-step flujo pipeline under flujo's own runner, ``Flujo(pipeline)``
   against ``Flujo(pipeline, executor_factory=caudal.integrations.flujo.
   ExecutorFactory())``, run state in memory for both, a new input per run:
   µs per run.
3. For scale, the same five agents as caudal steps on caudal's own API
   (``caudal.ExecutorCore``, awaited in turn): what the work costs without
   flujo's step semantics.

Floor: caudal under flujo's runner costs at most 1.1x flujo alone (caudal's
agent runner adds its limits, statistics and spans to flujo's path; it must
not cost more than that).

    python benchmarks/bench_flujo.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Floor, record
from _harness import interleaved, save

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydantic plugin warnings on flujo's import
    from flujo import Flujo
    from flujo.application.core.executor_core import ExecutorCore as FlujoExecutorCore
    from flujo.domain.dsl.step import Step as FlujoStep
    from flujo.state.backends.memory import InMemoryBackend

import caudal
from caudal.executor_core import ExecutorCore
from caudal.integrations.flujo import ExecutorFactory

logging.getLogger("flujo").setLevel(logging.CRITICAL)

FLUJO = "flujo 0.6.11 ExecutorCore"
CAUDAL = "caudal.executor_core.ExecutorCore"
RUNNER_FLUJO = "Flujo(pipeline)"
RUNNER_CAUDAL = "Flujo(pipeline, executor_factory=caudal's)"
CAUDAL_API = "caudal's own API: the five agents as caudal steps"
NAMES = ("parse", "enrich", "score", "rank", "format")


class Inc:
    async def run(self, data, **kwargs):
        return data + 1


def pipeline():
    p = FlujoStep(name=NAMES[0], agent=Inc())
    for name in NAMES[1:]:
        p = p >> FlujoStep(name=name, agent=Inc())
    return p


async def single_step(quick: bool) -> dict:
    theirs, ours = FlujoExecutorCore(), ExecutorCore()
    s_theirs, s_ours = FlujoStep(name="inc", agent=Inc()), FlujoStep(name="inc", agent=Inc())
    base = 10**9

    async def new_flujo(i):
        r = await theirs.execute(s_theirs, base + i)
        assert r.output == base + i + 1

    async def new_caudal(i):
        r = await ours.execute(s_ours, base + i)
        assert r.output == base + i + 1

    async def same_flujo(i):
        await theirs.execute(s_theirs, 7)

    async def same_caudal(i):
        await ours.execute(s_ours, 7)

    rounds, batch = (5, 40) if quick else (21, 200)
    new = await interleaved(
        {FLUJO: new_flujo, CAUDAL: new_caudal}, rounds=rounds, batch=batch, warmup=50
    )
    same = await interleaved(
        {FLUJO: same_flujo, CAUDAL: same_caudal}, rounds=rounds, batch=batch, warmup=50
    )
    await ours.aclose()
    return {"new": new, "repeated": same}


async def runner(quick: bool) -> tuple[dict, dict]:
    factory = ExecutorFactory()
    r_flujo = Flujo(pipeline(), state_backend=InMemoryBackend())
    r_caudal = Flujo(pipeline(), state_backend=InMemoryBackend(), executor_factory=factory)
    native = caudal.ExecutorCore()
    agents = [caudal.Step(Inc().run, name=n) for n in NAMES]
    base = 2 * 10**9

    async def run(r, x):
        result = None
        async for item in r.run_async(x):
            result = item
        assert result.step_history[-1].output == x + len(NAMES), result.step_history[-1]

    async def via_flujo(i):
        await run(r_flujo, base + i)

    async def via_caudal(i):
        await run(r_caudal, base + i)

    async def via_native(i):
        x = base + i
        for step in agents:
            x = (await native.execute(step, x)).output
        assert x == base + i + len(NAMES)

    rounds, batch = (5, 5) if quick else (15, 20)
    out = await interleaved(
        {RUNNER_FLUJO: via_flujo, RUNNER_CAUDAL: via_caudal, CAUDAL_API: via_native},
        rounds=rounds,
        batch=batch,
        warmup=10,
    )
    stats = factory.caudal_executor.get_optimization_stats()["execution"]["steps"]
    seen = {n: stats[n]["executions"] for n in NAMES}
    await native.aclose()
    await factory.aclose()
    return out, seen


async def main(quick: bool) -> None:
    single = await single_step(quick)
    run, seen = await runner(quick)
    print("1. execute of one flujo Step, µs per call (median of interleaved rounds)")
    for kind in ("new", "repeated"):
        for name, s in single[kind].items():
            print(f"   {kind:9} {name:40} {s['median_us']:9.1f}")
    print("2. five-step flujo pipeline under flujo's runner, µs per run")
    for name, s in run.items():
        print(f"   {name:50} {s['median_us']:9.1f}")
    print(f"   agent calls caudal executed, per step name: {seen}")
    ratio = run[RUNNER_CAUDAL]["median_us"] / run[RUNNER_FLUJO]["median_us"]
    save(
        "flujo",
        {
            "quick": quick,
            "execute": {
                kind: {n: s["median_us"] for n, s in single[kind].items()} for kind in single
            },
            "runner": {n: s["median_us"] for n, s in run.items()},
            "runner_ratio": ratio,
            "speedup": 1 / ratio,
            "agent_calls_through_caudal": seen,
        },
    )
    record(
        "flujo",
        floors=[
            Floor(
                "flujo pipeline under flujo's runner, caudal's executor factory / flujo's",
                measured=ratio,
                limit=1.1,
                detail=(
                    f"{run[RUNNER_CAUDAL]['median_us']:.0f} vs "
                    f"{run[RUNNER_FLUJO]['median_us']:.0f} µs per five-step run; median of rounds"
                ),
            )
        ],
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a CI-sized run")
    args = ap.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="caudal-bench-flujo-"))  # flujo may write state files
    asyncio.run(main(args.quick))
