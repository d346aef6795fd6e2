"""The API reference (docs/api/, built by `make docs` with mkdocstrings)
lists every public name of the package."""

from __future__ import annotations

import re
from pathlib import Path

import caudal

API = Path(__file__).resolve().parents[2] / "docs" / "api"


def test_every_public_name_has_a_reference_entry():
    listed = set()
    for page in API.glob("*.md"):
        listed |= set(re.findall(r"^::: caudal\.(\w+)\s*$", page.read_text(), re.M))
    public = set(caudal.__all__) - {"__version__"}
    assert public - listed == set(), "missing from docs/api/*.md"
    assert listed - public == set(), "docs/api/*.md names what caudal does not export"


def test_every_reference_page_is_in_the_site_navigation():
    nav = (API.parents[1] / "mkdocs.yml").read_text()
    for page in API.glob("*.md"):
        assert f"api/{page.name}" in nav, page.name
