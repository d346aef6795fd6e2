"""Checkpoint stores: what they promise and how they encode payloads.

A pipeline stores each step's completion (its output and context changes,
pickled, plus status, timing, attempts, usage) and waits until the store
says it is durable **before** any dependent of that step starts. After a
crash, ``Pipeline.resume(run_id)`` restores every completed step from here
and runs only the rest.

- :class:`SqliteStore` (the default): one file, stdlib ``sqlite3`` in WAL
  mode with ``synchronous=NORMAL`` (a commit survives the process being
  killed; only an OS crash or power loss can drop the last commits). A
  lone checkpoint whose commit is cheap is committed on the calling thread
  (``save_step_now``); everything else goes to one dedicated writer
  thread, so the event loop never waits on a slow disk or a lock.
- :class:`PostgresStore`: for runs resumed or inspected from other
  machines; psycopg 3, async.
- :class:`MemoryStore`: in-process, for tests and for runs that need
  resume-after-failure (not after a crash) without a file.

Group commit. Both durable stores write checkpoints in batches: every
checkpoint queued while the previous transaction was committing goes into
the next transaction, and each waiter is released when the transaction
holding its row has committed. A lone checkpoint (a chain of steps) still
gets its own transaction at once, so "stored before the dependent starts"
holds for every step, and a wide level of N finishing steps costs one
commit instead of N. ``group_commit=False`` gives the one-transaction-per-
checkpoint baseline (measured in benchmarks/bench_pipeline.py).

Payloads (the run's input and context, each step's output and context
changes) are stored in a versioned, self-describing format::

    bytes 0..3  b"CDCK"
    byte 4      0x01  format version
    byte 5      codec: 0x4A type-exact JSON, 0x50 pickle
    byte 6      0x00 no tag, or 0x01: a 32-byte HMAC-SHA256 tag follows, over
                the run id, what the payload is (input, context or the step's
                name), bytes 0..6 and the body
    then        the body

JSON when the value comes back from JSON with exactly the same types (no
tuples, sets, int dict keys, ...), else a pickle. Trust policy: with a
secret (``secret=`` on the store, else ``$CAUDAL_CHECKPOINT_SECRET``; 16
bytes at least) every payload is tagged, and one whose tag does not verify,
or that has none, is refused (CheckpointError) before anything is decoded.
Without a secret JSON payloads load, and pickles are written and read only
by stores whose bytes stay in this process's own file (``MemoryStore``,
``SqliteStore``: ``local_pickles = True``); a ``PostgresStore`` (or any
other store) without a secret refuses to write a pickle and to read one.
Raw pickles written before this format (they start with 0x80) load only
where pickles may be unauthenticated (local stores without a secret).
"""

from __future__ import annotations

import asyncio
import json
import pickle
from dataclasses import dataclass, field
from typing import Any

from caudal._trust import hmac_tag, json_bytes, secret_bytes, tags_equal
from caudal.errors import CheckpointError
from caudal.pipeline.context import DELETED

#: Where ``store=None`` keeps checkpoints: $CAUDAL_STORE, else this path

#: relative to the working directory.
DEFAULT_STORE_PATH = ".caudal/checkpoints.db"

RUN_STATUSES = ("running", "completed", "failed", "limit_exceeded", "cancelled")

#: Where stores built without ``secret=`` read their secret.
SECRET_ENV = "CAUDAL_CHECKPOINT_SECRET"
PAYLOAD_MAGIC = b"CDCK"
PAYLOAD_VERSION = 0x01
_CODEC_JSON = 0x4A  # "J": type-exact JSON
_CODEC_PICKLE = 0x50  # "P": pickle (authenticated, or in a local store)
_AUTH_NONE = 0x00
_AUTH_HMAC = 0x01  # HMAC-SHA256 tag of 32 bytes follows
_HEADER_LEN = 7
_TAG_LEN = 32
_TAG_CONTEXT = b"caudal-checkpoint-v1\0"
_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
_KINDS = ("input", "context", "step")
_UNSET: Any = object()
_JSON_STR = json.JSONEncoder(ensure_ascii=False).encode  # a str as a JSON string


@dataclass(slots=True)
class StepCheckpoint:
    """One step's stored outcome. ``payload`` is ``(output,
    context_changes)`` encoded by ``store.encode_payload`` (see the module
    docstring); ``status`` is ``"completed"`` (restored on resume:
    success), ``"failed_optional"`` (an optional step's failure, restored
    too), ``"failed"`` (kept for inspection; run again on resume) or
    ``"cancelled"`` (running when the run was cancelled or interrupted; no
    payload; run again on resume)."""

    step: str
    status: str
    seq: int
    payload: bytes | None = None
    started_at: float | None = None
    finished_at: float | None = None
    latency_s: float = 0.0
    attempts: int = 0
    cache_hit: bool = False
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0

    def row(self, run_id: str) -> tuple:
        return (
            run_id,
            self.step,
            self.status,
            self.seq,
            self.payload,
            self.started_at,
            self.finished_at,
            self.latency_s,
            self.attempts,
            bool(self.cache_hit),
            self.error,
            self.tokens,
            self.cost_usd,
        )

    @classmethod
    def from_row(cls, r: tuple) -> StepCheckpoint:
        return cls(
            step=r[0],
            status=r[1],
            seq=r[2],
            payload=bytes(r[3]) if r[3] is not None else None,
            started_at=r[4],
            finished_at=r[5],
            latency_s=r[6] or 0.0,
            attempts=r[7] or 0,
            cache_hit=bool(r[8]),
            error=r[9],
            tokens=r[10] or 0,
            cost_usd=r[11] or 0.0,
        )


@dataclass(slots=True)
class RunInfo:
    """A run's header. ``input`` and ``context`` are encoded payloads (see
    the module docstring); ``definition``
    is what a CLI needs to rebuild the pipeline for ``resume`` (the YAML text,
    its path, the registry and resolver specs), or None. It is data that
    anyone who can write to the store can change: ``caudal resume`` shows the
    stored specs but imports only the ones named on its command line."""

    run_id: str
    pipeline: str
    status: str = "running"
    created_at: float = 0.0
    updated_at: float = 0.0
    input: bytes | None = None
    context: bytes | None = None
    definition: dict | None = None
    error: str | None = None
    resumes: int = 0


@dataclass(slots=True)
class StoredRun:
    info: RunInfo
    steps: dict[str, StepCheckpoint] = field(default_factory=dict)


_STEP_COLUMNS = (
    "step, status, seq, payload, started_at, finished_at, latency_s, attempts, "
    "cache_hit, error, tokens, cost_usd"
)
_RUN_COLUMNS = (
    "run_id, pipeline, status, created_at, updated_at, input, context, definition, error, resumes"
)


def _info_from_row(r: tuple) -> RunInfo:
    return RunInfo(
        run_id=r[0],
        pipeline=r[1],
        status=r[2],
        created_at=r[3],
        updated_at=r[4],
        input=bytes(r[5]) if r[5] is not None else None,
        context=bytes(r[6]) if r[6] is not None else None,
        definition=json.loads(r[7]) if r[7] else None,
        error=r[8],
        resumes=r[9] or 0,
    )


class CheckpointStore:
    """Interface of a checkpoint store. Every method is a coroutine; a store
    is used from one event loop. ``async with store:`` closes it.

    ``encode_payload`` / ``decode_payload`` turn the values a pipeline
    checkpoints into bytes and back under the store's trust policy (module
    docstring). A store of your own is not local (``local_pickles`` False):
    it stores pickles only with a secret, which it reads from
    ``$CAUDAL_CHECKPOINT_SECRET`` unless its ``__init__`` calls
    ``self._set_secret(secret)``."""

    #: Whether pickles may be written and read without a secret: only for
    #: stores whose bytes stay in this process's own memory or file.
    local_pickles: bool = False
    _secret: Any = _UNSET

    def _set_secret(self, secret: bytes | str | None) -> None:
        self._secret = secret_bytes(secret, SECRET_ENV, type(self).__name__)

    def _checkpoint_secret(self) -> bytes | None:
        if self._secret is _UNSET:
            self._set_secret(None)
        return self._secret

    @property
    def authenticated(self) -> bool:
        """Whether this store tags and verifies its payloads (has a secret)."""
        return self._checkpoint_secret() is not None

    def _tag(
        self, secret: bytes, run_id: str, kind: str, name: str, header: Any, body: Any
    ) -> bytes:
        rid, what = run_id.encode(), f"{kind}:{name}".encode()
        return hmac_tag(
            secret,
            _TAG_CONTEXT,
            len(rid).to_bytes(8, "big"),
            rid,
            len(what).to_bytes(8, "big"),
            what,
            header,
            body,
        )

    def encode_payload(self, run_id: str, kind: str, value: Any, name: str = "") -> bytes:
        """``value`` as checkpoint bytes. ``kind``: "input", "context", or
        "step" (``value`` is ``(output, context_changes)``, ``name`` the
        step's). CheckpointError if it cannot be stored under the policy."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        secret = self._checkpoint_secret()
        body = _plain_step_body(value) if kind == "step" else None
        if body is None:
            body = json_bytes(_json_doc(kind, value))
        if body is not None:
            codec = _CODEC_JSON
        else:
            what = _subject(kind, name)
            if secret is None and not self.local_pickles:
                raise CheckpointError(
                    f"run {run_id!r}: {what} is not JSON-representable (str, int, float, "
                    f"bool, None, lists, str-keyed dicts), and {self!r} stores a pickle "
                    f"only with a secret: set ${SECRET_ENV} (or pass secret=... to the "
                    "store), or checkpoint only JSON-representable values"
                )
            try:
                body = pickle.dumps(value, _PICKLE_PROTOCOL)
            except Exception as exc:
                raise CheckpointError(
                    f"run {run_id!r}: {what} must pickle to be checkpointed: {exc}"
                ) from exc
            codec = _CODEC_PICKLE
        if secret is None:
            return PAYLOAD_MAGIC + bytes((PAYLOAD_VERSION, codec, _AUTH_NONE)) + body
        header = PAYLOAD_MAGIC + bytes((PAYLOAD_VERSION, codec, _AUTH_HMAC))
        return header + self._tag(secret, run_id, kind, name, header, body) + body

    def decode_payload(self, run_id: str, kind: str, raw: bytes, name: str = "") -> Any:
        """The value ``encode_payload`` stored. Nothing is unpickled unless
        its tag verifies with this store's secret, or the store is local and
        has no secret. CheckpointError (naming the run and what) otherwise."""
        what = _describe(kind, name)
        secret = self._checkpoint_secret()
        raw = bytes(raw)
        if raw[:4] != PAYLOAD_MAGIC:
            if raw[:1] != b"\x80":
                raise CheckpointError(
                    f"run {run_id!r}: checkpoint of {what} is corrupt: not a checkpoint payload"
                )
            # A raw pickle written before the versioned format.
            if secret is not None:
                raise CheckpointError(
                    f"run {run_id!r}: checkpoint of {what} failed authentication: an "
                    "unauthenticated pickle in an older format, and this store has a secret"
                )
            if not self.local_pickles:
                raise CheckpointError(
                    f"run {run_id!r}: checkpoint of {what} is an unauthenticated pickle in an "
                    f"older format; {self!r} never loads one (anyone who can write the "
                    "database could have put it there): start the run again"
                )
            return _unpickle(run_id, kind, what, raw)
        if len(raw) < _HEADER_LEN or raw[4] != PAYLOAD_VERSION:
            v = f"0x{raw[4]:02x}" if len(raw) > 4 else "none"
            raise CheckpointError(
                f"run {run_id!r}: checkpoint of {what} has an unknown format version ({v})"
            )
        codec, auth = raw[5], raw[6]
        view = memoryview(raw)
        if auth == _AUTH_HMAC:
            if len(raw) < _HEADER_LEN + _TAG_LEN:
                raise CheckpointError(f"run {run_id!r}: checkpoint of {what} is truncated")
            body = view[_HEADER_LEN + _TAG_LEN :]
            if secret is not None:
                tag = self._tag(secret, run_id, kind, name, view[:_HEADER_LEN], body)
                if not tags_equal(tag, view[_HEADER_LEN : _HEADER_LEN + _TAG_LEN]):
                    raise CheckpointError(
                        f"run {run_id!r}: checkpoint of {what} failed authentication: "
                        "written with another secret or tampered with"
                    )
            elif codec == _CODEC_PICKLE and not self.local_pickles:
                raise CheckpointError(
                    f"run {run_id!r}: checkpoint of {what} is a pickle and {self!r} has no "
                    f"secret to verify it: set ${SECRET_ENV} (or pass secret=... to the store)"
                )
        elif auth == _AUTH_NONE:
            body = view[_HEADER_LEN:]
            if secret is not None:
                raise CheckpointError(
                    f"run {run_id!r}: checkpoint of {what} failed authentication: it has no "
                    "tag (written without a secret, or tampered with)"
                )
            if codec == _CODEC_PICKLE and not self.local_pickles:
                raise CheckpointError(
                    f"run {run_id!r}: checkpoint of {what} is an unauthenticated pickle; "
                    f"{self!r} never loads one (anyone who can write the database could have "
                    "put it there)"
                )
        else:
            raise CheckpointError(
                f"run {run_id!r}: checkpoint of {what} is corrupt: unknown auth byte 0x{auth:02x}"
            )
        if codec == _CODEC_JSON:
            try:
                doc = json.loads(bytes(body))
            except (ValueError, RecursionError) as exc:
                raise CheckpointError(
                    f"run {run_id!r}: checkpoint of {what} is corrupt: {exc}"
                ) from None
            return _from_json_doc(run_id, kind, what, doc)
        if codec == _CODEC_PICKLE:
            return _unpickle(run_id, kind, what, body)
        raise CheckpointError(
            f"run {run_id!r}: checkpoint of {what} is corrupt: unknown codec byte 0x{codec:02x}"
        )

    async def start_run(self, info: RunInfo) -> None:
        """Create a run (status "running"). CheckpointError if the id exists."""
        raise NotImplementedError

    async def mark_resumed(self, run_id: str) -> None:
        """Set a run back to "running" and count one more resume."""
        raise NotImplementedError

    async def save_step(self, run_id: str, cp: StepCheckpoint) -> None:
        """Store (insert or replace) one step's checkpoint; durable on return."""
        raise NotImplementedError

    def save_step_now(self, run_id: str, cp: StepCheckpoint) -> bool:
        """Optional fast path for a lone checkpoint (nothing else running or
        ready in the pipeline): store it on the calling thread, without
        suspending, if the store can do that cheaply. True: stored and
        durable, exactly as ``save_step`` would have it on return; False:
        nothing was written, and the pipeline awaits ``save_step``. The
        default declines."""
        return False

    async def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        raise NotImplementedError

    async def load_run(self, run_id: str) -> StoredRun:
        """The run and all its step checkpoints; RunNotFoundError if none."""
        raise NotImplementedError

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        """Most recent first (payloads left out)."""
        raise NotImplementedError

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> CheckpointStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _subject(kind: str, name: str) -> str:
    if kind == "step":
        return f"step {name!r}: its output (or context changes)"
    return f"the pipeline {kind}"


def _describe(kind: str, name: str) -> str:
    if kind == "step":
        return repr(name)
    return f"the run's {kind}"


def _json_doc(kind: str, value: Any) -> Any:
    """What JSON would store for ``value`` (``json_bytes`` then checks that
    it comes back type-exactly; _UNSET never does). A step's ``(output,
    changes)`` is ``{"output": ..., "changes": {...} or null, "deleted":
    [keys]}``: context keys a step removed are listed apart."""
    if kind != "step":
        return value
    if type(value) is not tuple or len(value) != 2:
        return _UNSET
    out, changes = value
    if changes is None:
        return {"output": out, "changes": None, "deleted": []}
    if type(changes) is not dict:
        return _UNSET
    kept: dict[Any, Any] = {}
    deleted: list[Any] = []
    for k, v in changes.items():
        if v is DELETED:
            deleted.append(k)
        else:
            kept[k] = v
    return {"output": out, "changes": kept, "deleted": deleted}


_SCALAR_JSON = {type(None): lambda v: "null", bool: lambda v: "true" if v else "false"}
_STEP_BODY_HEAD = b'{"output":'
_STEP_BODY_TAIL = b',"changes":null,"deleted":[]}'


def _plain_step_body(value: Any) -> bytes | None:
    """What ``json_bytes(_json_doc("step", value))`` gives for the common
    checkpoint, a str, int, bool or None output and no context changes,
    without the general walk; None for anything else."""
    if type(value) is not tuple or len(value) != 2 or value[1] is not None:
        return None
    out = value[0]
    t = type(out)
    try:
        if t is str:
            text = _JSON_STR(out)
            b = text.encode()
        elif t is int:
            b = int.__repr__(out).encode()
        elif t in _SCALAR_JSON:
            b = _SCALAR_JSON[t](out).encode()
        else:
            return None
    except ValueError:  # lone surrogates, ints past the digit limit: not JSON here
        return None
    return _STEP_BODY_HEAD + b + _STEP_BODY_TAIL


def _from_json_doc(run_id: str, kind: str, what: str, doc: Any) -> Any:
    if kind != "step":
        return doc
    if type(doc) is not dict or set(doc) != {"output", "changes", "deleted"}:
        raise CheckpointError(f"run {run_id!r}: checkpoint of {what} is corrupt: bad layout")
    changes = doc["changes"]
    if changes is not None:
        changes = dict(changes)
        for k in doc["deleted"]:
            changes[k] = DELETED
    return doc["output"], changes


def _unpickle(run_id: str, kind: str, what: str, body: Any) -> Any:
    try:
        value = pickle.loads(body)
    except Exception as exc:
        raise CheckpointError(
            f"run {run_id!r}: cannot unpickle the checkpoint of {what}: {exc}"
        ) from exc
    if kind == "step" and (type(value) is not tuple or len(value) != 2):
        raise CheckpointError(f"run {run_id!r}: checkpoint of {what} is corrupt: bad layout")
    return value


# ------------------------------------------------------------ group commit


def _settle(fut: asyncio.Future, res: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(res)


def _settle_all(futs: list, exc: BaseException | None) -> None:
    for fut in futs:
        if not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(None)


__all__ = [
    "DEFAULT_STORE_PATH",
    "SECRET_ENV",
    "CheckpointStore",
    "RunInfo",
    "StepCheckpoint",
    "StoredRun",
]
