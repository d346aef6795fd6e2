"""What a Ray step asks of its cluster (caudal.integrations.ray uses it):
the check that one attempt's resources, or an actor pool's, can be placed
at all, and the pool of actors a step with ``actors=N`` runs on."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from caudal.errors import PlacementError


def _num(x: float) -> str:
    return f"{x:g}"


def _placement(ray: Any, name: str, req: Mapping[str, float], actors: int | None) -> None:
    """Raise PlacementError if the cluster cannot place one attempt's
    request ``req`` (per task, or per actor of a pool of ``actors``)."""
    if os.environ.get("CAUDAL_RAY_PLACEMENT_CHECK", "1") == "0":
        return
    if not ray.is_initialized():
        ray.init()  # what Ray itself does on the first remote call
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    total = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
    req = {k: float(v) for k, v in req.items() if v}
    fits = any(all(n.get(k, 0.0) >= v for k, v in req.items()) for n in nodes)
    if not fits:
        largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in req}
        missing = {k: v - largest[k] for k, v in req.items() if v > largest[k]}
        what = ", ".join(f"{_num(v)} {k}" for k, v in req.items())
        unit = "each actor of its pool" if actors else "each attempt"
        if missing:
            has = ", ".join(
                f"{_num(largest[k])} {k}" if largest[k] else f"no {k}" for k in missing
            )
            where = f"the largest node has {has}"
        else:  # each resource exists, never all on one node
            missing = dict(req)
            where = "no single node has all of it"
        raise PlacementError(name, f"{unit} needs {what}; {where}", missing, total)
    if actors:
        need = {k: v * actors for k, v in req.items()}
        short = {k: v - total.get(k, 0.0) for k, v in need.items() if v > total.get(k, 0.0)}
        if short:
            parts = "; ".join(
                f"{actors} actors x {_num(req[k])} {k} = {_num(need[k])} {k}, "
                f"the cluster has {_num(total.get(k, 0.0))} {k}"
                for k in short
            )
            raise PlacementError(name, f"its actor pool needs {parts}", short, total)


def _session(ray: Any) -> str:
    """Identifies the Ray session this process is connected to (actor
    handles do not survive ``ray.shutdown()`` / ``ray.init()``)."""
    ctx = ray.get_runtime_context()
    return f"{ctx.get_node_id()}/{ctx.get_job_id()}"


class _ActorPool:
    """N actors for one step, created on first use; each attempt goes to the
    actor with the fewest calls in flight. A lost actor is replaced by a new
    one on the next attempt."""

    def __init__(
        self, ray: Any, actor_cls: Any, size: int, args: tuple, name: str, req: dict
    ) -> None:
        self._ray = ray
        self._cls = actor_cls
        self._args = args
        self._name = name
        self._req = req
        self._lock = threading.Lock()
        self._handles: list[Any] = [None] * size
        self._load = [0] * size
        self._session: str | None = None

    def acquire(self) -> tuple[Any, int]:
        ray = self._ray
        if not ray.is_initialized():
            ray.init()  # what Ray itself does on the first remote call
        session = _session(ray)
        if session != self._session:
            _placement(ray, self._name, self._req, len(self._handles))
        with self._lock:
            if session != self._session:
                self._handles = [None] * len(self._handles)
                self._load = [0] * len(self._load)
                self._session = session
            load = self._load
            i = min(range(len(load)), key=load.__getitem__)
            h = self._handles[i]
            if h is None:
                h = self._handles[i] = self._cls.remote(*self._args)
            load[i] += 1
            return h, i

    def release(self, i: int) -> None:
        with self._lock:
            if self._load[i] > 0:
                self._load[i] -= 1

    def lost(self, i: int, handle: Any) -> None:
        with self._lock:
            if self._handles[i] is not handle:
                return
            self._handles[i] = None
        try:
            self._ray.kill(handle, no_restart=True)
        except Exception:  # already gone
            pass

    def size(self) -> int:
        return len(self._handles)

    def stop(self) -> int:
        with self._lock:
            handles = [h for h in self._handles if h is not None]
            self._handles = [None] * len(self._handles)
        for h in handles:
            try:
                self._ray.kill(h, no_restart=True)
            except Exception:  # already gone
                pass
        return len(handles)

    def live(self) -> int:
        with self._lock:
            return sum(h is not None for h in self._handles)
