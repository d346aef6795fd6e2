"""Pipelines: scheduling and checkpoint costs on a 1,000-step DAG.

The DAG: 20 levels of 50 trivial async steps; each step of level k > 0
depends on 1-3 random steps of level k-1 (seeded). Every contender runs the
same Step objects through the same ExecutorCore.

1. Scheduling cost per step, no checkpoints:
   (a) ``Pipeline.run(store=False)``;
   (b) hand-written: ``asyncio.gather`` of ``executor.execute`` level by
       level, passing outputs exactly as the pipeline does (one dependency:
       its output; several: a dict) — the fair baseline;
   (c) the same gather with bare ``await fn(data)`` calls, no executor:
       what the executor itself costs, for reference.
2. Checkpoint cost per step = (run with a store - run without) / 1,000:
   SQLite (WAL, synchronous=NORMAL) and PostgreSQL (a server started here,
   fsync on), each with group commit (default) and with one transaction per
   checkpoint. Also a 200-step chain, where no two checkpoints can share a
   transaction: the cost of a lone checkpoint.
3. Resume after a crash at step 900: the 100 last checkpoints (in
   topological order) deleted, run marked running; time of ``resume``
   (loading and unpickling 900 checkpoints, then running 100 steps).
4. The checkpoint floor: a checkpointed step of a chain (each checkpoint
   alone in its transaction) against the bare-commit floor at the same
   ``synchronous`` setting: a plain ``sqlite3`` loop running the store's own
   statements (BEGIN IMMEDIATE, the same UPSERT of a row with the same
   payload, COMMIT) on a WAL file. Cost of a checkpointed step = (chain run
   with the store - without) / steps. Rows for NORMAL and FULL, for the
   default store (a lone cheap commit made on the event loop's thread) and
   with ``inline_max_s=0`` (every checkpoint through the writer thread, as
   before). Floor: at most 1.5x the bare commit, as the median over rounds
   of each round's ratio (a round runs every contender once, one after the
   other, so its ratio compares runs made under the same load).

    python benchmarks/bench_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Floor, record
from _harness import median_ratio, save
from caudal import ExecutorCore, Pipeline, PostgresStore, SqliteStore, Step
from caudal.pipeline.stores.sqlite import _SQLITE_SCHEMA, _SQLITE_UPSERT_STEP
from caudal.testing.servers import PostgresServer

LEVELS, WIDTH = 20, 50


async def work(data):
    return 1


async def work_suspending(data):
    await asyncio.sleep(0)  # gives the loop a turn, as any real I/O would
    return 1


def build(fn=work) -> tuple[Pipeline, list[list[str]], dict[str, list[str]], dict[str, Step]]:
    rng = random.Random(42)
    levels = [[f"s{k}_{i}" for i in range(WIDTH)] for k in range(LEVELS)]
    deps: dict[str, list[str]] = {}
    steps = {}
    for k, level in enumerate(levels):
        for name in level:
            steps[name] = Step(fn, name)
            if k:
                deps[name] = rng.sample(levels[k - 1], rng.randint(1, 3))
    p = Pipeline(list(steps.values()), depends_on=deps)
    return p, levels, deps, steps


def build_chain(n: int) -> Pipeline:
    steps = [Step(work, f"c{i}") for i in range(n)]
    return Pipeline(steps, depends_on={f"c{i}": [f"c{i - 1}"] for i in range(1, n)})


async def by_levels(ex, levels, deps, steps, data) -> dict:
    out: dict[str, object] = {}
    execute = ex.execute
    for level in levels:

        def input_for(name):
            d = deps.get(name)
            if not d:
                return data
            if len(d) == 1:
                return out[d[0]]
            return {x: out[x] for x in d}

        results = await asyncio.gather(*(execute(steps[n], input_for(n)) for n in level))
        for n, r in zip(level, results, strict=True):
            out[n] = r.output
    return out


async def by_levels_bare(levels, deps, data, fn=work) -> dict:
    out: dict[str, object] = {}
    for level in levels:

        def input_for(name):
            d = deps.get(name)
            if not d:
                return data
            if len(d) == 1:
                return out[d[0]]
            return {x: out[x] for x in d}

        results = await asyncio.gather(*(fn(input_for(n)) for n in level))
        for n, r in zip(level, results, strict=True):
            out[n] = r
    return out


async def timed(contenders: dict, rounds: int, seed: int = 7) -> dict[str, float]:
    """Median seconds per call of each contender, interleaved in shuffled order."""
    rng = random.Random(seed)
    for fn in contenders.values():  # warm-up
        await fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for _ in range(rounds):
        rng.shuffle(names)
        for n in names:
            t0 = time.perf_counter()
            await contenders[n]()
            samples[n].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


async def scheduling(quick: bool) -> dict:
    out = {}
    ex = ExecutorCore()
    n = LEVELS * WIDTH
    for kind, fn in (("trivial", work), ("suspending", work_suspending)):
        p, levels, deps, steps = build(fn)
        ref = await by_levels(ex, levels, deps, steps, 0)
        got = (await p.run(0, executor=ex, store=False)).outputs
        assert got == ref, "the pipeline and the hand-written version disagree"
        t = await timed(
            {
                "pipeline": lambda p=p: p.run(0, executor=ex, store=False),
                "gather_by_levels": lambda lv=levels, st=steps, dp=deps: by_levels(
                    ex, lv, dp, st, 0
                ),
                "gather_by_levels_bare": lambda lv=levels, fn=fn, dp=deps: by_levels_bare(
                    lv, dp, 0, fn
                ),
            },
            rounds=5 if quick else 15,
        )
        out[kind] = {k: v / n * 1e6 for k, v in t.items()}  # µs per step
    return out


async def checkpoint_costs(quick: bool, pg_dsn: str | None, tmp: Path) -> dict:
    p, *_ = build()
    chain = build_chain(200)
    ex = ExecutorCore()
    rounds = 3 if quick else 7
    stores = {
        "sqlite_group": SqliteStore(tmp / "group.db"),
        "sqlite_per_checkpoint": SqliteStore(tmp / "single.db", group_commit=False),
    }
    if pg_dsn:
        stores["postgres_group"] = PostgresStore(pg_dsn)
        stores["postgres_per_checkpoint"] = PostgresStore(pg_dsn, group_commit=False)
    out: dict[str, dict] = {}
    for shape, pipe, n in (("dag_1000", p, 1000), ("chain_200", chain, 200)):
        contenders = {"none": lambda pipe=pipe: pipe.run(0, executor=ex, store=False)}
        for name, st in stores.items():
            contenders[name] = lambda pipe=pipe, st=st: pipe.run(0, executor=ex, store=st)
        t = await timed(contenders, rounds=rounds)
        base = t["none"]
        out[shape] = {
            "run_ms": {k: v * 1e3 for k, v in t.items()},
            "checkpoint_us_per_step": {
                k: (v - base) / n * 1e6 for k, v in t.items() if k != "none"
            },
            "transactions_per_run": {},
        }
    # Transactions per 1,000-step run, from one more run each.
    for name, st in stores.items():
        before = st.transactions
        await p.run(0, executor=ex, store=st)
        out["dag_1000"]["transactions_per_run"][name] = st.transactions - before
    for st in stores.values():
        await st.close()
    return out


async def resume_after_crash(quick: bool, tmp: Path) -> dict:
    p, levels, *_ = build()
    ex = ExecutorCore()
    order = [n for level in levels for n in level]
    lost = order[900:]
    db = tmp / "resume.db"
    samples, load_samples = [], []
    for i in range(3 if quick else 7):
        rid = f"crash{i}"
        async with SqliteStore(db) as st:
            await p.run(0, executor=ex, store=st, run_id=rid)
        conn = sqlite3.connect(db)
        conn.executemany(
            "DELETE FROM caudal_steps WHERE run_id=? AND step=?", [(rid, s) for s in lost]
        )
        conn.execute("UPDATE caudal_runs SET status='running' WHERE run_id=?", (rid,))
        conn.commit()
        conn.close()
        async with SqliteStore(db) as st:
            t0 = time.perf_counter()
            stored = await st.load_run(rid)
            load_samples.append(time.perf_counter() - t0)
            assert len(stored.steps) == 900
            t0 = time.perf_counter()
            run = await p.resume(rid, executor=ex, store=st)
            samples.append(time.perf_counter() - t0)
            assert run.status == "completed"
            assert sum(r.restored for r in run.steps.values()) == 900
    return {
        "resume_ms": statistics.median(samples) * 1e3,
        "load_900_checkpoints_ms": statistics.median(load_samples) * 1e3,
    }


def bare_commit_loop(db: Path, synchronous: str, payload: bytes, n: int):
    """What a checkpoint must cost at least: the store's statements, one
    transaction per row, on the caller's thread."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(_SQLITE_SCHEMA)

    async def loop() -> None:
        run_id = uuid.uuid4().hex  # as a pipeline run's id
        now = time.time()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                _SQLITE_UPSERT_STEP,
                (run_id, f"c{i}", "completed", i, payload, now, now, 0.0, 1, False, None, 0, 0.0),
            )
            conn.execute("COMMIT")

    return loop, conn


async def timed_cpu(
    contenders: dict, rounds: int, seed: int = 7
) -> tuple[dict, dict, list[dict], list[dict]]:
    """`timed`, plus the median CPU time of the whole process (every
    thread: the writer thread's work counts) per call. On a shared machine
    a longer run is descheduled more often, which wall clock counts and CPU
    time does not; a disk flush is waited for, which only wall clock
    counts. Also returns every round's times (wall, CPU), for ratios taken
    within a round."""
    rng = random.Random(seed)
    for fn in contenders.values():
        await fn()
    wall: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for _ in range(rounds):
        rng.shuffle(names)
        for n in names:
            c0, t0 = time.process_time(), time.perf_counter()
            await contenders[n]()
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    med = statistics.median

    def by_round(times: dict) -> list[dict]:
        return [{k: v[r] for k, v in times.items()} for r in range(rounds)]

    return (
        {k: med(v) for k, v in wall.items()},
        {k: med(v) for k, v in cpu.items()},
        by_round(wall),
        by_round(cpu),
    )


SYNCS = ("NORMAL", "FULL")


async def checkpoint_floor(quick: bool, tmp: Path) -> dict:
    n = 200
    chain = build_chain(n)
    ex = ExecutorCore()
    probe = SqliteStore(tmp / "probe.db")
    payload = probe.encode_payload("r", "step", (1, None), "c0")  # what each step stores
    rounds = 5 if quick else 25
    out: dict[str, dict] = {}
    for sync in SYNCS:
        bare, conn = bare_commit_loop(tmp / f"bare_{sync}.db", sync, payload, n)
        stores = {
            "default": SqliteStore(tmp / f"inline_{sync}.db", synchronous=sync),
            "writer_thread": SqliteStore(
                tmp / f"thread_{sync}.db", synchronous=sync, inline_max_s=0
            ),
        }
        contenders = {
            "none": lambda: chain.run(0, executor=ex, store=False),
            "bare_commit": bare,
        }
        for name, st in stores.items():
            contenders[name] = lambda st=st: chain.run(0, executor=ex, store=st)
        t, c, t_rounds, c_rounds = await timed_cpu(contenders, rounds=rounds)

        def per_step(t: dict) -> dict:
            base = t["none"]
            per = {
                k: (v - base) / n * 1e6 for k, v in t.items() if k not in ("none", "bare_commit")
            }
            per["bare_commit"] = t["bare_commit"] / n * 1e6
            return per

        def ratio(rounds_: list[dict]) -> float:
            # Each round's (checkpointed step / bare commit).
            per = [per_step(r) for r in rounds_]
            return median_ratio([p["default"] for p in per], [p["bare_commit"] for p in per])

        inline = {k: st.inline_transactions / max(st.transactions, 1) for k, st in stores.items()}
        out[sync] = {
            "us_per_step": per_step(t),
            "cpu_us_per_step": per_step(c),
            "ratio": ratio(t_rounds),
            "cpu_ratio": ratio(c_rounds),
            "share_committed_on_loop": inline,
        }
        for st in stores.values():
            await st.close()
        conn.close()
    return out


def report(res: dict) -> None:
    print("1,000-step DAG (20 levels x 50, 1-3 deps each), one ExecutorCore")
    print(f"{'scheduling, no checkpoints, µs/step':<44}{'trivial':>10}{'suspending':>12}")
    a, b = res["scheduling_us_per_step"]["trivial"], res["scheduling_us_per_step"]["suspending"]
    rows = (
        ("(a) caudal Pipeline.run", "pipeline"),
        ("(b) gather by levels, executor.execute", "gather_by_levels"),
        ("(c) gather by levels, bare await", "gather_by_levels_bare"),
    )
    for label, k in rows:
        print(f"{label:<44}{a[k]:>10.2f}{b[k]:>12.2f}")
    ra = a["pipeline"] / a["gather_by_levels"]
    rb = b["pipeline"] / b["gather_by_levels"]
    print(f"{'(a) / (b)':<44}{ra:>9.2f}x{rb:>11.2f}x")
    print()
    for shape, d in res["checkpoints"].items():
        print(f"checkpoint cost, {shape}{'':<22}{'µs/step':>10}{'run ms':>10}{'txns':>7}")
        for k, v in d["checkpoint_us_per_step"].items():
            tx = d["transactions_per_run"].get(k, "")
            print(f"  {k:<42}{v:>10.1f}{d['run_ms'][k]:>10.1f}{tx!s:>7}")
        print(f"  {'(no store)':<42}{'':>10}{d['run_ms']['none']:>10.1f}")
    r = res["resume"]
    print()
    print(
        f"resume after a crash at step 900: {r['resume_ms']:.1f} ms "
        f"(loading 900 checkpoints: {r['load_900_checkpoints_ms']:.1f} ms)"
    )
    print()
    print("checkpointed step of a 200-step chain vs a bare commit, SQLite WAL, µs per step")
    print(
        f"{'synchronous':<14}{'bare':>9}{'default':>10}{'thread':>10}{'ratio':>8}"
        f"{'CPU: bare':>11}{'default':>9}{'ratio':>7}{'on loop':>9}"
    )
    floors = []
    for sync, d in res["checkpoint_floor"].items():
        u, c = d["us_per_step"], d["cpu_us_per_step"]
        share = d["share_committed_on_loop"]["default"]
        ratio, cratio = d["ratio"], d["cpu_ratio"]
        print(
            f"{sync:<14}{u['bare_commit']:>9.1f}{u['default']:>10.1f}"
            f"{u['writer_thread']:>10.1f}{ratio:>7.2f}x{c['bare_commit']:>11.1f}"
            f"{c['default']:>9.1f}{cratio:>6.2f}x{share:>8.0%}"
        )
        floors.append(
            Floor(
                f"checkpointed step / bare commit, synchronous={sync}",
                measured=ratio,
                limit=1.5,
                unit="x",
                detail=f"wall clock {u['default']:.1f} vs {u['bare_commit']:.1f} µs (all "
                f"through the writer thread: {u['writer_thread']:.1f} µs); process CPU "
                f"{c['default']:.1f} vs {c['bare_commit']:.1f} µs ({cratio:.2f}x); 200-step "
                "chain, (run with store - without) / steps; medians of interleaved rounds "
                "(the ratio: median over rounds of the round's ratio)",
            )
        )
    record("pipeline_checkpoint", floors=floors)


async def main(quick: bool) -> dict:
    res: dict = {"quick": quick}
    res["scheduling_us_per_step"] = await scheduling(quick)
    with tempfile.TemporaryDirectory(prefix="caudal-bench-") as tmp:
        with PostgresServer("caudal_bench") as pg:
            res["checkpoints"] = await checkpoint_costs(quick, pg.dsn, Path(tmp))
        res["resume"] = await resume_after_crash(quick, Path(tmp))
        res["checkpoint_floor"] = await checkpoint_floor(quick, Path(tmp))
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    result = asyncio.run(main(args.quick))
    report(result)
    path = save("pipeline", result)
    print(f"saved {path}")
