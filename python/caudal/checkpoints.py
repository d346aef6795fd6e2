"""Checkpoint stores: where pipeline runs and their completed steps are kept.

A pipeline stores each step's completion (its output and context changes,
pickled, plus status, timing, attempts, usage) and waits until the store
says it is durable **before** any dependent of that step starts. After a
crash, ``Pipeline.resume(run_id)`` restores every completed step from here
and runs only the rest.

- :class:`SqliteStore` (the default): one file, stdlib ``sqlite3`` in WAL
  mode with ``synchronous=NORMAL`` (a commit survives the process being
  killed; only an OS crash or power loss can drop the last commits). The
  connection lives on one dedicated writer thread, so the event loop never
  waits on disk.
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
import os
import pickle
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caudal._pipeline_context import DELETED
from caudal._trust import hmac_tag, json_bytes, secret_bytes, tags_equal
from caudal.errors import CheckpointError, RunNotFoundError

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


@dataclass(slots=True)
class StepCheckpoint:
    """One step's stored outcome. ``payload`` is ``(output,
    context_changes)`` encoded by ``store.encode_payload`` (see the module
    docstring); ``status`` is ``"completed"`` (restored on resume:
    success, or an optional step's failure) or ``"failed"`` (kept for
    inspection; run again on resume)."""

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


# ------------------------------------------------------------------ memory


class MemoryStore(CheckpointStore):
    """Checkpoints in a dict: resume after a failure in the same process.
    Local: pickles are stored without a secret (``secret=``, or
    ``$CAUDAL_CHECKPOINT_SECRET``, still tags and verifies everything)."""

    local_pickles = True

    def __init__(self, *, secret: bytes | str | None = None) -> None:
        self._set_secret(secret)
        self._runs: dict[str, StoredRun] = {}

    async def start_run(self, info: RunInfo) -> None:
        if info.run_id in self._runs:
            raise CheckpointError(f"run {info.run_id!r} already exists")
        self._runs[info.run_id] = StoredRun(info)

    def _get(self, run_id: str) -> StoredRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(f"no run {run_id!r} in this store") from None

    async def mark_resumed(self, run_id: str) -> None:
        r = self._get(run_id)
        r.info.status, r.info.resumes, r.info.updated_at = (
            "running",
            r.info.resumes + 1,
            time.time(),
        )

    async def save_step(self, run_id: str, cp: StepCheckpoint) -> None:
        self._get(run_id).steps[cp.step] = cp

    async def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        r = self._get(run_id)
        r.info.status, r.info.error, r.info.updated_at = status, error, time.time()

    async def load_run(self, run_id: str) -> StoredRun:
        r = self._get(run_id)
        return StoredRun(r.info, dict(r.steps))

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        runs = sorted(self._runs.values(), key=lambda r: r.info.created_at, reverse=True)
        return [r.info for r in runs[:limit]]


# ------------------------------------------------------------------ SQLite

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS caudal_runs (
  run_id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  input BLOB,
  context BLOB,
  definition TEXT,
  error TEXT,
  resumes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS caudal_steps (
  run_id TEXT NOT NULL,
  step TEXT NOT NULL,
  status TEXT NOT NULL,
  seq INTEGER NOT NULL,
  payload BLOB,
  started_at REAL,
  finished_at REAL,
  latency_s REAL,
  attempts INTEGER,
  cache_hit INTEGER,
  error TEXT,
  tokens INTEGER,
  cost_usd REAL,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
"""

_SQLITE_UPSERT_STEP = (
    f"INSERT OR REPLACE INTO caudal_steps (run_id, {_STEP_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_STOP = object()


class SqliteStore(CheckpointStore):
    """Checkpoints in a SQLite file (created with its folders if missing).

    One dedicated thread owns the connection and runs every statement; the
    event loop only queues requests and awaits futures. WAL journal,
    ``synchronous=NORMAL`` by default (``synchronous="FULL"`` also fsyncs
    every commit, surviving power loss at a cost of a disk flush per
    transaction). ``group_commit`` (default True): see the module docstring.
    Several processes may share the file (SQLite locks it; ``busy_timeout_s``
    bounds the wait).

    Trust: the file is this process's own (like its code), so without a
    secret it stores and loads pickles; with ``secret=`` (or
    ``$CAUDAL_CHECKPOINT_SECRET``) every payload is tagged and one that does
    not verify is refused (see the module docstring).
    """

    local_pickles = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        group_commit: bool = True,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
        secret: bytes | str | None = None,
    ) -> None:
        self._set_secret(secret)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(
                f"SqliteStore: synchronous must be NORMAL or FULL, got {synchronous!r}"
            )
        self.path = Path(path)
        self.group_commit = group_commit
        self._synchronous = synchronous.upper()
        self._busy_ms = int(busy_timeout_s * 1000)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.transactions = 0  # checkpoint transactions committed (for benchmarks)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # The writer thread ------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._closed:
                raise CheckpointError(f"{self!r} is closed")
            if self._thread is None:
                ready: queue.SimpleQueue = queue.SimpleQueue()
                t = threading.Thread(
                    target=self._writer, args=(ready,), name="caudal-sqlite", daemon=True
                )
                t.start()
                err = ready.get()
                if err is not None:
                    t.join()
                    raise CheckpointError(f"cannot open checkpoint store {self.path}: {err}")
                self._thread = t

    def _open(self) -> sqlite3.Connection:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"WAL journal mode refused (got {mode})")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.executescript(_SQLITE_SCHEMA)
        return conn

    def _writer(self, ready: queue.SimpleQueue) -> None:
        try:
            conn = self._open()
        except Exception as exc:
            ready.put(exc)
            return
        ready.put(None)
        q = self._queue
        try:
            while True:
                item = q.get()
                if item is _STOP:
                    return
                batch = [item]
                if self.group_commit:
                    while True:
                        try:
                            nxt = q.get_nowait()
                        except queue.Empty:
                            break
                        if nxt is _STOP:
                            q.put(_STOP)  # finish this batch, then stop
                            break
                        batch.append(nxt)
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> None:
        # Consecutive checkpoint writes share one transaction; anything else
        # runs on its own, in order.
        i = 0
        while i < len(batch):
            j = i
            while j < len(batch) and batch[j][0] is None:
                j += 1
            if j > i:
                self._commit_checkpoints(conn, batch[i:j])
                i = j
                continue
            fn, args, loop, fut = batch[i]
            try:
                res, exc = fn(conn, *args), None
            except Exception as e:
                res, exc = None, e
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            loop.call_soon_threadsafe(_settle, fut, res, exc)
            i += 1

    def _commit_checkpoints(self, conn: sqlite3.Connection, items: list) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_SQLITE_UPSERT_STEP, [it[1] for it in items])
            conn.execute("COMMIT")
            self.transactions += 1
            exc = None
        except Exception as e:
            exc = CheckpointError(f"checkpoint write to {self.path} failed: {e}")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        # One wake-up per loop for the whole batch.
        by_loop: dict[Any, list] = {}
        for _, _, loop, fut in items:
            by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, futs, exc)

    async def _call(self, fn: Any, *args: Any) -> Any:
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((fn, args, loop, fut))
        return await fut

    # The interface ----------------------------------------------------
    async def save_step(self, run_id: str, cp: StepCheckpoint) -> None:
        if self._thread is None:
            self._ensure_thread()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((None, cp.row(run_id), loop, fut))
        await fut

    async def start_run(self, info: RunInfo) -> None:
        await self._call(_sqlite_start_run, info)

    async def mark_resumed(self, run_id: str) -> None:
        await self._call(_sqlite_mark_resumed, run_id)

    async def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        await self._call(_sqlite_finish_run, run_id, status, error)

    async def load_run(self, run_id: str) -> StoredRun:
        return await self._call(_sqlite_load_run, run_id)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        return await self._call(_sqlite_list_runs, limit)

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            t, self._thread = self._thread, None
        if t is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(t.join)


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


def _sqlite_start_run(conn: sqlite3.Connection, info: RunInfo) -> None:
    now = time.time()
    try:
        conn.execute(
            f"INSERT INTO caudal_runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                info.run_id,
                info.pipeline,
                info.status,
                info.created_at or now,
                now,
                info.input,
                info.context,
                json.dumps(info.definition) if info.definition is not None else None,
                info.error,
                info.resumes,
            ),
        )
    except sqlite3.IntegrityError:
        raise CheckpointError(f"run {info.run_id!r} already exists") from None


def _sqlite_mark_resumed(conn: sqlite3.Connection, run_id: str) -> None:
    cur = conn.execute(
        "UPDATE caudal_runs SET status='running', resumes=resumes+1, updated_at=?, error=NULL "
        "WHERE run_id=?",
        (time.time(), run_id),
    )
    if cur.rowcount == 0:
        raise RunNotFoundError(f"no run {run_id!r} in this store")


def _sqlite_finish_run(
    conn: sqlite3.Connection, run_id: str, status: str, error: str | None
) -> None:
    conn.execute(
        "UPDATE caudal_runs SET status=?, error=?, updated_at=? WHERE run_id=?",
        (status, error, time.time(), run_id),
    )


def _sqlite_load_run(conn: sqlite3.Connection, run_id: str) -> StoredRun:
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM caudal_runs WHERE run_id=?", (run_id,)
    ).fetchone()
    if row is None:
        raise RunNotFoundError(f"no run {run_id!r} in this store")
    steps = {
        r[0]: StepCheckpoint.from_row(r)
        for r in conn.execute(
            f"SELECT {_STEP_COLUMNS} FROM caudal_steps WHERE run_id=? ORDER BY seq", (run_id,)
        )
    }
    return StoredRun(_info_from_row(row), steps)


def _sqlite_list_runs(conn: sqlite3.Connection, limit: int) -> list[RunInfo]:
    rows = conn.execute(
        "SELECT run_id, pipeline, status, created_at, updated_at, NULL, NULL, definition, "
        "error, resumes FROM caudal_runs ORDER BY created_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_info_from_row(r) for r in rows]


# -------------------------------------------------------------- PostgreSQL

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS caudal_runs (
  run_id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  input BYTEA,
  context BYTEA,
  definition TEXT,
  error TEXT,
  resumes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS caudal_steps (
  run_id TEXT NOT NULL REFERENCES caudal_runs(run_id) ON DELETE CASCADE,
  step TEXT NOT NULL,
  status TEXT NOT NULL,
  seq INTEGER NOT NULL,
  payload BYTEA,
  started_at DOUBLE PRECISION,
  finished_at DOUBLE PRECISION,
  latency_s DOUBLE PRECISION,
  attempts INTEGER,
  cache_hit BOOLEAN,
  error TEXT,
  tokens BIGINT,
  cost_usd DOUBLE PRECISION,
  PRIMARY KEY (run_id, step)
);
"""

_PG_UPSERT_STEP = (
    f"INSERT INTO caudal_steps (run_id, {_STEP_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (run_id, step) DO UPDATE SET status=EXCLUDED.status, seq=EXCLUDED.seq, "
    "payload=EXCLUDED.payload, started_at=EXCLUDED.started_at, "
    "finished_at=EXCLUDED.finished_at, latency_s=EXCLUDED.latency_s, "
    "attempts=EXCLUDED.attempts, cache_hit=EXCLUDED.cache_hit, error=EXCLUDED.error, "
    "tokens=EXCLUDED.tokens, cost_usd=EXCLUDED.cost_usd"
)

# Any fixed number: serialises schema creation between processes.
_PG_SCHEMA_LOCK = 0x63617564616C


class PostgresStore(CheckpointStore):
    """Checkpoints in PostgreSQL (psycopg 3, async), for runs started on one
    machine and resumed or inspected from another.

    ``dsn``: a libpq connection string or URI. The tables (``caudal_runs``,
    ``caudal_steps``) are created on first use. One connection per store;
    checkpoints are group-committed by a writer task (see the module
    docstring). A store belongs to the event loop that first used it.

    Trust: the database is shared, so a pickle read from it could run
    anyone's code. With ``secret`` (or ``$CAUDAL_CHECKPOINT_SECRET``; at least
    16 bytes, the same in every process that resumes the runs) every payload
    is tagged and verified before it is decoded. Without one only
    JSON-representable values are checkpointed: writing a pickle is refused
    (CheckpointError, which fails the run) and so is reading one.
    """

    def __init__(
        self, dsn: str, *, group_commit: bool = True, secret: bytes | str | None = None
    ) -> None:
        self._set_secret(secret)
        self.dsn = dsn
        self.group_commit = group_commit
        self._conn: Any = None
        self._lock: asyncio.Lock | None = None
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None
        self.transactions = 0

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # the DSN may hold a password

    async def _connection(self) -> Any:
        if self._conn is None:
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - an install problem
                raise CheckpointError(
                    "PostgresStore needs psycopg 3: pip install 'psycopg[binary]'"
                ) from exc
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._conn is None:
                    try:
                        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                    except psycopg.Error as exc:
                        raise CheckpointError(f"cannot connect to PostgreSQL: {exc}") from exc
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                        await conn.execute(_PG_SCHEMA)
                    self._conn = conn
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        conn = await self._connection()
        assert self._lock is not None
        async with self._lock:
            return await fn(conn, *args)

    async def save_step(self, run_id: str, cp: StepCheckpoint) -> None:
        await self._connection()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((cp.row(run_id), fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        await fut

    async def _write_pending(self) -> None:
        import psycopg

        while self._pending:
            if self.group_commit:
                batch, self._pending = self._pending, []
            else:
                batch, self._pending = self._pending[:1], self._pending[1:]
            try:
                assert self._lock is not None
                async with self._lock:
                    conn = self._conn
                    if conn is None:
                        raise CheckpointError(f"{self!r} is closed")
                    async with conn.transaction():
                        async with conn.cursor() as cur:
                            await cur.executemany(_PG_UPSERT_STEP, [row for row, _ in batch])
                self.transactions += 1
                exc = None
            except (psycopg.Error, CheckpointError) as e:
                exc = CheckpointError(f"checkpoint write to PostgreSQL failed: {e}")
            except BaseException:
                # Cancelled mid-write: whether it committed is unknown, so
                # the waiters (and anything queued behind them) fail.
                lost = [f for _, f in batch] + [f for _, f in self._pending]
                self._pending = []
                _settle_all(lost, CheckpointError("checkpoint write interrupted"))
                raise
            _settle_all([f for _, f in batch], exc)

    async def start_run(self, info: RunInfo) -> None:
        import psycopg

        async def q(conn: Any) -> None:
            now = time.time()
            try:
                await conn.execute(
                    f"INSERT INTO caudal_runs ({_RUN_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        info.run_id,
                        info.pipeline,
                        info.status,
                        info.created_at or now,
                        now,
                        info.input,
                        info.context,
                        json.dumps(info.definition) if info.definition is not None else None,
                        info.error,
                        info.resumes,
                    ),
                )
            except psycopg.errors.UniqueViolation:
                raise CheckpointError(f"run {info.run_id!r} already exists") from None

        await self._run(q)

    async def mark_resumed(self, run_id: str) -> None:
        async def q(conn: Any) -> None:
            cur = await conn.execute(
                "UPDATE caudal_runs SET status='running', resumes=resumes+1, updated_at=%s, "
                "error=NULL WHERE run_id=%s",
                (time.time(), run_id),
            )
            if cur.rowcount == 0:
                raise RunNotFoundError(f"no run {run_id!r} in this store")

        await self._run(q)

    async def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        async def q(conn: Any) -> None:
            await conn.execute(
                "UPDATE caudal_runs SET status=%s, error=%s, updated_at=%s WHERE run_id=%s",
                (status, error, time.time(), run_id),
            )

        await self._run(q)

    async def load_run(self, run_id: str) -> StoredRun:
        async def q(conn: Any) -> StoredRun:
            cur = await conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM caudal_runs WHERE run_id=%s", (run_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in this store")
            cur = await conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM caudal_steps WHERE run_id=%s ORDER BY seq",
                (run_id,),
            )
            steps = {r[0]: StepCheckpoint.from_row(r) for r in await cur.fetchall()}
            return StoredRun(_info_from_row(row), steps)

        return await self._run(q)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        async def q(conn: Any) -> list[RunInfo]:
            cur = await conn.execute(
                "SELECT run_id, pipeline, status, created_at, updated_at, NULL, NULL, "
                "definition, error, resumes FROM caudal_runs ORDER BY created_at DESC LIMIT %s",
                (limit,),
            )
            return [_info_from_row(r) for r in await cur.fetchall()]

        return await self._run(q)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await self._writer
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def open_store(spec: Any) -> tuple[CheckpointStore | None, bool]:
    """``(store, owned)`` for a ``store=`` argument: a CheckpointStore as is;
    False for none; None for the default SQLite file ($CAUDAL_STORE or
    .caudal/checkpoints.db); a ``postgres://``/``postgresql://`` URI for
    PostgresStore; any other str or path for a SqliteStore there. ``owned``
    says whether the caller opened it (and so closes it)."""
    if spec is False:
        return None, False
    if isinstance(spec, CheckpointStore):
        return spec, False
    if spec is None:
        spec = os.environ.get("CAUDAL_STORE") or DEFAULT_STORE_PATH
    if isinstance(spec, str) and spec.startswith(("postgres://", "postgresql://")):
        return PostgresStore(spec), True
    if isinstance(spec, str | os.PathLike):
        return SqliteStore(spec), True
    raise TypeError(
        f"store must be a CheckpointStore, a path, a postgresql:// URI, None or False; got {spec!r}"
    )


__all__ = [
    "DEFAULT_STORE_PATH",
    "SECRET_ENV",
    "CheckpointStore",
    "MemoryStore",
    "PostgresStore",
    "RunInfo",
    "SqliteStore",
    "StepCheckpoint",
    "StoredRun",
    "open_store",
]
