"""Real servers for tests and benchmarks: a throwaway ``redis-server``.

``RedisServer`` runs ``redis-server`` on a free loopback port in a directory of
its own, with persistence off, and can be killed and started again on the
same port (to test what clients do when Redis dies). No pytest here: the
benchmarks use it too.

    with RedisServer(tmpdir) as srv:
        client = redis.Redis.from_url(srv.url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

_SANITIZER_ENV = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS")


class RedisServerUnavailable(RuntimeError):
    """redis-server is not installed, or would not start."""


def find_redis_server() -> str:
    path = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )
    if path is None:
        raise RedisServerUnavailable(
            "redis-server is not installed. The Redis tier's tests run against a real "
            "server: `make deps` installs the Debian package (apt-get install -y redis-server)."
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_pid(port: int, timeout: float = 0.2) -> int | None:
    """The process id of the Redis answering on 127.0.0.1:port, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"INFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    for line in reply.split(b"\r\n"):
        if line.startswith(b"process_id:"):
            return int(line.split(b":", 1)[1])
    return None


class RedisServer:
    """A redis-server of our own on 127.0.0.1 (persistence off).

    ``start()`` picks a free port the first time and reuses it afterwards, so
    ``kill()`` + ``start()`` brings the server back where clients expect it
    (empty: nothing is persisted).
    """

    def __init__(self, workdir: str | os.PathLike[str], *, extra_args: tuple[str, ...] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = find_redis_server()
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "server was never started"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        fixed = self.port is not None
        attempts = 1 if fixed else 5
        for _ in range(attempts):
            port = self.port if fixed else free_port()
            if self._launch(port, timeout):
                self.port = port
                return
        raise RedisServerUnavailable(
            f"redis-server did not start on 127.0.0.1:{port}; its log:\n{self._log_tail()}"
        )

    def _launch(self, port: int, timeout: float) -> bool:
        args = [
            self.binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.log_path),
            *self.extra_args,
        ]
        # Not the sanitizer runtime `make test-asan` preloads into Python.
        env = {k: v for k, v in os.environ.items() if k not in _SANITIZER_ENV}
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # exited: port taken, bad args...
                self.proc = None
                return False
            # Ours, not another engineer's server that already had the port.
            if server_pid(port) == self.proc.pid:
                return True
            time.sleep(0.01)
        self._terminate(signal.SIGKILL)
        return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: clients see their connections drop."""
        self._terminate(signal.SIGKILL)

    def stop(self) -> None:
        self._terminate(signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP: the server accepts connections (the kernel does) but
        answers nothing until ``thaw()`` — a server that has become slow."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def _terminate(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)  # a frozen server must run to exit
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
