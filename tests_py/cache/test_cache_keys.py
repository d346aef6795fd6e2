"""Cache keys: type-exact for subclasses and models, classes told apart beyond
their qualified name, and one visit per distinct object.

The key of a value is `caudal._core.cache_key(value, namespace)`, the key the
executor uses; the rule checked throughout is: two inputs get the same key if
and only if they are equal by `same_value` below (a type-exact deep equality).
"""

import collections
import copy
import dataclasses
import enum
import math
import subprocess
import sys
import textwrap

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caudal import ExecutorCore, OptimizationConfig, Step, _core


def key(value, ns="s"):
    return _core.cache_key(value, ns)


def keyable(value):
    try:
        key(value)
    except TypeError:
        return False
    return True


def cached_executor():
    return ExecutorCore(
        OptimizationConfig(enable_cache_optimization=True, memory_pressure_threshold_mb=1e6)
    )


# ----------------------------------------------------------------- fixtures


class LoudStr(str):
    """A str subclass whose __str__ (and __iter__) hide its data."""

    def __str__(self):
        return "same"

    def __iter__(self):
        return iter("same")


class LyingInt(int):
    def __int__(self):
        return 0

    def __index__(self):
        return 0


class LyingFloat(float):
    def __float__(self):
        return 0.0


class LyingTuple(tuple):
    __slots__ = ()

    def __iter__(self):
        return iter(())


class LyingList(list):
    def __iter__(self):
        return iter(())


class LyingDict(dict):
    def items(self):
        return {}.items()

    def __iter__(self):
        return iter(())


class LyingBytes(bytes):
    def __bytes__(self):
        return b""


class TaggedStr(str):
    """A str subclass with instance attributes."""


class SlottedStr(str):
    __slots__ = ("tag",)


class Model(pydantic.BaseModel):
    text: str
    secret: int = pydantic.Field(default=0, exclude=True)


class Dumped(pydantic.BaseModel):
    """model_dump() maps different values to the same output."""

    n: int

    @pydantic.field_serializer("n")
    def _round(self, n):
        return n // 10


class Inner(pydantic.BaseModel):
    a: int


class OtherInner(pydantic.BaseModel):
    a: int


class Outer(pydantic.BaseModel):
    inner: pydantic.BaseModel


class WithPrivate(pydantic.BaseModel):
    a: int
    _note: str = pydantic.PrivateAttr(default="")

    def with_note(self, note):
        out = self.model_copy()
        out._note = note
        return out


@pydantic.dataclasses.dataclass(slots=True)
class PydanticDataclass:
    a: int
    b: int = pydantic.Field(default=0, exclude=True)


class Proxy:
    """Answers every attribute lookup, __caudal_key__ included."""

    def __init__(self, v):
        self.v = v

    def __getattr__(self, name):
        return lambda: "same"


def make_point_class(with_field_y=False):
    # Factory-made dataclasses: every call returns a new class with the same
    # module and qualified name.
    if with_field_y:

        @dataclasses.dataclass
        class Point:
            x: int
            y: int = 0

    else:

        @dataclasses.dataclass
        class Point:
            x: int

    return Point


# ------------------------------------------------------ the collisions, keys


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (LoudStr("a"), LoudStr("b")),
        (LyingInt(1), LyingInt(2)),
        (LyingInt(2**70), LyingInt(2**71)),
        (LyingFloat(1.5), LyingFloat(2.5)),
        (LyingTuple((1,)), LyingTuple((2,))),
        (LyingList([1]), LyingList([2])),
        (LyingDict(a=1), LyingDict(a=2)),
        (LyingBytes(b"a"), LyingBytes(b"b")),
        (LoudStr("a"), "a"),
        (LyingInt(1), 1),
        (LyingList([1]), [1]),
        (Model(text="a", secret=1), Model(text="a", secret=2)),
        (Dumped(n=11), Dumped(n=12)),
        (Outer(inner=Inner(a=1)), Outer(inner=OtherInner(a=1))),
        (PydanticDataclass(1, 2), PydanticDataclass(1, 3)),
        (WithPrivate(a=1), WithPrivate(a=1).with_note("x")),
        (collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1)),
        (collections.defaultdict(int, a=1), collections.defaultdict(list, a=1)),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unequal_values_get_distinct_keys(a, b):
    assert key(a) != key(b)


def test_instance_attributes_of_builtin_subclasses_are_keyed():
    a, b = TaggedStr("x"), TaggedStr("x")
    a.tag, b.tag = 1, 2
    assert key(a) != key(b)
    b.tag = 1
    assert key(a) == key(b)
    s1, s2 = SlottedStr("x"), SlottedStr("x")
    s1.tag, s2.tag = 1, 2
    assert key(s1) != key(s2)
    s2.tag = 1
    assert key(s1) == key(s2)
    assert key(SlottedStr("x")) != key(s1)  # an unset slot is not a value


def test_equal_subclass_values_share_a_key():
    assert key(LoudStr("a")) == key(LoudStr("a"))
    assert key(LyingInt(2**70)) == key(LyingInt(2**70))
    assert key(Model(text="a", secret=1)) == key(Model(text="a", secret=1))
    assert key(Outer(inner=Inner(a=1))) == key(Outer(inner=Inner(a=1)))


def test_hook_is_looked_up_on_the_type_not_through_getattr():
    with pytest.raises(TypeError, match="no stable key"):
        key(Proxy(1))


class Flags(enum.Flag):
    A = 1
    B = 2
    C = 4


def test_enum_members_and_flag_combinations_are_distinct():
    assert key(Flags.A | Flags.B) != key(Flags.A | Flags.C)
    assert key(Flags.A | Flags.B) == key(Flags.B | Flags.A)
    assert key(Flags.A) != key(Flags.B)


def test_factory_made_classes_with_the_same_qualname_never_share_a_key():
    P1, P2 = make_point_class(), make_point_class()
    assert P1.__qualname__ == P2.__qualname__ and P1.__module__ == P2.__module__
    assert P1 is not P2
    # Identical definitions: once both have been met alive, both are refused
    # (whichever came first), never given one key.
    keyable(P1(1))
    for cls in (P2, P1):
        with pytest.raises(TypeError, match="another live class has the same module"):
            key(cls(1))
    # A different definition under the same name is a different class, and
    # stays keyable.
    Q = make_point_class(with_field_y=True)
    assert keyable(Q(1)) and key(Q(1)) == key(Q(1))


async def test_factory_made_classes_through_the_executor():
    ex = cached_executor()
    P1, P2 = make_point_class(), make_point_class()

    async def which(p):
        return type(p) is P1

    step = Step(which, "which")
    first = await ex.execute(step, P1(1))
    second = await ex.execute(step, P2(1))
    assert first.output is True
    assert second.output is False and not second.cache_hit
    reasons = ex.get_optimization_stats()["cache"]["uncacheable_reasons"]
    assert any("another live class" in r for r in reasons), reasons


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (LoudStr("a"), LoudStr("b")),
        (LyingInt(1), LyingInt(2)),
        (Model(text="a", secret=1), Model(text="a", secret=2)),
    ],
    ids=lambda v: type(v).__name__,
)
async def test_collisions_through_the_executor(a, b):
    ex = cached_executor()

    async def echo(x):
        if isinstance(x, pydantic.BaseModel):
            return x.secret
        if isinstance(x, int):
            return int.__add__(x, 0)
        return str.__add__(x, "")

    step = Step(echo, "echo")
    ra = await ex.execute(step, a)
    rb = await ex.execute(step, b)
    assert ra.output != rb.output and not rb.cache_hit


_CLASS_KEY_SCRIPT = textwrap.dedent(
    """
    import dataclasses, enum, pydantic
    from caudal import _core

    @dataclasses.dataclass
    class Query:
        text: str
        k: int

    class M(pydantic.BaseModel):
        a: int

    class Color(enum.Enum):
        RED = 1

    class S(str):
        pass

    print(_core.cache_key([Query("a", 1), M(a=1), Color.RED, S("x")], "n").hex())
    """
)


def test_class_keys_are_stable_across_processes():
    outs = [
        subprocess.run(
            [sys.executable, "-c", _CLASS_KEY_SCRIPT],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    assert outs[0] == outs[1] and len(outs[0].strip()) == 32


# ------------------------------------------------------- shared references


def shared_tower(depth, leaf=0):
    x = leaf
    for _ in range(depth):
        x = [x, x]
    return x


def copied_tower(depth, leaf=0):
    if depth == 0:
        return leaf
    return [copied_tower(depth - 1, leaf), copied_tower(depth - 1, leaf)]


def test_shared_references_key_like_copies():
    assert key(shared_tower(10)) == key(copied_tower(10))
    assert key(shared_tower(10, "leaf")) == key(copied_tower(10, "leaf"))
    assert key(shared_tower(10)) != key(shared_tower(10, 1))
    a = {"k": [1, 2, {"x": (3, 4)}]}
    assert key([a, a]) == key([a, copy.deepcopy(a)])
    assert key((a, [a, {"in": a}])) == key(copy.deepcopy((a, [a, {"in": a}])))
    t = tuple(range(300))  # large enough to be summarised by a digest
    assert key([t, t, [t]]) == key([t, tuple(t), [tuple(list(t))]])
    assert key({"a": t, "b": t}) == key({"b": tuple(t), "a": t})
    s = frozenset(range(50))
    assert key([s, s]) == key([s, frozenset(range(50))])
    big = "x" * 5000
    assert key([big, big, (big,)]) == key(["x" * 5000, "x" * 5000, ("x" * 5000,)])
    many = [[i, str(i)] for i in range(40)]  # more shared objects than fit inline
    assert key(many + many[::-1]) == key(copy.deepcopy(many) + copy.deepcopy(many[::-1]))
    assert key(many + many) != key(many + many[::-1])


def nest(value, depth):
    for _ in range(depth):
        value = [value]
    return value


def test_the_depth_limit_holds_for_shared_values():
    a = nest(0, 10)
    ok = nest(a, 50)  # a's leaf at depth 61: within the limit
    assert key([a, ok]) == key([nest(0, 10), ok])
    too_deep = nest(a, 56)  # a's leaf at depth 67
    for value in ([a, too_deep], [nest(0, 10), too_deep]):
        with pytest.raises(TypeError, match="nested too deeply"):
            key(value)


def test_a_deep_shared_tower_keys_quickly():
    # 2**40 paths, 41 distinct objects: one visit each.
    code = textwrap.dedent(
        """
        from caudal import _core
        x = 0
        for _ in range(40):
            x = [x, x]
        k1 = _core.cache_key(x, "n")
        y = {"a": 0}
        for _ in range(15):  # 4**15 paths
            y = {"l": y, "r": y, "t": (y, [y])}
        k2 = _core.cache_key(y, "n")
        print(k1.hex(), k2.hex())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert len(out.stdout.split()) == 2


def test_cycles_stay_unkeyable():
    a = [1]
    a.append(a)
    with pytest.raises(TypeError, match="cannot key"):
        key(a)
    d = {}
    d["self"] = [d]
    with pytest.raises(TypeError, match="cannot key"):
        key(d)


# ---------------------------------------------------- property: key == model


class PStr(str):
    def __str__(self):
        return "p"


class PInt(int):
    def __int__(self):
        return 0


@dataclasses.dataclass
class DC:
    a: object
    b: object = None


class PM(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    a: object
    hidden: object = pydantic.Field(default=None, exclude=True)


def same_value(a, b):
    """Type-exact deep equality: the reference model of key equality."""
    if type(a) is not type(b):
        return False
    t = type(a)
    if t is float or t is PFloat:
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b
    if t in (type(None), bool, int, str, bytes):
        return a == b
    if t is PStr:
        return str.__eq__(a, b) and vars(a) == vars(b)
    if t is PInt:
        return int.__eq__(a, b) and vars(a) == vars(b)
    if t in (list, tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if t is dict:
        return len(a) == len(b) and all(
            any(same_value(ka, kb) and same_value(va, vb) for kb, vb in b.items())
            for ka, va in a.items()
        )
    if t in (set, frozenset):
        return len(a) == len(b) and all(any(same_value(x, y) for y in b) for x in a)
    if t is DC:
        return same_value(a.a, b.a) and same_value(a.b, b.b)
    if t is PM:
        return same_value(a.a, b.a) and same_value(a.hidden, b.hidden)
    raise AssertionError(f"no reference rule for {t}")


class PFloat(float):
    pass


floats = st.sampled_from([0.0, -0.0, 1.0, float("nan"), float("inf"), -1.5])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([2**64, -(2**64), 2**63]),
    floats,
    st.sampled_from(["", "a", "ab", "b"]),
    st.sampled_from([b"", b"a", b"ab"]),
    st.sampled_from(["a", "b"]).map(PStr),
    st.integers(0, 2).map(PInt),
    floats.map(PFloat),
)
hashables = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["a", "b", b"a"])),
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
    max_leaves=4,
)


def containers(inner):
    return st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(hashables, inner, max_size=3),
        st.frozensets(hashables, max_size=3),
        st.sets(hashables, max_size=3),
        st.builds(DC, inner, inner),
        st.builds(lambda a, h: PM(a=a, hidden=h), inner, inner),
        # shared references
        inner.map(lambda x: [x, x]),
    )


values = st.recursive(scalars, containers, max_leaves=12)


def rebuilt(v):
    """An equal value made of fresh objects, dicts and sets in another order."""
    t = type(v)
    if t is list:
        return [rebuilt(x) for x in v]
    if t is tuple:
        return tuple(rebuilt(x) for x in v)
    if t is dict:
        return {k: rebuilt(x) for k, x in reversed(list(v.items()))}
    if t in (set, frozenset):
        return t(reversed(list(v)))
    if t is DC:
        return DC(rebuilt(v.a), rebuilt(v.b))
    if t is PM:
        return PM(a=rebuilt(v.a), hidden=rebuilt(v.hidden))
    if t is float and v == 0.0:
        return -v if math.copysign(1, v) > 0 else 0.0
    if t is float and math.isnan(v):
        return float("nan")
    if t in (PStr, PInt, PFloat):
        return t(v)
    return v


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, values, st.booleans())
def test_key_equality_matches_the_reference_model(a, b, derive):
    if derive:
        b = rebuilt(a)
    assert (key(a) == key(b)) == same_value(a, b), (a, b)


class KeysInside:
    """A hook that computes a key itself (to summarise a large attribute)."""

    def __init__(self, v):
        self.v = v

    def __caudal_key__(self):
        return _core.cache_key(self.v, "inner")


def test_a_hook_may_compute_keys_itself():
    assert key([1, KeysInside([1, 2])]) != key([2, KeysInside([1, 2])])
    assert key([1, KeysInside([1, 2])]) == key([1, KeysInside([1, 2])])
    assert key([1, KeysInside([1, 2])]) != key([1, KeysInside([1, 3])])


def make_record_class():
    @dataclasses.dataclass
    class Record:
        x: int

    return Record


def test_a_class_whose_twin_was_freed_takes_over_its_key():
    import gc

    first = make_record_class()
    k = key(first(1))
    del first
    gc.collect()
    second = make_record_class()
    assert key(second(1)) == k  # as after a module reload


# ------------------------------------------------------------ long strings

# Long non-ASCII strings are keyed from their storage (Latin-1, UCS-2 or
# UCS-4 code units) rather than their UTF-8 encoding: the same rule, equal
# strings share a key and nothing else does.
_LONG = {
    "latin1": "é" * 5000,
    "ucs2": "€" * 5000,
    "ucs4": "😀" * 5000,
    "ascii": "x" * 20000,
}


class _LongStr(str):
    pass


@pytest.mark.parametrize("kind", list(_LONG))
def test_a_long_str_keys_by_its_code_points(kind):
    s = _LONG[kind]
    same = "".join(list(s))  # an equal, separately built str
    assert same is not s and key(same) == key(s)
    changed = s[:2500] + ("a" if s[2500] != "a" else "b") + s[2501:]
    assert key(changed) != key(s)
    assert key(s[:-1]) != key(s)
    assert key(s) != key(s.encode("utf-8"))
    if kind != "ascii":  # (ASCII is its own UTF-8)
        assert key(s) != key(s.encode("utf-8").decode("latin-1"))
    assert key(_LongStr(s)) != key(s) and key(_LongStr(s)) == key(_LongStr(same))


def test_long_strings_of_every_width_are_distinct():
    values = [
        *_LONG.values(),
        *(v[:-1] + "!" for v in _LONG.values()),
        "é" * 2500 + "€",  # UCS-2 because of its last character
        "é" * 2501,
        "\ud800" * 3000,  # lone surrogates
        "\udc00" * 3000,
    ]
    keys = {key(v) for v in values}
    assert len(keys) == len(values)


def test_a_str_narrowed_by_slicing_keys_like_one_built_narrow():
    # CPython stores a str in the narrowest width its code points allow, so
    # a slice of a UCS-2 string without its wide character is Latin-1 again.
    wide = "€" + "é" * 5000
    assert key(wide[1:]) == key("é" * 5000)
    assert key(wide[1:]) != key(wide)


def test_keying_a_long_str_does_not_attach_a_utf8_copy():
    s = "€" * 100_000
    before = sys.getsizeof(s)
    key(s)
    assert sys.getsizeof(s) == before  # no UTF-8 copy kept on the str
