"""The docs "build without warnings": there is no site generator, so this is
the check instead. Every relative link and image in README.md and docs/*.md
resolves (the file exists; a #fragment names a heading of that file), every
table row has its header's number of cells, and docs/render_images.py still
renders the pictures the guide shows."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PNG = b"\x89PNG\r\n\x1a\n"


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def links(page: Path):
    for m in LINK.finditer(prose(page.read_text())):
        yield m.group(1) == "!", m.group(3)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_images_resolve(page):
    broken = []
    for is_image, target in links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if is_image and not dest.read_bytes().startswith(PNG):
            broken.append(f"{target}: not a PNG")
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_tables_have_consistent_columns(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    bad = []
    for block in re.split(r"\n(?!\|)", text):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if len(rows) < 2:
            continue
        widths = [len(re.split(r"(?<!\\)\|", r.strip().strip("|"))) for r in rows]
        if len(set(widths)) > 1:
            bad.append(rows[0][:60])
    assert not bad, f"{page.name}: rows with a different number of cells in tables {bad}"


def test_guide_links_the_rendered_pictures():
    guide = (ROOT / "docs" / "guide.md").read_text()
    shown = {t for is_image, t in links(ROOT / "docs" / "guide.md") if is_image}
    assert shown == {"images/latency.png", "images/concurrency.png", "images/gantt.png"}
    assert "guide.md" in (ROOT / "README.md").read_text()
    assert "docs/render_images.py" in guide


def test_render_images_still_renders(tmp_path):
    spec = importlib.util.spec_from_file_location("render", ROOT / "docs" / "render_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = mod.render(tmp_path)
    assert [p.name for p in paths] == ["latency.png", "concurrency.png", "gantt.png"]
    for p in paths:
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 5000
