"""How each key is named in each source, and how a raw value from any of them becomes the
field's type: one `Option` per field of `Settings`, derived from it."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import yaml

from authz.core.modes import choice_text
from authz.service.settings.declare import ConfigError, Declared
from authz.service.settings.table import Settings
from authz.service.settings.values import IssuerUrls, parse_duration

ENV_PREFIX = "MTLS_AUTHZ_"


@dataclass(frozen=True)
class Option:
    """One key as the command line, the environment and the file see it (from its field)."""

    key: str
    kind: type
    """str, int, float, bool, list (of strings) or dict: what the raw value is converted to."""
    default: Any
    declared: Declared
    parse: Callable[[Any], Any] | None = None
    """Turns the converted value into the field's type (an enum, IssuerUrls)."""
    choices: tuple[str, ...] = ()

    @property
    def help(self) -> str:
        return self.declared.help

    @property
    def check(self) -> Callable[[Any], str | None] | None:
        return self.declared.check

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.declared.aliases

    @property
    def restart(self) -> bool:
        return self.declared.restart

    @property
    def flag_name(self) -> str:
        return self.declared.flag or flag_of(self.key)

    @property
    def alias_flags(self) -> tuple[str, ...]:
        return tuple(flag_of(alias) for alias in self.aliases)

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.key.upper()


def flag_of(key: str) -> str:
    """A key's flag: `--key-name` (a list of hosts takes one per flag, so it is singular)."""
    flag = "--" + key.replace("_", "-")
    return flag[:-1] if key.endswith("_hosts") else flag  # --ocsp-allowed-host, repeated


def _option(name: str, hint: Any, default: Any, declared: Declared) -> Option:
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return Option(name, str, default.value, declared, hint, tuple(m.value for m in hint))
    if hint is IssuerUrls:
        return Option(name, list, [], declared, IssuerUrls.parse)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return Option(name, list, list(default), declared, tuple)
    if origin in (Mapping, dict) or hint is dict:
        return Option(name, dict, {}, declared)
    return Option(name, hint, default, declared)


def _options() -> tuple[Option, ...]:
    hints = typing.get_type_hints(Settings)
    return tuple(
        _option(f.name, hints[f.name], _default(f), f.metadata["setting"])
        for f in fields(Settings)
        if "setting" in f.metadata
    )


def _default(declared: dataclasses.Field[Any]) -> Any:
    if declared.default_factory is not dataclasses.MISSING:
        return declared.default_factory()
    return declared.default


OPTIONS: tuple[Option, ...] = _options()
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
ALIASES = {alias: option.key for option in OPTIONS for alias in option.aliases}
RESTART_ONLY = tuple(option.key for option in OPTIONS if option.restart)
"""Keys a reload cannot change: the new value applies after a restart."""


def convert(option: Option, value: Any, source: str) -> Any:
    """Convert a value from any source to the option's kind, check it with the declaration's
    check, parse it into the field's type; ConfigError names the key and the source."""
    try:
        if option.declared.duration and isinstance(value, str):
            converted: Any = parse_duration(value)
        elif option.choices:
            converted = choice_text(value, option.choices)
        else:
            converted = _convert(option.kind, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{option.key} (from {source}): {e}") from None
    if option.choices and converted not in option.choices:
        raise ConfigError(
            f"{option.key} (from {source}): {converted!r} is not one of {', '.join(option.choices)}"
        )
    problem = option.check(converted) if option.check else None
    if problem:
        raise ConfigError(f"{option.key} (from {source}): {problem}")
    if option.parse is None:
        return converted
    try:
        return option.parse(converted)
    except ValueError as e:
        raise ConfigError(f"{option.key} (from {source}): {e}") from None


def _convert(kind: type, value: Any) -> Any:
    if kind is list:
        return _convert_list(value)
    if kind is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError as e:
                raise ValueError(f"not a YAML mapping: {e}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return value
    if isinstance(value, str) and kind is not str:
        value = value.strip()
        if kind is bool:
            return _parse_bool(value)
        return kind(value)
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"expected a number, got {value!r}")
    if kind is int and isinstance(value, float):
        raise ValueError(f"expected a whole number, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return kind(value)


def _convert_list(value: Any) -> list[str]:
    """Lists come as YAML lists, repeated flags, or an env var: a YAML list or one item per line."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = yaml.safe_load(text) if text.startswith("[") else text.splitlines()
        except yaml.YAMLError as e:
            raise ValueError(f"not a YAML list: {e}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return [item.strip() for item in value if item.strip()]


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")
