"""The engine's own clock (caudal._core.monotonic_ns): on CLOCK_MONOTONIC,
whichever source it reads (the TSC where the kernel keeps time with it, or
clock_gettime), in this process, with CAUDAL_CLOCK=system, and in a child
forked after it was calibrated (cpp/caudal/executor/calibrated_clock.h)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from caudal._core import clock_source, monotonic_ns

# Reads whose system-clock bracket is wider than this were descheduled.
TIGHT_NS = 20_000
# How far a reading may sit outside its bracket.
SLACK_NS = 50_000


def read_past_calibration() -> None:
    end = time.monotonic() + 0.05  # the calibration takes the first 10 ms
    while time.monotonic() < end:
        monotonic_ns()


def test_it_reads_close_to_time_monotonic_and_never_goes_back():
    read_past_calibration()
    assert clock_source()["source"] in ("tsc", "system")
    last = monotonic_ns()
    checked = 0
    for _ in range(20_000):
        before = time.monotonic_ns()
        now = monotonic_ns()
        after = time.monotonic_ns()
        assert now >= last
        last = now
        if after - before > TIGHT_NS:
            continue
        checked += 1
        assert before - SLACK_NS <= now <= after + SLACK_NS, (before, now, after)
    assert checked > 1_000


def run_child(code: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_caudal_clock_system_keeps_clock_gettime():
    out = run_child(
        """
        import time
        from caudal._core import clock_source, monotonic_ns
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            monotonic_ns()
        print(clock_source()["source"])
        """,
        CAUDAL_CLOCK="system",
    )
    assert out == "system"


def test_a_child_forked_after_calibration_reads_it_too():
    # Forked from a single-threaded process (a fork beside threads is a
    # hazard of its own): the child inherits the calibrated clock.
    out = run_child(
        f"""
        import os, time
        from caudal._core import clock_source, monotonic_ns
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            monotonic_ns()
        parent_source = clock_source()["source"]
        pid = os.fork()
        if pid == 0:
            ok = True
            last = monotonic_ns()
            end = time.monotonic() + 0.2  # past a re-anchor or more
            while time.monotonic() < end:
                before = time.monotonic_ns()
                now = monotonic_ns()
                after = time.monotonic_ns()
                ok = ok and now >= last
                last = now
                if after - before <= {TIGHT_NS}:
                    ok = ok and before - {SLACK_NS} <= now <= after + {SLACK_NS}
            os._exit(0 if ok and clock_source()["source"] == parent_source else 1)
        _, status = os.waitpid(pid, 0)
        print(parent_source, os.waitstatus_to_exitcode(status))
        """
    )
    source, code = out.split()
    assert source in ("tsc", "system")
    assert code == "0"
