"""examples/caudal_tour.ipynb runs in a real Jupyter kernel (nbclient +
ipykernel, this venv's python), and its rendered outputs are checked for
content: HTML tables, the StepResult repr, a progress-bar widget, PNGs."""

import base64
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOK = EXAMPLES / "caudal_tour.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",  # ipykernel's own spec: this interpreter
        timeout=120,
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()
    return nb


def outputs(nb, needle):
    """Outputs of the one code cell whose source contains ``needle``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(cells) == 1, needle
    return cells[0].outputs


def result(nb, needle):
    (out,) = [o for o in outputs(nb, needle) if o.output_type == "execute_result"]
    return out.data


def test_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if "outputs" in c)


def test_runs_in_this_venv(executed):
    (out,) = outputs(executed, 'print(f"caudal')
    assert out.text.strip().endswith(sys.prefix)
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_config_table_highlights_the_changed_fields(executed):
    data = result(executed, "config = OptimizationConfig(")
    assert data["text/plain"] == (
        "OptimizationConfig(enable_cache_optimization=True, slow_execution_threshold_ms=20.0)"
    )
    html = data["text/html"]
    assert "2 field(s) changed from the default" in html and html.count("<tr>") > 30


def test_step_result_repr_and_table(executed):
    data = result(executed, "result = await executor.execute(fetch_step, 1)")
    assert data["text/plain"].startswith(
        "StepResult(name='fetch', success=True, output={'id': 1, 'text': 'record <1>'}"
    )
    html = data["text/html"]
    assert "<table" in html and "record &lt;1&gt;" in html and "success" in html
    failed = result(executed, 'await executor.execute(Step(parse), "<html>")')
    assert "ValueError" in failed["text/html"] and "failed" in failed["text/html"]
    assert "&lt;html&gt;" in failed["text/html"]


def test_execute_many_shows_a_notebook_progress_bar(executed):
    outs = outputs(executed, "results = await executor.execute_many(fetch_step, range(300))")
    widgets = [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 1  # tqdm's ipywidgets bar, chosen automatically
    assert [o.data["text/plain"] for o in outs if o.output_type == "execute_result"] == ["300"]
    state = json.dumps(executed.metadata["widgets"])
    assert "300/300" in state  # the bar's final text, stored with the widget state


def test_stats_render_as_tables(executed):
    data = result(executed, "stats = executor.get_optimization_stats()")
    html = data["text/html"]
    for section in ("memory", "execution", "cache", "concurrency", "circuit_breaker"):
        assert f"<b>{section}</b>" in html
    assert html.count("<table") >= 7 and "p95_ms" in html and "hit_rate" in html
    assert "[execution]" in data["text/plain"]
    p95 = float(result(executed, 'stats["execution"]["steps"]["fetch"]["p95_ms"]')["text/plain"])
    assert p95 > 0  # still a plain dict underneath


def test_recommendations_table(executed):
    html = result(executed, "executor.get_performance_recommendations()")["text/html"]
    assert "<b>Recommendations</b> (1)" in html and "slow_execution_threshold_ms" in html


def test_plots_render_as_png(executed):
    for needle in ("executor.plot_latency(fetch_step)", "executor.plot_concurrency()"):
        data = result(executed, needle)
        assert base64.b64decode(data["image/png"]).startswith(PNG)
    latency = result(executed, "executor.plot_latency(fetch_step)")
    assert "2 Axes" in latency["text/plain"]  # histogram + percentiles over time


def test_pipeline_run_table_and_gantt(executed):
    data = result(executed, 'run_id="tour-1"')
    assert data["text/plain"].startswith("PipelineRun('tour-1', completed)")
    html = data["text/html"]
    assert html.count("<tr>") == 5  # header + 4 steps
    assert "retrieve" in html and "combine" in html
    gantt = result(executed, "run.plot_gantt()")
    assert base64.b64decode(gantt["image/png"]).startswith(PNG)


def test_tracing_cell_reads_back_one_span_per_execution(executed):
    data = result(executed, "exporter = JsonLinesExporter(buffer)")
    text = " ".join(data["text/plain"].split())  # IPython wraps long reprs
    assert text.startswith("(200, [('fetch', ")
    # The slowest five are the pretend API's slow calls (30 ms, over the
    # notebook's 20 ms slow threshold).
    assert text.count("'ok', True)") == 5
