"""YAML pipeline definitions: ``caudal.load_pipeline(path_or_text, registry)``.

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
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from caudal._bounds import MAX_ATTEMPTS, MAX_RETRIES, MAX_SECONDS, number_problem
from caudal._steps import Step, _refuse_non_steps
from caudal.errors import CircularDependencyError, DependencyError
from caudal.errors import PipelineDefinitionError as _DefError
from caudal.pipeline import Pipeline, UsageLimits, current_run
from caudal.resilience import RetryStrategy

Resolver = Callable[[str, Any], Awaitable[Any]]

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

# Limits of what a definition may contain (docs/pipelines.md, "Limits").
MAX_DEPTH = 100  # levels of nesting, aliases followed
ALIAS_BUDGET = 100_000  # nodes that alias re-uses may add to the document
# Numbers: caudal._bounds, shared with the Python API (max_retries <=
# MAX_RETRIES, retry.max_attempts <= MAX_ATTEMPTS, seconds <= MAX_SECONDS).
_STD = "tag:yaml.org,2002:"
# The tags whose values caudal reads: YAML's own scalar and collection
# types, and merge keys (<<). Anything else (!!python/..., !!set, local
# !tags) is refused where it appears.
_TAGS = frozenset(
    _STD + t
    for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "binary", "merge")
)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_TAG_RE = re.compile(r"<AUTO>|</AUTO>")


# ---------------------------------------------------------------- AUTO tags


class AutoTag:
    """A parsed ``<AUTO>`` tag: ``parts`` are strings and nested tags."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def __repr__(self) -> str:
        return f"AutoTag({self.parts!r})"


class AutoTemplate:
    """A string value holding tags: its ``parts`` (strings and AutoTags)."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def __repr__(self) -> str:
        return f"AutoTemplate({self.parts!r})"


def parse_auto_tags(text: str) -> tuple[str | AutoTemplate, str | None, int]:
    """Split ``text`` into literal parts and (nested) AUTO tags.

    Returns ``(value, problem, offset)``: ``value`` is ``text`` itself when
    it has no tag, else an AutoTemplate; ``problem`` describes an unclosed
    or stray tag found at character ``offset``."""
    if "<AUTO>" not in text and "</AUTO>" not in text:
        return text, None, 0
    stack: list[tuple[list[Any], int]] = [([], 0)]
    pos = 0
    for m in _TAG_RE.finditer(text):
        if m.start() > pos:
            stack[-1][0].append(text[pos : m.start()])
        if m.group() == "<AUTO>":
            stack.append(([], m.start()))
        else:
            if len(stack) == 1:
                return text, "closing </AUTO> without an opening <AUTO>", m.start()
            parts, _ = stack.pop()
            stack[-1][0].append(AutoTag(parts))
        pos = m.end()
    if len(stack) > 1:
        return text, "unclosed <AUTO> tag (no matching </AUTO>)", stack[-1][1]
    if pos < len(text):
        stack[0][0].append(text[pos:])
    return AutoTemplate(stack[0][0]), None, 0


async def _resolve_tag(tag: AutoTag, resolver: Resolver, context: Any, memo: dict) -> Any:
    pieces = []
    for p in tag.parts:
        pieces.append(
            p if isinstance(p, str) else str(await _resolve_tag(p, resolver, context, memo))
        )
    text = "".join(pieces).strip()
    fut = memo.get(text)
    if fut is None:
        fut = memo[text] = asyncio.ensure_future(resolver(text, context))
    try:
        return await asyncio.shield(fut)
    except BaseException:
        if fut.done() and (fut.cancelled() or fut.exception() is not None):
            memo.pop(text, None)  # a failed answer is not cached
        raise


async def resolve_value(value: Any, resolver: Resolver, context: Any, memo: dict) -> Any:
    """``value`` with every AutoTemplate inside it (lists, dicts) resolved."""
    if isinstance(value, AutoTemplate):
        parts = value.parts
        if len(parts) == 1 and isinstance(parts[0], AutoTag):
            return await _resolve_tag(parts[0], resolver, context, memo)
        out = []
        for p in parts:
            out.append(
                p if isinstance(p, str) else str(await _resolve_tag(p, resolver, context, memo))
            )
        return "".join(out)
    if isinstance(value, list):
        return [await resolve_value(v, resolver, context, memo) for v in value]
    if isinstance(value, dict):
        return {k: await resolve_value(v, resolver, context, memo) for k, v in value.items()}
    return value


def _has_auto(value: Any) -> bool:
    if isinstance(value, AutoTemplate):
        return True
    if isinstance(value, list):
        return any(_has_auto(v) for v in value)
    if isinstance(value, dict):
        return any(_has_auto(v) for v in value.values())
    return False


# ------------------------------------------------------------------ loader


@functools.cache
def _loader() -> type:
    """PyYAML's SafeLoader with a nesting limit, and without the YAML 1.1
    ``=`` value type (a bare ``=`` is the string ``"="``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in resolvers if tag != _STD + "value"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"nested more than {MAX_DEPTH} levels deep",
                        self.peek_event().start_mark,
                    )
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_STD) :] if tag.startswith(_STD) else tag


def _check_graph(root: Any, problems: _Problems) -> None:
    """Walks the composed node graph once, aliases followed (memoised, so
    the cost is linear in the text): records every unsupported tag, and
    raises at once on a recursive alias, on aliases expanding the document
    by more than ALIAS_BUDGET nodes, or on nesting deeper than MAX_DEPTH."""
    import yaml

    def children(node: Any, path: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                yield k, path
                key = k.value if isinstance(k, yaml.ScalarNode) else "?"
                yield v, f"{path}.{key}" if path else str(key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                yield v, f"{path}[{i}]"

    def fail(node: Any, field: str, message: str) -> None:
        problems.items[:] = []
        problems.add(node, field, message)
        raise problems.error()

    def visit(node: Any, path: str) -> None:
        if node.tag not in _TAGS:
            problems.add(
                node,
                path,
                f"unsupported tag {_short_tag(node.tag)!r} (a definition holds plain YAML "
                "values: strings, numbers, booleans, null, dates, lists and mappings)",
            )
        elif isinstance(node, yaml.MappingNode) and path.startswith("context"):
            # The context is built by PyYAML, which lets a repeated key win
            # silently; elsewhere _Reader.mapping reports them.
            seen: dict[tuple[str, str], Any] = {}
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _STD + "merge":
                    first = seen.setdefault((k.tag, k.value), k)
                    if first is not k:
                        where = first.start_mark.line + 1
                        problems.add(
                            k,
                            f"{path}.{k.value}",
                            f"duplicate key {k.value!r} (first on line {where})",
                        )

    size: dict[int, int] = {}  # expanded node count of each finished node
    height: dict[int, int] = {}  # levels of each finished node, itself included
    on_path: set[int] = set()
    added = 0  # nodes added by alias re-uses
    visit(root, "")
    on_path.add(id(root))
    # [node, its field, children iterator, expanded size so far, tallest child]
    stack: list[list[Any]] = [[root, "", children(root, ""), 1, 0]]
    while stack:
        top = stack[-1]
        nxt = next(top[2], None)
        if nxt is None:
            stack.pop()
            on_path.discard(id(top[0]))
            size[id(top[0])] = top[3]
            height[id(top[0])] = h = top[4] + 1
            if stack:
                stack[-1][3] += top[3]
                stack[-1][4] = max(stack[-1][4], h)
            continue
        child, path = nxt
        cid = id(child)
        if cid in on_path:
            fail(child, path, "the alias refers to itself (a recursive structure)")
        if cid in size:  # an alias re-use: the node and all below it again
            added += size[cid]
            top[3] += size[cid]
            top[4] = max(top[4], height[cid])
            if added > ALIAS_BUDGET:
                fail(
                    top[0],
                    top[1],
                    f"aliases expand the document by more than {ALIAS_BUDGET} nodes "
                    "(each use of an alias copies its whole value)",
                )
            if len(stack) + height[cid] > MAX_DEPTH:
                fail(top[0], top[1], f"nested more than {MAX_DEPTH} levels deep (aliases followed)")
            continue
        if len(stack) >= MAX_DEPTH:
            fail(child, path, f"nested more than {MAX_DEPTH} levels deep (aliases followed)")
        visit(child, path)
        on_path.add(cid)
        stack.append([child, path, children(child, path), 1, 0])


# --------------------------------------------------------------- validation


class _Problems:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[tuple[int | None, str, str]] = []

    def add(self, node: Any, field: str, message: str, line: int | None = None) -> None:
        if line is None and node is not None:
            line = node.start_mark.line + 1
        self.items.append((line, field, message))

    def error(self) -> _DefError:
        line, field, message = self.items[0]
        problems = [
            f"{self.file}:{ln}: {fd + ': ' if fd else ''}{msg}" for ln, fd, msg in self.items
        ]
        return _DefError(message, file=self.file, line=line, field=field or None, problems=problems)


def _describe(node: Any) -> str:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a mapping"


class _Reader:
    """Typed reads from the node tree, recording problems instead of raising."""

    def __init__(self, problems: _Problems) -> None:
        import yaml

        self.yaml = yaml
        self.p = problems
        self.constructor = _loader()("")

    def value(self, node: Any, field: str = "") -> Any:
        """The node as a Python value; a value that does not convert (a
        date that does not exist, ``!!int abc``, a list as a mapping key)
        is a problem at its line."""
        try:
            return self.constructor.construct_object(node, deep=True)
        except (self.yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.constructor = _loader()("")  # drop its half-built state
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            what = getattr(exc, "problem", None) or str(exc)
            self.p.add(node, field, f"invalid value {_describe(node)}: {what}", line=line)
            return _BAD

    def mapping(self, node: Any, field: str, known: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
        """{key: (key_node, value_node)}; reports non-mappings, duplicate and
        unknown keys."""
        if not isinstance(node, self.yaml.MappingNode):
            self.p.add(node, field, f"expected a mapping, got {_describe(node)}")
            return {}
        out: dict[str, tuple[Any, Any]] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, self.yaml.ScalarNode) else None
            sub = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                self.p.add(k, field, "keys must be strings")
                continue
            if key in out:
                self.p.add(
                    k,
                    sub,
                    f"duplicate key {key!r} (first on line {out[key][0].start_mark.line + 1})",
                )
                continue
            if known and key not in known:
                self.p.add(k, sub, f"unknown field {key!r} (expected one of: {', '.join(known)})")
                continue
            out[key] = (k, v)
        return out

    def scalar(self, node: Any, field: str) -> Any:
        if not isinstance(node, self.yaml.ScalarNode):
            self.p.add(node, field, f"expected a single value, got {_describe(node)}")
            return _BAD
        return self.value(node, field)

    def string(self, node: Any, field: str, *, name: bool = False) -> Any:
        v = self.scalar(node, field)
        if v is _BAD:
            return v
        if not isinstance(v, str) or not v:
            self.p.add(node, field, f"expected a non-empty string, got {node.value!r}")
            return _BAD
        if name and not _NAME_RE.match(v):
            self.p.add(
                node,
                field,
                f"{v!r} is not a valid step name "
                "(letters, digits, _ . -; not starting with a digit)",
            )
            return _BAD
        return v

    def number(
        self,
        node: Any,
        field: str,
        *,
        positive: bool = False,
        integer: bool = False,
        maximum: float | None = None,
    ) -> Any:
        v = self.scalar(node, field)
        if v is _BAD:
            return v
        problem = number_problem(v, positive=positive, integer=integer, maximum=maximum)
        if problem is None:
            return v
        self.p.add(node, field, f"{problem}, got {node.value!r}")
        return _BAD

    def boolean(self, node: Any, field: str) -> Any:
        v = self.scalar(node, field)
        if v is _BAD:
            return v
        if not isinstance(v, bool):
            self.p.add(node, field, f"expected true or false, got {node.value!r}")
            return _BAD
        return v

    def string_list(self, node: Any, field: str, *, names: bool = False) -> Any:
        if isinstance(node, self.yaml.ScalarNode):
            v = self.string(node, field, name=names)
            return _BAD if v is _BAD else [v]
        if not isinstance(node, self.yaml.SequenceNode):
            self.p.add(
                node, field, f"expected a string or a list of strings, got {_describe(node)}"
            )
            return _BAD
        out = []
        for j, item in enumerate(node.value):
            v = self.string(item, f"{field}[{j}]", name=names)
            if v is not _BAD:
                out.append(v)
        return out

    def params(self, node: Any, field: str) -> Any:
        """The ``with:`` tree as Python values, strings with tags parsed."""
        y = self.yaml
        if isinstance(node, y.MappingNode):
            # Merge keys (<<: *defaults, or a list of them): the merged
            # mappings' keys first (the first one listed wins), then the
            # mapping's own keys override them.
            merged: dict[str, Any] = {}
            own = []
            for k, v in node.value:
                if k.tag != _STD + "merge":
                    own.append((k, v))
                    continue
                for src in v.value if isinstance(v, y.SequenceNode) else [v]:
                    if not isinstance(src, y.MappingNode):
                        self.p.add(src, field, f"<< merges mappings, got {_describe(src)}")
                        continue
                    for key, val in self.params(src, field).items():
                        merged.setdefault(key, val)
            if len(own) < len(node.value):
                node = y.MappingNode(node.tag, own, node.start_mark, node.end_mark)
            m = self.mapping(node, field, ())
            return {**merged, **{k: self.params(v, f"{field}.{k}") for k, (_, v) in m.items()}}
        if isinstance(node, y.SequenceNode):
            return [self.params(v, f"{field}[{j}]") for j, v in enumerate(node.value)]
        v = self.value(node, field)
        if isinstance(v, str):
            parsed, problem, offset = parse_auto_tags(v)
            if problem is not None:
                line = node.start_mark.line + 1 + v[:offset].count("\n")
                if node.style in ("|", ">"):
                    line += 1  # the text starts on the line after the indicator
                self.p.add(None, field, problem, line=line)
            return parsed
        return v


class _Bad:
    def __repr__(self) -> str:
        return "<invalid>"


_BAD = _Bad()


# ------------------------------------------------------------------ loading


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
    problems = _Problems(fname)
    try:
        root = yaml.compose(text, Loader=_loader())
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
    _check_graph(root, problems)
    if problems.items:
        problems.items.sort(key=lambda it: it[0] or 0)
        raise problems.error()
    r = _Reader(problems)
    top = r.mapping(root, "", _TOP_FIELDS)
    if not problems.items and "steps" not in top:
        problems.add(root, "steps", "missing required field 'steps'")
    pname = "pipeline"
    if "name" in top:
        v = r.string(top["name"][1], "name")
        pname = v if v is not _BAD else pname
    for f in ("description", "version"):
        if f in top:
            r.scalar(top[f][1], f)
    context = None
    if "context" in top:
        cnode = top["context"][1]
        if isinstance(cnode, yaml.MappingNode):
            context = r.value(cnode, "context")
        else:
            problems.add(cnode, "context", f"expected a mapping, got {_describe(cnode)}")
    limits = None
    if "limits" in top:
        lm = r.mapping(top["limits"][1], "limits", _LIMIT_FIELDS)
        kw = {}
        for f, (_, vnode) in lm.items():
            v = r.number(vnode, f"limits.{f}", integer=f == "max_tokens")
            if v is not _BAD:
                kw[f] = v
        limits = UsageLimits(**kw)

    steps_out: list[Step] = []
    step_lines: dict[str, int] = {}
    dep_nodes: dict[str, dict[str, Any]] = {}
    first_auto_line: int | None = None
    if "steps" in top:
        snode = top["steps"][1]
        if not isinstance(snode, yaml.SequenceNode):
            problems.add(snode, "steps", f"expected a list of steps, got {_describe(snode)}")
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
        problems.add(
            None,
            "",
            "<AUTO> tags need a resolver: load_pipeline(..., resolver=async_fn)",
            line=first_auto_line,
        )
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
    r: _Reader,
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
    name = r.string(m["name"][1], f"{base}.name", name=True) if "name" in m else _BAD
    if name is not _BAD:
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
        if uses is not _BAD:
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
        if deps is not _BAD:
            kw["depends_on"] = tuple(deps)
            if name is not _BAD:
                dnode = m["depends_on"][1]
                items = dnode.value if isinstance(dnode, r.yaml.SequenceNode) else [dnode]
                dep_nodes[name] = {it.value: it for it in items}
    for f in ("timeout_s", "cache_ttl_s"):
        if f in m:
            v = r.number(m[f][1], f"{base}.{f}", positive=True, maximum=MAX_SECONDS)
            if v is not _BAD:
                kw[f] = float(v)
    if "max_retries" in m:
        v = r.number(m["max_retries"][1], f"{base}.max_retries", integer=True, maximum=MAX_RETRIES)
        if v is not _BAD:
            kw["max_retries"] = v
    for f in ("cache", "optional"):
        if f in m:
            v = r.boolean(m[f][1], f"{base}.{f}")
            if v is not _BAD:
                kw[f] = v
    if "tags" in m:
        v = r.string_list(m["tags"][1], f"{base}.tags")
        if v is not _BAD:
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
                if v is not _BAD and v not in ("exponential", "linear", "fixed"):
                    p.add(vnode, fld, f"expected exponential, linear or fixed, got {v!r}")
                    v = _BAD
            elif f == "max_attempts":
                v = r.number(vnode, fld, positive=True, integer=True, maximum=MAX_ATTEMPTS)
            elif f in ("base_delay", "max_backoff"):
                v = r.number(vnode, fld, maximum=MAX_SECONDS)
            elif f == "jitter":
                v = r.number(vnode, fld, maximum=1.0)
            else:
                v = r.number(vnode, fld)
            if v is not _BAD:
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
        if fb is not _BAD:
            if fb not in registry:
                p.add(fnode, f"{base}.fallback", f"{fb!r} is not in the registry")
            else:
                kw["fallback"] = registry[fb]
    params: dict[str, Any] = {}
    auto_line = None
    if "with" in m:
        wnode = m["with"][1]
        if not isinstance(wnode, r.yaml.MappingNode):
            p.add(
                wnode, f"{base}.with", f"expected a mapping of parameters, got {_describe(wnode)}"
            )
        else:
            params = r.params(wnode, f"{base}.with")
            if _has_auto(params):
                auto_line = wnode.start_mark.line + 1
    if name is _BAD or target is None or len(p.items) > before:
        return None
    return _StepSpec(name, target, params, kw), auto_line  # type: ignore[return-value]


def _read_placement(r: _Reader, m: dict, base: str, kw: dict[str, Any]) -> None:
    """backend, num_cpus, num_gpus, resources, actors (docs/scale-out.md)."""
    from caudal.backends import ray_installed, ray_missing_message

    p = r.p
    if "backend" in m:
        node = m["backend"][1]
        v = r.string(node, f"{base}.backend")
        if v is not _BAD and v not in ("local", "ray"):
            p.add(node, f"{base}.backend", f"expected local or ray, got {v!r}")
        elif v == "ray" and not ray_installed():
            p.add(node, f"{base}.backend", ray_missing_message("this pipeline"))
        elif v is not _BAD:
            kw["backend"] = v
    for f in ("num_cpus", "num_gpus"):
        if f in m:
            v = r.number(m[f][1], f"{base}.{f}")
            if v is not _BAD:
                kw[f] = v
    if "resources" in m:
        rm = r.mapping(m["resources"][1], f"{base}.resources", ())
        res = {}
        for k, (knode, vnode) in rm.items():
            if k in ("CPU", "GPU"):
                p.add(knode, f"{base}.resources.{k}", f"give {k} as num_{k.lower()}s")
                continue
            v = r.number(vnode, f"{base}.resources.{k}")
            if v is not _BAD:
                res[k] = v
        if res:
            kw["resources"] = res
    if "actors" in m:
        v = r.number(m["actors"][1], f"{base}.actors", positive=True, integer=True)
        if v is not _BAD:
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
    if _has_auto(spec.params):
        fn = _auto_call(fn, spec.params, resolver)
    elif spec.params:
        fn = functools.partial(fn, **spec.params)
    if spec.params and kw.get("cache_key") is not None:
        from caudal._identity import fingerprint

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


__all__ = ["AutoTag", "AutoTemplate", "load_pipeline", "parse_auto_tags", "resolve_value"]
