"""`make bench` is a runner over one module per section: each is found, named once, and ordered."""

from __future__ import annotations

import inspect
from pathlib import Path

from benchmarks.sections import discover

SECTIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "sections"


def test_every_section_module_is_discovered_with_a_name_an_order_and_a_run() -> None:
    sections = discover()
    modules = {p.stem for p in SECTIONS.glob("*.py") if p.stem != "__init__"}
    assert len(sections) == len(modules)
    assert len({s.name for s in sections}) == len(sections)
    assert [s.order for s in sections] == sorted(s.order for s in sections)
    for section in sections:
        assert list(inspect.signature(section.run).parameters) == ["context"]
