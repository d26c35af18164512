"""The three sources of settings — the YAML file, `MTLS_AUTHZ_*` environment variables and
command-line flags — each read into what it gives: which key, under which name (current or
old), where from. Nothing here decides between them (`load` does)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz.service.settings.declare import ConfigError
from authz.service.settings.options import ALIASES, ENV_PREFIX, OPTIONS, OPTIONS_BY_KEY, flag_of

MAX_CONFIG_BYTES = 1024 * 1024
# MTLS_AUTHZ_ variables that are not settings, set by the service for itself.
INTERNAL_ENV = frozenset({"MTLS_AUTHZ_WORKER_DIR"})


@dataclass(frozen=True, slots=True)
class Given:
    """One value a source gives for a key."""

    key: str
    value: Any
    source: str
    """Where it came from, as an error message names it (the file, the variable, the flag)."""
    old_name: str = ""
    """The old name it was given under, if it was (deprecated)."""
    renamed: str = ""
    """The current name in this source's own terms, to suggest instead of `old_name`."""


def from_file(path: Path) -> Iterator[Given]:
    for name, value in read_config_file(path).items():
        if name in ALIASES:
            yield Given(ALIASES[name], value, str(path), f"{path}: {name}", ALIASES[name])
        else:
            yield Given(name, value, str(path))


def from_env(env: Mapping[str, str]) -> Iterator[Given]:
    for option in OPTIONS:
        for alias in option.aliases:
            old = ENV_PREFIX + alias.upper()
            if old in env:
                yield Given(option.key, env[old], old, old, option.env_name)
        if option.env_name in env:
            yield Given(option.key, env[option.env_name], option.env_name)


def from_flags(flags: Mapping[str, Any]) -> Iterator[Given]:
    """`flags` is keyed by setting name, old names included; None means not given."""
    for option in OPTIONS:
        for alias in option.aliases:
            if flags.get(alias) is not None:
                flag = flag_of(alias)
                yield Given(option.key, flags[alias], flag, flag, option.flag_name)
        if flags.get(option.key) is not None:
            yield Given(option.key, flags[option.key], option.flag_name)


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """`MTLS_AUTHZ_*` variables that name no setting (a misspelling is otherwise silent)."""
    known = {o.env_name for o in OPTIONS} | {ENV_PREFIX + a.upper() for a in ALIASES}
    found = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known and name not in INTERNAL_ENV:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            found.append(f"{name} is not a setting and is ignored{hint}")
    return found


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives a key twice (PyYAML keeps the last
    silently: `revocation_mode: require` then `revocation_mode: off` would mean off)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                first = seen[key]
                raise _DuplicateKey(f"line {line}: {key} is given twice (first on line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        document = yaml.load(data, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    for key in document:
        if key in ALIASES and ALIASES[key] in document:
            raise ConfigError(f"{path}: give {ALIASES[key]} only ({key} is its old name)")
        if key not in OPTIONS_BY_KEY and key not in ALIASES:
            raise ConfigError(f"{path}: unknown key {key!r}{_did_you_mean(str(key))}")
    return document


def _did_you_mean(key: str) -> str:
    """A suggestion for a misspelt key, or where the list of keys is."""
    close = difflib.get_close_matches(key, [*OPTIONS_BY_KEY, *ALIASES], n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return " (`mtls-authz serve --help` lists every key)"
