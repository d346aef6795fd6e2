"""Steps for examples/pipeline_demo.yaml (`make demo` runs it through the CLI).

    caudal run examples/pipeline_demo.yaml --registry pipeline_registry:REGISTRY \
        --input '{"topic": "rivers"}' --resolver pipeline_registry:resolver

(run from examples/, or with examples/ on PYTHONPATH). Every step is a plain
function: async ones run on the loop, sync ones in a worker thread.
"""

from __future__ import annotations

import asyncio
import random

from caudal import Step, WithUsage

_rng = random.Random(7)


async def fetch(request: dict, source: str) -> list[str]:
    """Pretend API call: 10 ms, fails 30% of the time (the YAML retries it)."""
    await asyncio.sleep(0.01)
    if _rng.random() < 0.3:
        raise ConnectionError(f"{source} timed out")
    topic = request["topic"]
    return [f"{source}: {topic} item {i}" for i in range(3)]


def clean(items: list[str]) -> list[str]:
    """CPU work in plain Python (runs in a worker thread)."""
    return sorted({i.strip().lower() for i in items})


async def summarise(inputs: dict, style: str) -> WithUsage:
    """Pretend LLM call: reports its token use and cost with WithUsage."""
    await asyncio.sleep(0.02)
    items = inputs["clean_news"] + inputs["clean_papers"]
    text = f"[{style}] {len(items)} items: " + "; ".join(items[:2])
    return WithUsage(text, tokens=40 * len(items), cost_usd=0.00002 * len(items))


async def translate(summary: str, language: str) -> str:
    await asyncio.sleep(0.005)
    return f"({language}) {summary}"


async def flaky_extra(summary: str) -> str:
    raise RuntimeError("the extras service is down")  # optional in the YAML


def report(parts: dict) -> dict:
    return {"summary": parts["translate"], "extra": parts["extras"]}


async def resolver(text: str, context: object) -> str:
    """Stands in for an LLM answering <AUTO> tags: a fixed rule per prompt."""
    await asyncio.sleep(0.001)
    if "language" in text:
        return "Spanish"
    return "bullet points"


REGISTRY = {
    "fetch": fetch,
    "clean": clean,
    "summarise": Step(summarise, timeout_s=5),
    "translate": translate,
    "flaky_extra": flaky_extra,
    "report": report,
}
