"""Pipeline contexts: immutable mappings with O(1) snapshots.

``Context`` (native, from ``caudal._core``) is a persistent hash array mapped
trie: ``set``/``delete``/``update`` return a new Context that shares every
untouched node with the old one, so a snapshot costs nothing and an edit
costs O(log32 n). ``ContextMutation`` batches edits in place before
``finish()``. See docs/context.md.

This module also holds:

* ``PyContext`` / ``PyContextMutation``: the plain-Python reference
  implementation (a dict copied on every change), with the same semantics;
  the test suite runs against both.
* ``as_context(obj)``: a Context from a Context, a mapping, a pydantic model
  (its ``model_dump()``) or None.
* ``merge_branches(base, branches, policy)``: merge what each branch changed
  relative to ``base``, reporting conflicting writes.
"""

from __future__ import annotations

import reprlib
import sys
import types
from collections.abc import (
    Callable,
    Hashable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from typing import Any

from caudal._core import Context, ContextMutation
from caudal.errors import ContextConflictError

Mapping.register(Context)
# The native views: keys and items are sets, as a dict's are.
_probe = Context(k=0)
KeysView.register(type(_probe.keys()))
ValuesView.register(type(_probe.values()))
ItemsView.register(type(_probe.items()))
del _probe


class _Missing:
    """The absence of a key, in ``merge_branches`` policies and ``_diff``."""

    __slots__ = ()
    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
_NOARG: Any = object()

_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    # The same 64-bit finaliser as the native module (cpp/bindings).
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _M64
    x ^= x >> 33
    return x


def _is_dunder(name: str) -> bool:
    return len(name) >= 4 and name[:2] == "__" and name[-2:] == "__"


def _immutable(name: str) -> AttributeError:
    return AttributeError(
        f"Context is immutable: cannot set or delete {name!r}; "
        "ctx.set(key, value) returns a new Context"
    )


class PyContext:
    """Reference implementation of ``Context`` in plain Python.

    A dict copied on every change: the same semantics as the native Context
    (immutable mapping, attribute reads for str keys, ``set``/``delete``/
    ``update`` returning new contexts, ``mutate()``, equality with contexts
    and dicts, hashing of items), but O(n) per change. Used by the test
    suite to check the native type, and as a readable specification.
    """

    __slots__ = ("__d", "__hash", "__weakref__")

    def __new__(cls, arg: Any = _NOARG, /, **kw: Any) -> PyContext:
        if type(arg) is cls and not kw:
            return arg
        d = {} if arg is _NOARG else dict(arg)
        d.update(kw)
        return cls._wrap(d)

    @classmethod
    def _wrap(cls, d: dict) -> PyContext:
        self = object.__new__(cls)
        object.__setattr__(self, "_PyContext__d", d)
        object.__setattr__(self, "_PyContext__hash", None)
        return self

    # Mapping
    def __getitem__(self, key: Hashable) -> Any:
        return self.__d[key]

    def get(self, key: Hashable, default: Any = None, /) -> Any:
        return self.__d.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.__d

    def __len__(self) -> int:
        return len(self.__d)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.__d)

    __reversed__ = None  # unordered, as the native trie is

    def keys(self):
        return self.__d.keys()

    def values(self):
        return self.__d.values()

    def items(self):
        return self.__d.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PyContext):
            return self.__d == other.__d
        if isinstance(other, Context):
            return len(self.__d) == len(other) and self.__d == other.to_dict()
        if isinstance(other, dict):
            return self.__d == other
        return NotImplemented

    def __hash__(self) -> int:
        h = self.__hash
        if h is None:
            acc = 0
            for k, v in self.__d.items():
                hk = _mix64(hash(k) & _M64)
                hv = hash(v) & _M64
                acc = (acc + _mix64(hk ^ ((hv * 0x9E3779B97F4A7C15) & _M64))) & _M64
            r = _mix64(acc ^ ((len(self.__d) * 0xC2B2AE3D27D4EB4F) & _M64))
            h = r - (1 << 64) if r >= 1 << 63 else r
            object.__setattr__(self, "_PyContext__hash", h)
        return h

    @reprlib.recursive_repr(fillvalue="PyContext({...})")
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__d!r})"

    def __reduce__(self):
        return (type(self), (dict(self.__d),))

    def __copy__(self) -> PyContext:
        return self

    __class_getitem__ = classmethod(types.GenericAlias)

    # Attributes: keys that are not attributes of the type, dunders excepted.
    def __getattr__(self, name: str) -> Any:
        if not (_is_dunder(name) or name.startswith("_PyContext__")):
            try:
                return self.__d[name]
            except KeyError:
                pass
        raise AttributeError(f"'Context' object has no attribute or key {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise _immutable(name)

    def __delattr__(self, name: str) -> None:
        raise _immutable(name)

    # Versions
    def set(self, key: Hashable, value: Any, /) -> PyContext:
        d = self.__d
        if key in d and d[key] is value:
            return self
        nd = dict(d)
        nd[key] = value
        return self._wrap(nd)

    def delete(self, key: Hashable, /) -> PyContext:
        if key not in self.__d:
            raise KeyError(key)
        nd = dict(self.__d)
        del nd[key]
        return self._wrap(nd)

    def update(self, arg: Any = _NOARG, /, **kw: Any) -> PyContext:
        d = self.__d
        nd = dict(d)
        if arg is not _NOARG:
            nd.update(arg)
        nd.update(kw)
        if len(nd) == len(d) and all(nd[k] is v for k, v in d.items()):
            return self
        return self._wrap(nd)

    def snapshot(self) -> PyContext:
        return self

    def mutate(self) -> PyContextMutation:
        return PyContextMutation(self.__d)

    def to_dict(self) -> dict:
        return dict(self.__d)

    def _diff(self, base: PyContext, missing: Any) -> list[tuple[Any, Any, Any]]:
        mine, theirs = self.__d, base.__d
        out = []
        for k, v in theirs.items():
            if k not in mine:
                out.append((k, v, missing))
            elif mine[k] is not v:
                out.append((k, v, mine[k]))
        out.extend((k, missing, v) for k, v in mine.items() if k not in theirs)
        return out

    def _check_invariants(self) -> None:
        pass


class PyContextMutation:
    """Reference implementation of ``ContextMutation`` (a private dict).

    As the native one, it refuses to be changed or finished (RuntimeError)
    while one of its own operations is comparing keys (a key's ``__eq__``
    runs Python code), and releases what an edit drops only after the edit.
    """

    __slots__ = ("__busy", "__d", "__finished")
    __hash__ = None  # type: ignore[assignment]
    __iter__ = None  # not iterable, as the native one

    def __init__(self, base: dict):
        self.__d = dict(base)
        self.__finished = False
        self.__busy = 0  # operations in progress (reads may nest)

    def __check(self) -> None:
        if self.__finished:
            raise ValueError("this ContextMutation is finished; start a new one with ctx.mutate()")
        if self.__busy:
            raise RuntimeError(
                "ContextMutation changed while one of its own operations was comparing keys"
            )

    def __getitem__(self, key: Hashable) -> Any:
        self.__busy += 1
        try:
            return self.__d[key]
        finally:
            self.__busy -= 1

    def get(self, key: Hashable, default: Any = None, /) -> Any:
        self.__busy += 1
        try:
            return self.__d.get(key, default)
        finally:
            self.__busy -= 1

    def __contains__(self, key: object) -> bool:
        self.__busy += 1
        try:
            return key in self.__d
        finally:
            self.__busy -= 1

    def __len__(self) -> int:
        return len(self.__d)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self.__check()
        self.__busy += 1
        try:
            old = self.__d.get(key)  # dropped after the edit, not during it
            self.__d[key] = value
        finally:
            self.__busy -= 1
        del old

    def __delitem__(self, key: Hashable) -> None:
        self.pop(key)

    def set(self, key: Hashable, value: Any, /) -> None:
        self[key] = value

    def delete(self, key: Hashable, /) -> None:
        del self[key]

    def pop(self, key: Hashable, /, *default: Any) -> Any:
        self.__check()
        self.__busy += 1
        try:
            return self.__d.pop(key, *default)
        finally:
            self.__busy -= 1

    def update(self, arg: Any = _NOARG, /, **kw: Any) -> None:
        self.__check()
        new = {} if arg is _NOARG else dict(arg)
        new.update(kw)
        for key, value in new.items():
            self[key] = value

    def finish(self) -> PyContext:
        if self.__busy:
            raise RuntimeError(
                "ContextMutation finished while one of its own operations was comparing keys"
            )
        self.__finished = True
        return PyContext._wrap(dict(self.__d))

    def __enter__(self) -> PyContextMutation:
        return self

    def __exit__(self, *exc: object) -> bool:
        self.finish()
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__d!r})"

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def _check_invariants(self) -> None:
        pass


Mapping.register(PyContext)


def as_context(obj: Any) -> Context:
    """A ``Context`` from whatever a pipeline carries as its context.

    * a ``Context``: returned as is;
    * ``None``: an empty Context;
    * a dict or any mapping (including ``PyContext``): its items;
    * a pydantic model (v2): the items of ``obj.model_dump()``, i.e. field
      names to plain values, nested models turned into dicts. The result is
      a snapshot of the model's data, not a model: validators do not run on
      ``set``. Get a model back with ``Model.model_validate(ctx.to_dict())``.

    Anything else is a TypeError.
    """
    if type(obj) is Context:
        return obj
    if obj is None:
        return Context()
    if isinstance(obj, Mapping | dict):
        return Context(obj)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        return Context(obj.model_dump())
    raise TypeError(
        f"cannot make a Context from {type(obj).__name__}: expected a Context, "
        "a mapping, a pydantic model or None"
    )


Policy = str | Callable[[Any, Any, list[Any]], Any]


def _same(a: Any, b: Any) -> bool:
    return a is b or (a is not MISSING and b is not MISSING and bool(a == b))


def merge_branches(
    base: Any, branches: Iterable[Any] | Mapping[Any, Any], policy: Policy = "error"
) -> Any:
    """Merge the changes each branch made relative to ``base``.

    ``base`` and the branches are Contexts (or anything ``as_context``
    accepts; a ``PyContext`` base gives a ``PyContext`` result). Branches are
    named by position, or by key when ``branches`` is a dict of name ->
    branch. A branch "changed" a key when it added it, deleted it, or holds a
    value that is neither the base's object nor equal to it. For native
    Contexts derived from ``base``, finding the changes skips every subtree a
    branch still shares with ``base``, so it costs O(changes), not O(size).

    Keys changed by one branch, or by several to equal values, take that
    value (deletions delete). Keys changed by several branches to different
    values (a deletion counts as a value) are conflicts, resolved by
    ``policy``:

    * ``"error"`` (default): raise ``ContextConflictError`` listing every
      conflicting key with the branches that wrote it;
    * ``"last_writer_wins"``: the last branch (in order) that changed the key;
    * a callable ``policy(key, base_value, branch_values)`` returning the
      merged value; ``base_value`` and the entries of ``branch_values`` (one
      per branch that changed the key, in order) are ``MISSING`` for an
      absent key; returning ``MISSING`` deletes the key.

    Returns the merged context (``base`` itself when nothing changed).
    """
    if policy not in ("error", "last_writer_wins") and not callable(policy):
        raise ValueError(
            f"policy must be 'error', 'last_writer_wins' or a callable, got {policy!r}"
        )
    if isinstance(base, Context | PyContext):
        base_ctx = base
    else:
        base_ctx = as_context(base)
    kind = type(base_ctx)

    def coerce(branch: Any) -> Any:
        if type(branch) is kind:
            return branch
        return as_context(branch) if kind is Context else PyContext(as_context(branch))

    if isinstance(branches, Mapping) and not isinstance(branches, Context | PyContext):
        named = list(branches.items())
    else:
        named = list(enumerate(branches))

    writes: dict[Any, list[tuple[Any, Any]]] = {}
    for name, branch in named:
        for key, old, new in coerce(branch)._diff(base_ctx, MISSING):
            if old is not MISSING and new is not MISSING and old == new:
                continue  # rewritten with an equal value: not a change
            writes.setdefault(key, []).append((name, new))

    conflicts: dict[Any, list[Any]] = {}
    resolved: list[tuple[Any, Any]] = []
    for key, ws in writes.items():
        values = [v for _, v in ws]
        if all(_same(v, values[0]) for v in values[1:]):
            merged = values[0]
        elif policy == "error":
            conflicts[key] = [name for name, _ in ws]
            continue
        elif policy == "last_writer_wins":
            merged = values[-1]
        else:
            merged = policy(key, base_ctx.get(key, MISSING), values)
        resolved.append((key, merged))
    if conflicts:
        raise ContextConflictError(conflicts)
    if not resolved:
        return base_ctx
    m = base_ctx.mutate()
    for key, merged in resolved:
        if merged is MISSING:
            if key in m:
                del m[key]
        else:
            m[key] = merged
    return m.finish()


__all__ = [
    "MISSING",
    "Context",
    "ContextConflictError",
    "ContextMutation",
    "PyContext",
    "PyContextMutation",
    "as_context",
    "merge_branches",
]
