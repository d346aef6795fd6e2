"""Cache identity: which namespace a step's cached results live in.

A cached result belongs to *what ran* on *which input*. The input is keyed
natively per execution (``cpp/bindings/key_walk.cc``); what ran is
fingerprinted here, by :func:`namespace`, which the executor calls once per
step it has analysed, when that step is first executed with caching on
(never for a step that runs uncached, and never per execution):

- a function: its module, qualname and code (bytecode, constants with nested
  code, names, flags, argument layout), its defaults, and the values of the
  variables it captures (closure cells). When those values are all plain
  data (None, bool, int, float, str, bytes, and tuples, lists, dicts and
  sets of those), the digest is the native key of them under the digest of
  the module, qualname and code (``caudal._core.function_key``): the
  executor computes the same natively for every function of one code
  object (a fresh lambda per call, a factory's closures), and it is not
  remembered per object (it follows the values);
- a ``functools.partial``: its function and bound arguments;
- a bound method: its function and its instance;
- an object called as a step (``__call__`` or ``run()``): that method and the
  instance;
- an instance: its ``__caudal_key__()``, dataclass fields or pydantic model
  (as for inputs), else its class and its attributes (``vars()`` and
  ``__slots__``) when those are all its state; a wrapper written in C
  (``functools.lru_cache``) by what it wraps (``__wrapped__``);
- a class: its qualified name and its own ``__init__`` and ``__call__``;
- a module or builtin: its qualified name.

Plain values (defaults, bound arguments, captured values, attributes) are
keyed with the same native walk as inputs (``caudal._core.cache_key``), so
the same rules hold: type-exact, order-insensitive for dicts and sets, and
stable across processes (nothing here depends on ``id()`` or ``hash()``,
except the per-object tokens below).

An object whose state Python cannot see (a lock, a socket, and so an HTTP
or LLM client holding one) is identified as *that very object*: a token
unique in this process for the object's life (never reused). Steps that
capture the same client share results; steps capturing two clients (say
one for production, one for staging) never do. Such a namespace does not
carry over to another process: results in the shared tier are not shared
across processes unless the step is named with ``Step(cache_key=...)``.
Only when an object cannot even be referenced weakly (so a token could be
reused after it dies) does the step have no identity: :func:`namespace`
returns the reason instead, and the executor runs that step uncached
(``stats["cache"]["uncacheable_steps"]``).

Each object's fingerprint is remembered for the life of the object (keyed by
``id`` with a weak reference to drop the entry), so an instance or closure
whose state changes after caudal first met it keeps one namespace in this
process. Globals a function reads and functions it calls are not part of its
identity (docs/cache.md, "Cache identity").
"""

from __future__ import annotations

import functools
import hashlib
import struct
import types
import weakref
from typing import Any

from caudal import _core

_MAX_DEPTH = 48
_MAX_NODES = 20_000  # objects visited for one step before giving up


class NoIdentity(Exception):
    """Internal: the object has no stable identity; args[0] says why."""


# id(obj) -> (digest, None) or (None, reason), for objects that can be
# weakly referenced; the entry is dropped when the object dies.
_memo: dict[int, tuple[bytes | None, str | None]] = {}


# id(obj) -> a token unique for the process's life, for objects identified
# as themselves (state Python cannot see); dropped when the object dies.
_tokens: dict[int, int] = {}
_next_token = iter(range(1, 1 << 62))


def _token(obj: Any) -> int | None:
    """This object's process-unique token, or None when it cannot be
    referenced weakly (its id could then be reused under the token)."""
    key = id(obj)
    tok = _tokens.get(key)
    if tok is not None:
        return tok
    try:
        done = weakref.finalize(obj, _tokens.pop, key, None)
    except TypeError:
        return None
    done.atexit = False
    tok = _tokens[key] = next(_next_token)
    return tok


def _remember(obj: Any, entry: tuple[bytes | None, str | None]) -> None:
    key = id(obj)
    try:
        done = weakref.finalize(obj, _memo.pop, key, None)
    except TypeError:  # not weakly referenceable: no memo (computed each time)
        return
    done.atexit = False  # nothing to do at exit
    _memo[key] = entry


def namespace(name: str, fn: Any, cache_key: str | None) -> tuple[str | None, str | None]:
    """(namespace, None) for the step ``name`` running ``fn``, or (None,
    reason) when ``fn`` has no stable identity. ``cache_key`` (the user's
    name for the namespace) replaces the computed identity.

    The executor looks this function up by name on each call (once per
    analysed step), so it must keep this name and signature."""
    if cache_key is not None:
        return f"{name}\x1fkey\x1f{cache_key}", None
    try:
        where = _qualname(fn)
    except Exception:
        where = type(fn).__qualname__
    try:
        digest = _Walker(where).digest(fn, where)
    except NoIdentity as exc:
        why = exc.args[0]
    except Exception as exc:  # a property or __getattr__ of the user's raised
        why = f"fingerprinting {where} raised {type(exc).__name__}: {exc}"
    else:
        return f"{name}\x1f{digest.hex()}", None
    return None, (
        f"{why}: its results cannot be told apart from another step's; "
        f"name them with Step(cache_key=...) to cache it"
    )


def function_static(fn: types.FunctionType) -> bytes | None:
    """The digest of a plain function's module, qualname and code: what
    every function object of one code object shares (the executor asks
    once per code object). None when it cannot be computed."""
    try:
        where = _qualname(fn)
        return _Walker(where).static(fn, where)
    except Exception:  # NoIdentity, or an odd constant
        return None


def fingerprint(value: Any) -> str | None:
    """The hex digest of ``value`` keyed as :func:`namespace` keys bound
    arguments, or None when it has no stable key."""
    h = hashlib.blake2b(digest_size=16)
    try:
        _Walker("the value").value(value, "the value", h)
    except Exception:  # NoIdentity, or a hook of the user's raised
        return None
    return h.hexdigest()


def _qualname(obj: Any) -> str:
    qn = getattr(obj, "__qualname__", None)
    if not isinstance(qn, str):
        qn = getattr(obj, "__name__", None)
    return qn if isinstance(qn, str) else type(obj).__qualname__


def _module(obj: Any) -> str:
    m = getattr(obj, "__module__", None)
    return m if isinstance(m, str) else ""


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{_module(t)}.{t.__qualname__}"


def _state_visible(t: type) -> bool:
    """Whether an instance's whole state is its ``__dict__`` and slots: no
    class in its layout chain adds C fields (a socket's descriptor, a
    dict's items) beyond slots and the dict/weakref pointers."""
    while t is not object:
        base = t.__base__
        own = t.__dict__.get("__slots__", ())
        own = (own,) if isinstance(own, str) else own
        room = 8 * sum(1 for n in own if n not in ("__dict__", "__weakref__"))
        if t.__dictoffset__ > 0 and base.__dictoffset__ == 0:
            room += 8
        if t.__weakrefoffset__ > 0 and base.__weakrefoffset__ == 0:
            room += 8
        if t.__basicsize__ - base.__basicsize__ > room:
            return False
        t = base
    return True


_BUILTINS = (
    types.BuiltinFunctionType,  # also bound builtin methods ([].append)
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)


class _Walker:
    """One fingerprint computation. Objects on the current path are
    numbered; a reference back to one of them (recursion, cycles) is
    hashed as its number, and a result that depends on an object above it
    is not remembered (its meaning depends on where the walk started)."""

    __slots__ = ("low", "nodes", "path", "root")

    def __init__(self, root: str) -> None:
        self.root = root  # what the walk is for, in messages
        self.path: dict[int, int] = {}
        self.low = 1 << 30
        self.nodes = 0

    # ---- structured objects: a 16-byte digest each ----

    def static(self, fn: types.FunctionType, where: str) -> bytes:
        """A function's module, qualname and code (function_static)."""
        h = hashlib.blake2b(digest_size=16)
        _put(h, b"function", _module(fn), fn.__qualname__)
        h.update(self.digest(fn.__code__, where))
        return h.digest()

    def digest(self, obj: Any, where: str) -> bytes:
        if type(obj) is types.FunctionType:
            # Plain data captured: the native key (function_key), the same
            # the executor computes for every function of this code.
            k = _core.function_key(obj, self.static(obj, where))
            if k is not None:
                return k
        key = id(obj)
        hit = _memo.get(key)
        if hit is not None:
            if hit[0] is None:
                raise NoIdentity(hit[1])
            return hit[0]
        pos = self.path.get(key)
        if pos is not None:
            self.low = min(self.low, pos)
            return b"cycle" + pos.to_bytes(11, "little")
        self.nodes += 1
        if len(self.path) >= _MAX_DEPTH:
            raise NoIdentity(f"{self.root} refers to objects nested too deeply to fingerprint")
        if self.nodes > _MAX_NODES:
            raise NoIdentity(f"{self.root} refers to too many objects to fingerprint")
        mine = len(self.path)
        self.path[key] = mine
        outer_low, self.low = self.low, 1 << 30
        h = hashlib.blake2b(digest_size=16)
        try:
            self._describe(obj, where, h)
        except NoIdentity as exc:
            _remember(obj, (None, exc.args[0]))
            raise
        finally:
            del self.path[key]
            inner_low = self.low
            self.low = min(outer_low, inner_low)
        d = h.digest()
        if inner_low >= mine:
            _remember(obj, (d, None))
        return d

    def _describe(self, obj: Any, where: str, h: Any) -> None:
        put = _put
        if isinstance(obj, types.FunctionType):
            put(h, b"function", _module(obj), obj.__qualname__)
            h.update(self.digest(obj.__code__, where))
            self.value(obj.__defaults__, f"a default of {where}", h)
            self.value(obj.__kwdefaults__, f"a default of {where}", h)
            cells = obj.__closure__ or ()
            for var, cell in zip(obj.__code__.co_freevars, cells, strict=True):
                put(h, b"cell", var)
                try:
                    v = cell.cell_contents
                except ValueError:  # not assigned yet
                    put(h, b"empty")
                    continue
                self.value(v, f"captured variable {var!r} of {where}", h)
        elif isinstance(obj, types.CodeType):
            _code(obj, h, self)
        elif isinstance(obj, functools.partial):
            put(h, b"partial")
            h.update(self.digest(obj.func, where))
            self.value(obj.args, f"a bound argument of {where}", h)
            self.value(obj.keywords, f"a bound argument of {where}", h)
        elif isinstance(obj, types.MethodType):
            put(h, b"method")
            h.update(self.digest(obj.__func__, where))
            self.value(obj.__self__, f"the instance of {where}", h)
        elif isinstance(obj, type):
            put(h, b"class", _module(obj), obj.__qualname__)
            # What constructing and calling it runs (class steps, actors=).
            for attr in ("__init__", "__call__"):
                f = obj.__dict__.get(attr)
                if isinstance(f, types.FunctionType):
                    put(h, b"attr", attr)
                    h.update(self.digest(f, f"{obj.__qualname__}.{attr}"))
        elif isinstance(obj, types.ModuleType):
            put(h, b"module", obj.__name__)
        elif isinstance(obj, _BUILTINS):
            owner = getattr(obj, "__objclass__", None)
            put(h, b"builtin", _module(obj) or _module(owner), _qualname(obj))
            self_ = getattr(obj, "__self__", None)
            if self_ is not None and not isinstance(self_, types.ModuleType):
                self.value(self_, f"the instance of {where}", h)
        else:
            self._instance(obj, where, h)

    def _instance(self, obj: Any, where: str, h: Any) -> None:
        """An object: keyed like an input if it can be; else its class and
        attributes. Its class's __call__ counts when it is itself called."""
        put = _put
        t = type(obj)
        put(h, b"instance", _type_name(obj))
        call = getattr(t, "__call__", None)  # noqa: B004 - the class attribute
        if isinstance(call, types.FunctionType):
            h.update(self.digest(call, f"{t.__qualname__}.__call__"))
        try:
            put(h, b"key", _core.cache_key(obj))
            return
        except TypeError:
            pass
        # Its state must all be visible from Python: a class written in C
        # (a socket, a lock) keeps state no
        # attribute shows.
        if not _state_visible(t):
            # A wrapper written in C (functools.lru_cache, staticmethod):
            # what it wraps.
            wrapped = getattr(obj, "__wrapped__", None)
            if wrapped is not None and callable(wrapped):
                put(h, b"wraps")
                h.update(self.digest(wrapped, where))
                return
            self._itself(obj, where, h)
            return
        d = getattr(obj, "__dict__", None)
        slots = []
        for k in t.__mro__:
            names = k.__dict__.get("__slots__", ())
            for n in (names,) if isinstance(names, str) else names:
                if n not in ("__dict__", "__weakref__"):
                    slots.append(n)
        if not isinstance(d, dict) and not slots:
            self._itself(obj, where, h)
            return
        if isinstance(d, dict):
            names = sorted(d)
            put(h, b"vars", len(names).to_bytes(8, "little"))
            for n in names:
                put(h, b"attr", n)
                self.value(d[n], f"{where}, attribute {n!r}", h)
        for s in slots:
            put(h, b"slot", s)
            try:
                v = getattr(obj, s)
            except AttributeError:
                put(h, b"unset")
                continue
            self.value(v, f"{where}, attribute {s!r}", h)

    @staticmethod
    def _itself(obj: Any, where: str, h: Any) -> None:
        """An object with state Python cannot see: identified as itself."""
        tok = _token(obj)
        if tok is None:
            raise NoIdentity(f"{where} ({_type_name(obj)}) has no stable key")
        _put(h, b"itself", _type_name(obj), str(tok))

    # ---- values: keyed natively when they can be ----

    def value(self, v: Any, where: str, h: Any) -> None:
        """Feeds ``v`` into ``h``: its native key (the input walk), or its
        structure when it holds functions or objects the walk refuses."""
        if v is None or type(v) in (bool, int, float, str, bytes):
            h.update(b"V")
            h.update(_core.cache_key(v))
            return
        t = type(v)
        if t in (tuple, list, dict, set, frozenset):
            try:
                h.update(b"V")
                h.update(_core.cache_key(v))
                return
            except TypeError:
                pass
            h.update(b"C" + t.__name__.encode() + len(v).to_bytes(8, "little"))
            if t in (tuple, list):
                for i, item in enumerate(v):
                    self.value(item, f"{where}[{i}]", h)
            else:
                # Unordered: each item's own hash, sorted.
                items = v.items() if t is dict else ((x, None) for x in v)
                parts = []
                for k, item in items:
                    sub = hashlib.blake2b(digest_size=16)
                    self.value(k, where, sub)
                    if t is dict:
                        self.value(item, f"{where}[{k!r}]", sub)
                    parts.append(sub.digest())
                for p in sorted(parts):
                    h.update(p)
            return
        h.update(b"D")
        h.update(self.digest(v, where))


def _put(h: Any, tag: bytes, *parts: str | bytes) -> None:
    h.update(tag)
    for p in parts:
        b = p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)


def _code(co: types.CodeType, h: Any, w: _Walker) -> None:
    """What a code object does: not its file or line numbers."""
    _put(h, b"code", co.co_name)
    h.update(
        struct.pack("<4q", co.co_argcount, co.co_posonlyargcount, co.co_kwonlyargcount, co.co_flags)
    )
    _put(h, b"bytecode", co.co_code, getattr(co, "co_exceptiontable", b""))
    for group in (co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars):
        h.update(len(group).to_bytes(8, "little"))
        for n in group:
            _put(h, b"n", n)
    h.update(len(co.co_consts).to_bytes(8, "little"))
    for c in co.co_consts:
        _const(c, h, w)


def _const(c: Any, h: Any, w: _Walker) -> None:
    t = type(c)
    if isinstance(c, types.CodeType):
        h.update(b"K")
        h.update(w.digest(c, f"code {c.co_name!r}"))
    elif c is None or c is Ellipsis:
        _put(h, b"k", t.__name__)
    elif t in (bool, int, float, complex):
        _put(h, b"k", t.__name__, repr(c))
    elif t in (str, bytes):
        _put(h, b"k" + t.__name__.encode(), c)
    elif t is tuple:
        h.update(b"k(" + len(c).to_bytes(8, "little"))
        for x in c:
            _const(x, h, w)
    elif t is frozenset:
        parts = []
        for x in c:
            sub = hashlib.blake2b(digest_size=16)
            _const(x, sub, w)
            parts.append(sub.digest())
        h.update(b"k{" + len(c).to_bytes(8, "little"))
        for p in sorted(parts):
            h.update(p)
    else:  # not produced by the compiler; keyed like a value
        w.value(c, "a constant", h)


__all__ = ["NoIdentity", "fingerprint", "function_static", "namespace"]
