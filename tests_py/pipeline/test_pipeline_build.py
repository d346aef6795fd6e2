"""Building pipelines: ``>>`` results are immutable values, and every form
(``>>`` chains, ``Pipeline.parallel``, the constructor with ``depends_on``,
fan-in) builds exactly the graph it always did, whatever the history of the
operands. (How long building takes is measured in
benchmarks/bench_pipeline_build.py, never asserted here.)"""

from __future__ import annotations

import random
import threading

import pytest

from caudal import CircularDependencyError, DuplicateStepError, Pipeline, Step


async def work(x):
    return x


def s(name: str, **kw) -> Step:
    return Step(work, name, **kw)


def graph(p: Pipeline) -> list[tuple[str, list[str]]]:
    deps = p.dependencies()
    return [(n, deps[n]) for n in p.step_names]


# A model of composition, written the plain way (copying whole lists): what
# the graph must be.
def m_of(step: Step) -> list[tuple[str, tuple[str, ...]]]:
    return [(step.name, tuple(step.depends_on))]


def m_sinks(nodes):
    used = {d for _, deps in nodes for d in deps}
    return [n for n, _ in nodes if n not in used]


def m_rshift(left, right):
    sinks = m_sinks(left)
    out = list(left)
    for n, deps in right:
        out.append((n, deps if deps else tuple(dict.fromkeys(sinks))))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise DuplicateStepError("model")
    return out


def m_graph(nodes) -> list[tuple[str, list[str]]]:
    return [(n, list(deps)) for n, deps in nodes]


# ------------------------------------------------------------ immutability


def test_rshift_leaves_its_operands_as_they_were():
    a, b, c, d = s("a"), s("b"), s("c"), s("d")
    p1 = a >> b
    p2 = p1 >> c
    assert p1.step_names == ["a", "b"]
    assert len(p1) == 2
    assert graph(p1) == [("a", []), ("b", ["a"])]
    p3 = p1 >> d  # p1 again, after p2 grew from it
    assert p1.step_names == ["a", "b"]
    assert graph(p2) == [("a", []), ("b", ["a"]), ("c", ["b"])]
    assert graph(p3) == [("a", []), ("b", ["a"]), ("d", ["b"])]
    # The same name in two pipelines grown from one prefix is no duplicate.
    p4 = p1 >> s("c")
    assert graph(p4) == [("a", []), ("b", ["a"]), ("c", ["b"])]
    # Growing each branch further keeps them apart.
    p5 = p2 >> s("e")
    p6 = p3 >> s("e")
    assert graph(p5) == [("a", []), ("b", ["a"]), ("c", ["b"]), ("e", ["c"])]
    assert graph(p6) == [("a", []), ("b", ["a"]), ("d", ["b"]), ("e", ["d"])]
    assert p2.step_names == ["a", "b", "c"]
    assert p1.levels() == [["a"], ["b"]]
    assert p2.levels() == [["a"], ["b"], ["c"]]


def test_a_refused_rshift_changes_nothing():
    a, b = s("a"), s("b")
    p = a >> b
    with pytest.raises(DuplicateStepError):
        p >> (s("c") >> s("a"))
    assert graph(p) == [("a", []), ("b", ["a"])]
    q = p >> s("c")
    assert graph(q) == [("a", []), ("b", ["a"]), ("c", ["b"])]
    with pytest.raises(DuplicateStepError):
        q >> q
    assert graph(q) == [("a", []), ("b", ["a"]), ("c", ["b"])]
    assert graph(q >> s("d")) == [("a", []), ("b", ["a"]), ("c", ["b"]), ("d", ["c"])]


def test_with_name_shares_steps_but_not_growth():
    p = s("a") >> s("b")
    named = p.with_name("other")
    grown = named >> s("c")
    assert (named.name, named.step_names) == ("other", ["a", "b"])
    assert p.step_names == ["a", "b"]
    assert graph(p >> s("d")) == [("a", []), ("b", ["a"]), ("d", ["b"])]
    assert grown.step_names == ["a", "b", "c"]


def test_threads_growing_one_pipeline_each_get_their_own():
    base = s("a") >> s("b")
    results: list[Pipeline] = []
    lock = threading.Lock()

    def grow(k: int) -> None:
        for i in range(200):
            q = base >> s(f"t{k}_{i}")
            with lock:
                results.append(q)

    threads = [threading.Thread(target=grow, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert base.step_names == ["a", "b"]
    for q in results:
        assert len(q) == 3
        name = q.step_names[2]
        assert graph(q) == [("a", []), ("b", ["a"]), (name, ["b"])]


# ------------------------------------------------------- the same graph


def test_random_compositions_build_the_models_graph():
    rng = random.Random(1234)
    for trial in range(300):
        counter = iter(range(10**6))
        pool: list[tuple[Pipeline, list]] = []  # (pipeline, model), reused at random
        for _ in range(rng.randint(1, 12)):
            op = rng.random()
            if op < 0.35 or not pool:
                name = f"n{next(counter)}"
                deps = ()
                if pool and rng.random() < 0.2:
                    # An explicit dependency on a step of an existing pipeline.
                    _, model = rng.choice(pool)
                    deps = (rng.choice(model)[0],)
                st = s(name, depends_on=deps)
                pool.append((Pipeline.of(st), m_of(st)))
            elif op < 0.8:
                (lp, lm), (rp, rm) = rng.choice(pool), rng.choice(pool)
                try:
                    want = m_rshift(lm, rm)
                except DuplicateStepError:
                    with pytest.raises(DuplicateStepError):
                        lp >> rp
                    continue
                got = lp >> rp
                assert graph(got) == m_graph(want), trial
                pool.append((got, want))
            else:
                # A fresh step on the right of an existing pipeline.
                lp, lm = rng.choice(pool)
                st = s(f"n{next(counter)}")
                got, want = lp >> st, m_rshift(lm, m_of(st))
                assert graph(got) == m_graph(want), trial
                pool.append((got, want))
        for p, model in pool:  # nothing changed under an earlier result
            assert graph(p) == m_graph(model), trial
            assert len(p) == len(model)


def test_parallel_then_rshift_wires_every_sink():
    branches = [s(f"b{i}") for i in range(50)]
    p = s("start") >> Pipeline.parallel(*branches) >> s("join")
    deps = p.dependencies()
    assert deps["join"] == [f"b{i}" for i in range(50)]
    assert all(deps[f"b{i}"] == ["start"] for i in range(50))
    assert p.levels() == [["start"], [f"b{i}" for i in range(50)], ["join"]]


def test_forward_dependency_on_the_right_is_not_a_sink():
    # A left step naming a step that only the right side defines.
    left = Pipeline.of(s("x", depends_on=("y",)))
    p = left >> Pipeline.of(s("y", depends_on=("z",))) >> s("z")
    assert graph(p) == [("x", ["y"]), ("y", ["z"]), ("z", ["x"])]
    with pytest.raises(CircularDependencyError):
        p.validate()
    q = Pipeline.of(s("w", depends_on=("v",))) >> Pipeline.parallel(
        s("u", depends_on=("w",)), s("v", depends_on=("u",))
    )
    # w is used by u, v by w: the only sink of q is... none but the right's sinks not
    # named by the left: v is named by w, u by v.
    assert graph(q >> s("t")) == [
        ("w", ["v"]),
        ("u", ["w"]),
        ("v", ["u"]),
        ("t", []),
    ]


def test_fan_in_of_many_keeps_order_and_drops_repeats():
    names = [f"s{i}" for i in range(3000)]
    steps = [s(n) for n in names] + [s("z", depends_on=("s5", "s1"))]
    p = Pipeline(steps, depends_on={"z": [*names, "s1", "s2"]})
    assert p.dependencies()["z"] == ["s5", "s1"] + [n for n in names if n not in ("s5", "s1")]
    assert p.levels() == [names, ["z"]]
    q = Pipeline.parallel(*(s(n) for n in names)) >> s("z")
    assert q.dependencies()["z"] == names


def test_a_long_chain_builds_the_chain():
    n = 10_000
    p = s("c0")
    for i in range(1, n):
        p = p >> s(f"c{i}")
    assert len(p) == n
    deps = p.dependencies()
    assert deps["c0"] == []
    assert all(deps[f"c{i}"] == [f"c{i - 1}"] for i in range(1, n))
    assert len(p.validate().levels()) == n
    q = Pipeline(
        [s(f"c{i}") for i in range(n)], depends_on={f"c{i}": [f"c{i - 1}"] for i in range(1, n)}
    )
    assert q.dependencies() == deps
