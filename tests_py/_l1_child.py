"""A long-lived process for the cross-process invalidation tests: an
executor whose in-process cache sits in front of the Redis tier, driven
over stdin, one JSON answer per line on stdout.

    python _l1_child.py URL PREFIX

Commands: ``exec X`` (execute the step ``enrich`` on the int X), ``stats``
(the tier's subscription counters), ``quit``. Answers for ``exec``:
``{"hit": bool, "tier": "l2" | null, "calls": n, "by": pid}`` (``calls``:
how many times this process ran the step; ``by``: the pid of the process
that computed the output).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from caudal import ExecutorCore, OptimizationConfig, Step
from caudal.integrations.redis import RedisCacheTier


class Counted:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, x: int) -> dict:
        self.calls += 1
        return {"value": x, "pid": os.getpid()}


async def main(url: str, prefix: str) -> None:
    tier = RedisCacheTier(url, prefix=prefix, op_timeout_s=10.0, reconnect_backoff_s=0.2)
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True), cache_l2=tier)
    fn = Counted()
    step = Step(fn, "enrich", tags=("users",), cache_key="enrich-v1")
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "exec":
            r = await ex.execute(step, int(line[1]))
            await ex.flush()
            out = {
                "hit": r.cache_hit,
                "tier": r.metadata.get("cache_tier"),
                "calls": fn.calls,
                "by": r.output["pid"],
            }
        else:
            s = tier.stats()
            out = {k: s[k] for k in ("subscribed", "invalidations_heard", "resyncs")}
        print(json.dumps(out), flush=True)
    await ex.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
