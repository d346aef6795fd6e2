"""``<AUTO>...</AUTO>`` tags in a YAML step's ``with:`` parameters.

A tag is resolved when the step runs, by the async ``resolver(text,
context)`` given to ``load_pipeline`` (an LLM call, typically). Tags nest:
the inner tags are resolved first and their answers substituted into the
outer tag's text. Answers are cached per text for the run (concurrent steps
asking the same text share one call). A value that is exactly one tag takes
the answer as is (any type); otherwise answers are formatted into the
string.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

Resolver = Callable[[str, Any], Awaitable[Any]]

_TAG_RE = re.compile(r"<AUTO>|</AUTO>")


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


def has_auto(value: Any) -> bool:
    if isinstance(value, AutoTemplate):
        return True
    if isinstance(value, list):
        return any(has_auto(v) for v in value)
    if isinstance(value, dict):
        return any(has_auto(v) for v in value.values())
    return False


__all__ = ["AutoTag", "AutoTemplate", "Resolver", "has_auto", "parse_auto_tags", "resolve_value"]
