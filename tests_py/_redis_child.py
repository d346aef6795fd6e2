"""A second process for test_cache_redis: uses the Redis tier from outside.

    python _redis_child.py URL PREFIX set VALUE...          stores each VALUE
    python _redis_child.py URL PREFIX invalidate-tag TAG
    python _redis_child.py URL PREFIX get VALUE...

Keys are ``caudal._core.cache_key(VALUE, "stepA")``, the executor's own keys,
so the test also shows they agree across processes. ``set`` stores
``{"input": VALUE, "pid": <this pid>}`` with tag ``shared`` (``own`` for a
VALUE starting with "own"), group ``stepA``. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from caudal import _core
from caudal.integrations.redis import RedisCacheTier


async def main(url: str, prefix: str, command: str, args: list[str]) -> dict:
    tier = RedisCacheTier(url, prefix=prefix, op_timeout_s=10.0)
    try:
        if command == "set":
            stored = {}
            for v in args:
                tag = "own" if v.startswith("own") else "shared"
                stored[v] = await tier.set(
                    _core.cache_key(v, "stepA"),
                    {"input": v, "pid": os.getpid()},
                    ttl_s=60,
                    tags=[tag],
                    group="stepA",
                )
            out = {"stored": stored}
        elif command == "invalidate-tag":
            out = {"removed": await tier.invalidate_tag(args[0])}
        elif command == "get":
            found = {}
            for v in args:
                hit, value = await tier.get(_core.cache_key(v, "stepA"))
                found[v] = value if hit else None
            out = {"found": found}
        else:
            raise SystemExit(f"unknown command {command!r}")
        out["stats"] = tier.stats()
        return out
    finally:
        await tier.close()


if __name__ == "__main__":
    url, prefix, command, *rest = sys.argv[1:]
    print(json.dumps(asyncio.run(main(url, prefix, command, rest))))
