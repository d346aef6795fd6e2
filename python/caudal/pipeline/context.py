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

- ``caudal.Context``, and ``dict`` contexts while the executor's
  ``enable_context_optimization`` is on (the default): copy-on-write
  (:class:`CowAdapter`). The run context is held as a ``caudal.Context``
  (a dict is converted once, when the run starts, and ``run.context`` is a
  dict again at the end); each step gets a :class:`ContextView`, a
  MutableMapping over an O(1) snapshot whose first write starts a private
  ``ContextMutation``; its changes are found in O(changes) by walking only
  the trie nodes the step copied, and merged in O(changes).

Shallow copies mean a value mutated in place (``ctx["items"].append(x)``) is
not seen as a change: replace values instead of mutating them.

Concurrent writes to one key (two steps that did not see each other's
write) are settled by the run's ``context_conflicts`` policy: ``"error"``
(default: :class:`caudal.ContextConflictError`), ``"last_writer_wins"``
(the step that completes later), or a callable ``policy(key, current,
new)`` returning the value to keep (``DELETED`` deletes).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

from caudal.context import MISSING, Context
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


class ContextView(MutableMapping):
    """What a step receives under copy-on-write contexts: a mutable mapping
    over a snapshot of the run context. Reads go to the snapshot until the
    first write, which starts a private ``ContextMutation``; nothing is
    copied up front. ``view.context()`` is the current state as a
    ``caudal.Context``. A step that needs a real dict can use ``dict(view)``.
    """

    __slots__ = ("_base", "_m")

    def __init__(self, base: Context) -> None:
        self._base = base
        self._m: Any = None

    def _target(self) -> Any:
        return self._base if self._m is None else self._m

    def _draft(self) -> Any:
        if self._m is None:
            self._m = self._base.mutate()
        return self._m

    def context(self) -> Context:
        """The view's current state (O(1)); later writes do not change it."""
        if self._m is None:
            return self._base
        ctx = self._m.finish()
        self._base, self._m = ctx, None
        return ctx

    def __getitem__(self, key: Any) -> Any:
        return self._target()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._draft()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._draft()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._target()

    def __len__(self) -> int:
        return len(self._target())

    def __iter__(self) -> Any:
        return iter(self.context())

    def get(self, key: Any, default: Any = None) -> Any:
        return self._target().get(key, default)

    def __repr__(self) -> str:
        return f"ContextView({dict(self.context())!r})"


class CowAdapter:
    """Copy-on-write contexts: the run context is a ``caudal.Context``,
    steps get a :class:`ContextView`. ``to_user`` gives ``run.context`` back
    in the caller's type (a dict for dict input)."""

    def __init__(self, as_dict: bool) -> None:
        self.as_dict = as_dict

    def snapshot(self, ctx: Context) -> ContextView:
        return ContextView(ctx)

    def changes(self, base: Context, view: ContextView) -> dict[Any, Any]:
        now = view.context()
        if now is base:
            return {}
        out = {}
        for key, old, new in now._diff(base, MISSING):
            if new is MISSING:
                out[key] = DELETED
            elif old is MISSING or not _same(old, new):
                out[key] = new
        return out

    def merge(self, ctx: Context, changes: Mapping[Any, Any]) -> Context:
        m = ctx.mutate()
        for k, v in changes.items():
            if v is DELETED:
                m.pop(k, None)
            else:
                m[k] = v
        return m.finish()

    def to_user(self, ctx: Context) -> Any:
        return ctx.to_dict() if self.as_dict else ctx


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

    __slots__ = ("_adapter", "_policy", "_seq", "_writers", "value")

    def __init__(self, value: Any, cow: bool = False, policy: Any = "error") -> None:
        """``cow``: copy-on-write for dict contexts (the executor's
        enable_context_optimization); a Context is always copy-on-write.
        ``policy``: how concurrent writes to one key are settled."""
        if not (policy in ("error", "last_writer_wins") or callable(policy)):
            raise ValueError(
                "context_conflicts must be 'error', 'last_writer_wins' or a callable "
                f"(key, current, new) -> value; got {policy!r}"
            )
        self._policy = policy
        if isinstance(value, Context):
            self._adapter: Any = CowAdapter(as_dict=False)
        elif cow and type(value) is dict and type(value) not in _ADAPTERS:
            self._adapter = CowAdapter(as_dict=True)
            value = Context(value)
        else:
            self._adapter = adapter_for(value)
        self.value = value
        self._seq = 0
        self._writers: dict[Any, tuple[int, str]] = {}

    @property
    def copy_on_write(self) -> bool:
        return isinstance(self._adapter, CowAdapter)

    def result(self) -> Any:
        """The run context in the caller's type (``run.context``)."""
        to_user = getattr(self._adapter, "to_user", None)
        return self.value if to_user is None else to_user(self.value)

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
            settled = None
            for k, v in changes.items():
                w = self._writers.get(k)
                if w is not None and w[0] > since:
                    current = self.value
                    try:
                        now = current[k] if isinstance(current, Mapping) else getattr(current, k)
                    except (KeyError, AttributeError):
                        now = DELETED
                    if not _same(now, v):
                        policy = self._policy
                        if policy == "error":
                            raise ContextConflictError(k, (w[1], step))
                        if policy != "last_writer_wins":
                            if settled is None:
                                settled = dict(changes)
                            settled[k] = policy(k, now, v)
            if settled is not None:
                changes = settled
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
