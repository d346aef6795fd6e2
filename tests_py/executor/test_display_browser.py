"""The notebook displays as a person sees them: each HTML repr rendered by a
real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium) in a 1,200 x 900 window, and measured there."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from caudal import ExecutorCore, OptimizationConfig, Pipeline, Step

WIDTH, HEIGHT = 1200, 900


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail(
            "these tests need a headless Chromium: apt-get install chromium chromium-driver "
            "(make deps installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}"):  # fmt: skip
        opts.add_argument(arg)
    # The browser is not instrumented: under `make test-asan` it must not
    # inherit the sanitizer runtime preloaded into this process.
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "LD_PRELOAD" and not k.startswith(("ASAN_", "UBSAN_", "LSAN_", "TSAN_"))
    }
    driver = webdriver.Chrome(service=Service(driver_path, env=env), options=opts)
    yield driver
    driver.quit()


def _show(browser, tmp_path: Path, body: str) -> dict:
    """Loads `body` as a page, opens every <details>, and measures it."""
    page = tmp_path / "page.html"
    page.write_text(f"<!doctype html><html><body style='margin:8px'>{body}</body></html>")
    browser.get(page.as_uri())
    return browser.execute_script(
        """
        document.querySelectorAll('details').forEach(d => d.open = true);
        const root = document.documentElement;
        const over = Array.from(document.querySelectorAll('table'))
            .filter(t => t.scrollWidth > t.clientWidth + 1
                         || t.getBoundingClientRect().right > window.innerWidth)
            .map(t => t.querySelector('th') ? t.querySelector('th').innerText : '?');
        return {width: root.scrollWidth, view: window.innerWidth,
                text: document.body.innerText, over: over,
                first_top: document.body.firstElementChild.getBoundingClientRect().top};
        """
    )


def _fits(m: dict) -> None:
    assert m["width"] <= m["view"], f"the page is {m['width']} px wide in {m['view']}"
    assert m["over"] == [], f"tables wider than their box: {m['over']}"


LONG = "a message that goes on " * 12


async def _busy_executor() -> ExecutorCore:
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True))

    async def ok(x):
        return {"input": x, "text": LONG}

    async def bad(x):
        raise ConnectionError(f"upstream refused\nline two of the error\n{LONG}")

    for k in range(15):
        await ex.execute(Step(ok, f"a_step_with_a_rather_long_name_{k}", cache=True), k)
    for k in range(8):  # opens the breaker of the failing step
        await ex.execute(Step(bad, "calls_the_flaky_upstream_service"), k)
    return ex


def test_stats_open_with_their_summary_and_fit_the_page(browser, tmp_path):
    async def main():
        ex = await _busy_executor()
        stats = ex.get_optimization_stats()
        await ex.aclose()
        return stats

    stats = asyncio.run(main())
    assert stats["circuit_breaker"]["breakers"], "the workload should have made a breaker"
    m = _show(browser, tmp_path, stats._repr_html_())
    _fits(m)
    first = m["text"].splitlines()[0]
    assert first.startswith("caudal optimization stats: 23 executions, 8 failed; p95 "), first
    assert "1 open breaker" in first or "0 open breakers" in first, first
    assert m["first_top"] < 20  # the summary is the first thing on the page
    # The sections a reader looks for come before the counters of the rest.
    text = m["text"]
    assert text.index("execution") < text.index("circuit_breaker") < text.index("memory")


def test_results_runs_and_configs_fit_the_page(browser, tmp_path):
    async def main():
        ex = await _busy_executor()

        async def bad(x):
            raise ValueError(f"bad input\n{LONG}")

        async def ok(x):
            return LONG

        failed = await ex.execute(Step(bad, "bad"), 1)
        done = await ex.execute(Step(ok, "ok"), 1)
        p = Pipeline([Step(ok, "first_step_of_the_pipeline"), Step(bad, "second_step")])
        run = await p.run(1, store=False)
        recs = ex.get_performance_recommendations()
        await ex.aclose()
        return failed, done, run, recs

    failed, done, run, recs = asyncio.run(main())
    shown = {
        "failed StepResult": failed._repr_html_(),
        "StepResult": done._repr_html_(),
        "PipelineRun": run._repr_html_(),
        "OptimizationConfig": OptimizationConfig(cache_ttl_seconds=5)._repr_html_(),
        "Recommendations": recs._repr_html_(),
    }
    for what, body in shown.items():
        m = _show(browser, tmp_path, body)
        try:
            _fits(m)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
