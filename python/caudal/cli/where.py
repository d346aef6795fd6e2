"""Where a ``caudal run``/``resume`` runs: the executor its flags make
(backend, Ray cluster, shared cache tier), what is stored of them with a
run, and how ``resume`` uses that; the store named for the user."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from caudal._executor.core import ExecutorCore
from caudal.pipeline.stores import DEFAULT_STORE_PATH


def store_label(spec: str | None) -> str:
    """The store a command used, as the user can name it again (a
    PostgreSQL URI without its password)."""
    return redacted(str(spec or os.environ.get("CAUDAL_STORE") or DEFAULT_STORE_PATH))


def executor_for(args: argparse.Namespace) -> Any:
    """The executor for run/resume, or None for the pipeline's default."""
    if not (args.cache_redis or args.backend or args.ray_address):
        return None
    backend = args.backend
    if args.ray_address:
        from caudal.integrations.ray import import_ray

        ray = import_ray("--ray-address")
        if not ray.is_initialized():
            ray.init(address=args.ray_address, log_to_driver=False, configure_logging=False)
    tier = None
    if args.cache_redis:
        from caudal.integrations.redis import RedisCacheTier

        tier = RedisCacheTier(args.cache_redis)
    return ExecutorCore(cache_l2=tier, backend=backend)


# Where a run ran, stored with it (its definition's "where") for resume:
# (the args attribute, its flag).
_WHERE = (
    ("backend", "--backend"),
    ("ray_address", "--ray-address"),
    ("cache_redis", "--cache-redis"),
)


def redacted(url: str) -> str:
    """``url`` with its password, if any (in the user part or a
    ``password=`` query parameter), replaced by ``***``: a secret is not
    written into the run store."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in query):
        q = [(k, "***" if k == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(q, safe="*"))
    return urlunsplit(parts)


def where_of(args: argparse.Namespace) -> dict[str, str]:
    out = {attr: getattr(args, attr) for attr, _ in _WHERE if getattr(args, attr)}
    if "cache_redis" in out:
        out["cache_redis"] = redacted(out["cache_redis"])
    return out


def resume_where(args: argparse.Namespace, stored: dict) -> str | None:
    """Fill ``args`` from where the run ran (a flag given now wins, and a
    difference is said); returns an error message, or None. ``--backend``
    given here decides the backend alone: a stored Ray address is not
    joined when resuming with ``--backend local``. ``--cache-redis ''``
    resumes without the stored tier."""
    used = []
    for attr, flag in _WHERE:
        given, was = getattr(args, attr), stored.get(attr)
        if not was:
            continue
        if attr == "ray_address" and given is None and args.backend == "local":
            print(
                f"caudal: note: the run ran on the Ray cluster {was}; resuming with "
                "--backend local, without it",
                file=sys.stderr,
            )
            continue
        if given is None:
            if attr == "cache_redis" and "***" in was:
                return (
                    f"the run used the shared cache tier --cache-redis {was}; its password "
                    "is not stored: give --cache-redis with it"
                )
            setattr(args, attr, was)
            used.append(f"{flag} {was}")
        else:
            shown = redacted(given) if attr == "cache_redis" else given
            if shown == was:
                continue
            now = f"with {flag} {shown}" if shown else f"without {flag}"
            note = f"the run was started with {flag} {was}; resuming {now}"
            print(f"caudal: note: {note}", file=sys.stderr)
    if used:
        print(
            f"caudal: resuming where the run ran: {' '.join(used)} (a flag given here overrides)",
            file=sys.stderr,
        )
    return None


async def close_executor(executor: Any) -> None:
    if executor is not None:
        await executor.aclose()
