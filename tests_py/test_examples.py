"""The examples run as written (make demo runs them too)."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES,
    )


def test_demo_runs_and_prints_stats():
    out = run("demo.py")
    assert out.returncode == 0, out.stderr
    assert "records scored" in out.stdout and "per-step statistics" in out.stdout


def test_resume_demo_restores_completed_steps():
    out = run("resume_demo.py")
    assert out.returncode == 0, out.stderr
    assert "exit code 137" in out.stdout
    assert "fetch      completed  restored from its checkpoint" in out.stdout
    assert "steps executed during the resume: score, report" in out.stdout
