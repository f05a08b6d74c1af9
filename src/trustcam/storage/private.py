"""Folders and files only their owner may read: data_dir, the database and its -wal/-shm, key folders.

``mkdir(mode=0o700)`` alone is not enough: the umask applies to it, and ``parents=True`` makes every missing parent
with the default mode (``0775`` under a ``002`` umask), so a group member could rename a parent and swap the
folder under us. Here every folder we create gets an explicit ``chmod``, whatever the umask.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and each missing parent ``0700``; folders that already exist are left as they are (they may
    be shared on purpose, like ``/tmp`` or a home directory)."""
    path = Path(path)
    missing: list[Path] = []
    folder = path
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by another process or thread meanwhile: its maker sets its mode
            continue
        os.chmod(folder, DIR_MODE)
    return path


def private_file(path: Path | str) -> None:
    """Create ``path`` empty ``0600`` if it is absent, and tighten it to ``0600`` if it exists (an older install
    may have left it world-readable)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away from the owner too
    finally:
        os.close(fd)


def tighten(path: Path | str) -> None:
    """``chmod 600`` a file that exists (a no-op when it does not); a file of another user is logged, not fatal."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        return
    except PermissionError:
        log.warning("%s: cannot make it private (not the owner); run chmod 600 %s as its owner", path, path)
