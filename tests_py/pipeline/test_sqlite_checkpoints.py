"""Where SqliteStore commits a checkpoint: a lone one on the calling thread
when that is cheap, everything else on the writer thread; on either path a
checkpoint is acknowledged only once committed. (What each path costs is
measured in benchmarks/bench_pipeline.py.)"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from caudal import Pipeline, SqliteStore, Step


async def inc(x):
    return x + 1


def chain(n: int, fn=inc) -> Pipeline:
    p = Step(fn, "c0")
    for i in range(1, n):
        p = p >> Step(fn, f"c{i}")
    return p


# Tests that count where checkpoints went raise inline_max_s far above any
# commit time, so a loaded machine does not move them to the writer thread.
ALWAYS = 10.0


def committed_steps(db) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT step FROM caudal_steps")}
    finally:
        conn.close()


async def test_a_chain_commits_each_checkpoint_on_the_calling_thread(tmp_path):
    db = tmp_path / "c.db"
    seen = []

    def probe(i):
        async def step(x):
            # Every earlier step is on disk (visible to another connection)
            # before this one starts.
            seen.append(committed_steps(db) >= {f"c{j}" for j in range(i)})
            return x + 1

        return step

    p = Step(probe(0), "c0")
    for i in range(1, 20):
        p = p >> Step(probe(i), f"c{i}")
    async with SqliteStore(db, inline_max_s=ALWAYS) as st:
        run = await p.run(0, store=st, run_id="r")
        assert run.status == "completed" and run.result == 20
        assert st.inline_transactions == st.transactions == 20
    assert all(seen) and len(seen) == 20
    assert committed_steps(db) == {f"c{i}" for i in range(20)}


async def test_inline_max_s_zero_sends_every_checkpoint_to_the_writer_thread(tmp_path):
    async with SqliteStore(tmp_path / "t.db", inline_max_s=0) as st:
        run = await chain(10).run(0, store=st)
        assert run.result == 10
        assert st.inline_transactions == 0 and st.transactions == 10
    with pytest.raises(ValueError, match="inline_max_s"):
        SqliteStore(tmp_path / "x.db", inline_max_s=-1)


async def test_slow_commits_go_to_the_writer_thread(tmp_path):
    async with SqliteStore(tmp_path / "s.db", inline_max_s=ALWAYS) as st:
        await chain(3).run(0, store=st)
        assert st.inline_transactions == 3
        st._commit_s = 2 * ALWAYS  # as if the disk had become slow
        await chain(3).run(0, store=st)
        assert st.inline_transactions == 3 and st.transactions == 6


async def test_concurrent_branches_still_share_transactions(tmp_path):
    async def leaf(x):
        await asyncio.sleep(0)
        return x

    p = Pipeline([Step(leaf, f"l{i}") for i in range(100)])
    async with SqliteStore(tmp_path / "g.db") as st:
        run = await p.run(1, store=st)
        assert run.status == "completed"
        assert st.transactions < 100
        assert len((await st.load_run(run.run_id)).steps) == 100


async def test_a_write_lock_held_elsewhere_sends_the_checkpoint_to_the_writer(tmp_path):
    db = tmp_path / "l.db"
    other: list[sqlite3.Connection] = []

    async def lock_the_file(x):
        # Another writer takes the lock as this step ends and lets go 50 ms
        # later: the checkpoint must neither fail nor hold the loop.
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        other.append(conn)
        asyncio.get_running_loop().call_later(0.05, conn.execute, "COMMIT")
        return x + 1

    ticks = []

    async def ticker():
        while True:
            ticks.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.005)

    p = Step(inc, "a") >> Step(lock_the_file, "b") >> Step(inc, "c")
    async with SqliteStore(db, inline_max_s=ALWAYS) as st:
        t = asyncio.create_task(ticker())
        run = await p.run(0, store=st, run_id="r")
        t.cancel()
        assert run.status == "completed" and run.result == 3
        # b's checkpoint found the lock taken and went to the writer thread.
        assert st.transactions == 3 and st.inline_transactions == 2
    other[0].close()
    assert committed_steps(db) == {"a", "b", "c"}
    # The loop kept turning while the writer waited for the lock.
    assert len(ticks) >= 3


async def test_the_wal_is_folded_back_while_checkpoints_commit_on_the_loop(tmp_path):
    db = tmp_path / "w.db"
    wal = tmp_path / "w.db-wal"
    async with SqliteStore(db, inline_max_s=ALWAYS) as st:
        run = await chain(6000).run(0, store=st)
        assert run.result == 6000
        # All but those that came while the writer thread was folding the
        # WAL (it holds the write lock meanwhile) and went to it.
        assert st.transactions == 6000 and st.inline_transactions > 5000
        # Without the writer thread's WAL checkpoints the WAL would hold
        # every commit since the run started (6000 commits of a 4 KiB page or more).
        size = wal.stat().st_size
    assert size < 6000 * 4096 / 2, size


@pytest.mark.parametrize(
    "out",
    ["", "plain", 'é\n"\\\u2028', "\ud800", 0, -5, 10**50, True, False, None, 1.5, [1], {"a": 1}],
)
@pytest.mark.parametrize("changes", [None, {}, {"k": 1}])
def test_the_short_way_to_encode_a_plain_output_gives_the_same_bytes(out, changes):
    from caudal._trust import json_bytes
    from caudal.pipeline.stores.base import _json_doc, _plain_step_body

    general = json_bytes(_json_doc("step", (out, changes)))
    short = _plain_step_body((out, changes))
    assert short is None or short == general
    if changes is None and type(out) in (str, int, bool, type(None)):
        assert short == general  # taken whenever it applies
    store = SqliteStore("unused.db")
    raw = store.encode_payload("r", "step", (out, changes), "s")
    assert store.decode_payload("r", "step", raw, "s") == (out, changes)
