"""The ``caudal`` command, run as a subprocess the way a user runs it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

from _pty import read_all

REGISTRY = textwrap.dedent(
    """
    import asyncio, os
    from caudal import WithUsage

    async def load(data):
        return data["n"]

    async def square(x):
        await asyncio.sleep(0.01)
        return x * x

    async def flaky(x):
        # Fails while the file BROKEN exists next to this module.
        if os.path.exists(os.path.join(os.path.dirname(__file__), "BROKEN")):
            raise RuntimeError("flaky is broken")
        return WithUsage(x + 1, tokens=5, cost_usd=0.01)

    def total(parts):
        return sum(parts.values())

    REGISTRY = {"load": load, "square": square, "flaky": flaky, "total": total}
    """
)

PIPELINE = textwrap.dedent(
    """
    name: cli_demo
    steps:
      - name: load
        uses: load
      - name: square
        uses: square
        depends_on: load
      - name: flaky
        uses: flaky
        depends_on: load
      - name: total
        uses: total
        depends_on: [square, flaky]
    """
)

CAUDAL = [sys.executable, "-m", "caudal.cli"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "myreg.py").write_text(REGISTRY)
    (tmp_path / "pipe.yaml").write_text(PIPELINE)
    return tmp_path


def caudal(workdir: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CAUDAL_STORE"}
    proc = subprocess.run(
        [*CAUDAL, *args], cwd=workdir, capture_output=True, text=True, timeout=60, env=env
    )
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_entry_point_is_installed():
    exe = shutil.which("caudal", path=os.path.dirname(sys.executable))
    assert exe is not None
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "validate" in proc.stdout


def test_run_inspect_and_json(workdir):
    p = caudal(
        workdir,
        "run",
        "pipe.yaml",
        "--registry",
        "myreg:REGISTRY",
        "--input",
        '{"n": 4}',
        "--store",
        "runs.db",
        "--run-id",
        "first",
    )
    assert "run first: completed" in p.stdout
    assert "result: 21" in p.stdout  # 16 + 5
    assert "usage: 5 tokens" in p.stdout
    assert p.stderr == ""  # no progress bar when stderr is not a terminal
    ins = caudal(workdir, "inspect", "first", "--store", "runs.db")
    assert "status completed" in ins.stdout
    for step in ("load", "square", "flaky", "total"):
        assert step in ins.stdout
    js = json.loads(caudal(workdir, "inspect", "first", "--store", "runs.db", "--json").stdout)
    assert js["status"] == "completed"
    assert [s["step"] for s in js["steps"]] == ["load", "square", "flaky", "total"]
    assert all(s["attempts"] == 1 for s in js["steps"])
    assert js["steps"][2]["tokens"] == 5
    runs = caudal(workdir, "runs", "--store", "runs.db")
    assert runs.stdout.startswith("first  completed")


def test_failed_run_then_resume_from_the_stored_definition(workdir):
    (workdir / "BROKEN").write_text("")
    p = caudal(
        workdir,
        "run",
        "pipe.yaml",
        "--registry",
        "myreg:REGISTRY",
        "--input",
        '{"n": 3}',
        "--store",
        "runs.db",
        "--run-id",
        "r1",
        "--json",
        check=1,
    )
    out = json.loads(p.stdout)
    assert out["status"] == "failed"
    assert out["steps"]["flaky"]["status"] == "failed"
    assert out["steps"]["flaky"]["error"] == "RuntimeError: flaky is broken"
    assert out["steps"]["total"]["status"] == "skipped"
    ins = caudal(workdir, "inspect", "r1", "--store", "runs.db")
    assert "RuntimeError: flaky is broken" in ins.stdout
    assert "not run" in ins.stdout  # total
    (workdir / "BROKEN").unlink()
    (workdir / "pipe.yaml").unlink()  # resume uses the YAML stored with the run
    r = caudal(
        workdir, "resume", "r1", "--store", "runs.db", "--registry", "myreg:REGISTRY", "--json"
    )
    out = json.loads(r.stdout)
    assert out["status"] == "completed" and out["result"] == 13
    assert out["steps"]["square"]["restored"] is True
    assert out["steps"]["flaky"]["restored"] is False
    js = json.loads(caudal(workdir, "inspect", "r1", "--store", "runs.db", "--json").stdout)
    assert js["resumes"] == 1 and js["status"] == "completed"


def _plant_registry_spec(db: Path, run_id: str, spec: str) -> None:
    """Rewrite the registry spec stored with a run, as anyone who can write
    to the database could."""
    import sqlite3

    conn = sqlite3.connect(db)
    (definition,) = conn.execute(
        "SELECT definition FROM caudal_runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    d = json.loads(definition)
    d["registry"] = spec
    d["resolver"] = spec.replace("REGISTRY", "resolve")
    conn.execute("UPDATE caudal_runs SET definition = ? WHERE run_id = ?", (json.dumps(d), run_id))
    conn.commit()
    conn.close()


def test_resume_imports_only_the_registry_named_on_the_command_line(workdir):
    # A module whose import has a visible side effect: it must never run.
    (workdir / "planted.py").write_text(
        "import pathlib\n"
        "pathlib.Path(__file__).with_name('IMPORTED').write_text('ran')\n"
        "REGISTRY = {}\n"
        "async def resolve(text, context):\n    return text\n"
    )
    (workdir / "BROKEN").write_text("")
    caudal(
        workdir,
        "run",
        "pipe.yaml",
        "--registry",
        "myreg:REGISTRY",
        "--input",
        '{"n": 3}',
        "--store",
        "runs.db",
        "--run-id",
        "r1",
        check=1,
    )
    (workdir / "BROKEN").unlink()
    _plant_registry_spec(workdir / "runs.db", "r1", "planted:REGISTRY")

    # Without --registry: refused, naming the stored spec, importing nothing.
    r = caudal(workdir, "resume", "r1", "--store", "runs.db", check=2)
    assert "--registry" in r.stderr and "planted:REGISTRY" in r.stderr
    assert not (workdir / "IMPORTED").exists()

    # With it: the user's registry runs; the stored one is reported, not imported.
    r = caudal(
        workdir, "resume", "r1", "--store", "runs.db", "--registry", "myreg:REGISTRY", "--json"
    )
    assert json.loads(r.stdout)["status"] == "completed"
    assert "planted:REGISTRY" in r.stderr and "myreg:REGISTRY" in r.stderr
    assert "planted:resolve" in r.stderr  # the stored resolver is not imported either
    assert not (workdir / "IMPORTED").exists()


def test_validate_exit_codes_and_line_numbers(workdir):
    ok = caudal(workdir, "validate", "pipe.yaml", "--registry", "myreg:REGISTRY")
    assert "ok (4 steps in 3 levels)" in ok.stdout
    (workdir / "bad.yaml").write_text(
        "steps:\n  - name: a\n    uses: load\n    timeout_s: never\n  - name: b\n    uses: gone\n"
    )
    bad = caudal(workdir, "validate", "bad.yaml", "--registry", "myreg:REGISTRY", check=1)
    lines = bad.stderr.strip().splitlines()
    assert lines[0] == "bad.yaml:4: steps[0].timeout_s: expected a positive number, got 'never'"
    assert lines[1].startswith("bad.yaml:6: steps[1].uses: 'gone' is not in the registry")
    cyc = (
        "steps:\n"
        "  - {name: a, uses: load, depends_on: b}\n"
        "  - {name: b, uses: load, depends_on: a}\n"
    )
    (workdir / "cyc.yaml").write_text(cyc)
    c = caudal(workdir, "validate", "cyc.yaml", "--registry", "myreg:REGISTRY", check=1)
    assert c.stderr.strip() == "cyc.yaml:2: steps[0].depends_on: circular dependency: a -> b -> a"


def test_usage_errors(workdir):
    p = caudal(workdir, "inspect", "nope", "--store", "runs.db", check=1)
    assert p.stderr == "caudal: no run 'nope' in this store (runs.db)\n"
    p = caudal(workdir, "inspect", "nope", check=1)  # the default store, named
    assert p.stderr == "caudal: no run 'nope' in this store (.caudal/checkpoints.db)\n"
    p = caudal(workdir, "run", "pipe.yaml", "--registry", "nomodule:X", check=2)
    assert p.stderr == (
        "caudal: cannot import 'nomodule' for --registry: No module named 'nomodule'\n"
    )
    p = caudal(workdir, "run", "pipe.yaml", "--registry", "myreg:NOPE", check=2)
    assert p.stderr == "caudal: 'myreg' has no attribute 'NOPE' (--registry)\n"
    p = caudal(workdir, "run", "pipe.yaml", "--registry", "myreg", check=2)
    assert p.stderr == "caudal: --registry must be module:attribute, got 'myreg'\n"
    for cmd in ("run", "validate"):
        p = caudal(workdir, cmd, "nofile.yaml", "--registry", "myreg:REGISTRY", check=2)
        assert p.stderr == "caudal: pipeline file 'nofile.yaml' does not exist\n"
    # A driver's message over several lines is printed on one.
    p = caudal(workdir, "inspect", "r", "--store", "postgresql://u:pw@127.0.0.1:1/db", check=1)
    assert p.stderr.count("\n") == 1 and "cannot connect to PostgreSQL" in p.stderr, p.stderr
    p = caudal(
        workdir, "run", "pipe.yaml", "--registry", "myreg:REGISTRY", "--input", "{x", check=2
    )
    assert "--input is not valid JSON" in p.stderr


def test_a_missing_resolver_names_the_flag(workdir):
    reg = "import asyncio\nasync def tag(x, style):\n    return (x, style)\nREG = {'tag': tag}\n"
    (workdir / "autoreg.py").write_text(reg)
    (workdir / "auto.yaml").write_text(
        "steps:\n  - name: t\n    uses: tag\n    with: {style: '<AUTO>Which style?</AUTO>'}\n"
    )
    p = caudal(workdir, "run", "auto.yaml", "--registry", "autoreg:REG", check=1)
    assert p.stderr == "auto.yaml:4: <AUTO> tags need a resolver: give --resolver module:attr\n"


def test_validate_checks_with_keys_against_the_function(workdir):
    reg = (
        "async def fetch(request, source, *, retries=1):\n    return source\n"
        "async def anything(x, **options):\n    return options\n"
        "REG = {'fetch': fetch, 'anything': anything}\n"
    )
    (workdir / "wreg.py").write_text(reg)
    (workdir / "w.yaml").write_text(
        "steps:\n"
        "  - name: a\n    uses: fetch\n    with: {source: news, retries: 2}\n"
        "  - name: b\n    uses: anything\n    with: {whatever: 1}\n"
    )
    caudal(workdir, "validate", "w.yaml", "--registry", "wreg:REG")
    (workdir / "bad.yaml").write_text(
        "steps:\n  - name: a\n    uses: fetch\n    with:\n      sourse: news\n      request: {}\n"
    )
    p = caudal(workdir, "validate", "bad.yaml", "--registry", "wreg:REG", check=1)
    assert p.stderr.splitlines() == [
        "bad.yaml:5: steps[0].with.sourse: fetch() does not take 'sourse' "
        "(no such parameter; it takes: source, retries)",
        "bad.yaml:6: steps[0].with.request: fetch() does not take 'request' "
        "(its first parameter, which receives the step's input; it takes: source, retries)",
    ]
    # run refuses it too, before any step runs
    caudal(workdir, "run", "bad.yaml", "--registry", "wreg:REG", "--store", "w.db", check=1)
    assert not (workdir / "w.db").exists()


SLOW_REGISTRY = textwrap.dedent(
    """
    import asyncio, os

    HERE = os.path.dirname(__file__)

    async def first(x):
        return 1

    async def slow(x):
        # Blocks (until interrupted) while the file SLOW exists; says it started.
        if os.path.exists(os.path.join(HERE, "SLOW")):
            open(os.path.join(HERE, "STARTED"), "w").close()
            await asyncio.sleep(120)
        return x + 1

    REG = {"first": first, "slow": slow}
    """
)


def test_an_interrupted_run_says_how_to_resume_it(workdir):
    import signal
    import time

    (workdir / "slowreg.py").write_text(SLOW_REGISTRY)
    (workdir / "slow.yaml").write_text(
        "steps:\n  - {name: a, uses: first}\n  - {name: b, uses: slow, depends_on: a}\n"
    )
    (workdir / "SLOW").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "CAUDAL_STORE"}
    proc = subprocess.Popen(
        [*CAUDAL, "run", "slow.yaml", "--registry", "slowreg:REG", "--store", "my runs.db",
         "--run-id", "r7", "--no-progress"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (workdir / "STARTED").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    resume = "caudal resume r7 --registry slowreg:REG --store 'my runs.db'"
    assert err == (
        "caudal: interrupted; the completed steps are checkpointed. Resume with: " + resume + "\n"
    )
    ins = json.loads(caudal(workdir, "inspect", "r7", "--store", "my runs.db", "--json").stdout)
    assert ins["status"] == "cancelled"
    assert [(s["step"], s["status"]) for s in ins["steps"]] == [
        ("a", "completed"),
        ("b", "cancelled"),
    ]
    (workdir / "SLOW").unlink()
    r = caudal(workdir, *shlex.split(resume)[1:], "--json")
    done = json.loads(r.stdout)
    assert done["status"] == "completed" and done["result"] == 2
    assert done["steps"]["a"]["restored"] is True and done["steps"]["b"]["restored"] is False


def test_a_resumes_progress_starts_at_the_restored_steps(workdir):
    (workdir / "BROKEN").write_text("")
    caudal(workdir, "run", "pipe.yaml", "--registry", "myreg:REGISTRY", "--input", '{"n": 2}',
           "--store", "runs.db", "--run-id", "r1", "--no-progress", check=1)  # fmt: skip
    (workdir / "BROKEN").unlink()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "CAUDAL_STORE"}
    proc = subprocess.Popen(
        [*CAUDAL, "resume", "r1", "--registry", "myreg:REGISTRY", "--store", "runs.db"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=slave, env=env,
    )  # fmt: skip
    os.close(slave)
    written = read_all(master)
    proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    err = written.decode(errors="replace")
    # load and square were restored: the bar starts at 2 of 4, never at 0.
    assert "2/4 [" in err and "0/4" not in err, err


@pytest.mark.parametrize("sized", [True, False], ids=["100x24", "no-size"])
def test_progress_bar_on_a_terminal(workdir, sized):
    # stderr on a pseudo-terminal: tqdm draws its bar there, also on a
    # terminal that reports its size as 0 x 0 (as a fresh pty does).
    master, slave = pty.openpty()
    if sized:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "CAUDAL_STORE"}
    proc = subprocess.Popen(
        [*CAUDAL, "run", "pipe.yaml", "--registry", "myreg:REGISTRY", "--input", '{"n": 2}',
         "--store", "runs.db"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=slave, env=env,
    )  # fmt: skip
    os.close(slave)
    written = read_all(master)
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    err = written.decode(errors="replace")
    assert "/4 [" in err and "step/s" in err, err  # tqdm's bar, on stderr
    assert b"completed" in out


def test_resume_runs_where_the_run_ran_unless_told_otherwise(workdir, redis_server):
    """The shared cache tier (and the backend) a run was started with are
    stored with it; `resume` uses them, says so, and a flag overrides."""
    tier = redis_server[: -len("/0")] + "/6"
    (workdir / "BROKEN").write_text("")
    args = ["--registry", "myreg:REGISTRY", "--store", "runs.db"]
    caudal(workdir, "run", "pipe.yaml", *args, "--input", '{"n": 3}', "--run-id", "r1",
           "--cache-redis", tier, check=1)  # fmt: skip
    (workdir / "BROKEN").unlink()
    r = caudal(workdir, "resume", "r1", *args, "--json")
    assert json.loads(r.stdout)["status"] == "completed"
    assert f"resuming where the run ran: --cache-redis {tier}" in r.stderr
    # The stored settings are data: reported, and a flag given here wins.
    (workdir / "BROKEN").write_text("")
    caudal(workdir, "run", "pipe.yaml", *args, "--input", '{"n": 3}', "--run-id", "r2",
           "--cache-redis", tier, check=1)  # fmt: skip
    (workdir / "BROKEN").unlink()
    other = redis_server[: -len("/0")] + "/7"
    r = caudal(workdir, "resume", "r2", *args, "--cache-redis", other, "--json")
    assert json.loads(r.stdout)["status"] == "completed"
    note = f"the run was started with --cache-redis {tier}; resuming with --cache-redis {other}"
    assert note in r.stderr


def test_a_password_in_the_tier_url_is_not_stored(workdir):
    (workdir / "BROKEN").write_text("")
    args = ["--registry", "myreg:REGISTRY", "--store", "runs.db"]
    url = "redis://:s3cret@127.0.0.1:1/0?password=s3cret"  # nothing listens there
    caudal(workdir, "run", "pipe.yaml", *args, "--input", '{"n": 3}', "--run-id", "r3",
           "--cache-redis", url, check=None)  # fmt: skip
    for f in workdir.glob("runs.db*"):  # the database, its WAL and its index
        assert b"s3cret" not in f.read_bytes(), f
    (workdir / "BROKEN").unlink()
    r = caudal(workdir, "resume", "r3", *args, check=2)
    assert "--cache-redis redis://:***@127.0.0.1:1/0?password=***" in r.stderr
    assert "give --cache-redis" in r.stderr
