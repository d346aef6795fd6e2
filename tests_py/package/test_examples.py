"""The examples run as written (make demo runs them too)."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script):
    return run_args(script)


def run_args(script, *args):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
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


# ---- flujo's optimization use cases (examples/*.py), output checked for content
PNG = b"\x89PNG\r\n\x1a\n"


def test_data_batches_prints_stats_tables():
    out = run("data_batches.py")
    assert out.returncode == 0, out.stderr
    assert "60/60 batches processed, 20 from the cache" in out.stdout
    assert "[execution]" in out.stdout and "[cache]" in out.stdout
    assert "cache hit rate: 33.33%" in out.stdout


def test_api_handler_opens_the_breaker_during_the_outage():
    out = run("api_handler.py")
    assert out.returncode == 0, out.stderr
    assert "480 requests" in out.stdout and "degraded (fallback)" in out.stdout
    assert "[circuit_breaker]" in out.stdout and "half_open" in out.stdout
    assert "'error'" not in out.stdout  # every request got an answer


def test_batch_monitoring_prints_monitor_lines_and_saves_plots(tmp_path):
    out = run_args("batch_monitoring.py", "--plot", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "one batch: output 42" in out.stdout
    assert out.stdout.count("monitor:") >= 2
    assert "1200/1200 items" in out.stdout and "[high] Step 'batch_process'" in out.stdout
    for name in ("batch_latency.png", "batch_concurrency.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_llm_pipeline_runs_retries_and_caches(tmp_path):
    out = run_args("llm_pipeline.py", "--plot", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("PipelineRun(") and lines[0].endswith("completed)")
    revise = next(ln for ln in lines if ln.strip().startswith("revise"))
    assert revise.split()[4] == "2"  # the 429 was retried
    assert "second run: completed, cache hits ['retrieve', 'draft'" in out.stdout
    assert "0 new tokens" in out.stdout
    assert (tmp_path / "llm_gantt.png").read_bytes().startswith(PNG)
