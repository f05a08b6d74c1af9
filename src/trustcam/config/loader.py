"""Load a YAML config file into :class:`Settings`, turning every failure into a readable :class:`ConfigError`.

The error names the key path, the bad value and the fix, e.g.
``cameras.front.zones.door.coordinates: polygon needs ≥ 3 points, got 2`` — never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trustcam.config.schema import Settings
from trustcam.errors import UserError


class ConfigError(UserError):
    """A config that cannot be used; ``str()`` is the message shown to the user."""

    exit_code = 2


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        # pydantic adds the discriminator tag ("enter_zone") and validator names to locs: not user keys.
        if isinstance(item, str) and (item in {"enter_zone", "loiter", "cross_line"} or "[" in item):
            continue
        parts.append(str(item))
    return ".".join(parts) or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({error.error_count()} problem(s)):"]
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        where = _path(tuple(item["loc"]))
        kind = item["type"]
        if kind == "missing":
            lines.append(f"  {where}: required key is missing; add it")
        elif kind in {"value_error", "assertion_error"}:
            if message.startswith("unknown key '"):
                key = message.split("'")[1]
                where = key if where == "(top level)" else f"{where}.{key}"
            lines.append(f"  {where}: {message}")
        else:
            lines.append(f"  {where}: {message} (got {_short(item.get('input'))})")
    return "\n".join(lines)


def parse_settings(data: Any, source: str = "config") -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys (cameras:, detector:, ...)")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate ``path``; relative ``data_dir`` stays relative to the working directory."""
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{file}: config file not found; pass an existing file with --config")
    if not file.is_file():
        raise ConfigError(f"{file}: is not a file; pass a YAML file with --config")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text; save the config as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}: YAML syntax error at {where}: {problem}; fix the indentation or quoting") from None
    return parse_settings(data, str(file))
