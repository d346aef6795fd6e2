"""A throwaway PostgreSQL server for tests and benchmarks.

    with PostgresServer() as pg:
        store = caudal.PostgresStore(pg.dsn)

``initdb`` into a temporary directory, ``pg_ctl start`` listening on
127.0.0.1 at a free port (and a Unix socket in the same directory), one
database created, everything removed on exit. PostgreSQL refuses to run as
root, so under root the server runs as the ``postgres`` OS user (created by
Debian's postgresql package) through ``runuser``, with the directory handed
to that user. The binaries are found in /usr/lib/postgresql/*/bin (Debian)
or on PATH; when there are none, ``PostgresServer`` raises
``PostgresUnavailable`` with the command that installs them (``make deps``
does) rather than letting a test skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server would not start."""


def find_pg_bin() -> Path:
    """The folder holding initdb and pg_ctl (newest version first)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.parent.name.split(".")],
        reverse=True,
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them: "
        "apt-get install -y postgresql  (make deps does this)"
    )


def _server_env() -> dict[str, str]:
    """The environment for server processes: without a sanitizer runtime
    preloaded for the tests (`make test-asan`), which would hang initdb."""
    drop = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS")
    return {k: v for k, v in os.environ.items() if k not in drop}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A private PostgreSQL instance; ``dsn`` is valid between start and stop."""

    def __init__(self, dbname: str = "caudal_test", *, fsync: bool = True) -> None:
        self.dbname = dbname
        self.fsync = fsync
        self.bin = find_pg_bin()
        self.port = 0
        self.dir: Path | None = None
        self._as_root = os.geteuid() == 0
        self.user = "postgres" if self._as_root else os.environ.get("USER", "postgres")

    # ----------------------------------------------------------------
    def _cmd(self, *argv: str) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def _run(self, *argv: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            self._cmd(*argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            env=_server_env(),
        )
        if proc.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(argv[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    def start(self) -> PostgresServer:
        self.dir = Path(tempfile.mkdtemp(prefix="caudal-pg-"))
        data = self.dir / "data"
        if self._as_root:
            try:
                shutil.chown(self.dir, "postgres", "postgres")
            except (LookupError, PermissionError) as exc:
                raise PostgresUnavailable(
                    f"running as root needs the 'postgres' OS user: {exc}"
                ) from exc
        os.chmod(self.dir, 0o700)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.port = free_port()
        opts = (
            f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c fsync={'on' if self.fsync else 'off'} "
            "-c max_connections=50 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._wait_ready()
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            self.dbname,
        )
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        log = (self.dir / "server.log").read_text() if self.dir else ""
        raise PostgresUnavailable(f"PostgreSQL did not accept connections:\n{log}")

    def stop(self) -> None:
        if self.dir is None:
            return
        data = self.dir / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
            except PostgresUnavailable:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["PostgresServer", "PostgresUnavailable", "find_pg_bin", "free_port"]
