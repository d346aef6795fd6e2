"""A driver whose Ray cluster dies under it (test_scale_out_ray_lost.py runs
this in a process of its own: a process whose GCS is gone cannot join
another Ray cluster).

A head without CPUs and one worker node (``ray.cluster_utils.Cluster``, on
loopback); a remote step sleeping far longer than the test; the GCS killed
while it runs. Prints one JSON line: what the execution returned and when,
what a new execution returned, and whether this process was still alive
``survive_s`` seconds after the kill (Ray's own default ends a driver 60 s
after it loses the GCS). Then kills the cluster's processes and exits.

    python _ray_cluster_lost.py SURVIVE_S
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from _ray_env import ray_test_env


def main(survive_s: float) -> None:
    import psutil

    with ray_test_env(CAUDAL_RAY_LOST_AFTER_S="2"):
        import ray
        from ray.cluster_utils import Cluster

        import _ray_steps as rs
        from caudal import ExecutorCore, OptimizationConfig, Step

        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        out: dict = {}

        async def run() -> None:
            ex = ExecutorCore(OptimizationConfig(circuit_breaker_failure_threshold=1))
            step = Step(rs.sleep_for, "long", backend="ray")  # no timeout_s
            warm = await ex.execute(step, 0)
            out["warm"] = warm.success
            task = asyncio.create_task(ex.execute(step, 600))
            await asyncio.sleep(2)
            out["running_before_kill"] = not task.done()
            cluster.head_node.kill_gcs_server()
            t0 = time.monotonic()
            res = await asyncio.wait_for(task, 60)  # a liveness bound
            out["ended_after_s"] = time.monotonic() - t0
            out["error"] = type(res.error).__name__
            out["message"] = str(res.error)
            out["attempts"] = res.attempts
            again = await asyncio.wait_for(ex.execute(step, 0), 60)
            out["again_error"] = type(again.error).__name__
            breakers = ex.get_optimization_stats()["circuit_breaker"]["breakers"]
            out["breaker"] = breakers["long"]["state"]
            local = await ex.execute(lambda x: x + 1, 1)
            out["local_step_after"] = local.output
            await asyncio.sleep(max(0.0, survive_s - (time.monotonic() - t0)))
            out["alive_after_s"] = time.monotonic() - t0

        try:
            asyncio.run(run())
        except BaseException as e:  # reported, not raised: the cleanup below must run
            out["raised"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out), flush=True)
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        os._exit(0)


if __name__ == "__main__":
    main(float(sys.argv[1]))
