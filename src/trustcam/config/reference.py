"""Render the config schema as Markdown, so docs/configuration.md can never drift from the code."""

from __future__ import annotations

import types
import typing
from enum import Enum
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from trustcam.config.schema import Settings


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return str(annotation)


def _default(field: typing.Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Enum | Path):
        value = value.value if isinstance(value, Enum) else str(value)
    return f"`{value!r}`" if value not in (None, [], {}) else f"`{value}`"


def render() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the schema (`trustcam config reference`); every key is validated and unknown keys",
             "are rejected. Coordinates are fractions of the frame width/height, between 0 and 1.", ""]
    seen: set[type[BaseModel]] = set()

    def section(model: type[BaseModel], path: str) -> None:
        if model in seen:
            return
        seen.add(model)
        lines.extend([f"## `{path}`", ""])
        if model.__doc__ and model is not Settings:
            lines.extend([model.__doc__.strip().splitlines()[0], ""])
        lines.extend(["| key | type | default | meaning |", "|---|---|---|---|"])
        nested: list[tuple[type[BaseModel], str]] = []
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
            origin = typing.get_origin(field.annotation)
            suffix = ".<name>" if origin is dict else "[]" if origin is list else ""
            key = f"{name}{suffix}" if path == "(top level)" else f"{path}.{name}{suffix}"
            variants = _models_in(field.annotation)
            for sub in variants:
                tag = sub.model_fields.get("type")
                label = f"{key} (type: {typing.get_args(tag.annotation)[0]})" if tag and len(variants) > 1 else key
                nested.append((sub, label))
        lines.append("")
        for sub, label in nested:
            section(sub, label)

    section(Settings, "(top level)")
    return "\n".join(lines).rstrip() + "\n"
