"""How the Ray backend (caudal.integrations.ray) reports what went wrong on
the cluster: a remote exception as itself, with the remote traceback as a
note; a dead worker, node, actor or lost result as RemoteWorkerDiedError;
an input or output that cannot be pickled as SerializationError naming the
step, the direction and the type."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from typing import Any

from caudal.errors import RemoteWorkerDiedError, SerializationError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# pickle's and cloudpickle's words for an object they cannot serialise.
_CANNOT_PICKLE = re.compile(r"(?:cannot|can't|Can't) pickle (?:local object )?'?([^':\s]+)")
# Where Ray serialises arguments and return values: a remote traceback
# through them is a return value that could not be serialised (Ray shows the
# traceback's last frames, its cloudpickle's).
_RAY_SERIALIZERS = ("ray/_private/serialization.py", "ray/cloudpickle/")


def _unserialisable(name: str, direction: str, exc: BaseException) -> SerializationError:
    """The SerializationError for ``exc`` (Ray's or pickle's), naming the
    type it could not serialise when the message says."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    type_name, detail = "", ""
    for e in reversed(chain):  # the innermost says most
        m = _CANNOT_PICKLE.search(str(e))
        if m:
            type_name, detail = m.group(1), _first_line(e)
            break
    err = SerializationError(name, direction, type_name, detail)
    err.__cause__ = chain[-1]
    return err


def _serialisation_failure(exc: BaseException) -> bool:
    """Whether Ray's submission failed to serialise an argument (Ray raises a
    TypeError saying so, chained to pickle's error)."""
    return isinstance(exc, (TypeError, pickle.PicklingError)) and (
        "Could not serialize" in str(exc) or _CANNOT_PICKLE.search(str(exc)) is not None
    )


def _translator(ray: Any, name: str) -> Callable[[BaseException], BaseException]:
    x = ray.exceptions
    died = (
        x.WorkerCrashedError,
        x.NodeDiedError,
        x.RayActorError,  # ActorDiedError, ActorUnavailableError
        x.ObjectLostError,  # OwnerDiedError, ObjectReconstructionFailedError, ...
        x.LocalRayletDiedError,
        x.OutOfMemoryError,  # Ray's memory monitor killed the worker
    )
    task_error, ray_error = x.RayTaskError, x.RayError

    def translate(exc: BaseException) -> BaseException:
        if isinstance(exc, task_error):
            cause = exc.cause
            if isinstance(cause, ray_error):
                return translate(cause)
            if isinstance(cause, Exception):
                # str() of Ray's wrapper is the remote traceback, coloured.
                remote = _ANSI.sub("", str(exc)).strip()
                if isinstance(cause, (TypeError, pickle.PicklingError)) and any(
                    where in remote for where in _RAY_SERIALIZERS
                ):
                    # Serialising (dumps) is the return value on its way
                    # back; anything else there is the input arriving.
                    direction = "output" if "dump" in remote else "input"
                    return _unserialisable(name, direction, cause)
                cause.add_note(f"raised in a Ray worker for step {name!r}:\n{remote}")
                return cause
            return exc
        if isinstance(exc, died):
            return RemoteWorkerDiedError(name, type(exc).__name__, _first_line(exc))
        return exc

    return translate


def _reraise(translate: Callable[[BaseException], BaseException], exc: BaseException) -> None:
    """Raise what the caller should see for a Ray error: the step's own
    exception without Ray's wrapping, or RemoteWorkerDiedError chained to
    the Ray error."""
    err = translate(exc)
    if err is exc:
        raise exc
    if isinstance(err, RemoteWorkerDiedError):
        raise err from exc
    if isinstance(err, SerializationError):
        raise err  # chained to pickle's error already
    raise err from None
