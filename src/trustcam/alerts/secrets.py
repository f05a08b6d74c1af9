"""Read a sink's secret (webhook HMAC key, MQTT password) from the environment or a private file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trustcam.config import ConfigError


def read_secret_file(path: Path, what: str) -> str:
    """The file's content without the trailing newline; refuses a file others can read."""
    path = path.expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path} ({exc.strerror}); create it with the secret "
                          f"and run chmod 600 {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what}: secret file {path} is readable by group or others (mode "
                          f"{stat.S_IMODE(mode):04o}); run chmod 600 {path}")
    if not text:
        raise ConfigError(f"{what}: secret file {path} is empty; write the secret into it")
    return text


def read_secret_env(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(f"{what}: environment variable {name} is not set or empty; export it with the secret "
                          "(or use secret_file)")
    return value
