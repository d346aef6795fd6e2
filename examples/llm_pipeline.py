"""An LLM-style pipeline with a simulated model (no network, no weights).

retrieve -> (draft, critique) -> revise -> format: the "model" is a
function that answers after a latency proportional to the tokens it
writes, reports tokens and cost with ``WithUsage``, and now and then
answers 429 (``caudal.OverloadedError``), which the step retries with
back-off. Identical prompts are served from the cache. The run prints as a
step table; ``--plot DIR`` saves its Gantt chart.

    .venv/bin/python examples/llm_pipeline.py [--plot /tmp/plots]
"""

import argparse
import asyncio
import hashlib
from pathlib import Path

from caudal import (
    ExecutorCore,
    OptimizationConfig,
    OverloadedError,
    Pipeline,
    RetryStrategy,
    Step,
    UsageLimits,
    WithUsage,
)

PRICE_PER_TOKEN = 2e-6
_calls = {"n": 0}


async def simulated_model(prompt: str, max_tokens: int) -> WithUsage:
    """A deterministic stand-in for a chat-completion call: 0.1 ms a token,
    the third call overloaded (HTTP 429)."""
    _calls["n"] += 1
    if _calls["n"] == 3:
        await asyncio.sleep(0.002)
        raise OverloadedError("429 Too Many Requests")
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    tokens = 20 + int(digest[:4], 16) % max_tokens
    await asyncio.sleep(0.0001 * tokens)
    text = f"[{tokens} tokens about {prompt[:30]!r}]"
    return WithUsage(text, tokens=tokens + len(prompt) // 4, cost_usd=tokens * PRICE_PER_TOKEN)


async def retrieve(question):
    await asyncio.sleep(0.004)  # a vector-store lookup
    return {"question": question, "passages": [f"passage {i} on {question}" for i in range(3)]}


async def draft(ctx):
    return await simulated_model(f"Answer {ctx['question']} from {ctx['passages']}", 150)


async def critique(ctx):
    return await simulated_model(f"List what is missing from passages on {ctx['question']}", 80)


async def revise(parts):
    return await simulated_model(f"Revise {parts['draft']} given {parts['critique']}", 200)


def format_answer(text):
    return {"answer": text, "chars": len(text)}


retry = RetryStrategy(max_attempts=4, base_delay=0.005, retry_on=OverloadedError)
pipeline = Pipeline(
    [
        Step(retrieve),
        Step(draft, retry=retry, cache=True),
        Step(critique, retry=retry, cache=True),
        Step(revise, retry=retry, cache=True),
        Step(format_answer),
    ],
    depends_on={
        "draft": ["retrieve"],
        "critique": ["retrieve"],
        "revise": ["draft", "critique"],
        "format_answer": ["revise"],
    },
    name="llm_answer",
)


async def main():
    async with ExecutorCore(
        optimization_config=OptimizationConfig(enable_cache_optimization=True)
    ) as executor:
        limits = UsageLimits(max_cost_usd=0.01)
        first = await pipeline.run("rivers", executor=executor, limits=limits, store=False)
        print(first)
        print("result:", first.result)
        again = await pipeline.run("rivers", executor=executor, limits=limits, store=False)
        hits = [r.name for r in again.steps.values() if r.cache_hit]
        print(f"second run: {again.status}, cache hits {hits}, {again.total_tokens} new tokens")
        return first


def save_gantt(run, plot_dir):
    out = Path(plot_dir)
    out.mkdir(parents=True, exist_ok=True)
    run.plot_gantt().savefig(out / "llm_gantt.png")
    print(f"Gantt chart in {out / 'llm_gantt.png'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", metavar="DIR", help="save the Gantt chart (PNG) in DIR")
    args = ap.parse_args()
    run = asyncio.run(main())
    if args.plot:
        save_gantt(run, args.plot)
