"""Checkpoints never unpickle unauthenticated bytes from a shared database.

A pickle planted in a store (here one whose unpickling runs ``os.system`` and
leaves a marker file) must not run on resume: with a secret it fails
authentication, and PostgreSQL without a secret never loads a pickle at all.
Values JSON carries exactly are stored as JSON and come back with the same
types. PostgreSQL runs against a real server (caudal.testing.servers).
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import caudal
from caudal import MemoryStore, Pipeline, PostgresStore, Step
from caudal.pipeline.context import DELETED
from caudal.pipeline.stores import SqliteStore
from caudal.testing.servers import PostgresServer

SECRET = "s3cret-for-tests-0123456789"
OTHER = "another-secret-0123456789abcdef"


class IntSub(int):
    pass


class Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(autouse=True)
def _no_env_secret(monkeypatch):
    monkeypatch.delenv("CAUDAL_CHECKPOINT_SECRET", raising=False)


@pytest.fixture(scope="module")
def pg_dsn():
    with PostgresServer() as server:  # raises PostgresUnavailable with the fix
        yield server.dsn


def _flaky_pipeline(broken):
    async def a(x):
        return x + 1

    async def b(x):
        if broken["on"]:
            raise RuntimeError("b is down")
        return x * 10

    return Step(a) >> Step(b)


def _planted_payloads(marker):
    """Ways to put a pickle of Evil where a step's payload should be."""
    evil = pickle.dumps((Evil(marker), None))
    header = b"CDCK\x01P"
    return {
        "raw pickle (old format)": evil,
        "untagged pickle": header + b"\x00" + evil,
        "pickle with a forged tag": header + b"\x01" + b"\x07" * 32 + evil,
    }


def _sqlite_set(db, sql, *args):
    conn = sqlite3.connect(db)
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


# ------------------------------------------------------------------ SQLite


@pytest.mark.parametrize("how", list(_planted_payloads("x")))
async def test_planted_pickle_in_sqlite_is_not_run_with_a_secret(tmp_path, how):
    db, marker = tmp_path / "cp.db", tmp_path / "pwned"
    broken = {"on": True}
    p = _flaky_pipeline(broken)
    run = await p.run(1, store=SqliteStore(db, secret=SECRET), run_id="r")
    assert run.status == "failed"
    _sqlite_set(
        db,
        "UPDATE caudal_steps SET payload=? WHERE run_id='r' AND step='a'",
        _planted_payloads(marker)[how],
    )
    broken["on"] = False
    with pytest.raises(caudal.CheckpointError, match="checkpoint of 'a' failed authentication"):
        await p.resume("r", store=SqliteStore(db, secret=SECRET))
    assert not marker.exists()


async def test_planted_input_pickle_in_sqlite_is_not_run_with_a_secret(tmp_path):
    db, marker = tmp_path / "cp.db", tmp_path / "pwned"
    broken = {"on": True}
    p = _flaky_pipeline(broken)
    await p.run(1, store=SqliteStore(db, secret=SECRET), run_id="r")
    _sqlite_set(db, "UPDATE caudal_runs SET input=? WHERE run_id='r'", pickle.dumps(Evil(marker)))
    with pytest.raises(caudal.CheckpointError, match=r"run 'r'.*input.*failed authentication"):
        await p.resume("r", store=SqliteStore(db, secret=SECRET))
    assert not marker.exists()


async def test_secret_from_the_environment(tmp_path, monkeypatch):
    db, marker = tmp_path / "cp.db", tmp_path / "pwned"
    monkeypatch.setenv("CAUDAL_CHECKPOINT_SECRET", SECRET)
    broken = {"on": True}
    p = _flaky_pipeline(broken)
    await p.run(1, store=db, run_id="r")  # a path: the store reads the env var
    _sqlite_set(
        db,
        "UPDATE caudal_steps SET payload=? WHERE run_id='r' AND step='a'",
        pickle.dumps((Evil(marker), None)),
    )
    with pytest.raises(caudal.CheckpointError, match="failed authentication"):
        await p.resume("r", store=db)
    assert not marker.exists()


async def test_tampered_json_payload_fails_authentication(tmp_path):
    db = tmp_path / "cp.db"
    broken = {"on": True}
    p = _flaky_pipeline(broken)
    await p.run(1, store=SqliteStore(db, secret=SECRET), run_id="r")
    conn = sqlite3.connect(db)
    (payload,) = conn.execute("SELECT payload FROM caudal_steps WHERE step='a'").fetchone()
    conn.close()
    assert payload.startswith(b"CDCK\x01J\x01")  # JSON, tagged
    tampered = payload.replace(b'"output":2', b'"output":3')
    assert tampered != payload
    _sqlite_set(db, "UPDATE caudal_steps SET payload=? WHERE step='a'", tampered)
    broken["on"] = False
    with pytest.raises(
        caudal.CheckpointError,
        match="run 'r': checkpoint of 'a' failed authentication: "
        "written with another secret or tampered with",
    ):
        await p.resume("r", store=SqliteStore(db, secret=SECRET))
    # Another secret fails the same way, even on the untouched bytes.
    _sqlite_set(db, "UPDATE caudal_steps SET payload=? WHERE step='a'", payload)
    with pytest.raises(caudal.CheckpointError, match="failed authentication: written with another"):
        await p.resume("r", store=SqliteStore(db, secret=OTHER))
    run = await p.resume("r", store=SqliteStore(db, secret=SECRET))
    assert run.status == "completed" and run.result == 20


async def test_a_tag_is_bound_to_its_run_and_step():
    store = MemoryStore(secret=SECRET)
    raw = store.encode_payload("r1", "step", ((1, 2), None), "a")
    assert store.decode_payload("r1", "step", raw, "a") == ((1, 2), None)
    for run_id, name in (("r2", "a"), ("r1", "b")):
        with pytest.raises(caudal.CheckpointError, match="failed authentication"):
            store.decode_payload(run_id, "step", raw, name)
    with pytest.raises(caudal.CheckpointError, match="failed authentication"):
        store.decode_payload("r1", "input", raw)


def test_short_secret_is_a_configuration_error(monkeypatch, tmp_path):
    with pytest.raises(caudal.ConfigurationError, match="at least 16 bytes"):
        SqliteStore(tmp_path / "x.db", secret="short")
    monkeypatch.setenv("CAUDAL_CHECKPOINT_SECRET", "short")
    with pytest.raises(caudal.ConfigurationError, match="CAUDAL_CHECKPOINT_SECRET"):
        MemoryStore()


async def test_local_stores_without_a_secret_keep_pickles_and_old_rows(tmp_path):
    db = tmp_path / "cp.db"
    broken = {"on": True}

    async def a(x):
        return (x, {1, 2})  # not JSON: a pickle, fine in a local file

    async def b(x):
        if broken["on"]:
            raise RuntimeError("down")
        return x[0]

    p = Step(a) >> Step(b)
    run = await p.run(1, store=db, run_id="r")
    assert run.status == "failed"
    # A row written by an older caudal (a raw pickle) still loads here.
    _sqlite_set(
        db, "UPDATE caudal_steps SET payload=? WHERE step='a'", pickle.dumps(((5, {3}), None))
    )
    broken["on"] = False
    run = await p.resume("r", store=db)
    assert run.status == "completed" and run.result == 5


# --------------------------------------------------------------- JSON format


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        float("inf"),
        "é\x00",
        [],
        [1, [2.0, "x"]],
        {"a": {"b": [None]}},
    ],
)
def test_json_exact_values_round_trip_as_json(value):
    store = MemoryStore()
    raw = store.encode_payload("r", "input", value)
    assert raw.startswith(b"CDCK\x01J\x00")
    back = store.decode_payload("r", "input", raw)
    assert back == value and type(back) is type(value)
    step = store.encode_payload("r", "step", (value, {"k": value, "gone": DELETED}), "s")
    assert step.startswith(b"CDCK\x01J\x00")
    out, changes = store.decode_payload("r", "step", step, "s")
    assert out == value and type(out) is type(value)
    assert changes["k"] == value and changes["gone"] is DELETED


@pytest.mark.parametrize(
    "value",
    [(1, 2), {1: "a"}, {"a": (1,)}, {1, 2}, [b"x"], [[1, (2,)]], "\ud800\udc00", [10**5000]],
)
def test_values_json_would_change_are_pickled(value):
    for v in (value, IntSub(3), [IntSub(3)]):
        store = MemoryStore()
        raw = store.encode_payload("r", "context", v)
        assert raw.startswith(b"CDCK\x01P\x00")
        back = store.decode_payload("r", "context", raw)
        assert back == v and type(back) is type(v)


async def test_pipeline_outputs_and_context_round_trip_type_exactly(tmp_path):
    db = tmp_path / "cp.db"
    broken = {"on": True}

    async def a(x, context):
        context["n"] = 2**64
        context.pop("drop")
        return {"f": 1.0, "i": 1, "l": [True, None]}

    async def b(x, context):
        if broken["on"]:
            raise RuntimeError("down")
        return (x, dict(context))

    p = Step(a) >> Step(b)
    run = await p.run(
        [1], store=SqliteStore(db, secret=SECRET), run_id="r", context={"drop": 1, "k": "v"}
    )
    assert run.status == "failed"
    broken["on"] = False
    run = await p.resume("r", store=SqliteStore(db, secret=SECRET))
    out, ctx = run.result
    assert out == {"f": 1.0, "i": 1, "l": [True, None]}
    assert type(out["f"]) is float and type(out["i"]) is int
    assert ctx == {"k": "v", "n": 2**64}


# -------------------------------------------------------- crash and resume

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from caudal import Step

    db, marker, mode = sys.argv[1:4]

    async def a(x):
        with open(marker, "a") as f:
            f.write("a\\n")
        return {"n": x + 1, "t": [1, 2]}

    async def b(x):
        if mode == "run":
            os.kill(os.getpid(), signal.SIGKILL)  # crash after a's checkpoint
        return (x["n"] * 10, frozenset(x["t"]))

    async def main():
        p = Step(a) >> Step(b)
        if mode == "run":
            await p.run(1, store=db, run_id="crashy", context={"c": 1})
        else:
            r = await p.resume("crashy", store=db)
            print(r.status, r.result[0], sorted(r.result[1]), dict(r.context))

    asyncio.run(main())
    """
)


def test_a_pipeline_with_a_secret_resumes_after_a_crash(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db, marker = tmp_path / "cp.db", tmp_path / "ran.log"
    env = dict(os.environ, CAUDAL_CHECKPOINT_SECRET=SECRET)

    def child(mode, env):
        return subprocess.run(
            [sys.executable, str(script), str(db), str(marker), mode],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    r = child("run", env)
    assert r.returncode == -9, r.stderr
    wrong = child("resume", dict(env, CAUDAL_CHECKPOINT_SECRET=OTHER))
    assert wrong.returncode != 0
    assert "failed authentication: written with another secret or tampered with" in wrong.stderr
    r = child("resume", env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "completed 20 [1, 2] {'c': 1}"
    assert marker.read_text() == "a\n"  # a was restored, not run again


# --------------------------------------------------------------- PostgreSQL


@pytest.mark.parametrize("how", list(_planted_payloads("x")))
async def test_planted_pickle_in_postgres_is_refused_without_a_secret(pg_dsn, tmp_path, how):
    marker = tmp_path / "pwned"
    run_id = f"planted-{abs(hash(how))}"
    broken = {"on": True}
    p = _flaky_pipeline(broken)
    async with PostgresStore(pg_dsn) as st:
        assert (await p.run(1, store=st, run_id=run_id)).status == "failed"
        conn = st._conn
        await conn.execute(
            "UPDATE caudal_steps SET payload=%s WHERE run_id=%s AND step='a'",
            (_planted_payloads(marker)[how], run_id),
        )
    broken["on"] = False
    with pytest.raises(caudal.CheckpointError, match=f"run '{run_id}': checkpoint of 'a'") as ei:
        await p.resume(run_id, store=pg_dsn)
    assert "pickle" in str(ei.value)
    assert not marker.exists()


@pytest.mark.parametrize("how", list(_planted_payloads("x")))
async def test_planted_pickle_in_postgres_fails_authentication_with_a_secret(pg_dsn, tmp_path, how):
    marker = tmp_path / "pwned"
    run_id = f"planted-s-{abs(hash(how))}"
    broken = {"on": True}
    p = _flaky_pipeline(broken)
    async with PostgresStore(pg_dsn, secret=SECRET) as st:
        assert (await p.run(1, store=st, run_id=run_id)).status == "failed"
        await st._conn.execute(
            "UPDATE caudal_steps SET payload=%s WHERE run_id=%s AND step='a'",
            (_planted_payloads(marker)[how], run_id),
        )
        broken["on"] = False
        with pytest.raises(caudal.CheckpointError, match="'a' failed authentication"):
            await p.resume(run_id, store=st)
    assert not marker.exists()


async def test_postgres_without_a_secret_refuses_to_write_a_pickle(pg_dsn):
    async def pair(x):
        return (x, x)

    run = await (Step(pair) >> Step(lambda x: x[0], "first")).run(
        1, store=pg_dsn, run_id="pg-nopickle"
    )
    assert run.status == "failed"
    assert isinstance(run.error, caudal.CheckpointError)
    assert "'pair'" in str(run.error) and "CAUDAL_CHECKPOINT_SECRET" in str(run.error)
    with pytest.raises(caudal.CheckpointError, match=r"pipeline input.*secret"):
        await Pipeline([Step(pair)]).run((1, 2), store=pg_dsn, run_id="pg-nopickle-in")


async def test_postgres_with_a_secret_checkpoints_pickles_and_detects_tampering(pg_dsn):
    broken = {"on": True}

    async def pair(x):
        return (x, {x})

    async def use(x):
        if broken["on"]:
            raise RuntimeError("down")
        return x

    p = Step(pair) >> Step(use)
    async with PostgresStore(pg_dsn, secret=SECRET) as st:
        assert (await p.run(1, store=st, run_id="pg-secret")).status == "failed"
        broken["on"] = False
        run = await p.resume("pg-secret", store=st)
        assert run.status == "completed" and run.result == (1, {1})
        cur = await st._conn.execute(
            "SELECT payload FROM caudal_steps WHERE run_id='pg-secret' AND step='pair'"
        )
        (payload,) = await cur.fetchone()
        flipped = bytearray(payload)
        flipped[-2] ^= 1
        await st._conn.execute(
            "UPDATE caudal_steps SET payload=%s WHERE run_id='pg-secret' AND step='pair'",
            (bytes(flipped),),
        )
        await st._conn.execute(
            "UPDATE caudal_runs SET status='failed' WHERE run_id='pg-secret'",
        )
        with pytest.raises(caudal.CheckpointError, match="'pair' failed authentication"):
            await p.resume("pg-secret", store=st)


def test_cli_store_takes_its_secret_from_the_environment(pg_dsn, tmp_path):
    (tmp_path / "reg.py").write_text(
        "async def pair(x):\n    return (1, 2)\n\nREG = {'pair': pair}\n"
    )
    (tmp_path / "p.yaml").write_text("steps:\n  - {name: s, uses: pair}\n")
    base = [sys.executable, "-m", "caudal.cli"]

    def cli(*args, secret=None):
        env = {k: v for k, v in os.environ.items() if k != "CAUDAL_CHECKPOINT_SECRET"}
        if secret is not None:
            env["CAUDAL_CHECKPOINT_SECRET"] = secret
        return subprocess.run(
            [*base, *args, "--store", pg_dsn],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    # A tuple output needs a pickle: refused without a secret, fine with one.
    r = cli("run", "p.yaml", "--registry", "reg:REG", "--run-id", "cli-nosecret")
    assert r.returncode != 0 and "CAUDAL_CHECKPOINT_SECRET" in r.stdout + r.stderr
    r = cli("run", "p.yaml", "--registry", "reg:REG", "--run-id", "cli-secret", secret=SECRET)
    assert r.returncode == 0, r.stderr
    r = cli("resume", "cli-secret", "--registry", "reg:REG", secret=SECRET)
    assert r.returncode == 0, r.stderr
    r = cli("resume", "cli-secret", "--registry", "reg:REG", secret=OTHER)
    assert r.returncode == 1
    assert "failed authentication: written with another secret or tampered with" in r.stderr
    r = cli("resume", "cli-secret", "--registry", "reg:REG")
    assert r.returncode == 1 and "has no secret to verify it" in r.stderr
