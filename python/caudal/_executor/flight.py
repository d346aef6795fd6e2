"""Waking an execution that waits on an asyncio future of its own loop: a
single-flight follower (its input is already being computed by a concurrent
leader) or an execution waiting for a concurrency permit.

The waker may run on another loop in another thread (a leader finishing
there, a permit released there); then the future is resolved with
``call_soon_threadsafe``. On the future's own loop, which is the common case,
it is resolved at once: ``call_soon_threadsafe`` would write to the loop's
self-pipe and cost the loop one more pass, per wake-up. ``None`` as the
result tells a follower that the leader was cancelled and it must run the
step itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

# None outside a running loop, where get_running_loop() would raise.
_running_loop = asyncio._get_running_loop


def _set(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def resolve(fut: asyncio.Future, result: Any) -> None:
    loop = fut.get_loop()
    if _running_loop() is loop:
        # set_result only schedules the waiter's wake-up (call_soon): no
        # other code runs here.
        _set(fut, result)
        return
    try:
        loop.call_soon_threadsafe(_set, fut, result)
    except RuntimeError:  # the waiter's loop is closed: nobody is waiting
        pass
