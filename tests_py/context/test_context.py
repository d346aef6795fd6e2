"""caudal.Context: one suite run against the native type and the pure-Python
reference (PyContext), like immutables' BaseMapTest as CMapTest/PyMapTest;
hypothesis op sequences against a dict model; reference counts, memory,
cycles; merge_branches and as_context."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import sys
import tracemalloc
import weakref
from collections.abc import ItemsView, KeysView, Mapping, Set, ValuesView

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import caudal
from caudal import Context, ContextConflictError, ContextMutation, as_context, merge_branches
from caudal.context import MISSING, PyContext, PyContextMutation

# Under `make test-asan` (instrumented module) big loops are slower and RSS
# includes ASan's quarantine: sizes shrink there and RSS is not asserted.
UNDER_ASAN = bool(os.environ.get("CAUDAL_EXPECT_CORE"))


# Every behavioural test takes the implementation as the fixture `C` and runs
# once per implementation; a test that applies to one of them only says why.
IMPLEMENTATIONS = pytest.mark.parametrize("impl", [Context, PyContext], ids=["native", "python"])


@pytest.fixture(params=[Context, PyContext], ids=["native", "python"])
def C(request):
    return request.param


def check(ctx):
    ctx._check_invariants()
    return ctx


class Collide:
    """A key whose hash is chosen (to force collisions); equal by `v`."""

    def __init__(self, v, h=7):
        self.v, self.h = v, h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        if not isinstance(other, Collide):
            return NotImplemented
        return self.v == other.v

    def __repr__(self):
        return f"Collide({self.v!r})"


class HashRaises:
    def __hash__(self):
        raise ZeroDivisionError("hash boom")


class EqRaises:
    """Hashes like 7 (same as Collide's default); comparing raises."""

    def __hash__(self):
        return 7

    def __eq__(self, other):
        if other is self:
            return True
        raise ValueError("eq boom")


# ----------------------------------------------------------- construction


def test_construction_forms(C):
    assert len(C()) == 0
    assert C({"a": 1}).to_dict() == {"a": 1}
    assert C(a=1, b=2).to_dict() == {"a": 1, "b": 2}
    assert C([("a", 1), ("b", 2)]).to_dict() == {"a": 1, "b": 2}
    assert C({"a": 1, "b": 2}, b=3).to_dict() == {"a": 1, "b": 3}
    assert C(C(a=1), b=2).to_dict() == {"a": 1, "b": 2}
    other = PyContext if C is Context else Context
    assert C(other(a=1)).to_dict() == {"a": 1}
    ctx = C(a=1)
    assert C(ctx) is ctx  # immutable: no copy
    with pytest.raises(TypeError):
        C(1)
    with pytest.raises(TypeError):
        C({}, {})


def test_is_a_mapping(C):
    ctx = C(a=1)
    assert isinstance(ctx, Mapping)
    match ctx:
        case {"a": 1}:
            matched = True
        case _:
            matched = False
    assert matched


def test_mapping_interface(C):
    ctx = C({"a": 1, 2: "two", (3, 4): None})
    assert ctx["a"] == 1 and ctx[2] == "two" and ctx[(3, 4)] is None
    with pytest.raises(KeyError) as e:
        ctx["zz"]
    assert e.value.args == ("zz",)
    with pytest.raises(KeyError) as e:
        ctx[(9, 9)]
    assert e.value.args == ((9, 9),)  # a tuple key is not unpacked
    assert ctx.get("a") == 1 and ctx.get("zz") is None and ctx.get("zz", 5) == 5
    assert "a" in ctx and "zz" not in ctx
    assert len(ctx) == 3 and bool(ctx) and not bool(C())
    assert set(ctx) == {"a", 2, (3, 4)}
    assert set(ctx.keys()) == {"a", 2, (3, 4)}
    assert sorted(map(repr, ctx.values())) == sorted(map(repr, [1, "two", None]))
    assert set(ctx.items()) == {("a", 1), (2, "two"), ((3, 4), None)}
    assert len(ctx.keys()) == len(ctx.values()) == len(ctx.items()) == 3
    assert "a" in ctx.keys() and 1 in ctx.values() and ("a", 1) in ctx.items()
    assert ("a", 2) not in ctx.items() and "x" not in ctx.items()
    assert dict(ctx) == {"a": 1, 2: "two", (3, 4): None}
    # equal keys of different types are one key, as in a dict
    assert C({1: "x"})[1.0] == "x" and True in C({1: "x"})


def test_iteration_length_hint_and_independence(C):
    ctx = C({i: i for i in range(50)})
    it = iter(ctx)
    next(it)
    assert sum(1 for _ in it) == 49
    items = iter(ctx.items())
    derived = ctx.set(1000, 1)  # iterating an old version is unaffected
    assert len(list(items)) == 50
    assert len(derived) == 51


def test_attribute_access(C):
    ctx = C(user_id=42, set="a key named set", __weird__=1, _private=2)
    assert ctx.user_id == 42
    assert ctx._private == 2
    assert callable(ctx.set)  # methods win over keys...
    assert ctx["set"] == "a key named set"  # ...which stay reachable by item
    with pytest.raises(AttributeError):
        ctx.__weird__  # noqa: B018 - dunder names never read keys
    with pytest.raises(AttributeError, match="missing"):
        ctx.missing  # noqa: B018
    assert getattr(ctx, "missing", "dflt") == "dflt"
    assert not hasattr(ctx, "__deepcopy__")
    with pytest.raises(AttributeError, match="immutable"):
        ctx.user_id = 1
    with pytest.raises(AttributeError, match="immutable"):
        ctx.new = 1
    with pytest.raises(AttributeError, match="immutable"):
        del ctx.user_id
    assert ctx.user_id == 42


# --------------------------------------------------------------- versions


def test_set_delete_update_return_new_versions(C):
    a = C(x=1)
    b = a.set("y", 2)
    assert a.to_dict() == {"x": 1} and b.to_dict() == {"x": 1, "y": 2}
    c = b.delete("x")
    assert c.to_dict() == {"y": 2} and b.to_dict() == {"x": 1, "y": 2}
    with pytest.raises(KeyError):
        c.delete("x")
    d = c.update({"z": 3}, y=5)
    assert d.to_dict() == {"y": 5, "z": 3} and c.to_dict() == {"y": 2}
    assert c.update([("w", 0)]).to_dict() == {"y": 2, "w": 0}
    assert c.update(C(q=1)).to_dict() == {"y": 2, "q": 1}
    v = object()
    e = a.set("v", v)
    assert e.set("v", v) is e  # the very same value: same version
    assert e.update(v=v) is e and e.update() is e
    assert e.set("v", object()) is not e
    assert a.snapshot() is a
    assert copy.copy(a) is a


def test_old_versions_are_unchanged(C):
    versions = [C()]
    models = [{}]
    for i in range(300):
        model = dict(models[-1])
        if i % 4 == 3 and model:
            k = next(iter(model))
            versions.append(versions[-1].delete(k))
            del model[k]
        else:
            versions.append(versions[-1].set(i % 97, i))
            model[i % 97] = i
        models.append(model)
    for ctx, model in zip(versions, models, strict=True):
        assert check(ctx) == model
        assert ctx.to_dict() == model


def test_mutation(C):
    base = C(a=1, b=2, c=3)
    m = base.mutate()
    assert isinstance(m, ContextMutation if C is Context else PyContextMutation)
    m["d"] = 4
    m.set("e", 5)
    del m["a"]
    m.delete("b")
    assert m.pop("c") == 3 and m.pop("zz", None) is None
    with pytest.raises(KeyError):
        m.pop("zz")
    with pytest.raises(KeyError):
        del m["zz"]
    m.update({"f": 6}, g=7)
    assert len(m) == 4 and "d" in m and m["d"] == 4 and m.get("a", 0) == 0
    with pytest.raises(KeyError):
        m["a"]
    m._check_invariants()
    assert repr(m).startswith(f"{type(m).__name__}({{") and "'g': 7" in repr(m)
    new = m.finish()
    assert check(new).to_dict() == {"d": 4, "e": 5, "f": 6, "g": 7}
    assert base.to_dict() == {"a": 1, "b": 2, "c": 3}
    assert m.finish() == new  # finish again: same contents
    for write in (
        lambda: m.__setitem__("x", 1),
        lambda: m.__delitem__("d"),
        lambda: m.set("x", 1),
        lambda: m.update(x=1),
        lambda: m.pop("d"),
    ):
        with pytest.raises(ValueError, match="finished"):
            write()
    assert m["d"] == 4  # reads still work
    with base.mutate() as m2:
        m2["z"] = 26
    assert m2.finish().to_dict() == {"a": 1, "b": 2, "c": 3, "z": 26}
    with pytest.raises(TypeError):
        hash(base.mutate())


def test_to_dict_is_a_copy(C):
    ctx = C(a=1)
    d = ctx.to_dict()
    d["b"] = 2
    assert "b" not in ctx


# ------------------------------------------------- equality, hash, repr


def test_equality(C):
    other = PyContext if C is Context else Context
    a = C({"a": 1, "b": [1, 2]})
    assert a == C({"b": [1, 2], "a": 1})
    assert a == {"a": 1, "b": [1, 2]} and {"a": 1, "b": [1, 2]} == a
    assert a == other({"a": 1, "b": [1, 2]}) and other({"a": 1, "b": [1, 2]}) == a
    assert a != C({"a": 1, "b": [1, 3]}) and a != {"a": 1}
    assert a != C({"a": 1, "c": [1, 2]})
    assert not (a != C({"a": 1, "b": [1, 2]}))
    assert a != [("a", 1)] and a != "a"
    nan = float("nan")
    assert C(x=nan) == C(x=nan)  # identity first, as dicts do
    big = C({i: str(i) for i in range(2000)})
    assert big.set(5, "5!") != big and big.set(5, "5!").set(5, "5") == big


def test_equality_errors_propagate(C):
    class Bad:
        def __eq__(self, other):
            raise ValueError("value eq boom")

        __hash__ = object.__hash__

    with pytest.raises(ValueError, match="value eq boom"):
        C(a=Bad()) == C(a=Bad())  # noqa: B015
    with pytest.raises(ValueError, match="value eq boom"):
        C(a=Bad()) == {"a": Bad()}  # noqa: B015


def test_hash(C):
    a, b = C(a=1, b="x"), C(b="x", a=1)
    assert hash(a) == hash(b)
    assert hash(a) == hash(a)  # cached
    assert hash(Context(a=1, b="x")) == hash(PyContext(a=1, b="x"))
    assert hash(C()) == hash(Context()) == hash(PyContext())
    assert hash(C(a=1)) != hash(C(a=2))
    assert {a: "found"}[b] == "found"
    with pytest.raises(TypeError):
        hash(C(a=[]))


def test_repr(C):
    name = C.__name__
    assert repr(C()) == f"{name}({{}})"
    assert repr(C(a=1)) == f"{name}({{'a': 1}})"
    box = []
    ctx = C(box=box)
    box.append(ctx)
    assert repr(ctx) == f"{name}({{'box': [{name}({{...}})]}})"
    assert repr(C(a=1).keys()) in ("context_keys(['a'])", "dict_keys(['a'])")


def test_pickle_and_deepcopy(C):
    ctx = C({"a": [1, 2], 3: {"nested": C(x=1)}})
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(ctx, proto))
        assert type(back) is C and back == ctx
    deep = copy.deepcopy(ctx)
    assert deep == ctx and deep["a"] is not ctx["a"]
    assert C[str, int] is not None  # generic alias for annotations


def test_views_are_sets(C):
    # Mapping.keys() and items() are sets (collections.abc.KeysView,
    # ItemsView), as a dict's are.
    ctx = C(a=1, b=2)
    assert ctx.keys() == {"a", "b"} and ctx.items() == {("a", 1), ("b", 2)}
    assert ctx.keys() != {"a"} and ctx.keys() == {"a": 0, "b": 0}.keys()
    assert ctx.keys() & {"a", "z"} == {"a"} and ctx.keys() - {"a"} == {"b"}
    assert {"a", "z"} - ctx.keys() == {"z"} and ctx.keys() ^ {"a", "z"} == {"b", "z"}
    assert ctx.items() | {("c", 3)} == {("a", 1), ("b", 2), ("c", 3)}
    assert ctx.keys().isdisjoint({"z"}) and not ctx.keys().isdisjoint({"a"})
    assert ctx.keys() < {"a", "b", "c"} and ctx.keys() <= {"a", "b"} and not ctx.keys() > {"a", "b"}
    assert isinstance(ctx.keys(), KeysView) and isinstance(ctx.items(), ItemsView)
    assert isinstance(ctx.values(), ValuesView) and not isinstance(ctx.values(), Set)
    assert ctx.values() != [1, 2]  # values are not a set (nor a sequence), as a dict's


def test_what_contexts_do_not_do(C):
    ctx = C(a=1)
    with pytest.raises(TypeError):
        reversed(ctx)  # unordered
    with pytest.raises(TypeError):
        ctx.get("a", default=0)  # positional only, as dict.get
    with pytest.raises(TypeError):
        ctx.set(key="b", value=2)
    with pytest.raises(TypeError):
        ctx.delete(key="a")
    m = ctx.mutate()
    with pytest.raises(TypeError):
        iter(m)  # a mutation is a write buffer, not a mapping to walk
    with pytest.raises(TypeError):
        m.get("a", default=0)
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(m)
    with pytest.raises(TypeError, match="pickle"):
        copy.copy(m)
    with pytest.raises(AttributeError, match="no attribute or key '__a__'"):
        C(__a__=1).__a__  # noqa: B018


# ---------------------------------------------------------- awkward keys


def test_colliding_hashes(C):
    keys = [Collide(i) for i in range(300)]
    ctx = C()
    for i, k in enumerate(keys):
        ctx = ctx.set(k, i)
    check(ctx)
    assert len(ctx) == 300 and all(ctx[Collide(i)] == i for i in range(300))
    assert Collide(300) not in ctx
    # collisions mixed with ordinary keys, and deep shared hash prefixes
    mixed = C({**{Collide(i, h=i % 3): i for i in range(60)}, **{i: -i for i in range(60)}})
    check(mixed)
    assert mixed[Collide(5, h=2)] == 5 and mixed[5] == -5
    for i in range(0, 300, 2):
        ctx = ctx.delete(Collide(i))
    check(ctx)
    assert len(ctx) == 150 and ctx == {Collide(i): i for i in range(1, 300, 2)}
    m = ctx.mutate()
    for i in range(1, 300, 2):
        del m[Collide(i)]
    m._check_invariants()
    assert len(check(m.finish())) == 0


def test_hash_errors_propagate_and_change_nothing(C):
    ctx = C(a=1)
    bad = HashRaises()
    for op in (
        lambda: ctx[bad],
        lambda: bad in ctx,
        lambda: ctx.get(bad),
        lambda: ctx.set(bad, 1),
        lambda: ctx.delete(bad),
        lambda: ctx.update({bad: 1}),
        lambda: C({bad: 1}),
    ):
        with pytest.raises(ZeroDivisionError, match="hash boom"):
            op()
    m = ctx.mutate()
    with pytest.raises(ZeroDivisionError):
        m[bad] = 1
    assert m.finish() == {"a": 1} and ctx == {"a": 1}


def test_eq_errors_propagate_and_change_nothing(C):
    ctx = C({Collide(1): "one", "a": 1})  # EqRaises collides with Collide(1)
    probe = EqRaises()
    for op in (
        lambda: ctx[probe],
        lambda: probe in ctx,
        lambda: ctx.get(probe),
        lambda: ctx.set(probe, 1),
        lambda: ctx.delete(probe),
        lambda: ctx.update({probe: 1}),
    ):
        with pytest.raises(ValueError, match="eq boom"):
            op()
    m = ctx.mutate()
    m["b"] = 2
    with pytest.raises(ValueError, match="eq boom"):
        m[probe] = 1
    with pytest.raises(ValueError, match="eq boom"):
        del m[probe]
    m._check_invariants()
    assert m.finish() == {Collide(1): "one", "a": 1, "b": 2}
    assert check(ctx) == {Collide(1): "one", "a": 1}


def test_mutation_refuses_changes_from_its_own_key_comparison(C):
    # A key's __eq__ running in the middle of a mutation's operation cannot
    # change or finish that mutation (natively, it would edit nodes in use).
    m = C({Collide(1): 1}).mutate()

    class Meddler(Collide):
        def __eq__(self, other):
            m["meddled"] = True
            return False

        __hash__ = Collide.__hash__

    with pytest.raises(RuntimeError, match="comparing keys"):
        m[Meddler(2)] = 2
    with pytest.raises(RuntimeError, match="comparing keys"):
        Meddler(3) in m  # noqa: B015
    with pytest.raises(RuntimeError, match="comparing keys"):
        del m[Meddler(4)]
    assert "meddled" not in m and len(m) == 1
    m._check_invariants()

    class Finisher(Collide):
        def __eq__(self, other):
            m.finish()
            return False

        __hash__ = Collide.__hash__

    with pytest.raises(RuntimeError, match="finished while"):
        m.get(Finisher(5))

    class Reader(Collide):
        def __eq__(self, other):
            m.get("absent")
            len(m)
            return False

        __hash__ = Collide.__hash__

    m[Reader(6)] = 6  # reads may nest
    assert len(m) == 2 and m.get(Collide(1)) == 1
    # A value's __del__ runs after the edit is complete and may use the
    # mutation.
    log = []

    class Noisy:
        def __del__(self):
            m["after_del"] = len(log)
            log.append(1)

    m["n"] = Noisy()
    m["n"] = 0  # drops the Noisy
    assert log == [1] and m["after_del"] == 0
    m._check_invariants()


# ------------------------------------------------------------- hypothesis

keys = st.one_of(
    st.integers(-30, 30),
    st.sampled_from(["a", "b", "user_id", "x"]),
    st.builds(Collide, st.integers(0, 6), st.integers(0, 2)),
)
values = st.one_of(st.integers(), st.none(), st.text(max_size=3))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("update"), st.dictionaries(keys, values, max_size=4)),
        st.tuples(
            st.just("mutate"),
            st.lists(st.tuples(st.sampled_from(["set", "del", "pop"]), keys, values), max_size=8),
        ),
        st.tuples(st.just("get"), keys),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
@IMPLEMENTATIONS  # hypothesis refuses function-scoped fixtures such as C
def test_random_operations_match_a_dict(impl, ops):
    ctx, model = impl(), {}
    history = [(ctx, dict(model))]
    for op in ops:
        kind = op[0]
        if kind == "set":
            ctx = ctx.set(op[1], op[2])
            model[op[1]] = op[2]
        elif kind == "delete":
            if op[1] in model:
                ctx = ctx.delete(op[1])
                del model[op[1]]
            else:
                with pytest.raises(KeyError):
                    ctx.delete(op[1])
        elif kind == "update":
            ctx = ctx.update(op[1])
            model.update(op[1])
        elif kind == "mutate":
            m = ctx.mutate()
            for sub, k, v in op[1]:
                if sub == "set":
                    m[k] = v
                    model[k] = v
                elif sub == "del":
                    if k in model:
                        del m[k]
                        del model[k]
                    else:
                        with pytest.raises(KeyError):
                            del m[k]
                else:
                    assert m.pop(k, "dflt") == model.pop(k, "dflt")
                assert len(m) == len(model)
            m._check_invariants()
            ctx = m.finish()
        else:
            assert ctx.get(op[1], "dflt") == model.get(op[1], "dflt")
        assert len(ctx) == len(model)
        history.append((ctx, dict(model)))
    for version, expected in history:
        check(version)
        assert version == expected
        assert version.to_dict() == expected
        assert hash(version) == hash(PyContext(expected))


@settings(max_examples=100, deadline=None)
@given(
    base=st.dictionaries(keys, values, max_size=40),
    edits=st.lists(st.lists(st.tuples(keys, st.one_of(values, st.just(MISSING))), max_size=6)),
)
def test_diff_matches_python_reference(base, edits):
    native, ref = Context(base), PyContext(base)
    for edit in edits:
        n, r = native, ref
        for k, v in edit:
            if v is MISSING:
                if k in n:
                    n, r = n.delete(k), r.delete(k)
            else:
                n, r = n.set(k, v), r.set(k, v)
        got = {(repr(k), repr(a), repr(b)) for k, a, b in n._diff(native, MISSING)}
        want = {(repr(k), repr(a), repr(b)) for k, a, b in r._diff(ref, MISSING)}
        assert got == want


# ----------------------------------------------- references and memory


def test_reference_counts_are_balanced(C):
    key, value, other = "leak-key-" + str(id(C)), object(), object()
    before = (sys.getrefcount(key), sys.getrefcount(value), sys.getrefcount(other))
    ctxs = []
    for i in range(200):
        c = C({key: value, i: other})
        c = c.set(key, other).set(key, value).update({i + 1000: value})
        c = c.delete(i + 1000)
        m = c.mutate()
        m[key] = other
        m[key] = value
        m[i + 2000] = value
        del m[i + 2000]
        assert m.pop(i) is other
        c = m.finish()
        list(c.items())
        _ = c == {key: value}
        hash(C({key: 1}))
        ctxs.append(c)
    assert sys.getrefcount(value) > before[1]
    del ctxs, c, m
    gc.collect()
    assert (sys.getrefcount(key), sys.getrefcount(value), sys.getrefcount(other)) == before


def test_reference_counts_after_errors(C):
    value = object()
    before = sys.getrefcount(value)
    ctx = C({Collide(1): value})
    for _ in range(50):
        with pytest.raises(ValueError):
            ctx.set(EqRaises(), value)
        with pytest.raises(ZeroDivisionError):
            ctx.set(HashRaises(), value)
        m = ctx.mutate()
        with pytest.raises(ValueError):
            m[EqRaises()] = value
        m.finish()
    del ctx, m
    gc.collect()
    assert sys.getrefcount(value) == before


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_million_set_delete_cycles_keep_memory_flat(C):
    # PyContext copies its 1000 entries on every change: fewer cycles.
    n = (200_000 if UNDER_ASAN else 1_000_000) if C is Context else 50_000
    base = C({f"k{i}": i for i in range(1000)})
    value = object()

    def cycles(count):
        ctx = base
        for i in range(count):
            ctx = ctx.set("hot", value)
            ctx = ctx.delete("hot") if i % 2 else ctx.set(f"k{i % 1000}", i)
        return ctx

    cycles(50_000)  # warm the allocator
    gc.collect()
    rss0 = _rss_bytes()
    last = cycles(n)
    gc.collect()
    grown = _rss_bytes() - rss0
    assert len(last) in (1000, 1001)
    if not UNDER_ASAN:
        assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes over {n} cycles"


def test_set_delete_cycles_allocate_nothing_lasting(C):
    base = C({i: i for i in range(500)})
    m_base = base.mutate()

    def work():
        ctx = base
        for i in range(2_000):
            ctx = ctx.set(("t", i % 50), i).delete(("t", i % 50))
            m = ctx.mutate()
            m[i % 600] = str(i)
            ctx = m.finish()
        return len(ctx)

    work()
    gc.collect()
    tracemalloc.start()
    try:
        work()
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            work()
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert second - first < 64 * 1024, f"traced memory grew by {second - first} bytes"
    del m_base


# -------------------------------------------------------------- GC cycles


class Node:
    pass


@pytest.mark.parametrize("size", [1, 50, 5000])
def test_cycle_through_a_context_is_collected(C, size):
    obj = Node()
    ctx = C({i: i for i in range(size)}).set("obj", obj)
    obj.ctx = ctx
    probe = weakref.ref(obj)
    del obj, ctx
    gc.collect()
    assert probe() is None


def test_cycle_through_versions_sharing_structure_is_collected(C):
    obj = Node()
    base = C({i: i for i in range(3000)}).set("obj", obj)
    derived = [base.set(i, -i) for i in range(0, 3000, 100)]  # share obj's node
    obj.versions = [base, *derived]
    probe = weakref.ref(obj)
    del obj, base, derived
    gc.collect()
    assert probe() is None


def test_shared_structure_keeps_live_objects_alive(C):
    # The version in the cycle shares its nodes with a version that lives:
    # the cycle is garbage, but nothing the live version holds may be
    # collected or cleared.
    payload = ["payload"]
    obj = Node()
    obj.payload = payload
    live = C({i: i for i in range(3000)}).set("obj", obj)
    doomed = live.set(1, "changed")
    holder = Node()
    holder.ctx = doomed
    doomed_holder = live.set("holder", holder)
    holder.self_ref = doomed_holder
    del doomed, holder, doomed_holder
    gc.collect()
    assert live["obj"] is obj and obj.payload == ["payload"] and payload == ["payload"]
    check(live)


def test_cycles_through_mutations_iterators_and_keys_are_collected(C):
    probes = []
    obj = Node()
    m = C(a=1).mutate()
    m["obj"] = obj
    obj.m = m
    probes.append(weakref.ref(obj))
    obj2 = Node()
    ctx2 = C(obj=obj2)
    obj2.it = iter(ctx2.items())
    probes.append(weakref.ref(obj2))
    key = Node()
    ctx3 = C({key: 1})
    key.ctx = ctx3
    probes.append(weakref.ref(key))
    del obj, m, obj2, ctx2, key, ctx3
    gc.collect()
    assert [p() for p in probes] == [None, None, None]


def test_deeply_nested_contexts_deallocate(C):
    ctx = C()
    for i in range(100_000):
        ctx = C(inner=ctx, i=i)
    del ctx  # the trashcan keeps this from overflowing the C stack
    gc.collect()


# ------------------------------------------------------------ adapters


def test_as_context():
    ctx = Context(a=1)
    assert as_context(ctx) is ctx
    assert as_context(None) == Context()
    assert as_context({"a": 1}) == ctx and type(as_context({"a": 1})) is Context
    assert as_context(PyContext(a=1)) == ctx
    import pydantic  # installed by requirements-dev.txt

    class Inner(pydantic.BaseModel):
        x: int = 1

    class Model(pydantic.BaseModel):
        user_id: str
        tags: list[str] = []
        inner: Inner = Inner()

    m = Model(user_id="u1", tags=["a"])
    c = as_context(m)
    assert type(c) is Context
    assert c.user_id == "u1" and c.tags == ["a"] and c.inner == {"x": 1}
    assert Model.model_validate(c.set("user_id", "u2").to_dict()).user_id == "u2"
    with pytest.raises(TypeError, match="cannot make a Context from int"):
        as_context(3)


def test_merge_without_conflicts(C):
    base = C({"a": 1, "b": 2, "c": 3})
    b1 = base.set("a", 10).delete("c")
    b2 = base.set("d", 4)
    b3 = base.set("b", 2)  # unchanged
    b4 = base.set("b", int("2"))  # an equal value is not a change
    merged = merge_branches(base, [b1, b2, b3, b4])
    assert type(merged) is C
    assert check(merged) == {"a": 10, "b": 2, "d": 4}
    assert merge_branches(base, []) is base
    # several branches writing equal values agree
    same = merge_branches(base, [base.set("a", [1]), base.set("a", [1])])
    assert same["a"] == [1]
    # branches given as plain dicts are diffed against the base too
    assert merge_branches(base, [{"a": 1, "b": 2, "c": 3, "e": 5}]) == {**base, "e": 5}
    assert merge_branches({"a": 1}, [{"a": 2}]) == {"a": 2}


def test_merge_conflicts_are_reported(C):
    base = C({"a": 1, "b": 2, "c": 3})
    branches = [base.set("a", 10), base.set("a", 20).set("b", 0), base.delete("b"), base]
    with pytest.raises(ContextConflictError) as e:
        merge_branches(base, branches)
    assert e.value.conflicts == {"a": [0, 1], "b": [1, 2]}
    assert "'a' (branches 0, 1)" in str(e.value) and isinstance(e.value, caudal.CaudalError)
    assert pickle.loads(pickle.dumps(e.value)).conflicts == e.value.conflicts
    named = {"left": base.set("c", 1), "right": base.set("c", 2)}
    with pytest.raises(ContextConflictError) as e:
        merge_branches(base, named)
    assert e.value.conflicts == {"c": ["left", "right"]}


def test_merge_policies(C):
    base = C({"a": 1, "b": 2})
    branches = [
        base.set("a", 10),
        base.set("a", 20),
        base.delete("b").set("a", 30),
        base.set("b", 5),
    ]
    lww = merge_branches(base, branches, policy="last_writer_wins")
    assert lww == {"a": 30, "b": 5}
    seen = []

    def resolve(key, base_value, values):
        seen.append((key, base_value, values))
        if key == "b":
            return MISSING  # delete
        return sum(values)

    merged = merge_branches(base, branches, policy=resolve)
    assert merged == {"a": 60}
    assert sorted(seen, key=repr) == [("a", 1, [10, 20, 30]), ("b", 2, [MISSING, 5])]
    new_key = merge_branches(
        base, [base.set("n", 1), base.set("n", 2)], policy=lambda k, b, v: (b, v)
    )
    assert new_key["n"] == (MISSING, [1, 2])
    with pytest.raises(ValueError, match="policy"):
        merge_branches(base, branches, policy="first")


def test_merge_of_large_contexts_sees_only_the_changes(C):
    # Native branches derived from the base are diffed in O(changes); the
    # Python reference compares every entry, with the same result.
    base = C({i: i for i in range(50_000)})
    branches = [base.set(i, -i) for i in range(1, 6)] + [base.delete(10), base.set("new", 1)]
    merged = merge_branches(base, branches)
    assert len(merged) == 50_000
    assert merged[3] == -3 and 10 not in merged and merged["new"] == 1
    assert len(branches[0]._diff(base, MISSING)) == 1


def test_exports():
    assert caudal.Context is Context and caudal.ContextMutation is ContextMutation
    assert caudal.merge_branches is merge_branches and caudal.ContextConflictError
    assert issubclass(ContextConflictError, caudal.CaudalError)
    assert isinstance(Context(), Mapping) and isinstance(PyContext(), Mapping)
