"""Where a step's attempts run: ``"local"`` (the driver's event loop or its
thread pool; the default) or ``"ray"`` (a Ray task, or a call on a pool of
Ray actors; :mod:`caudal.integrations.ray`).

A backend only changes how one attempt is carried out. The executor's cache,
breaker, limits, retries, timeouts and statistics stay in the driver.
"""

from __future__ import annotations

import importlib.util
import os

from caudal.errors import BackendUnavailableError

BACKENDS = ("local", "ray")

# Ray ends a driver process that cannot reach its cluster's GCS for
# gcs_rpc_server_reconnect_timeout_s (60 s by default). caudal detects a lost
# cluster itself and ends the remote attempts in flight with
# ClusterLostError (caudal.integrations.ray), so the driver, its local steps
# and its checkpoints go on: a day, unless the environment already says.
# Read by ray.init(), so set when caudal is imported, before a user's
# ray.init() (docs/scale-out.md, "A lost cluster").
RAY_GCS_EXIT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
os.environ.setdefault(RAY_GCS_EXIT_ENV, "86400")

_INSTALL_HINT = "pip install 'caudal[ray]'"


def ray_missing_message(where: str) -> str:
    return (
        f"{where}: backend='ray' needs Ray, which is not installed in this environment; "
        f"install it with: {_INSTALL_HINT}"
    )


def ray_installed() -> bool:
    """Whether ``import ray`` can work, without importing it (which takes a
    few hundred milliseconds)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def check_backend(backend: object, where: str) -> str | None:
    """Validate a ``backend=`` argument; None means "not set here"."""
    if backend is None:
        return None
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{where}: backend must be 'local', 'ray' or None, got {backend!r}")
    if backend == "ray" and not ray_installed():
        raise BackendUnavailableError(ray_missing_message(where), name="ray")
    return backend


__all__ = ["BACKENDS", "check_backend", "ray_installed", "ray_missing_message"]
