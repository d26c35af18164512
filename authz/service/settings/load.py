"""One frozen `Settings` from the sources: flag > environment > file > default, every value
converted and checked once, every problem reported at once with its key and its source."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authz.service.settings.checks import (
    a_listener,
    names_agree,
    replicas_can_wait,
    route_policies,
)
from authz.service.settings.declare import ConfigError
from authz.service.settings.options import OPTIONS, OPTIONS_BY_KEY, convert
from authz.service.settings.sources import (
    Given,
    from_env,
    from_file,
    from_flags,
    unknown_variables,
)
from authz.service.settings.table import Settings


def load_settings(
    config_path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
) -> Settings:
    """Merge the sources, validate and parse every key, and return Settings or raise ConfigError.

    `flags` is keyed by setting name (old names included)."""
    given: list[Given] = [
        *(from_file(config_path) if config_path is not None else ()),
        *from_env(env),
        *from_flags(flags),
    ]  # lowest precedence first: a later value replaces an earlier one
    raw: dict[str, tuple[Any, str]] = {o.key: (o.default, "default") for o in OPTIONS}
    for value in given:
        raw[value.key] = (value.value, value.source)
    deprecated = [f"{g.old_name} is deprecated; use {g.renamed}" for g in given if g.old_name]
    problems = names_agree(given)
    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = convert(OPTIONS_BY_KEY[key], value, source)
        except ConfigError as e:
            problems.append(str(e))
    if not problems:
        try:
            values["route_specs"] = route_policies(values, deprecated)
        except ValueError as e:
            problems.append(f"policies: {e}")
    if not problems:
        problems += a_listener(values)
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings(
        **values,
        deprecations=tuple(deprecated),
        warnings=(*unknown_variables(env), *replicas_can_wait(values)),
    )
