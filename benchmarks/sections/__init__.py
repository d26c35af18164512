"""The benchmark sections: one module each, discovered by `benchmarks.run`.

A section is a module here with `NAME` (what `--only` takes), `ORDER` (where it runs in a full
`make bench`) and `run(context: benchmarks.harness.Context) -> list[str]`, the Markdown lines of
its results. A new section is a new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.harness import Context


@dataclass(frozen=True)
class Section:
    name: str
    order: int
    run: Callable[[Context], list[str]]


def discover() -> list[Section]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        found.append(Section(loaded.NAME, loaded.ORDER, loaded.run))
    return sorted(found, key=lambda s: s.order)
