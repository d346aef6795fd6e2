"""Where a step's attempts run: ``"local"`` (the driver's event loop or its
thread pool; the default) or ``"ray"`` (a Ray task, or a call on a pool of
Ray actors; :mod:`caudal.integrations.ray`).

A backend only changes how one attempt is carried out. The executor's cache,
breaker, limits, retries, timeouts and statistics stay in the driver.
"""

from __future__ import annotations

import importlib.util

from caudal.errors import BackendUnavailableError

BACKENDS = ("local", "ray")

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
