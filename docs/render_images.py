"""Renders the pictures in docs/images/ (make docs-images; a test runs it
into a temporary folder to check it still works).

    .venv/bin/python docs/render_images.py [OUT_DIR]

- latency.png: ``executor.plot_latency(step)`` after a batch against a
  backend whose latency grows with load, with a LatencyRecorder running;
- concurrency.png: ``executor.plot_concurrency()`` for the same run: the
  adaptive limit finding the backend's capacity;
- gantt.png: ``run.plot_gantt()`` of examples/llm_pipeline.py's pipeline.
"""

import asyncio
import importlib.util
import random
import sys
from pathlib import Path

from caudal import ExecutorCore, OverloadedError, Step

ROOT = Path(__file__).resolve().parent.parent
CAPACITY = 16  # hidden from caudal


class Backend:
    """20 ms unloaded; beyond CAPACITY requests in flight each one takes
    longer (n / CAPACITY) and one in four of the excess is refused with a
    503, as an overloaded service does."""

    def __init__(self, seed=5):
        self.in_flight = 0
        self.rng = random.Random(seed)

    async def __call__(self, x):
        self.in_flight += 1
        try:
            load = self.in_flight / CAPACITY
            if load > 1 and self.rng.random() < 0.25:
                await asyncio.sleep(0.005)
                raise OverloadedError("503 Service Unavailable")
            await asyncio.sleep(0.02 * max(1.0, load) * self.rng.uniform(0.9, 1.3))
            return x
        finally:
            self.in_flight -= 1


async def executor_plots(out: Path) -> None:
    executor = ExecutorCore()
    step = Step(Backend(), name="search_api")
    recorder = executor.start_latency_recorder(interval_s=0.1)
    await executor.execute_many(step, range(1500), progress=False)
    recorder.stop()
    executor.plot_latency(step).savefig(out / "latency.png", dpi=90)
    executor.plot_concurrency().savefig(out / "concurrency.png", dpi=90)


async def gantt(out: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "llm_pipeline", ROOT / "examples" / "llm_pipeline.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = await mod.pipeline.run("rivers", executor=ExecutorCore(), run_id="llm-demo", store=False)
    run.plot_gantt().savefig(out / "gantt.png", dpi=90)


def render(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(executor_plots(out))
    asyncio.run(gantt(out))
    return [out / n for n in ("latency.png", "concurrency.png", "gantt.png")]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "images"
    for p in render(target):
        print(f"wrote {p}")
