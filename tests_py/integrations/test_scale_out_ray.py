"""Scale-out on Ray (docs/scale-out.md): steps whose attempts run as Ray
tasks or on Ray actors, with the executor's machinery in the driver.

One local Ray cluster for the module (2 CPUs, loopback, no dashboard),
started by the fixture below and shut down after: the tests' own, also when
the machine runs another (`ray start`, RAY_ADDRESS). The step functions live
in tests_py/_ray_steps.py, which the workers import by name.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time

import pytest

import _ray_steps as rs
import caudal
from _ray_env import ray_test_env
from caudal import (
    BackendUnavailableError,
    ExecutorCore,
    PipelineDefinitionError,
    RemoteWorkerDiedError,
    RetryStrategy,
    Step,
    StepTimeoutError,
    load_pipeline,
)
from caudal.integrations.ray import release_actors


def _wait_for(predicate, what: str, timeout_s: float = 30.0) -> None:
    """Poll for a worker's trace (not a timing assertion: the deadline only
    turns a hang into a failure)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout_s:g} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    setup_dir = tmp_path_factory.mktemp("actor-setup")
    # Workers find _ray_steps, and the actor tests' folder in the env var.
    with ray_test_env(CAUDAL_TEST_SETUP_DIR=str(setup_dir)):
        import ray

        ray.init(
            # A cluster of the tests' own, whatever runs on this machine:
            # without "local", ray.init() joins a cluster started with
            # `ray start` (or named by RAY_ADDRESS) and refuses num_cpus.
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
            namespace="caudal-tests",
        )
        try:
            assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
            yield setup_dir
        finally:
            ray.shutdown()


# ---------------------------------------------------------- no Ray needed


class _FakeContext:
    gcs_address = ""


class _FakeRay:
    """What the lost-cluster watch asks of Ray: where the GCS is."""

    def __init__(self, address: str) -> None:
        self.context = _FakeContext()
        self.context.gcs_address = address

    def is_initialized(self) -> bool:
        return True

    def get_runtime_context(self) -> _FakeContext:
        return self.context


async def test_the_cluster_watch_follows_a_new_ray_session():
    """After ray.shutdown() and ray.init() of another cluster in the same
    event loop, the watch probes the new GCS, not the old one."""
    from _servers import free_port
    from caudal.integrations._ray_watch import _ClusterWatch

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        live = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        ray = _FakeRay(f"127.0.0.1:{free_port()}")  # nothing listens: gone
        watch = _ClusterWatch(ray, lost_after_s=5.0)
        assert not await watch._probe()
        ray.context.gcs_address = live  # a new session
        assert await watch._probe()


async def test_an_old_failure_does_not_make_a_new_burst_lost():
    """The watch measures an outage from its first failed probe since it
    started watching; a failure left from an earlier burst of attempts
    does not end a new one at its first failed probe."""
    from _servers import free_port
    from caudal.integrations._ray_watch import _ClusterWatch

    watch = _ClusterWatch(_FakeRay(f"127.0.0.1:{free_port()}"), lost_after_s=5.0)
    watch._failing_since = time.monotonic() - 100  # from an earlier burst
    attempt = asyncio.create_task(asyncio.sleep(0.5))
    watch.enter(attempt)
    await asyncio.sleep(0.2)  # the first probe has failed by now
    assert not attempt.cancelled() and not watch.lost
    watch.leave(attempt)
    await attempt


def test_step_backend_keywords_are_checked():
    f = rs.where
    s = Step(f, "embed", backend="ray", num_cpus=0.5, num_gpus=0, resources={"db": 1}, actors=2)
    assert (s.backend, s.num_cpus, s.num_gpus, s.resources, s.actors) == (
        "ray",
        0.5,
        0,
        {"db": 1},
        2,
    )
    assert repr(s) == (
        "Step('embed', backend='ray', num_cpus=0.5, num_gpus=0, resources={'db': 1}, actors=2)"
    )
    assert s.replace(max_retries=1).backend == "ray"
    assert s.replace(backend=None, actors=None).actors is None
    assert caudal.step(backend="ray", num_cpus=2)(f).num_cpus == 2
    for kw, message in [
        ({"backend": "dask"}, "Step 'where': backend must be 'local', 'ray' or None, got 'dask'"),
        ({"backend": "ray", "num_cpus": -1}, "Step 'where': num_cpus must be a number >= 0"),
        ({"num_gpus": True}, "Step 'where': num_gpus must be a number >= 0"),
        ({"resources": {"CPU": 1}}, "give 'CPU' with num_cpus=, not resources="),
        ({"resources": {"db": "x"}}, "Step 'where': resources['db'] must be a number >= 0"),
        ({"resources": [("db", 1)]}, "Step 'where': resources must map Ray resource names"),
        ({"actors": 0}, "Step 'where': actors must be an int >= 1 or None, got 0"),
        (
            {"backend": "local", "num_cpus": 1, "actors": 2},
            "Step 'where': num_cpus, actors apply only to backend='ray' "
            "(this step has backend='local')",
        ),
    ]:
        with pytest.raises((TypeError, ValueError)) as info:
            Step(f, **kw)
        assert message in str(info.value), (kw, str(info.value))
    with pytest.raises(ValueError, match="ExecutorCore: backend must be 'local', 'ray' or None"):
        ExecutorCore(backend="remote")


async def test_without_ray_asking_for_it_says_how_to_install(monkeypatch):
    ready = Step(rs.where, backend="ray")  # made while Ray is importable
    # The absence of the package, not a stand-in for the feature: `import ray`
    # fails as it does where Ray is not installed.
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendUnavailableError) as info:
        Step(rs.where, backend="ray")
    assert isinstance(info.value, ImportError)
    assert str(info.value) == (
        "Step 'where': backend='ray' needs Ray, which is not installed in this environment; "
        "install it with: pip install 'caudal[ray]'"
    )
    with pytest.raises(
        BackendUnavailableError, match=r"ExecutorCore: .*pip install 'caudal\[ray\]'"
    ):
        ExecutorCore(backend="ray")
    with pytest.raises(
        BackendUnavailableError, match=r"step 'where': .*pip install 'caudal\[ray\]'"
    ):
        await ExecutorCore().execute(ready, None)
    # Local steps do not need Ray.
    assert (await ExecutorCore().execute(Step(rs.where), None)).output == os.getpid()
    # A YAML step says where it asks for Ray, and is the same ImportError.
    from caudal import load_pipeline
    from caudal.errors import PipelineBackendUnavailableError, PipelineDefinitionError

    yaml_text = "steps:\n  - name: w\n    uses: where\n    backend: ray\n"
    with pytest.raises(BackendUnavailableError) as info:
        load_pipeline(yaml_text, {"where": rs.where})
    err = info.value
    assert isinstance(err, PipelineBackendUnavailableError)
    assert isinstance(err, PipelineDefinitionError) and isinstance(err, ImportError)
    assert err.problems == [
        "<string>:4: steps[0].backend: this pipeline: backend='ray' needs Ray, which is not "
        "installed in this environment; install it with: pip install 'caudal[ray]'"
    ]


async def test_actor_class_runs_locally_with_one_set_up(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUDAL_TEST_SETUP_DIR", str(tmp_path))
    ex = ExecutorCore()
    step = Step(rs.Embedder, actors=2)  # backend follows the executor: local
    results = await asyncio.gather(*(ex.execute(step, i) for i in range(5)))
    assert [r.output for r in results] == [(i * 10, os.getpid()) for i in range(5)]
    assert [p.name for p in tmp_path.iterdir()] == [f"setup-{os.getpid()}-10"]


# ------------------------------------------------------------- on Ray


async def test_pipeline_with_local_and_remote_steps(ray_cluster):
    pipeline = (
        Step(rs.parse)
        >> Step(rs.score, backend="ray")
        >> Step(rs.enrich, backend="ray", num_cpus=1)
        >> Step(lambda d: {**d, "total_on": os.getpid()}, "total")
    )
    run = await pipeline.run("1,2,3,4", store=False, context={"drop_me": 1, "kept": 2})
    assert run.status == "completed", run.error
    out = run.result
    assert out["sum"] == 10
    assert out["total_on"] == os.getpid()  # local step: the driver
    assert out["pid"] != os.getpid() and out["enriched_on"] != os.getpid()  # Ray workers
    # The remote step's context writes came back and were merged.
    assert run.context == {"kept": 2, "scored_on": out["pid"]}
    assert [run.steps[n].attempts for n in run.steps] == [1, 1, 1, 1]


async def test_a_remote_output_comes_back_whole_whatever_its_shape(ray_cluster):
    """Context changes travel beside the output, never inside it: an output
    that is a pair comes back as that pair, with or without changes."""
    ex = ExecutorCore()
    res = await ex.execute(Step(rs.pair, backend="ray"), 7)
    assert res.success and res.output == (7, {"looks": "like changes"}), res.feedback
    pipeline = Step(rs.pair_and_context, backend="ray") >> Step(lambda p: p, "same")
    run = await pipeline.run(3, store=False, context={"kept": 1})
    assert run.status == "completed", run.error
    assert run.result == (3, None)
    assert run.context == {"kept": 1, "seen": 3}


async def test_the_ray_task_is_named_after_the_step(ray_cluster):
    res = await ExecutorCore().execute(Step(rs.task_name, "fetch user", backend="ray"), None)
    assert res.success and res.output == "fetch user", res.feedback


async def test_executor_default_backend_and_local_override(ray_cluster, tmp_path):
    ex = ExecutorCore(backend="ray", retry_strategy=RetryStrategy(max_attempts=2, base_delay=0))
    assert ex.backend == "ray"
    assert (await ex.execute(rs.where, None)).output != os.getpid()  # a plain function
    assert (await ex.execute(Step(rs.where, backend="local"), None)).output == os.getpid()
    assert (await ExecutorCore().execute(rs.where, None)).output == os.getpid()
    # The executor's default retry strategy still applies next to its default backend.
    res = await ex.execute(rs.die_once, str(tmp_path / "marker"))
    assert res.success and res.attempts == 2, res.feedback


async def test_remote_exception_arrives_as_its_own_type(ray_cluster):
    ex = ExecutorCore()
    res = await ex.execute(Step(rs.strict_parse, backend="ray", max_retries=1), "x1")
    assert not res.success
    assert type(res.error) is rs.ParseError  # Ray's RayTaskError wrapping removed
    assert str(res.error) == "not a number: 'x1'"
    assert res.feedback == "ParseError: not a number: 'x1'"
    assert res.attempts == 2  # retried by caudal, not by Ray
    note = res.error.__notes__[0]
    assert note.startswith("raised in a Ray worker for step 'strict_parse':")
    assert "in strict_parse" in note and "\x1b[" not in note
    with pytest.raises(rs.ParseError, match="not a number"):
        res.unwrap()
    stats = ex.get_optimization_stats()["error_handling"]
    assert stats["errors"] == 2 and stats["retries"] == 1


async def test_killed_worker_is_retried_by_default(ray_cluster, tmp_path):
    """A worker killed mid-attempt is retried with the defaults (no
    max_retries), as plain Ray retries a task whose worker died."""
    ex = ExecutorCore()
    res = await ex.execute(Step(rs.die_once, backend="ray"), str(tmp_path / "a"))
    assert res.success, res.feedback
    assert res.attempts == 2
    assert res.output != int((tmp_path / "a").read_text())  # a new worker process
    # ... and does not spend the step's own retries: with one, a lost worker
    # and then an ordinary failure still end in a success
    (tmp_path / "b").mkdir()
    step = Step(rs.die_then_fail_once, backend="ray", max_retries=1)
    res = await ex.execute(step, str(tmp_path / "b"))
    assert res.success and res.attempts == 3, res.feedback


async def test_a_worker_that_always_dies_ends_with_remote_worker_died(ray_cluster):
    from caudal import OptimizationConfig

    config = OptimizationConfig(
        circuit_breaker_failure_threshold=1, circuit_breaker_minimum_calls=1
    )
    ex = ExecutorCore(config)
    res = await ex.execute(Step(rs.die_always, name="doomed", backend="ray"), 1)
    assert not res.success and res.attempts == 4  # the first and 3 retries
    assert type(res.error) is RemoteWorkerDiedError
    assert res.error.step == "doomed" and res.error.reason == "WorkerCrashedError"
    assert str(res.error).startswith(
        "step 'doomed': the Ray worker running the attempt died (WorkerCrashedError)"
    )
    import ray

    assert isinstance(res.error.__cause__, ray.exceptions.WorkerCrashedError)
    # the worker's deaths are not the step's failures: the breaker is closed
    assert ex.get_optimization_stats()["circuit_breaker"]["state"] == "CLOSED"


@pytest.mark.parametrize("actors", [None, 1], ids=["task", "actor"])
async def test_data_that_cannot_be_serialised_fails_at_once(ray_cluster, actors):
    """An input that cannot be pickled (a lock) is the data's fault: one
    attempt, though retries are left, a SerializationError naming the step
    and the type, and the breaker does not count it."""
    import threading

    from caudal import OptimizationConfig, SerializationError

    config = OptimizationConfig(
        circuit_breaker_failure_threshold=2, circuit_breaker_minimum_calls=1
    )
    ex = ExecutorCore(config)
    fn = rs.Echo if actors else rs.identity
    step = Step(fn, name="send", backend="ray", max_retries=3, actors=actors)
    for _ in range(3):
        r = await ex.execute(step, threading.Lock())
        assert not r.success and type(r.error) is SerializationError, r.error
        assert r.attempts == 1 and r.metadata["retry_stopped"] == "not_retryable"
        assert (r.error.step, r.error.direction, r.error.type_name) == (
            "send", "input", "_thread.lock"
        )
        assert "caudal_step" not in str(r.error) and "_task_body" not in str(r.error)
        assert isinstance(r.error.__cause__, TypeError)
    assert ex.get_optimization_stats()["circuit_breaker"]["state"] == "CLOSED"
    r = await ex.execute(step, 41)  # the step itself works
    assert r.success and r.output == 41
    if actors:
        assert release_actors(step) == 1  # its CPU back for the tests after this one


@pytest.mark.parametrize(
    "options,missing,says",
    [
        ({"actors": 4}, {"CPU": 2.0}, "4 actors x 1 CPU = 4 CPU, the cluster has 2 CPU"),
        ({"actors": 2, "num_cpus": 1.5}, {"CPU": 1.0}, "2 actors x 1.5 CPU = 3 CPU"),
        ({"num_gpus": 0.5}, {"GPU": 0.5}, "0.5 GPU"),
        ({"resources": {"tpu": 1}}, {"tpu": 1.0}, "1 tpu"),
        ({"num_cpus": 3}, {"CPU": 1.0}, "3 CPU"),
    ],
    ids=["actors", "actor-cpus", "gpu", "custom", "task-cpus"],
)
async def test_a_request_the_cluster_cannot_place_fails_at_once(
    ray_cluster, options, missing, says
):
    """Resources the cluster does not have fail the first attempt at once
    (not a hang), naming what is missing; not retried, not a breaker
    failure."""
    from caudal import PlacementError

    ex = ExecutorCore()
    fn = rs.Echo if "actors" in options else rs.identity
    step = Step(fn, name="big", backend="ray", max_retries=2, **options)
    r = await ex.execute(step, 1)
    assert not r.success and type(r.error) is PlacementError, r.error
    assert r.attempts == 1 and r.error.step == "big"
    assert r.error.missing == missing
    assert says in str(r.error), str(r.error)
    assert r.error.available.get("CPU") == 2.0
    assert ex.get_optimization_stats()["circuit_breaker"]["state"] == "CLOSED"


async def test_a_request_the_cluster_can_place_runs(ray_cluster):
    ex = ExecutorCore()
    pair = Step(rs.Echo, name="pair", backend="ray", actors=2)
    r = await ex.execute(pair, 5)
    assert r.success and r.output == 5
    assert release_actors(pair) == 1  # one call made one actor; it holds a CPU while it lives
    # A task request that fits runs (1 CPU: a CPU another test's actors
    # still hold is busy, not missing, and would be waited for).
    r = await ex.execute(Step(rs.identity, name="one", backend="ray", num_cpus=1), 6)
    assert r.success and r.output == 6


async def test_an_output_that_cannot_be_serialised_fails_at_once(ray_cluster):
    from caudal import SerializationError

    ex = ExecutorCore()
    r = await ex.execute(Step(rs.make_lock, name="locker", backend="ray", max_retries=3), 1)
    assert not r.success and type(r.error) is SerializationError, r.error
    assert r.attempts == 1
    assert (r.error.step, r.error.direction, r.error.type_name) == (
        "locker", "output", "_thread.lock"
    )


async def test_cache_hit_skips_the_remote_call(ray_cluster, tmp_path):
    calls = tmp_path / "calls"
    ex = ExecutorCore()
    step = Step(rs.counted, backend="ray", cache=True)
    first = await ex.execute(step, (str(calls), 7))
    again = await ex.execute(step, (str(calls), 7))
    other = await ex.execute(step, (str(calls), 8))
    assert (first.output, again.output, other.output) == (49, 49, 64)
    assert (first.cache_hit, again.cache_hit, other.cache_hit) == (False, True, False)
    assert calls.read_text().split() == ["7", "8"]  # the hit made no remote call


async def test_cancellation_cancels_the_ray_task(ray_cluster, tmp_path):
    ex = ExecutorCore()
    task = asyncio.create_task(ex.execute(Step(rs.slow, backend="ray"), str(tmp_path)))
    while not (tmp_path / "started").exists():
        assert not task.done(), task
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _wait_for(lambda: (tmp_path / "interrupted").exists(), "the Ray task's KeyboardInterrupt")
    assert not (tmp_path / "finished").exists()
    assert ex.get_optimization_stats()["execution"]["cancelled"] == 1


async def test_cancelled_as_soon_as_submitted_the_ray_task_is_cancelled(ray_cluster, tmp_path):
    # Between submitting and waiting, a remote attempt lets the event loop
    # run once (so that a burst submits everything before waiting); a
    # cancellation landing there must cancel the submitted task too.
    ex = ExecutorCore()
    task = asyncio.create_task(ex.execute(Step(rs.slow, backend="ray"), str(tmp_path)))
    await asyncio.sleep(0)  # the task's first pass: the attempt is submitted
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ex.get_optimization_stats()["execution"]["cancelled"] == 1
    # Not cancelled, the task would start on the idle cluster within a few
    # seconds and run for a minute. Cancelled, it is dropped from the queue
    # or interrupted.
    started, interrupted = tmp_path / "started", tmp_path / "interrupted"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not started.exists():
        await asyncio.sleep(0.05)
    if started.exists():
        _wait_for(interrupted.exists, "the Ray task's KeyboardInterrupt")
    assert not (tmp_path / "finished").exists()


async def test_timed_out_remote_attempt_is_cancelled_on_the_cluster(ray_cluster, tmp_path):
    ex = ExecutorCore()
    res = await ex.execute(Step(rs.slow, backend="ray", timeout_s=2), str(tmp_path))
    assert isinstance(res.error, StepTimeoutError), res.feedback
    # Either it had started and was interrupted, or it was dropped from the queue.
    _wait_for(
        lambda: (tmp_path / "interrupted").exists() or not (tmp_path / "started").exists(),
        "the timed-out Ray task to be interrupted",
    )
    assert not (tmp_path / "finished").exists()


async def test_actor_pool_sets_up_once_per_actor(ray_cluster):
    setup_dir = ray_cluster
    ex = ExecutorCore()
    step = Step(rs.Embedder, backend="ray", actors=2, num_cpus=1, max_retries=1)
    results = await asyncio.gather(*(ex.execute(step, i) for i in range(8)))
    assert [r.output[0] for r in results] == [i * 10 for i in range(8)]
    pids = {r.output[1] for r in results}
    assert len(pids) == 2 and os.getpid() not in pids
    assert sorted(p.name for p in setup_dir.iterdir()) == sorted(f"setup-{p}-10" for p in pids)
    # Cached: the same pool serves later executions, through any executor.
    again = await ExecutorCore().execute(step, 3)
    assert again.output[1] in pids
    assert release_actors(step) == 2  # frees the CPUs the actors hold
    # Set-up arguments: a partial of the class.
    step = Step(functools.partial(rs.Embedder, scale=3), backend="ray", actors=1)
    assert step.name == "Embedder"
    res = await ExecutorCore().execute(step, 5)
    assert res.output[0] == 15 and res.output[1] not in pids
    assert (setup_dir / f"setup-{res.output[1]}-3").exists()
    assert release_actors(step) == 1


async def test_a_dead_actor_is_replaced_and_the_attempt_retried(ray_cluster, tmp_path):
    setup_dir = ray_cluster
    step = Step(rs.Fragile, backend="ray", actors=1, max_retries=1)
    res = await ExecutorCore().execute(step, str(tmp_path / "marker"))
    assert res.success, res.feedback
    assert res.attempts == 2
    first = int((tmp_path / "marker").read_text())
    assert res.output != first  # a new actor process
    assert sorted(p.name for p in setup_dir.glob("fragile-*")) == sorted(
        f"fragile-{pid}" for pid in (first, res.output)
    )
    assert release_actors(step) == 1


YAML = """
name: scale-out
steps:
  - name: parse
    uses: parse
  - name: score
    uses: score
    depends_on: parse
    backend: ray
    num_cpus: 1
    max_retries: 1
  - name: enrich
    uses: enrich
    depends_on: score
    backend: ray
    resources: {}
"""


async def test_yaml_pipeline_with_remote_steps(ray_cluster):
    registry = {"parse": rs.parse, "score": rs.score, "enrich": rs.enrich}
    pipeline = load_pipeline(YAML, registry)
    run = await pipeline.run("5,6", store=False, context={})
    assert run.status == "completed", run.error
    assert run.result["sum"] == 11 and run.result["enriched_on"] != os.getpid()
    assert run.context == {"scored_on": run.result["pid"]}


def test_yaml_placement_fields_are_checked():
    registry = {"parse": rs.parse}
    text = """
name: bad
steps:
  - name: a
    uses: parse
    backend: dask
  - name: b
    uses: parse
    num_cpus: -1
    resources: {CPU: 1, db: x}
    actors: 0
  - name: c
    uses: parse
    backend: local
    num_gpus: 1
"""
    with pytest.raises(PipelineDefinitionError) as info:
        load_pipeline(text, registry)
    assert info.value.problems == [
        "<string>:6: steps[0].backend: expected local or ray, got 'dask'",
        "<string>:9: steps[1].num_cpus: expected a number >= 0, got '-1'",
        "<string>:10: steps[1].resources.CPU: give CPU as num_cpus",
        "<string>:10: steps[1].resources.db: expected a number >= 0, got 'x'",
        "<string>:11: steps[1].actors: expected a positive integer, got '0'",
        "<string>:15: steps[2].num_gpus: applies only to backend: ray",
    ]


async def test_two_drivers_share_remote_results_through_redis(ray_cluster, redis_server, tmp_path):
    # Two driver processes' executors (here: two executors, each with its
    # own L1) on one Redis: the second finds the first's remote result and
    # makes no remote call.
    from caudal.integrations.redis import RedisCacheTier

    calls = tmp_path / "calls"
    step = Step(rs.counted, backend="ray", cache=True)
    drivers = [
        ExecutorCore(cache_l2=RedisCacheTier(redis_server, prefix="scale-out-test:"))
        for _ in range(2)
    ]
    try:
        first = await drivers[0].execute(step, (str(calls), 9))
        await drivers[0].flush()  # the L2 write is asynchronous
        second = await drivers[1].execute(step, (str(calls), 9))
        assert (first.output, second.output) == (81, 81)
        assert not first.cache_hit and second.cache_hit
        assert second.metadata["cache_tier"] == "l2"
        assert calls.read_text().split() == ["9"]
    finally:
        for ex in drivers:
            await ex.clear_cache()
            await ex.aclose()


CLI_YAML = """
name: cli-scale-out
context: {}
steps:
  - {name: parse, uses: parse}
  - {name: score, uses: score, depends_on: parse}
  - {name: enrich, uses: enrich, depends_on: score}
  - {name: gather, uses: gather, depends_on: enrich}
"""


def test_cli_runs_a_pipeline_file_on_the_cluster(ray_cluster, tmp_path):
    # The deployment of docs/scale-out.md in one process: the same pipeline
    # file, a driver joining the cluster (--ray-address), every step that
    # does not choose running on Ray (--backend ray), checkpoints in a store.
    import json
    import subprocess

    import ray

    (tmp_path / "pipe.yaml").write_text(CLI_YAML)
    cmd = [sys.executable, "-m", "caudal.cli", "run", "pipe.yaml"]
    cmd += ["--registry", "_ray_steps:REGISTRY", "--input", '"3,4"', "--store", "runs.db"]
    cmd += ["--backend", "ray", "--ray-address", ray.get_runtime_context().gcs_address, "--json"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["status"] == "completed", out
    res = out["result"]
    assert res["sum"] == 7
    assert res["pid"] != res["driver"] and res["enriched_on"] != res["driver"]  # on Ray
    assert res["ctx"] == {"scored_on": res["pid"]}  # the remote context write, merged
    assert res["driver"] != os.getpid()


def test_cli_resume_runs_on_the_cluster_the_run_ran_on(ray_cluster, tmp_path):
    """`caudal resume` without flags runs the rest where the run ran (the
    backend and the cluster stored with the run), and says so."""
    import json
    import subprocess

    import ray

    address = ray.get_runtime_context().gcs_address
    (tmp_path / "pipe.yaml").write_text(CLI_YAML)
    broken = ray_cluster / "BROKEN"
    broken.write_text("")
    base = [sys.executable, "-m", "caudal.cli"]
    reg = ["--registry", "_ray_steps:RESUME_REGISTRY", "--store", "runs.db"]
    run = [*base, "run", "pipe.yaml", *reg, "--input", '"3,4"', "--run-id", "c1"]
    run += ["--backend", "ray", "--ray-address", address]
    p = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    broken.unlink()
    p = subprocess.run([*base, "resume", "c1", *reg, "--json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert f"resuming where the run ran: --backend ray --ray-address {address}" in p.stderr
    res = json.loads(p.stdout)["result"]
    assert res["enriched_on"] != res["driver"]  # the resumed step ran on Ray
    # --backend local given to resume: the stored cluster is not joined
    broken.write_text("")
    run[run.index("c1")] = "c2"
    p = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    broken.unlink()
    p = subprocess.run([*base, "resume", "c2", *reg, "--backend", "local", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert f"the run ran on the Ray cluster {address}; resuming with --backend local" in p.stderr
    res = json.loads(p.stdout)["result"]
    assert res["enriched_on"] == res["driver"]  # in the resuming process
