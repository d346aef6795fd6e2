"""Crash and resume: a pipeline killed mid-run picks up where it stopped.

A child process runs a four-step pipeline with SQLite checkpoints and dies
(os._exit, as a kill -9 would) inside the third step. The parent then
resumes the run by its id: the two completed steps are restored from their
checkpoints, not run again; only the rest runs.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from caudal import Pipeline, SqliteStore, Step

LOG = Path(os.environ.get("DEMO_LOG", "/dev/null"))


def ran(name):
    with LOG.open("a") as f:
        f.write(name + "\n")


async def fetch(topic):
    ran("fetch")
    return [f"{topic} article {i}" for i in range(3)]


async def summarise(articles):
    ran("summarise")
    await asyncio.sleep(0.01)  # the expensive LLM call we must not pay twice
    return [a.upper() for a in articles]


async def score(summaries):
    ran("score")
    if os.environ.get("DEMO_CRASH") == "1":
        os._exit(137)  # the machine dies here
    return {s: len(s) for s in summaries}


async def report(scores):
    ran("report")
    return max(scores, key=scores.get)


def pipeline() -> Pipeline:
    return Step(fetch) >> Step(summarise) >> Step(score) >> Step(report)


async def child(store_path, run_id):
    await pipeline().run("rivers", store=SqliteStore(store_path), run_id=run_id)


async def main():
    tmp = Path(tempfile.mkdtemp())
    store_path, log = tmp / "runs.db", tmp / "ran.log"
    env = {**os.environ, "DEMO_LOG": str(log), "DEMO_CRASH": "1"}
    proc = subprocess.run([sys.executable, __file__, "child", str(store_path), "demo-run"], env=env)
    print(
        f"first attempt: process died with exit code {proc.returncode} "
        f"after running: {', '.join(log.read_text().split())}"
    )
    os.environ["DEMO_LOG"] = str(log)
    global LOG
    LOG = log
    log.write_text("")
    run = await pipeline().resume("demo-run", store=SqliteStore(store_path))
    print(f"resumed run {run.run_id}: status {run.status}, result {run.result!r}")
    for name, rec in run.steps.items():
        how = "restored from its checkpoint" if rec.restored else "ran now"
        print(f"  {name:10} {rec.status:10} {how}")
    print(f"steps executed during the resume: {', '.join(log.read_text().split())}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        asyncio.run(child(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main())
