"""Crash safety: a pipeline process killed with SIGKILL at random moments,
resumed each time, ends with every step's output intact and no checkpointed
step ever run again.

A child process runs (or resumes) a 40-step layered DAG with a SQLite store.
Each step appends "start GEN NAME" and "end GEN NAME" lines to a marker file
(O_APPEND, one write per line). After each kill the parent reads the
checkpoints that made it to disk (C_g). The accounting is exact:

- no step in C_g starts again in a later generation;
- a step runs to its "end" more than once only when a generation was killed
  after that end but before its checkpoint committed: ends(X) = 1 + the
  killed generations g with an end of X and X not in C_g;
- every step that started in a generation and is not in its C_g belongs to
  a killed generation;
- the final outputs equal those of an uninterrupted run.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import asyncio, os, random, sys
    import caudal
    from caudal import Pipeline, Step

    db, marker, gen, mode, run_id = sys.argv[1:6]

    def mark(line):
        fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    def make(name, delay):
        async def work(data):
            mark(f"start {gen} {name}")
            await asyncio.sleep(delay)
            if isinstance(data, dict):
                value = sum(data.values()) + len(name)
            else:
                value = data + len(name)
            mark(f"end {gen} {name}")
            return value
        return Step(work, name)

    def build():
        rng = random.Random(1234)
        steps, deps = [], {}
        levels = [[f"L{k}_{i}" for i in range(5)] for k in range(8)]
        for k, level in enumerate(levels):
            for name in level:
                steps.append(make(name, rng.uniform(0.004, 0.02)))
                if k:
                    prev = levels[k - 1]
                    deps[name] = rng.sample(prev, rng.randint(1, 3))
        steps.append(make("sink", 0.001))
        deps["sink"] = levels[-1]
        return Pipeline(steps, depends_on=deps)

    async def main():
        p = build()
        if mode == "run":
            r = await p.run(1, store=db, run_id=run_id)
        elif mode == "resume":
            r = await p.resume(run_id, store=db)
        else:  # reference: no store, no crash
            r = await p.run(1, store=False)
            print(repr(r.outputs))
            return
        assert r.status == "completed", r

    asyncio.run(main())
    """
)


def _lines(marker: Path) -> list[tuple[str, int, str]]:
    if not marker.exists():
        return []
    out = []
    for line in marker.read_text().splitlines():
        kind, gen, name = line.split()
        out.append((kind, int(gen), name))
    return out


def _checkpointed(db: Path, run_id: str) -> dict[str, bytes]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT step, payload FROM caudal_steps WHERE run_id=? AND status='completed'",
            (run_id,),
        ).fetchall()
    except sqlite3.OperationalError:  # killed before the schema existed
        return {}
    finally:
        conn.close()
    return dict(rows)


def test_sigkill_at_random_moments_then_resume(tmp_path):
    from caudal.pipeline.stores import SqliteStore

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db, marker, run_id = tmp_path / "cp.db", tmp_path / "marker.log", "crashy"
    seed = int(time.time() * 1000) % 100000
    rng = random.Random(seed)
    ctx = f"(kill-timing seed {seed})"

    ref = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "ref.db"),
            str(tmp_path / "ref.log"),
            "0",
            "reference",
            "ref",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ref.returncode == 0, ref.stderr
    expected = eval(ref.stdout)  # a repr of {name: int}

    killed: dict[int, dict[str, bytes]] = {}  # generation -> checkpoints after its kill
    gen, kills = 0, 0
    finished = False
    while not finished:
        mode = "run" if gen == 0 else "resume"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(db), str(marker), str(gen), mode, run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if kills < 5:
            # Wait until this generation has started a step (so the run
            # exists), then kill it after a random delay.
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                if any(g == gen for _, g, _ in _lines(marker)):
                    break
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.08))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                proc.stdout.close()
                proc.stderr.close()
                killed[gen] = _checkpointed(db, run_id)
                kills += 1
                gen += 1
                continue
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{ctx} generation {gen} failed:\n{err}"
        finished = True

    final_gen = gen
    lines = _lines(marker)
    final = _checkpointed(db, run_id)
    names = set(expected)
    assert set(final) == names, ctx

    # Outputs intact: equal to an uninterrupted run.
    decode = SqliteStore(db).decode_payload
    assert {n: decode(run_id, "step", p, n)[0] for n, p in final.items()} == expected, ctx

    # Checkpoints only ever grow, and a checkpointed step never runs again.
    prev: set[str] = set()
    for g in sorted(killed):
        cp = set(killed[g])
        assert prev <= cp, ctx
        prev = cp
        for kind, g2, name in lines:
            if kind == "start" and g2 > g:
                assert name not in cp, f"{ctx} {name} checkpointed after gen {g}, ran in gen {g2}"

    # Exact accounting of repeated runs.
    for name in names:
        starts = [g for k, g, n in lines if k == "start" and n == name]
        ends = [g for k, g, n in lines if k == "end" and n == name]
        assert len(starts) == len(set(starts)), f"{ctx} {name} started twice in one generation"
        for g in starts:
            if g in killed:
                continue
            assert g == final_gen, ctx
        unpersisted_ends = [g for g in ends if g in killed and name not in killed[g]]
        assert len(ends) == 1 + len(unpersisted_ends), (
            f"{ctx} {name}: ends in generations {ends}, unpersisted {unpersisted_ends}"
        )
        # Every start in a killed generation that did not reach a checkpoint
        # was interrupted by that kill (so it ran again later).
        for g in starts:
            if g in killed and name not in killed[g]:
                assert any(s > g for s in starts), f"{ctx} {name} lost after gen {g}"
    assert kills >= 1, ctx
    conn = sqlite3.connect(db)
    (status, resumes) = conn.execute(
        "SELECT status, resumes FROM caudal_runs WHERE run_id=?", (run_id,)
    ).fetchone()
    conn.close()
    # Each resume that found the run unfinished counted itself (a generation
    # killed after finishing, during interpreter exit, leaves nothing to do).
    resumed_with_work = {g for _, g, _ in lines if g >= 1}
    assert status == "completed", ctx
    assert len(resumed_with_work) <= resumes <= final_gen, ctx
