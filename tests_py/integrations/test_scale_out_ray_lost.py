"""Scale-out on Ray: the whole cluster lost under a driver (its GCS killed).

Runs tests_py/_ray_cluster_lost.py in a process of its own: the in-flight
execution must end with ClusterLostError, with no timeout_s, without
counting for the breaker; new executions must fail at once; local steps
must still run; and the driver must outlive Ray's own 60 s exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# No `import ray` here: the child process imports it in its own test
# environment (importing it in this process at collection would fix Ray's
# address settings before the other Ray tests set theirs).
HERE = Path(__file__).resolve().parents[1]  # tests_py
SURVIVE_S = 70  # past Ray's gcs_rpc_server_reconnect_timeout_s (60 s)


def test_a_lost_cluster_ends_in_flight_executions_and_the_driver_survives():
    proc = subprocess.run(
        [sys.executable, str(HERE / "_ray_cluster_lost.py"), str(SURVIVE_S)],
        capture_output=True, text=True, cwd=HERE, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    why = (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.returncode == 0 and lines, why
    out = json.loads(lines[-1])
    assert "raised" not in out, out
    assert out["warm"] and out["running_before_kill"], out
    assert out["error"] == "ClusterLostError", out
    assert "long" in out["message"] and "GCS" in out["message"], out
    assert out["again_error"] == "ClusterLostError", out
    assert out["breaker"] == "closed", out  # a lost cluster is not the step's failure
    assert out["local_step_after"] == 2, out
    assert out["alive_after_s"] >= SURVIVE_S, out
