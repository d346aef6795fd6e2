"""PostgresStore against a real PostgreSQL server, started for this module on
127.0.0.1 (caudal.testing.servers). A missing PostgreSQL is a failure with
the install command, never a skip."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

import caudal
from caudal import Pipeline, PostgresStore, Step, WithUsage
from caudal.testing.servers import PostgresServer


@pytest.fixture(scope="module")
def pg_dsn():
    with PostgresServer() as server:  # raises PostgresUnavailable with the fix
        yield server.dsn


async def inc(x):
    return x + 1


async def test_run_and_load(pg_dsn):
    async with PostgresStore(pg_dsn) as st:
        p = Step(inc) >> Step(lambda x: WithUsage(x * 2, tokens=3), "dbl")
        run = await p.run(1, store=st, run_id="pg-basic", context={"k": 1})
        assert run.result == 4 and run.total_tokens == 3
        stored = await st.load_run("pg-basic")
        assert stored.info.status == "completed"
        assert list(stored.steps) == ["inc", "dbl"]
        assert stored.steps["dbl"].tokens == 3
        runs = await st.list_runs()
        assert "pg-basic" in [r.run_id for r in runs]
        with pytest.raises(caudal.RunNotFoundError):
            await st.load_run("nope")
        with pytest.raises(caudal.CheckpointError, match="already exists"):
            await p.run(1, store=st, run_id="pg-basic")


async def test_uri_store_spec_and_resume_after_failure(pg_dsn):
    broken = {"on": True}

    async def flaky(x, context):
        if broken["on"]:
            raise RuntimeError("down")
        context["seen"] = x
        return x * 10

    calls = []

    async def first(x):
        calls.append(x)
        return x + 1

    p = Step(first) >> Step(flaky)
    run = await p.run(1, store=pg_dsn, run_id="pg-resume", context={})
    assert run.status == "failed"
    broken["on"] = False
    run = await p.resume("pg-resume", store=pg_dsn)
    assert run.status == "completed" and run.result == 20
    assert calls == [1]  # first was restored, not run again
    assert run.context == {"seen": 2}


async def test_group_commit_on_a_wide_level(pg_dsn):
    async def leaf(x):
        await asyncio.sleep(0)
        return x

    p = Pipeline([Step(leaf, f"l{i}") for i in range(100)])
    async with PostgresStore(pg_dsn) as st:
        run = await p.run(1, store=st)
        assert run.status == "completed"
        assert st.transactions < 100
        assert len((await st.load_run(run.run_id)).steps) == 100


def test_resume_from_another_process(pg_dsn, tmp_path):
    """A run that failed in one process resumes in another (another machine,
    as far as the store can tell), with completed steps restored."""
    script = tmp_path / "proc.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from caudal import Step, Pipeline

            dsn, mode, marker = sys.argv[1:4]

            async def a(x):
                open(marker, "a").write("a\\n")
                return x + 1

            async def b(x):
                open(marker, "a").write("b\\n")
                if mode == "run":
                    raise RuntimeError("machine one gives up")
                return x * 100

            async def main():
                p = Step(a) >> Step(b)
                if mode == "run":
                    r = await p.run(1, store=dsn, run_id="cross")
                    assert r.status == "failed"
                else:
                    r = await p.resume("cross", store=dsn)
                    assert r.status == "completed" and r.result == 200, r
                    print(r.result)

            asyncio.run(main())
            """
        )
    )
    marker = tmp_path / "marker"
    for mode in ("run", "resume"):
        proc = subprocess.run(
            [sys.executable, str(script), pg_dsn, mode, str(marker)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    assert marker.read_text().split() == ["a", "b", "b"]


def test_cli_with_a_postgres_store(pg_dsn, tmp_path):
    (tmp_path / "reg.py").write_text("async def one(x):\n    return 1\n\nREG = {'one': one}\n")
    (tmp_path / "p.yaml").write_text("steps:\n  - {name: s, uses: one}\n")
    base = [sys.executable, "-m", "caudal.cli"]
    r = subprocess.run(
        [*base, "run", "p.yaml", "--registry", "reg:REG", "--store", pg_dsn, "--run-id", "cli-pg"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    i = subprocess.run(
        [*base, "inspect", "cli-pg", "--store", pg_dsn],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert i.returncode == 0 and "status completed" in i.stdout
