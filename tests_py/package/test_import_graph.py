"""caudal's modules import each other without circles.

The graph is built from the source (ast over python/caudal/**), not by
importing it: an edge ``a -> b`` is an ``import`` or ``from ... import`` at
module level of ``a`` (including inside module-level ``if``/``try`` blocks
and class bodies, which run at import time; excluding ``if TYPE_CHECKING:``
blocks, which never run) that names caudal module ``b``. ``from pkg import
name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
Importing ``a.b`` also runs ``a/__init__``; that implicit edge is not
counted (every submodule would otherwise "import" its package).

Imports inside functions are counted separately and pinned: they are how
circles used to be hidden, so their number may only go down.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "python" / "caudal"

# Old module paths kept for one release as deprecation shims (each warns on
# import). Nothing inside caudal may import them.
SHIMS = {
    "caudal._pipeline_context",
    "caudal.backends",
    "caudal.backends.ray",
    "caudal.cache_redis",
    "caudal.checkpoints",
    "caudal.yaml_pipeline",
}

# Function-local imports of caudal modules, by (module, imported module).
# The budget: this list may shrink, never grow. Why each remains:
FUNCTION_LOCAL_BUDGET = sorted(
    [
        # Optional integrations and what pulls in a heavy or optional library,
        # imported only when used (`import caudal` must not load sqlite3,
        # psycopg, redis, ray, matplotlib...).
        ("caudal", "caudal.pipeline.stores.sqlite"),  # caudal.SqliteStore
        ("caudal", "caudal.integrations.postgres"),  # caudal.PostgresStore
        ("caudal.pipeline.stores", "caudal.pipeline.stores.sqlite"),  # the default store
        ("caudal.pipeline.stores", "caudal.pipeline.stores.sqlite"),  # open_store(path)
        ("caudal.pipeline.stores", "caudal.integrations.postgres"),  # .PostgresStore
        ("caudal.pipeline.stores", "caudal.integrations.postgres"),  # open_store(uri)
        ("caudal._steps", "caudal.integrations.ray"),  # a step with backend="ray"
        # flujo, at the first flujo step or parameter (caudal.executor_core)
        ("caudal._executor.flujo_compat", "caudal.integrations.flujo"),
        ("caudal.cli.where", "caudal.integrations.ray"),  # --ray-address
        ("caudal.cli.where", "caudal.integrations.redis"),  # --cache-redis
        (
            "caudal.pipeline.records",
            "caudal.integrations.plots",
        ),  # PipelineRun.plot_gantt (matplotlib)
        # The deprecated alias caudal.telemetry.OpenTelemetryExporter (one release).
        ("caudal.telemetry", "caudal.integrations.otel"),
        # The manual clock is a testing facility: loaded only for an
        # executor made with clock=.
        ("caudal._executor.core", "caudal.testing.clock"),
    ]
)

# Module-level circles allowed (none): each would be a frozenset of the
# modules of one strongly connected component.
KNOWN_CYCLES: list[frozenset[str]] = []


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, tuple[Path, bool]]:
    """{module name: (path, is_package)}"""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        out[_module_name(path)] = (path, path.name == "__init__.py")
    # The native module (caudal._core, described by its stub) is a leaf.
    for path in sorted(ROOT.rglob("*.pyi")):
        out.setdefault(_module_name(path), (path, False))
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool, mods) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "caudal"]
    if node.level:
        base = here.split(".") if is_pkg else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        pkg = ".".join(base + ([node.module] if node.module else []))
    else:
        pkg = node.module or ""
    if pkg.split(".")[0] != "caudal":
        return []
    out = []
    for a in node.names:
        sub = f"{pkg}.{a.name}"
        out.append(sub if sub in mods else pkg)
    return out


def _imports(name: str, path: Path, is_pkg: bool, mods) -> tuple[list[str], list[str]]:
    """(module-level targets, function-local targets) of one module."""
    top: list[str] = []
    local: list[str] = []

    def walk(body: list[ast.stmt], in_function: bool) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _targets(node, name, is_pkg, mods)
                if in_function:
                    local.extend(sorted(set(targets)))  # one per statement and module
                else:
                    top.extend(targets)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                walk(node.body, True)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                walk(node.orelse, in_function)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        walk(
                            [n for n in inner if isinstance(n, ast.stmt | ast.excepthandler)],
                            in_function,
                        )

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    walk(tree.body, False)
    return top, local


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    local: list[tuple[str, str]] = []
    for m, (path, is_pkg) in mods.items():
        top, loc = _imports(m, path, is_pkg, mods)
        graph[m].update(t for t in top if t in mods and t != m)
        local.extend((m, t) for t in loc if t in mods)
    return graph, local


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_package():
    graph, _ = _graph()
    assert "caudal.pipeline.graph" in graph
    assert "caudal.pipeline.runner" in graph["caudal.pipeline.graph"]
    assert "caudal._step" in graph["caudal._steps"]


def test_module_level_imports_are_acyclic():
    graph, _ = _graph()
    cycles = [c for c in _cycles(graph) if c not in KNOWN_CYCLES]
    assert cycles == [], f"import circles: {[sorted(c) for c in cycles]}"


def test_a_circle_is_detected():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


def test_function_local_imports_stay_within_budget():
    _, local = _graph()
    assert sorted(local) == FUNCTION_LOCAL_BUDGET


def test_nothing_in_caudal_imports_a_deprecated_path():
    graph, local = _graph()
    users = sorted(
        (m, t) for m, targets in graph.items() if m not in SHIMS for t in targets if t in SHIMS
    ) + sorted((m, t) for m, t in local if m not in SHIMS and t in SHIMS)
    assert users == []
