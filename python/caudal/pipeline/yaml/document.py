"""A YAML pipeline document, read safely and checked with lines and fields.

The document is composed into PyYAML's node tree (not loaded straight into
Python values) so that every problem is reported with its file, line and
field. The safe loader refuses tags caudal does not read; the graph check
bounds nesting and alias expansion (docs/pipelines.md, "Limits");
:class:`Reader` reads typed fields from nodes and collects every problem
(:class:`Problems`) instead of stopping at the first.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from caudal._bounds import number_problem
from caudal.errors import PipelineDefinitionError as _DefError
from caudal.pipeline.yaml.auto import parse_auto_tags

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


@functools.cache
def safe_loader() -> type:
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


def check_graph(root: Any, problems: Problems) -> None:
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
            # silently; elsewhere Reader.mapping reports them.
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


class Problems:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[tuple[int | None, str, str]] = []
        # A missing backend package makes the error an ImportError too.
        self.error_type: type[_DefError] = _DefError

    def add(self, node: Any, field: str, message: str, line: int | None = None) -> None:
        if line is None and node is not None:
            line = node.start_mark.line + 1
        self.items.append((line, field, message))

    def error(self) -> _DefError:
        line, field, message = self.items[0]
        problems = [
            f"{self.file}:{ln}: {fd + ': ' if fd else ''}{msg}" for ln, fd, msg in self.items
        ]
        return self.error_type(
            message, file=self.file, line=line, field=field or None, problems=problems
        )


def describe(node: Any) -> str:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a mapping"


class Reader:
    """Typed reads from the node tree, recording problems instead of raising."""

    def __init__(self, problems: Problems) -> None:
        import yaml

        self.yaml = yaml
        self.p = problems
        self.constructor = safe_loader()("")

    def value(self, node: Any, field: str = "") -> Any:
        """The node as a Python value; a value that does not convert (a
        date that does not exist, ``!!int abc``, a list as a mapping key)
        is a problem at its line."""
        try:
            return self.constructor.construct_object(node, deep=True)
        except (self.yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.constructor = safe_loader()("")  # drop its half-built state
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            what = getattr(exc, "problem", None) or str(exc)
            self.p.add(node, field, f"invalid value {describe(node)}: {what}", line=line)
            return BAD

    def mapping(self, node: Any, field: str, known: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
        """{key: (key_node, value_node)}; reports non-mappings, duplicate and
        unknown keys."""
        if not isinstance(node, self.yaml.MappingNode):
            self.p.add(node, field, f"expected a mapping, got {describe(node)}")
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
            self.p.add(node, field, f"expected a single value, got {describe(node)}")
            return BAD
        return self.value(node, field)

    def string(self, node: Any, field: str, *, name: bool = False) -> Any:
        v = self.scalar(node, field)
        if v is BAD:
            return v
        if not isinstance(v, str) or not v:
            self.p.add(node, field, f"expected a non-empty string, got {node.value!r}")
            return BAD
        if name and not _NAME_RE.match(v):
            self.p.add(
                node,
                field,
                f"{v!r} is not a valid step name "
                "(letters, digits, _ . -; not starting with a digit)",
            )
            return BAD
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
        if v is BAD:
            return v
        problem = number_problem(v, positive=positive, integer=integer, maximum=maximum)
        if problem is None:
            return v
        self.p.add(node, field, f"{problem}, got {node.value!r}")
        return BAD

    def boolean(self, node: Any, field: str) -> Any:
        v = self.scalar(node, field)
        if v is BAD:
            return v
        if not isinstance(v, bool):
            self.p.add(node, field, f"expected true or false, got {node.value!r}")
            return BAD
        return v

    def string_list(self, node: Any, field: str, *, names: bool = False) -> Any:
        if isinstance(node, self.yaml.ScalarNode):
            v = self.string(node, field, name=names)
            return BAD if v is BAD else [v]
        if not isinstance(node, self.yaml.SequenceNode):
            self.p.add(node, field, f"expected a string or a list of strings, got {describe(node)}")
            return BAD
        out = []
        for j, item in enumerate(node.value):
            v = self.string(item, f"{field}[{j}]", name=names)
            if v is not BAD:
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
                        self.p.add(src, field, f"<< merges mappings, got {describe(src)}")
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


BAD = _Bad()


__all__ = ["BAD", "Problems", "Reader", "check_graph", "describe", "safe_loader"]
