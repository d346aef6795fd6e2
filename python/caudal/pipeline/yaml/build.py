"""Building a Pipeline from a YAML definition: ``load_pipeline``.

The document is composed into PyYAML's node tree (not loaded straight into
Python values) so that every problem is reported with its file, line and
field: ``pipeline.yaml:12: steps[1].timeout_s: expected a positive number,
got 'soon'``. All problems found are reported at once (``.problems``); the
exception's ``line``/``field`` are those of the first.

``<AUTO>...</AUTO>`` inside a string of a step's ``with:`` parameters is
resolved when the step runs, by the async ``resolver(text, context)`` given
to ``load_pipeline`` (an LLM call, typically). Tags nest: the inner tags are
resolved first and their answers substituted into the outer tag's text.
Answers are cached per text for the run (concurrent steps asking the same
text share one call). A value that is exactly one tag takes the answer as
is (any type); otherwise answers are formatted into the string. The full
field reference is in docs/pipelines.md.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from caudal._backends import ray_installed, ray_missing_message
from caudal._bounds import MAX_ATTEMPTS, MAX_RETRIES, MAX_SECONDS
from caudal._identity import fingerprint
from caudal._step import Step, _refuse_non_steps
from caudal.errors import (
    CircularDependencyError,
    DependencyError,
    PipelineBackendUnavailableError,
)
from caudal.errors import PipelineDefinitionError as _DefError
from caudal.pipeline.graph import Pipeline
from caudal.pipeline.records import UsageLimits, current_run
from caudal.pipeline.yaml.auto import Resolver, has_auto, resolve_value
from caudal.pipeline.yaml.document import BAD, Problems, Reader, check_graph, describe, safe_loader
from caudal.resilience import RetryStrategy

_TOP_FIELDS = ("name", "description", "version", "context", "limits", "steps")
_STEP_FIELDS = (
    "name",
    "uses",
    "description",
    "depends_on",
    "with",
    "max_retries",
    "retry",
    "timeout_s",
    "cache",
    "cache_ttl_s",
    "tags",
    "optional",
    "fallback",
    "backend",
    "num_cpus",
    "num_gpus",
    "resources",
    "actors",
)
_RETRY_FIELDS = (
    "max_attempts",
    "base_delay",
    "backoff_factor",
    "max_backoff",
    "jitter",
    "strategy",
)
_LIMIT_FIELDS = ("max_tokens", "max_cost_usd")


def _read_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _DefError(
            f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            file=str(path),
            line=line,
        ) from None


def _read_source(source: str | os.PathLike[str]) -> tuple[str, str, str | None]:
    """(text, name for messages, path or None)."""
    if isinstance(source, os.PathLike):
        path = Path(source)
        return _read_file(path), str(path), str(path.resolve())
    if isinstance(source, str):
        one_line = "\n" not in source
        if one_line and (
            source.endswith((".yaml", ".yml")) or (":" not in source and os.path.exists(source))
        ):
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(f"pipeline file {source!r} does not exist")
            return _read_file(path), str(path), str(path.resolve())
        return source, "<string>", None
    raise TypeError(f"load_pipeline: expected a path or YAML text, got {type(source).__name__}")


# The problem reported for <AUTO> tags without a resolver (the CLI says
# --resolver instead).
RESOLVER_MISSING = "<AUTO> tags need a resolver: load_pipeline(..., resolver=async_fn)"


def load_pipeline(
    source: str | os.PathLike[str],
    registry: Mapping[str, Any],
    *,
    resolver: Resolver | None = None,
    require_resolver: bool = True,
) -> Pipeline:
    """Build a :class:`caudal.Pipeline` from YAML (a path or the text).

    ``registry`` maps the names used in ``uses:``/``fallback:`` to callables,
    caudal Steps or agents. ``resolver``: ``async (text, context) -> answer``
    for ``<AUTO>`` tags (required when the file has any, unless
    ``require_resolver=False``, as ``caudal validate`` does). Raises
    :class:`caudal.PipelineDefinitionError` (file, line, field, problems).
    """
    import yaml

    text, fname, path = _read_source(source)
    problems = Problems(fname)
    try:
        root = yaml.compose(text, Loader=safe_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = f"invalid YAML: {exc.problem or exc}"
        if exc.context:
            msg += f" ({exc.context})"
        raise _DefError(msg, file=fname, line=line) from None
    except yaml.reader.ReaderError as exc:
        # Characters YAML does not allow (NUL, most control characters).
        pos = exc.position
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise _DefError(
            f"invalid YAML: unacceptable character #x{char:04x} at column {column} ({exc.reason})",
            file=fname,
            line=line,
        ) from None
    except yaml.YAMLError as exc:
        raise _DefError(f"invalid YAML: {exc}", file=fname) from None
    if root is None:
        raise _DefError(
            "empty pipeline definition (expected a mapping with 'steps')", file=fname, line=1
        )
    check_graph(root, problems)
    if problems.items:
        problems.items.sort(key=lambda it: it[0] or 0)
        raise problems.error()
    r = Reader(problems)
    top = r.mapping(root, "", _TOP_FIELDS)
    if not problems.items and "steps" not in top:
        problems.add(root, "steps", "missing required field 'steps'")
    pname = "pipeline"
    if "name" in top:
        v = r.string(top["name"][1], "name")
        pname = v if v is not BAD else pname
    for f in ("description", "version"):
        if f in top:
            r.scalar(top[f][1], f)
    context = None
    if "context" in top:
        cnode = top["context"][1]
        if isinstance(cnode, yaml.MappingNode):
            context = r.value(cnode, "context")
        else:
            problems.add(cnode, "context", f"expected a mapping, got {describe(cnode)}")
    limits = None
    if "limits" in top:
        lm = r.mapping(top["limits"][1], "limits", _LIMIT_FIELDS)
        kw = {}
        for f, (_, vnode) in lm.items():
            v = r.number(vnode, f"limits.{f}", integer=f == "max_tokens")
            if v is not BAD:
                kw[f] = v
        limits = UsageLimits(**kw)

    steps_out: list[Step] = []
    step_lines: dict[str, int] = {}
    dep_nodes: dict[str, dict[str, Any]] = {}
    first_auto_line: int | None = None
    if "steps" in top:
        snode = top["steps"][1]
        if not isinstance(snode, yaml.SequenceNode):
            problems.add(snode, "steps", f"expected a list of steps, got {describe(snode)}")
        elif not snode.value:
            problems.add(snode, "steps", "a pipeline needs at least one step")
        else:
            for idx, node in enumerate(snode.value):
                built = _read_step(r, node, idx, registry, step_lines, dep_nodes)
                if built is not None:
                    step, auto_line = built
                    if auto_line is not None and first_auto_line is None:
                        first_auto_line = auto_line
                    steps_out.append(step)
    if first_auto_line is not None and resolver is None and require_resolver and not problems.items:
        problems.add(None, "", RESOLVER_MISSING, line=first_auto_line)
    if problems.items:
        # Also name dependencies on steps that do not exist (alone, they are
        # reported as DependencyError by the graph check below).
        for step_name, deps in dep_nodes.items():
            for dep, dnode in deps.items():
                if dep not in step_lines:
                    problems.add(
                        dnode,
                        _step_field(step_name, step_lines, "depends_on"),
                        f"step {step_name!r} depends on {dep!r}, which is not a step",
                    )
        problems.items.sort(key=lambda it: it[0] or 0)
        raise problems.error()

    final_steps = [_bind(s, resolver) for s in steps_out]
    try:
        p = Pipeline(final_steps, name=pname)
    except DependencyError as exc:
        node = dep_nodes.get(exc.step, {}).get(exc.missing)
        raise DependencyError(
            exc.step,
            exc.missing,
            file=fname,
            line=node.start_mark.line + 1 if node is not None else step_lines.get(exc.step),
            field=_step_field(exc.step, step_lines, "depends_on"),
        ) from None
    except CircularDependencyError as exc:
        first = exc.cycle[0]
        raise CircularDependencyError(
            exc.cycle,
            file=fname,
            line=step_lines.get(first),
            field=_step_field(first, step_lines, "depends_on"),
        ) from None
    p.defaults = {"context": context, "limits": limits}
    p.source = {"yaml": text, "path": path, "registry": None}
    return p


def _step_field(name: str, step_lines: dict[str, int], sub: str) -> str:
    idx = list(step_lines).index(name) if name in step_lines else 0
    return f"steps[{idx}].{sub}"


def _read_step(
    r: Reader,
    node: Any,
    idx: int,
    registry: Mapping[str, Any],
    step_lines: dict[str, int],
    dep_nodes: dict[str, dict[str, Any]],
) -> tuple[Step, int | None] | None:
    p = r.p
    base = f"steps[{idx}]"
    before = len(p.items)
    m = r.mapping(node, base, _STEP_FIELDS)
    if len(p.items) > before and not m:
        return None
    for req in ("name", "uses"):
        if req not in m:
            p.add(node, base, f"missing required field {req!r}")
    name = r.string(m["name"][1], f"{base}.name", name=True) if "name" in m else BAD
    if name is not BAD:
        if name in step_lines:
            p.add(
                m["name"][1],
                f"{base}.name",
                f"duplicate step name {name!r} (first defined on line {step_lines[name]})",
            )
        else:
            step_lines[name] = node.start_mark.line + 1
    target = None
    if "uses" in m:
        uses_node = m["uses"][1]
        uses = r.string(uses_node, f"{base}.uses")
        if uses is not BAD:
            if uses not in registry:
                known = ", ".join(sorted(registry)) or "(empty registry)"
                p.add(
                    uses_node, f"{base}.uses", f"{uses!r} is not in the registry (known: {known})"
                )
            else:
                target = registry[uses]
                if not isinstance(target, Step) and callable(target):
                    # A class, a generator function...: refused here, at its
                    # line, rather than when the pipeline is built.
                    try:
                        _refuse_non_steps(target, f"{uses!r}", 1 if "actors" in m else None)
                    except TypeError as exc:
                        p.add(uses_node, f"{base}.uses", str(exc))
                        target = None
    kw: dict[str, Any] = {}
    if "depends_on" in m:
        deps = r.string_list(m["depends_on"][1], f"{base}.depends_on", names=True)
        if deps is not BAD:
            kw["depends_on"] = tuple(deps)
            if name is not BAD:
                dnode = m["depends_on"][1]
                items = dnode.value if isinstance(dnode, r.yaml.SequenceNode) else [dnode]
                dep_nodes[name] = {it.value: it for it in items}
    for f in ("timeout_s", "cache_ttl_s"):
        if f in m:
            v = r.number(m[f][1], f"{base}.{f}", positive=True, maximum=MAX_SECONDS)
            if v is not BAD:
                kw[f] = float(v)
    if "max_retries" in m:
        v = r.number(m["max_retries"][1], f"{base}.max_retries", integer=True, maximum=MAX_RETRIES)
        if v is not BAD:
            kw["max_retries"] = v
    for f in ("cache", "optional"):
        if f in m:
            v = r.boolean(m[f][1], f"{base}.{f}")
            if v is not BAD:
                kw[f] = v
    if "tags" in m:
        v = r.string_list(m["tags"][1], f"{base}.tags")
        if v is not BAD:
            kw["tags"] = tuple(v)
    if "description" in m:
        r.scalar(m["description"][1], f"{base}.description")
    _read_placement(r, m, base, kw)
    if "retry" in m:
        rnode = m["retry"][1]
        rm = r.mapping(rnode, f"{base}.retry", _RETRY_FIELDS)
        rkw: dict[str, Any] = {}
        for f, (_, vnode) in rm.items():
            fld = f"{base}.retry.{f}"
            if f == "strategy":
                v = r.string(vnode, fld)
                if v is not BAD and v not in ("exponential", "linear", "fixed"):
                    p.add(vnode, fld, f"expected exponential, linear or fixed, got {v!r}")
                    v = BAD
            elif f == "max_attempts":
                v = r.number(vnode, fld, positive=True, integer=True, maximum=MAX_ATTEMPTS)
            elif f in ("base_delay", "max_backoff"):
                v = r.number(vnode, fld, maximum=MAX_SECONDS)
            elif f == "jitter":
                v = r.number(vnode, fld, maximum=1.0)
            else:
                v = r.number(vnode, fld)
            if v is not BAD:
                rkw[f] = v
        if "max_retries" in m:
            p.add(rnode, f"{base}.retry", "give max_retries or retry, not both")
        elif len(rkw) == len(rm):
            try:
                kw["retry"] = RetryStrategy(**rkw)
            except (TypeError, ValueError) as exc:
                p.add(rnode, f"{base}.retry", str(exc))
    if "fallback" in m:
        fnode = m["fallback"][1]
        fb = r.string(fnode, f"{base}.fallback")
        if fb is not BAD:
            if fb not in registry:
                p.add(fnode, f"{base}.fallback", f"{fb!r} is not in the registry")
            else:
                kw["fallback"] = registry[fb]
    params: dict[str, Any] = {}
    auto_line = None
    if "with" in m:
        wnode = m["with"][1]
        if not isinstance(wnode, r.yaml.MappingNode):
            p.add(wnode, f"{base}.with", f"expected a mapping of parameters, got {describe(wnode)}")
        else:
            params = r.params(wnode, f"{base}.with")
            if has_auto(params):
                auto_line = wnode.start_mark.line + 1
            if target is not None:
                _check_params(r, wnode, f"{base}.with", target, params)
    if name is BAD or target is None or len(p.items) > before:
        return None
    return _StepSpec(name, target, params, kw), auto_line  # type: ignore[return-value]


def _read_placement(r: Reader, m: dict, base: str, kw: dict[str, Any]) -> None:
    """backend, num_cpus, num_gpus, resources, actors (docs/scale-out.md)."""
    p = r.p
    if "backend" in m:
        node = m["backend"][1]
        v = r.string(node, f"{base}.backend")
        if v is not BAD and v not in ("local", "ray"):
            p.add(node, f"{base}.backend", f"expected local or ray, got {v!r}")
        elif v == "ray" and not ray_installed():
            p.add(node, f"{base}.backend", ray_missing_message("this pipeline"))
            p.error_type = PipelineBackendUnavailableError
        elif v is not BAD:
            kw["backend"] = v
    for f in ("num_cpus", "num_gpus"):
        if f in m:
            v = r.number(m[f][1], f"{base}.{f}")
            if v is not BAD:
                kw[f] = v
    if "resources" in m:
        rm = r.mapping(m["resources"][1], f"{base}.resources", ())
        res = {}
        for k, (knode, vnode) in rm.items():
            if k in ("CPU", "GPU"):
                p.add(knode, f"{base}.resources.{k}", f"give {k} as num_{k.lower()}s")
                continue
            v = r.number(vnode, f"{base}.resources.{k}")
            if v is not BAD:
                res[k] = v
        if res:
            kw["resources"] = res
    if "actors" in m:
        v = r.number(m["actors"][1], f"{base}.actors", positive=True, integer=True)
        if v is not BAD:
            kw["actors"] = v
    if kw.get("backend") == "local":
        for f in ("num_cpus", "num_gpus", "resources", "actors"):
            if f in m:
                p.add(m[f][0], f"{base}.{f}", "applies only to backend: ray")


class _StepSpec:
    """A validated step, bound to a resolver once all steps are read."""

    __slots__ = ("kw", "name", "params", "target")

    def __init__(self, name: str, target: Any, params: dict, kw: dict) -> None:
        self.name, self.target, self.params, self.kw = name, target, params, kw


def _callee(target: Any) -> Any:
    """What a step's ``with:`` parameters are passed to: a registry Step's
    function, a callable, or an agent's ``run``."""
    if isinstance(target, Step):
        return target.fn
    return target if callable(target) else getattr(target, "run", None)


def _check_params(r: Reader, wnode: Any, field: str, target: Any, params: dict) -> None:
    """Each ``with:`` key names a parameter the step's function takes by
    keyword (after the input, its first parameter), unless it takes
    ``**kwargs``: a misspelt key is reported here, at its line, not when the
    step first runs."""
    fn = _callee(target)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to check against (some builtins)
    ps = list(sig.parameters.values())
    if any(q.kind is q.VAR_KEYWORD for q in ps):
        return
    positional = [q for q in ps if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    data = positional[0].name if positional else None
    takes = [
        q.name for q in ps if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY) and q.name != data
    ]
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    for knode, _ in wnode.value:
        key = knode.value
        if key not in params or key in takes:
            continue
        if key == data:
            why = "its first parameter, which receives the step's input"
        else:
            why = "no such parameter"
        shown = ", ".join(takes) if takes else "none besides the input"
        r.p.add(
            knode,
            f"{field}.{key}",
            f"{name}() does not take {key!r} ({why}; it takes: {shown})",
        )


def _accepts(fn: Any, param: str) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return param in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _bind(spec: _StepSpec, resolver: Resolver | None) -> Step:
    target, kw = spec.target, dict(spec.kw)
    if isinstance(target, Step):
        fn = target.fn
        base = {
            s: getattr(target, s)
            for s in Step.__slots__
            if s not in ("fn", "name", "__weakref__", "depends_on", "optional")
        }
        if "max_retries" in kw or "retry" in kw:
            base.pop("max_retries", None)
            base.pop("retry", None)
        kw = {**base, **kw}
    elif callable(target):
        fn = target
    else:
        fn = target.run  # an agent
    # The with: parameters are part of the step's cache identity: bound to
    # the function (a partial, or the <AUTO> wrapper's captured variables),
    # or, for a registry Step that names its namespace, folded into it.
    if has_auto(spec.params):
        fn = _auto_call(fn, spec.params, resolver)
    elif spec.params:
        fn = functools.partial(fn, **spec.params)
    if spec.params and kw.get("cache_key") is not None:
        params = fingerprint(spec.params)
        kw["cache_key"] = None if params is None else f"{kw['cache_key']}\x1f{params}"
    return Step(fn, spec.name, **kw)


def _auto_call(fn: Any, params: dict, resolver: Resolver | None) -> Callable[..., Any]:
    wants_context = _accepts(fn, "context")
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )

    async def call(data: Any, context: Any = None) -> Any:
        if resolver is None:
            raise RuntimeError("<AUTO> tags need a resolver: load_pipeline(..., resolver=...)")
        scope = current_run()
        memo = scope.memo.setdefault("auto", {}) if scope is not None else {}
        resolved = await resolve_value(params, resolver, context, memo)
        extra = {"context": context} if wants_context else {}
        if is_async:
            return await fn(data, **resolved, **extra)
        out = await asyncio.to_thread(functools.partial(fn, data, **resolved, **extra))
        if inspect.isawaitable(out):
            out = await out
        return out

    call.__name__ = getattr(fn, "__name__", "auto_step")
    return call


__all__ = ["load_pipeline"]
