"""How a pipeline hands its context to steps and merges what they change.

Each step of a run gets its own **snapshot** of the run's context, taken
when it becomes ready (siblings made ready together share one); when it
completes, the keys it changed are merged into the run
context (and checkpointed with its output). Steps that ran concurrently
(``Pipeline.parallel`` branches, independent DAG steps) thus never see each
other's writes; two of them writing the same key is a
:class:`caudal.ContextConflictError` (unless both wrote equal values).

The seam is :class:`ContextAdapter`: ``snapshot(ctx)`` -> the step's view,
``changes(base, view)`` -> ``{key: value or DELETED}``, ``merge(ctx,
changes)`` -> the new run context. Built in:

- ``dict`` (any MutableMapping that copies with ``copy.copy``): a shallow
  copy per step, so snapshot and merge cost O(keys);
- any other object (dataclass, pydantic model, plain object): a shallow
  ``copy.copy`` and a diff of ``vars()``.

Shallow copies mean a value mutated in place (``ctx["items"].append(x)``) is
not seen as a change: replace values instead of mutating them. A persistent
map (caudal.Context, a HAMT with O(1) snapshots and merges of only the
changed keys) plugs in with ``register_context_adapter(Context, adapter)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

from caudal.errors import ContextConflictError


class _Deleted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"

    def __reduce__(self) -> str:
        return "DELETED"


#: Marks a key a step removed, in a changes dict.
DELETED = _Deleted()


class ContextAdapter(Protocol):
    def snapshot(self, ctx: Any) -> Any: ...
    def changes(self, base: Any, view: Any) -> dict[Any, Any]: ...
    def merge(self, ctx: Any, changes: Mapping[Any, Any]) -> Any: ...


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


class MappingAdapter:
    """dict-like contexts: the run context is never mutated in place (each
    merge makes a new mapping), so a step's base is just a reference."""

    def snapshot(self, ctx: MutableMapping) -> MutableMapping:
        return copy.copy(ctx)

    def changes(self, base: Mapping, view: Mapping) -> dict[Any, Any]:
        out = {k: v for k, v in view.items() if k not in base or not _same(base[k], v)}
        for k in base:
            if k not in view:
                out[k] = DELETED
        return out

    def merge(self, ctx: MutableMapping, changes: Mapping) -> MutableMapping:
        new = copy.copy(ctx)
        for k, v in changes.items():
            if v is DELETED:
                new.pop(k, None)
            else:
                new[k] = v
        return new


class ObjectAdapter:
    """Attribute contexts (dataclasses, pydantic models, plain objects)."""

    def snapshot(self, ctx: Any) -> Any:
        return copy.copy(ctx)

    def changes(self, base: Any, view: Any) -> dict[Any, Any]:
        b, v = vars(base), vars(view)
        out = {k: x for k, x in v.items() if k not in b or not _same(b[k], x)}
        for k in b:
            if k not in v:
                out[k] = DELETED
        return out

    def merge(self, ctx: Any, changes: Mapping) -> Any:
        new = copy.copy(ctx)
        d = vars(new)
        for k, v in changes.items():
            if v is DELETED:
                d.pop(k, None)
            else:
                d[k] = v
        return new


_ADAPTERS: dict[type, ContextAdapter] = {}
_MAPPING = MappingAdapter()
_OBJECT = ObjectAdapter()


def register_context_adapter(cls: type, adapter: ContextAdapter) -> None:
    """Use ``adapter`` for contexts of type ``cls`` (and its subclasses)."""
    _ADAPTERS[cls] = adapter


def adapter_for(ctx: Any) -> ContextAdapter:
    for cls in type(ctx).__mro__:
        a = _ADAPTERS.get(cls)
        if a is not None:
            return a
    if isinstance(ctx, MutableMapping):
        return _MAPPING
    if hasattr(ctx, "__dict__"):
        return _OBJECT
    raise TypeError(
        f"a pipeline context must be a dict, an object with attributes, or a type registered "
        f"with caudal.register_context_adapter; got {type(ctx).__name__}"
    )


class RunContext:
    """The context of one run: snapshots for steps, merges with conflict checks.

    Conflict rule: each merge gets a sequence number; a step remembers the
    number current when its snapshot was taken (when it became ready). If a key it changed was last
    written by a merge numbered after that, the step never saw that write:
    the two steps ran concurrently, and the later one is refused. (A
    dependency always merges before its dependents start, so it never counts.)
    """

    __slots__ = ("_adapter", "_seq", "_writers", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._adapter = adapter_for(value)
        self._seq = 0
        self._writers: dict[Any, tuple[int, str]] = {}

    def begin(self) -> tuple[Any, Any, int]:
        """(base, view, seq) for a step that became ready now."""
        base = self.value
        return base, self._adapter.snapshot(base), self._seq

    def changes(self, base: Any, view: Any) -> dict[Any, Any]:
        return self._adapter.changes(base, view)

    def merge(self, step: str, changes: Mapping[Any, Any], since: int | None) -> None:
        """Merge a step's changes; ``since`` is the seq of its snapshot (None
        when restoring checkpoints, which were checked when first merged)."""
        if not changes:
            return
        if since is not None:
            for k, v in changes.items():
                w = self._writers.get(k)
                if w is not None and w[0] > since:
                    current = self.value
                    try:
                        now = current[k] if isinstance(current, Mapping) else getattr(current, k)
                    except (KeyError, AttributeError):
                        now = DELETED
                    if not _same(now, v):
                        raise ContextConflictError(k, (w[1], step))
        self.value = self._adapter.merge(self.value, changes)
        self._seq += 1
        for k in changes:
            self._writers[k] = (self._seq, step)


__all__ = [
    "DELETED",
    "ContextAdapter",
    "MappingAdapter",
    "ObjectAdapter",
    "RunContext",
    "adapter_for",
    "register_context_adapter",
]
