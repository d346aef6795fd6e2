"""Waking single-flight followers, on their own event loop.

A follower (an execute() call whose input is already being computed by a
concurrent leader) waits on an asyncio future of its own loop; the leader may
finish on another loop in another thread, so it always wakes followers with
``call_soon_threadsafe``. ``None`` as the result tells the follower that the
leader was cancelled and it must run the step itself.
"""

from __future__ import annotations

import asyncio
from typing import Any


def _set(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def resolve(fut: asyncio.Future, result: Any) -> None:
    try:
        fut.get_loop().call_soon_threadsafe(_set, fut, result)
    except RuntimeError:  # the follower's loop is closed: nobody is waiting
        pass
