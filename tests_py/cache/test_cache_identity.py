"""Cache identity: a step's cached results belong to what runs (the function,
a partial's bound arguments, a bound method's instance, a closure's captured
values, a YAML step's uses:/with:), not to its name alone; and the step
shapes that only look like they work are refused with what to pass instead."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import threading
import types
import uuid

import pytest

from caudal import ExecutorCore, OptimizationConfig, Step, _identity, load_pipeline
from caudal._steps import analyse


def cached_executor(**kw):
    kw.setdefault("memory_pressure_threshold_mb", 1e6)
    return ExecutorCore(OptimizationConfig(enable_cache_optimization=True, **kw))


async def outputs(*steps, data=1):
    """Each step's (output, cache_hit) run once, in order, in one executor."""
    ex = cached_executor()
    out = []
    for s in steps:
        r = await ex.execute(s, data)
        assert r.success, r.error
        out.append((r.output, r.cache_hit))
    await ex.aclose()
    return out


def ns(step):
    """(namespace, reason) of a step, as the executor computes it when the
    step is first executed with caching on."""
    a = analyse(step)
    if a.identity_of is not None:
        return _identity.namespace(a.name, a.identity_of, None)
    return a.cache_ns, a.uncacheable


# ---- different things that share a default name do not share results ----


async def test_lambdas_do_not_share():
    got = await outputs(Step(lambda x: x + 1), Step(lambda x: x * 10), data=5)
    assert got == [(6, False), (50, False)]


def scale(x, k):
    return x * k


async def test_partials_with_different_bound_args_do_not_share():
    a, b = functools.partial(scale, k=2), functools.partial(scale, k=3)
    got = await outputs(Step(a), Step(b), Step(functools.partial(scale, k=2)), data=5)
    # The third is another partial object with the same bound args: it shares.
    assert got == [(10, False), (15, False), (10, True)]


def make_adder(n):
    async def add(x):
        return x + n

    return add


async def test_closures_from_one_factory_do_not_share():
    got = await outputs(Step(make_adder(1)), Step(make_adder(2)), Step(make_adder(1)))
    assert got == [(2, False), (3, False), (2, True)]


class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    async def run(self, x):
        return f"{self.greeting} {x}"


async def test_bound_methods_of_two_instances_do_not_share():
    hi, hello = Greeter("hi"), Greeter("hello")
    got = await outputs(Step(hi.run), Step(hello.run), Step(hi.run), data="ada")
    assert got == [("hi ada", False), ("hello ada", False), ("hi ada", True)]
    # Agents (objects with run()) passed as themselves: the same rule.
    got = await outputs(Greeter("hi"), Greeter("hello"), data="ada")
    assert got == [("hi ada", False), ("hello ada", False)]


def module_from(name, source):
    mod = types.ModuleType(name)
    exec(textwrap.dedent(source), mod.__dict__)
    return mod


async def test_same_qualname_in_two_modules_does_not_share():
    m1 = module_from("ident_m1", "async def work(x):\n    return ('m1', x)\n")
    m2 = module_from("ident_m2", "async def work(x):\n    return ('m1', x)\n")
    got = await outputs(Step(m1.work), Step(m2.work))
    assert got == [(("m1", 1), False), (("m1", 1), False)]


async def test_redefined_function_with_another_body_does_not_share():
    m = types.ModuleType("ident_redef")
    exec("async def work(x):\n    return x + 1\n", m.__dict__)
    first = m.work
    exec("async def work(x):\n    return x + 2\n", m.__dict__)
    got = await outputs(Step(first), Step(m.work))
    assert got == [(2, False), (3, False)]


async def test_same_function_shares():
    async def work(x):
        return [x]

    # The same function in two Step objects, and passed bare, twice.
    got = await outputs(Step(work), Step(work), work, work)
    assert got == [([1], False), ([1], True), ([1], True), ([1], True)]
    # Re-created from the same code with equal captured values: shares too.
    assert ns(Step(make_adder(7))) == ns(Step(make_adder(7)))


class Base:
    def run(self, x):
        return x


class Child(Base):
    def __init__(self, k):
        self.k = k

    def run(self, x):  # super() captures the class in a cell: a cycle
        return (super().run(x), self.k)


def make_countdown(tag):
    def down(n):  # refers to itself through its own cell
        return tag if n == 0 else down(n - 1)

    return down


class Scaled:
    def __init__(self, w):
        self.w = w

    def __call__(self, x):
        return x * self.w


def test_identity_of_cycles_and_classes():
    assert ns(Step(Child(1).run)) == ns(Step(Child(1).run))
    assert ns(Step(Child(1).run)) != ns(Step(Child(2).run))
    assert ns(Step(make_countdown("a"))) == ns(Step(make_countdown("a")))
    assert ns(Step(make_countdown("a"))) != ns(Step(make_countdown("b")))
    # A class step (actors=): its set-up arguments count.
    two = Step(functools.partial(Scaled, 2), "scaled", actors=1)
    three = Step(functools.partial(Scaled, 3), "scaled", actors=1)
    assert ns(two)[0] is not None and ns(two) != ns(three)


async def test_the_name_still_separates_steps():
    # Same function, two names: two steps (invalidate_prefix is by name).
    async def work(x):
        return x

    got = await outputs(Step(work, "a"), Step(work, "b"))
    assert got == [(1, False), (1, False)]


async def test_invalidate_prefix_still_works_by_name():
    calls = []

    async def work(x):
        calls.append(x)
        return x

    ex = cached_executor()
    s = Step(work, "w")
    await ex.execute(s, 1)
    assert (await ex.execute(s, 1)).cache_hit
    assert await ex.invalidate_prefix("w") == 1
    assert not (await ex.execute(s, 1)).cache_hit
    assert calls == [1, 1]


# ---- the namespace is stable across processes ----

STABLE_MODULE = """
import functools

CONSTS = {"a": 1}

def helper(x):
    return x

def work(x, k=3, *, opts=frozenset({"alpha", "beta", "gamma"})):
    def inner(y):
        return {"tags": {"x", "y", "z"}, "v": 1.5, "y": y}
    return inner(x), k, opts

def make(tag, table):
    def made(x):
        return (tag, table, x)
    return made

class Agent:
    def __init__(self, model, params):
        self.model = model
        self.params = params

    async def run(self, x):
        return (self.model, x)

STEPS = {
    "plain": work,
    "partial": functools.partial(work, k=5, opts=frozenset({"q", "r", "s"})),
    "closure": make("t", {"b": [1, 2], "a": {"c", "d"}}),
    "method": Agent("m1", {"temperature": 0.5, "stop": ["a", "b"]}).run,
    "lambda": lambda x: (x, {"p", "q"}),
}
"""

PRINT_NAMESPACES = """
import json, sys
sys.path.insert(0, sys.argv[1])
import stable_steps
from caudal import Step
from caudal._identity import namespace
from caudal._steps import analyse
def ns(step):
    a = analyse(step)
    return namespace(a.name, a.identity_of, None)[0]
print(json.dumps({k: ns(Step(v)) for k, v in stable_steps.STEPS.items()}))
"""


def test_namespace_is_stable_across_processes(tmp_path):
    (tmp_path / "stable_steps.py").write_text(STABLE_MODULE)
    seen = []
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", PRINT_NAMESPACES, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        seen.append(out.strip().splitlines()[-1])
    assert seen[0] == seen[1] == seen[2]
    import json

    names = json.loads(seen[0])
    assert all(isinstance(v, str) for v in names.values())
    assert len(set(names.values())) == len(names)


# ---- where identity cannot be established ----


async def test_a_captured_client_is_identified_as_itself():
    # What users write: a step closing over an HTTP client (whose state,
    # a lock among it, Python cannot see). It is cached, and two steps over
    # two clients (production, staging) never share results.
    import httpx

    def make(base_url):
        client = httpx.AsyncClient(base_url=base_url)

        async def get(x):
            return (str(client.base_url), x)

        return get, client

    prod, c1 = make("https://prod.example")
    staging, c2 = make("https://staging.example")
    ex = cached_executor()
    r1 = await ex.execute(Step(prod, "get"), 1)
    r2 = await ex.execute(Step(staging, "get"), 1)
    r3 = await ex.execute(Step(prod, "get"), 1)
    assert r1.output[0] != r2.output[0] and not r2.cache_hit
    assert r3.cache_hit and r3.output == r1.output
    assert ex.get_optimization_stats()["cache"]["uncacheable_steps"] == {}
    await c1.aclose()
    await c2.aclose()
    await ex.aclose()


def test_an_object_identified_as_itself_never_lends_its_token_on():
    # Tokens come from a counter, never from id(): a new lock at a dead
    # lock's address gets a new token.
    seen = set()
    for _ in range(200):
        lock = threading.Lock()
        seen.add(_identity.namespace("s", (lambda lk: lambda x: lk)(lock), None)[0])
        del lock
    assert len(seen) == 200


async def test_unkeyable_closure_is_not_cached_and_stats_say_why():
    import itertools

    counter = itertools.count()  # C state, and no weak references: no token
    calls = []

    async def guarded(x):
        calls.append(next(counter))
        return x

    ex = cached_executor()
    s = Step(guarded)
    r1 = await ex.execute(s, 1)
    r2 = await ex.execute(s, 1)
    assert r1.success and r2.success and not r2.cache_hit
    assert calls == [0, 1]
    stats = ex.get_optimization_stats()
    reason = stats["cache"]["uncacheable_steps"]["guarded"]
    assert "count" in reason and "cache_key" in reason
    assert stats["execution"]["steps"]["guarded"]["uncacheable"] == 2
    # A cacheable step is not listed.
    await ex.execute(Step(make_adder(1)), 1)
    assert list(ex.get_optimization_stats()["cache"]["uncacheable_steps"]) == ["guarded"]
    await ex.aclose()


class Holder:
    def __init__(self, thing):
        self.thing = thing

    async def run(self, x):
        return x


class Items(dict):
    pass


def test_state_kept_in_c_is_identified_as_the_object_itself():
    import itertools
    import socket

    with socket.socket() as a, socket.socket() as b:
        # A socket is itself: the same one, the same namespace; two, two.
        assert ns(Step(Holder(a).run))[0] is not None
        assert ns(Step(Holder(a).run)) == ns(Step(Holder(a).run))
        assert ns(Step(Holder(a).run)) != ns(Step(Holder(b).run))
    # Without weak references there is no safe token: no identity.
    cache_ns, why = ns(Step(Holder(itertools.count()).run))
    assert cache_ns is None and "attribute 'thing' (itertools.count) has no stable key" in why
    # A dict subclass is keyed type-exactly, its items included.
    assert ns(Step(Holder(Items(a=1)).run))[0] is not None
    assert ns(Step(Holder(Items(a=1)).run)) != ns(Step(Holder(Items(a=2)).run))
    assert ns(Step(Holder(Items(a=1)).run)) != ns(Step(Holder({"a": 1}).run))
    # A wrapper written in C is identified by what it wraps.
    assert ns(Step(functools.lru_cache(scale)))[0] is not None
    assert ns(Step(functools.lru_cache(scale))) != ns(Step(functools.lru_cache(greet), "scale"))
    # Plain attributes, slots and SimpleNamespace are state caudal can see.
    assert ns(Step(Holder(types.SimpleNamespace(a=1)).run))[0] is not None
    assert ns(Step(Holder({"a": [1, 2]}).run)) != ns(Step(Holder({"a": [1, 3]}).run))


class Touchy:
    """An attribute lookup that raises something else than AttributeError."""

    def __init__(self):
        self.x = 1

    def __getattribute__(self, name):
        if name == "__dict__":
            raise RuntimeError("no peeking")
        return object.__getattribute__(self, name)

    async def run(self, data):
        return data


async def test_fingerprinting_that_raises_leaves_the_step_uncached():
    ex = cached_executor()
    r = await ex.execute(Touchy(), 1)
    assert r.success and r.output == 1
    why = ex.get_optimization_stats()["cache"]["uncacheable_steps"]["Touchy"]
    assert "RuntimeError: no peeking" in why
    await ex.aclose()


async def test_cache_key_names_the_namespace():
    lock = threading.Lock()
    calls = []

    async def guarded(x):
        with lock:
            calls.append(x)
        return x

    ex = cached_executor()
    s = Step(guarded, cache_key="guarded-v1")
    await ex.execute(s, 1)
    assert (await ex.execute(s, 1)).cache_hit
    # Another closure under the same name and key shares it: the user said so.
    assert (await ex.execute(Step(guarded, cache_key="guarded-v1"), 1)).cache_hit
    assert not (await ex.execute(Step(guarded, cache_key="guarded-v2"), 1)).cache_hit
    assert calls == [1, 1]
    assert ex.get_optimization_stats()["cache"]["uncacheable_steps"] == {}
    assert Step(guarded, cache_key="k").replace(max_retries=1).cache_key == "k"
    with pytest.raises(TypeError, match="cache_key"):
        Step(guarded, cache_key="")
    await ex.aclose()


# ---- computed once, when the step is first executed with caching on ----


@pytest.fixture
def identity_calls(monkeypatch):
    """What was fingerprinted: the qualified name of each step whose
    identity was computed, once per computation."""
    calls = []

    class Counting(_identity._Walker):
        __slots__ = ()

        def __init__(self, root):
            calls.append(root.rsplit(".", 1)[-1])
            super().__init__(root)

    monkeypatch.setattr(_identity, "_Walker", Counting)
    return calls


async def test_identity_is_not_computed_while_the_cache_is_off(identity_calls):
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
    for i in range(3):
        assert (await ex.execute(lambda x: x + 1, i)).output == i + 1
    await ex.execute(Step(make_adder(1), "adder"), 1)
    await ex.aclose()
    # A step that opts out in a cached executor.
    ex = cached_executor()
    await ex.execute(Step(make_adder(1), "never", cache=False), 1)
    assert not (await ex.execute(Step(make_adder(1), "never", cache=False), 1)).cache_hit
    # A step that names its namespace needs no fingerprint either.
    await ex.execute(Step(make_adder(1), "named", cache_key="v1"), 1)
    assert (await ex.execute(Step(make_adder(1), "named", cache_key="v1"), 1)).cache_hit
    assert identity_calls == []
    # With the cache on: once per step object, not per execution.
    s = Step(make_adder(1), "once")
    for _ in range(3):
        await ex.execute(s, 1)
    assert identity_calls == ["add"]
    await ex.aclose()


async def test_identity_is_computed_when_caching_is_turned_on(identity_calls):
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
    plus, times = Step(lambda x: x + 1), Step(lambda x: x * 10)
    assert [(await ex.execute(s, 5)).output for s in (plus, times)] == [6, 50]
    assert identity_calls == []
    await ex.apply_optimization_config(
        OptimizationConfig(enable_cache_optimization=True, memory_pressure_threshold_mb=1e6)
    )
    got = []
    for s in (plus, times, plus, times):
        r = await ex.execute(s, 5)
        got.append((r.output, r.cache_hit))
    # Analysed while the cache was off, the two lambdas still do not share.
    assert got == [(6, False), (50, False), (6, True), (50, True)]
    assert identity_calls == ["<lambda>", "<lambda>"]
    # An unkeyable closure analysed with the cache off: uncached, with why.
    import itertools

    counter = itertools.count()

    async def guarded(x):
        next(counter)
        return x

    await ex.apply_optimization_config(OptimizationConfig(enable_cache_optimization=False))
    s = Step(guarded)
    await ex.execute(s, 1)
    assert "guarded" not in ex.get_optimization_stats()["cache"]["uncacheable_steps"]
    await ex.apply_optimization_config(
        OptimizationConfig(enable_cache_optimization=True, memory_pressure_threshold_mb=1e6)
    )
    assert not (await ex.execute(s, 1)).cache_hit
    assert not (await ex.execute(s, 1)).cache_hit
    why = ex.get_optimization_stats()["cache"]["uncacheable_steps"]["guarded"]
    assert "itertools.count" in why and "cache_key" in why
    await ex.aclose()


async def test_identity_entry_point_that_raises_leaves_the_step_uncached(monkeypatch):
    def broken(name, fn, cache_key):
        raise RuntimeError("identity unavailable")

    monkeypatch.setattr(_identity, "namespace", broken)
    ex = cached_executor()
    s = Step(make_adder(1), "adder")
    for _ in range(2):
        r = await ex.execute(s, 1)
        assert r.success and r.output == 2 and not r.cache_hit
    why = ex.get_optimization_stats()["cache"]["uncacheable_steps"]["adder"]
    assert "RuntimeError: identity unavailable" in why and "cache_key" in why
    await ex.aclose()


# ---- YAML: uses: and with: are part of the namespace ----

GREET_YAML = """
steps:
  - name: greet
    uses: greet
    cache: true
    with: {{greeting: {greeting}}}
"""


async def greet(x, greeting):
    return f"{greeting}, {x}"


async def test_yaml_with_parameters_are_part_of_the_key():
    reg = {"greet": greet}
    hi = load_pipeline(GREET_YAML.format(greeting="hi"), reg)
    hello = load_pipeline(GREET_YAML.format(greeting="hello"), reg)
    ex = cached_executor()
    r1 = await hi.run("ada", executor=ex, store=False)
    r2 = await hello.run("ada", executor=ex, store=False)
    assert (r1.result, r2.result) == ("hi, ada", "hello, ada")
    # The same pipeline again: a hit.
    r3 = await load_pipeline(GREET_YAML.format(greeting="hi"), reg).run(
        "ada", executor=ex, store=False
    )
    assert r3.result == "hi, ada" and r3.steps["greet"].cache_hit
    await ex.aclose()


async def test_yaml_with_parameters_through_a_shared_redis_tier(redis_server):
    from caudal.integrations.redis import RedisCacheTier

    prefix = f"id{uuid.uuid4().hex[:8]}:"

    def executor():
        tier = RedisCacheTier(redis_server, prefix=prefix, op_timeout_s=2)
        return ExecutorCore(OptimizationConfig(enable_cache_optimization=True), cache_l2=tier)

    def pipeline(greeting):
        return load_pipeline(GREET_YAML.format(greeting=greeting), {"greet": greet})

    a, b, c = executor(), executor(), executor()
    r = await pipeline("hi").run("ada", executor=a, store=False)
    assert r.result == "hi, ada"
    await a.flush()
    # Another process, in effect (it shares only the Redis tier).
    r = await pipeline("hello").run("ada", executor=b, store=False)
    assert r.result == "hello, ada" and not r.steps["greet"].cache_hit
    r = await pipeline("hi").run("ada", executor=c, store=False)
    assert r.result == "hi, ada" and r.steps["greet"].cache_hit
    for ex in (a, b, c):
        await ex.aclose()


GREET_REGISTRY = """
import os

async def greet(x, greeting):
    return f"{greeting}, {x} (pid {os.getpid()})"

REGISTRY = {"greet": greet}
"""


def test_yaml_with_parameters_across_caudal_run_processes(redis_server, tmp_path):
    (tmp_path / "greetreg.py").write_text(GREET_REGISTRY)
    for g in ("hi", "hello"):
        (tmp_path / f"{g}.yaml").write_text(GREET_YAML.format(greeting=g))
    env = {k: v for k, v in os.environ.items() if k != "CAUDAL_STORE"}

    def run(greeting):
        args = [f"{greeting}.yaml", "--registry", "greetreg:REGISTRY", "--input", '"ada"']
        args += ["--cache-redis", redis_server[: -len("/0")] + "/5", "--store", "runs.db"]
        proc = subprocess.run(
            [sys.executable, "-m", "caudal.cli", "run", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("result: ")]
        return line

    assert "hi, ada" in run("hi")
    # Not the "hi" the first process cached. (That the same step is shared
    # across processes is shown by test_namespace_is_stable_across_processes
    # and the shared-tier test above: the command's 50 ms Redis timeout makes
    # a hit here depend on the machine's load.)
    assert "hello, ada" in run("hello")


# ---- step shapes that are refused, saying what to pass instead ----


def gen_step(x):
    yield x


async def agen_step(x):
    yield x


class Plain:
    def __init__(self, x=None):
        self.x = x


class WithRun:
    async def run(self, data):
        return data


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (gen_step, "generator functions are not steps"),
        (agen_step, "generator functions are not steps"),
        (functools.partial(gen_step), "generator functions are not steps"),
        (Plain, r"pass an instance"),
        (WithRun, r"pass an instance: Step\(WithRun\(\)\)"),
    ],
)
async def test_refused_at_analysis(target, message):
    with pytest.raises(TypeError, match=message):
        Step(target)
    ex = ExecutorCore()
    with pytest.raises(TypeError, match=message):
        await ex.execute(target, 1)
    await ex.aclose()


def test_generator_object_is_refused():
    with pytest.raises(TypeError, match="got a generator object; generators are not steps"):
        Step(gen_step(1))


def test_refused_as_a_fallback_too():
    with pytest.raises(TypeError, match=r"Step 'main': fallback: WithRun is a class"):
        Step(scale, "main", fallback=WithRun)
    with pytest.raises(TypeError, match="fallback: gen_step is a generator function"):
        Step(scale, "main", fallback=gen_step)


async def test_agent_with_generator_run_is_refused():
    class GenAgent:
        def run(self, data):
            yield data

    with pytest.raises(TypeError, match="generator functions are not steps"):
        await ExecutorCore().execute(GenAgent(), 1)


async def test_coroutine_object_error_says_pass_the_function():
    async def fetch(x=None):
        return x

    coro = fetch()
    with pytest.raises(
        TypeError, match=r"pass the function itself: Step\(fetch\), not Step\(fetch\(\)\)"
    ):
        Step(coro)
    coro = fetch()
    with pytest.raises(TypeError, match=r"pass the function itself"):
        await ExecutorCore().execute(coro, 1)


async def test_builtin_types_and_classes_with_actors_are_still_steps():
    assert (await ExecutorCore().execute(Step(str), 5)).output == "5"

    class Model:
        def __init__(self):
            self.w = 2

        def __call__(self, x):
            return x * self.w

    assert (await ExecutorCore().execute(Step(Model, actors=1), 4)).output == 8
