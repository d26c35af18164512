"""`make bench` is a runner over one module per section: each is found, named once, and ordered."""

from __future__ import annotations

import inspect
import subprocess
import sys
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


def test_check_path_times_every_stage_of_a_returning_client_s_check() -> None:
    """The in-process breakdown the results cite runs (a few calls: its figures are not checked,
    only that each stage is timed and the Check it times is an allow)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.check_path", "--calls", "50", "--rounds", "1", "--stages"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for stage in ("request parsed", "core input", "decision (core check)", "whole Check"):
        assert stage in done.stdout
