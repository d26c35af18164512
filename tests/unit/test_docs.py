"""The docs stay true to the tree: every relative link resolves (file and anchor), the settings
reference is what the declarations generate, the layout names every module and only existing
ones, and the README stays a front door."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authz.service.settings.reference import BEGIN, END, block

REPO = Path(__file__).resolve().parents[2]
PAGES = [
    REPO / "README.md",
    REPO / "CHANGELOG.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "benchmarks" / "README.md",
    REPO / "deploy" / "integrations" / "README.md",
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings (outside code blocks)."""
    found, in_code = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower().replace("`", "")
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return [t for t in LINK.findall(text) if not re.match(r"^(https?:|mailto:)", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert resolved.suffix == ".md", f"{page.name}: {target}: anchor into a non-page"
            assert anchor in anchors(resolved), f"{page.name}: {target}: no such heading"


def test_the_settings_reference_is_what_the_declarations_generate() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    found = page[page.index(BEGIN) : page.index(END) + len(END)]
    assert found == block(), "docs/configuration.md is stale: run `make docs`"


def test_the_layout_names_every_module_and_only_existing_ones() -> None:
    page = (REPO / "docs" / "development.md").read_text()
    tree = page[page.index("```\nauthz/") + 4 :]
    tree = tree[: tree.index("```")]
    listed: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in tree.splitlines():
        indent = len(line) - len(line.lstrip())
        names = [w for w in line.split() if re.fullmatch(r"[\w.-]+(/|\.py)", w)]
        if not names:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        for name in names:
            listed.add(parent + name)
            if name.endswith("/"):
                stack.append((indent, parent + name))
    for path in listed:
        assert (REPO / path).exists(), f"the layout names {path}, which does not exist"
    for module in (REPO / "authz").rglob("*.py"):
        relative = str(module.relative_to(REPO))
        if module.name not in ("__init__.py", "__main__.py"):
            assert covered(relative, listed), f"{relative} is not in the layout"


def covered(module: str, listed: set[str]) -> bool:
    """Listed itself, or inside a folder the layout names as a whole (without listing any of
    its files)."""
    if module in listed:
        return True
    parts = module.split("/")
    for depth in range(len(parts) - 1, 0, -1):
        folder = "/".join(parts[:depth]) + "/"
        if folder in listed:
            return not any(entry.startswith(folder) and entry != folder for entry in listed)
    return False


def test_the_readme_stays_a_front_door() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
