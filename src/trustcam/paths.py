"""Where trustcam keeps state on disk (models, database, snapshots).

One place decides this so that the CLI, the Makefile and the tests agree without passing paths around.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOME_MARKER = "trustcam-home"  # in the virtualenv's root: the state folder chosen when it was installed


def data_home() -> Path:
    """Root of trustcam's state: ``$TRUSTCAM_HOME``, else the folder recorded in ``<venv>/trustcam-home``, else
    ``$XDG_DATA_HOME/trustcam``, else ``~/.local/share/trustcam``.

    Why the marker: ``make`` installs the models into ``./var`` of the checkout and writes that path into the
    virtualenv it made, so ``.venv/bin/trustcam`` (activated or not) finds them with no variable set.
    """
    if env := os.environ.get("TRUSTCAM_HOME"):
        return Path(env).expanduser()
    marker = Path(sys.prefix) / HOME_MARKER
    if marker.is_file() and (recorded := marker.read_text(encoding="utf-8").strip()):
        return Path(recorded).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / "trustcam"


def model_dir() -> Path:
    """Installed, verified model files: ``$TRUSTCAM_MODEL_DIR`` or ``<data_home>/models``."""
    if env := os.environ.get("TRUSTCAM_MODEL_DIR"):
        return Path(env).expanduser()
    return data_home() / "models"


def model_sources() -> list[Path]:
    """Folders searched before the catalog URLs: ``TRUSTCAM_MODEL_SOURCES``, ``:``-separated."""
    raw = os.environ.get("TRUSTCAM_MODEL_SOURCES", "../shared/models")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
