"""What every command shares: the error console, config loading and the one way to report failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from trustcam.config import ConfigError, Settings, load_settings
from trustcam.config.schema import CameraConfig
from trustcam.errors import UserError

err = Console(stderr=True, soft_wrap=True, highlight=False)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file.")]


def error(message: object) -> None:
    """Print one ``error:`` line; the message is escaped (paths may contain '[' that rich reads as markup)."""
    err.print(f"[red]error:[/red] {escape(str(message))}")


def say(message: str) -> None:
    err.print(message, markup=False, emoji=False)  # ":AB:" in a fingerprint is not an emoji


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected failures become one line on stderr and exit code 2 (usage/config) or 1 (runtime)."""
    try:
        yield
    except UserError as exc:
        error(exc)
        raise typer.Exit(exc.exit_code) from None


def settings_from(config: Path | None) -> Settings:
    return load_settings(config) if config else Settings()


def camera_from(settings: Settings, name: str | None) -> tuple[str, CameraConfig]:
    if name is not None:
        if name not in settings.cameras:
            known = ", ".join(settings.cameras) or "none"
            raise ConfigError(f"--camera {name}: no such camera in the config (cameras: {known})")
        return name, settings.cameras[name]
    if settings.cameras:
        return next(iter(settings.cameras.items()))
    return "file", CameraConfig(source="")


