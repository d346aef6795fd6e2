"""Scale-out on Ray: a node that dies mid-attempt (docs/scale-out.md).

A cluster of several raylets on this machine (``ray.cluster_utils.Cluster``,
loopback only): a head without CPUs, so tasks run on the worker nodes, and
one worker node that the test kills while the step runs on it. Its own
module because a process joins one Ray cluster at a time
(test_scale_out_ray.py has the single-node one).
"""

from __future__ import annotations

import asyncio

import pytest

import _ray_steps as rs
from _ray_env import ray_test_env
from caudal import ExecutorCore, Step


@pytest.fixture(scope="module")
def nodes():
    with ray_test_env():
        import ray
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        try:
            first = cluster.add_node(num_cpus=1)
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
            cluster.wait_for_nodes()
            assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
            yield cluster, first
        finally:
            ray.shutdown()
            cluster.shutdown()


async def test_a_node_dying_mid_attempt_is_retried_on_another(nodes, tmp_path):
    cluster, first = nodes
    ex = ExecutorCore()
    step = Step(rs.slow_once, backend="ray")  # no retries of its own: the default retries
    task = asyncio.create_task(ex.execute(step, str(tmp_path)))
    while not (tmp_path / "started").exists():
        assert not task.done(), task
        await asyncio.sleep(0.05)
    cluster.remove_node(first, allow_graceful=False)  # the node dies mid-attempt
    cluster.add_node(num_cpus=1)
    res = await task
    assert res.success, res.feedback
    assert res.attempts == 2
    assert res.output != int((tmp_path / "started").read_text())
    # What the first attempt failed with, as the error-pattern table saw it.
    (pattern,) = ex.get_optimization_stats()["error_handling"]["patterns"]
    assert pattern["exception"] == "caudal.errors.RemoteWorkerDiedError"
    assert pattern["sample"].startswith(
        "step 'slow_once': the Ray worker running the attempt died (NodeDiedError)"
    )
    assert pattern["recovered"] == 1
