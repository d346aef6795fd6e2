"""Progress bars appear where someone watches and nowhere else: execute_many
with the default ``progress=None`` on a terminal (a pseudo-terminal here)
and not in a pipe. The CLI's rule is tested in test_pipeline_cli.py, the
notebook's (tqdm's widget) in test_notebook.py."""

import os
import pty
import subprocess
import sys
import textwrap

from _pty import read_all

SCRIPT = textwrap.dedent(
    """
    import asyncio
    from caudal import ExecutorCore, Step

    async def work(x):
        await asyncio.sleep(0.001)
        return x

    async def main():
        results = await ExecutorCore().execute_many(Step(work, name="batch_job"), range(50))
        print("done", len(results))

    asyncio.run(main())
    """
)


def run_with_stderr(stderr_fd=None):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=stderr_fd if stderr_fd is not None else subprocess.PIPE,
    )


def test_execute_many_draws_a_bar_on_a_terminal():
    master, slave = pty.openpty()
    proc = run_with_stderr(slave)
    os.close(slave)
    written = read_all(master)
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0 and out == b"done 50\n"
    err = written.decode(errors="replace")
    assert "batch_job" in err and "50/50" in err and "step/s" in err, err


def test_execute_many_is_quiet_in_a_pipe():
    proc = run_with_stderr()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == b"done 50\n"
    assert err == b""
