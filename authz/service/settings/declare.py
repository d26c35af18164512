"""How a key is declared: `setting(...)` makes a field of `Settings` carry its help, flag,
per-value check and old names, from which every source's name for it is derived."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the key."""


@dataclass(frozen=True)
class Declared:
    """What a setting's declaration adds to its field: help, flag, check, old names, and whether
    a change takes effect only on restart (a reload keeps the old value and says so)."""

    help: str
    flag: str = ""
    check: Callable[[Any], str | None] | None = None
    aliases: tuple[str, ...] = ()
    restart: bool = False
    duration: bool = False
    """Seconds, also written with a unit (500ms, 2s, 5m, 2h, 1d)."""


def setting(
    default: Any,
    help: str,
    *,
    flag: str = "",
    check: Callable[[Any], str | None] | None = None,
    aliases: tuple[str, ...] = (),
    restart: bool = False,
    duration: bool = False,
) -> Any:
    """Declare one configuration key as a field of Settings."""
    declared = {"setting": Declared(help, flag, check, aliases, restart, duration)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=declared)
    return field(default=default, metadata=declared)
