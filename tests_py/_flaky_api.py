"""A flaky, rate-limited HTTP API on loopback, for tests and benchmarks.

It behaves like the LLM and REST backends caudal's users call:

- at most ``capacity`` requests are served at once; one more gets HTTP 429
  with ``Retry-After`` at once (the request is not served);
- of the requests served, ``fail_rate`` answer HTTP 500 and ``slow_rate``
  answer after ``slow_s`` seconds (2-5 s by default) instead of the usual
  ``latency_s`` (20-60 ms); the rest answer 200 with ``{"key", "value"}``,
  where value is a digest of the key, so a client can check every result;
- an outage window answers 503 to everything;
- capacity can change mid-run (``capacity_changes``: [[at_s, capacity], ...]).

A request's fate is a pure function of (seed, key, how many times this key
was served before), so every client meets the same failures in the same
order whatever its timing: contenders are compared on equal terms. Times in
the scenario count from the first request after the scenario was set.

A served request keeps its capacity slot until its answer is written, even
if the client gave up (timed out) meanwhile: a real server keeps working on
an abandoned request too.

Run it in its own process (``FlakyApi``), so that its event loop never
shares a thread with the client being measured:

    with FlakyApi() as api:
        api.scenario(capacity=8, outage=[2.0, 3.0])
        ... GET f"{api.url}/item/{key}" ...
        print(api.stats())   # requests, by status, max in flight

No pytest here: the benchmarks use it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

DEFAULTS: dict[str, Any] = {
    "seed": 1,
    "capacity": 8,
    "fail_rate": 0.20,
    "slow_rate": 0.05,
    "latency_s": [0.020, 0.060],
    "slow_s": [2.0, 5.0],
    "retry_after": "1",  # the 429s' wait (see _retry_headers)
    "outage": None,  # [start_s, duration_s]
    "outage_retry_after": None,  # a Retry-After for the 503s, or none
    "capacity_changes": [],  # [[at_s, capacity], ...]
}


def value_of(key: str) -> str:
    """The value the API answers for ``key``: clients check results by it."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _unit(seed: int, key: str, n: int, salt: str) -> float:
    h = hashlib.blake2b(f"{seed}|{key}|{n}|{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


class _State:
    def __init__(self) -> None:
        self.set({})

    def set(self, params: dict[str, Any]) -> None:
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown scenario parameters: {sorted(unknown)}")
        self.p = {**DEFAULTS, **params}
        self.t0: float | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.served: dict[str, int] = {}
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}  # key -> when each request came

    def now(self) -> float:
        t = time.monotonic()
        if self.t0 is None:
            self.t0 = t
        return t - self.t0

    def capacity(self, t: float) -> int:
        cap = self.p["capacity"]
        for at, c in self.p["capacity_changes"]:
            if t >= at:
                cap = c
        return cap

    def count(self, status: int) -> None:
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1


def _retry_headers(spec: str | None) -> dict[str, str]:
    """The 429's wait: "1" (Retry-After: 1), "date+2" (an HTTP date 2 s
    ahead), "ms=250" (retry-after-ms only), or None (no header)."""
    if spec is None:
        return {}
    if spec.startswith("date+"):
        from email.utils import formatdate

        return {"Retry-After": formatdate(time.time() + float(spec[5:]), usegmt=True)}
    if spec.startswith("ms="):
        return {"retry-after-ms": spec[3:]}
    return {"Retry-After": spec}


def _app() -> Any:
    from aiohttp import web

    state = _State()

    async def item(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        t = state.now()
        state.requests += 1
        state.times.setdefault(key, []).append(t)
        p = state.p
        out = p["outage"]
        if out is not None and out[0] <= t < out[0] + out[1]:
            state.count(503)
            headers = {}
            if p["outage_retry_after"] is not None:
                headers["Retry-After"] = str(p["outage_retry_after"])
            return web.Response(status=503, text="service unavailable", headers=headers)
        if state.in_flight >= state.capacity(t):
            state.count(429)
            return web.Response(
                status=429, text="too many requests", headers=_retry_headers(p["retry_after"])
            )
        n = state.served.get(key, 0)
        state.served[key] = n + 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            u = _unit(p["seed"], key, n, "fate")
            lo, hi = p["latency_s"]
            delay = lo + (hi - lo) * _unit(p["seed"], key, n, "latency")
            if p["fail_rate"] <= u < p["fail_rate"] + p["slow_rate"]:
                lo, hi = p["slow_s"]
                delay = lo + (hi - lo) * _unit(p["seed"], key, n, "slow")
            await asyncio.sleep(delay)
            if u < p["fail_rate"]:
                state.count(500)
                return web.Response(status=500, text="internal error")
            state.count(200)
            return web.json_response({"key": key, "value": value_of(key)})
        finally:
            state.in_flight -= 1

    async def scenario(request: web.Request) -> web.Response:
        try:
            state.set(await request.json())
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        return web.json_response(state.p)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": state.requests,
                "by_status": state.by_status,
                "max_in_flight": state.max_in_flight,
                "in_flight": state.in_flight,
                "times": state.times if request.query.get("times") else {},
            }
        )

    app = web.Application()
    app.router.add_get("/item/{key}", item)
    app.router.add_post("/scenario", scenario)
    app.router.add_get("/stats", stats)
    return app


def _serve(port: int) -> None:
    from aiohttp import web

    # A large backlog: a burst of clients must be refused by the API's own
    # rules (429), not by the kernel's accept queue.
    web.run_app(_app(), host="127.0.0.1", port=port, print=None, backlog=1024)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlakyApi:
    """The API in a child process on a free loopback port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        sanitizer = ("LD_PRELOAD", "ASAN", "TSAN", "UBSAN", "LSAN")
        env = {k: v for k, v in os.environ.items() if not k.startswith(sanitizer)}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the flaky API exited with {self.proc.returncode}")
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the flaky API did not answer on {self.url} in {timeout} s")

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def scenario(self, **params: Any) -> dict[str, Any]:
        """Resets the counters and sets the scenario (DEFAULTS for the rest)."""
        return self._call("/scenario", params)

    def stats(self, times: bool = False) -> dict[str, Any]:
        """requests, by_status, max_in_flight, in_flight; with ``times``,
        when each key's requests came (seconds into the scenario)."""
        return self._call("/stats?times=1" if times else "/stats")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> FlakyApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
