"""The environment a test's Ray cluster is started in (no pytest here).

Ray processes inherit the environment of the process that starts them, so
this is where the test decides what its workers see:

- ``PYTHONPATH`` gains tests_py, so workers import the step functions of
  ``_ray_steps`` by name;
- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps every Ray process on
  loopback: on Linux Ray swaps 127.0.0.1 for the machine's routable address
  and binds its servers there; with "multi-node clusters" off (a flag read
  when ray is first imported, so set before that) it binds 127.0.0.1, as it
  does on macOS by default. Several raylets on one machine
  (``ray.cluster_utils.Cluster``) still work. Tests check the addresses.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def ray_test_env(**extra: str) -> Iterator[None]:
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        **extra,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
