"""docs/configuration.md is generated from the schema; this fails when someone edits one and not the other."""

from __future__ import annotations

from pathlib import Path

from trustcam.config.reference import render
from trustcam.config.schema import CameraConfig, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_reference_doc_is_current() -> None:
    assert DOC.read_text() == render(), "run: trustcam config reference > docs/configuration.md"


def test_every_key_is_documented() -> None:
    text = render()
    for model in (Settings, CameraConfig):
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in text
            assert field.description, f"{model.__name__}.{name} has no description"
