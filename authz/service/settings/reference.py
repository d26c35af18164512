"""The settings reference, generated from the declarations: the table in docs/configuration.md
(`make docs` writes it; a test fails when the page and the code disagree)."""

from __future__ import annotations

import argparse
from enum import Enum
from pathlib import Path
from typing import Any

from authz.service.settings.options import OPTIONS, Option
from authz.service.settings.values import IssuerUrls

BEGIN = "<!-- settings reference: generated from authz/service/settings/table.py by `make docs` -->"
END = "<!-- end of settings reference -->"


def _default(option: Option) -> str:
    value: Any = option.default
    if option.check is not None and option.check(value):
        return "*(required)*"
    if value in ("", [], {}, (), None) or isinstance(value, IssuerUrls):
        return "*(none)*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    """One row per key: its name (and old names), flag, environment variable, default, meaning,
    and whether a change needs a restart."""
    rows = [
        "| key | flag | environment | default | restart | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for option in OPTIONS:
        key = f"`{option.key}`"
        if option.aliases:
            key += " (was " + ", ".join(f"`{alias}`" for alias in option.aliases) + ")"
        flag = f"`{option.flag_name}`" + (" (repeat)" if option.kind is list else "")
        rows.append(
            f"| {key} | {flag} | `{option.env_name}` | {_default(option)} | "
            f"{'yes' if option.restart else ''} | {_cell(option.help)} |"
        )
    return "\n".join(rows)


def block() -> str:
    return f"{BEGIN}\n\n{table()}\n\n{END}"


def replace_block(text: str) -> str:
    """`text` with its generated block replaced by the current one."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + block() + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("page", type=Path, help="The page holding the generated block.")
    path = parser.parse_args().page
    path.write_text(replace_block(path.read_text()))


if __name__ == "__main__":
    main()
