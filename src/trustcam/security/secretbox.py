"""Encryption at rest for small secrets (TOTP seeds): AES-256-GCM under ``server.auth_key_file``.

A copy of the database alone does not reveal anyone's second factor: the key lives outside ``data_dir`` (by default
``~/.config/trustcam/auth.key``, beside the vault keys), so a backup or a stolen copy of ``data_dir`` does not carry
the key to its own secrets. It is refused inside ``data_dir`` and when others can read it. A key left at the old
place (``<data_dir>/secrets/auth.key``) is moved once, so enrolled users keep working. Each ciphertext is bound
(AAD) to what it belongs to, so a seed copied onto another user's row does not decrypt there.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustcam.security.errors import SecurityError
from trustcam.storage.keys import write_secret
from trustcam.storage.private import private_dir

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12


def legacy_key_path(data_dir: Path) -> Path:
    """Where earlier versions kept the key: inside the data it protects."""
    return Path(data_dir) / "secrets" / "auth.key"


def key_path(key_file: Path, data_dir: Path) -> Path:
    """The configured key file, refused when it lies inside ``data_dir``."""
    path = Path(os.path.expanduser(key_file)).absolute()
    data = Path(os.path.expanduser(data_dir)).absolute()
    if path.resolve().is_relative_to(data.resolve()):
        raise SecurityError(500, f"server.auth_key_file {path} lies inside data_dir ({data}): whoever copies the "
                            "database would get the key to its TOTP secrets with it. Set server.auth_key_file "
                            "outside data_dir (default ~/.config/trustcam/auth.key) and move the file there")
    return path


def _move_legacy(legacy: Path, path: Path) -> None:
    """Move a key from ``<data_dir>/secrets/`` once (copy 0600, then remove the old one), logged."""
    if path.exists() or not legacy.is_file():
        return
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):  # another process moved it first
        write_secret(path, legacy.read_bytes())
    if path.read_bytes() == legacy.read_bytes():
        legacy.unlink()
        with contextlib.suppress(OSError):
            legacy.parent.rmdir()  # only if empty
        log.warning("moved the TOTP encryption key from %s to %s (server.auth_key_file): keys belong outside "
                    "data_dir; back it up with the vault keys", legacy, path)


def _load_or_create(path: Path) -> bytes:
    if not path.exists():
        private_dir(path.parent)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            write_secret(path, secrets.token_bytes(KEY_BYTES))
    info = path.stat()
    if info.st_mode & 0o077:
        raise SecurityError(500, f"{path}: the auth key (server.auth_key_file) is readable or writable by "
                            f"group/others (mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise SecurityError(500, f"{path}: the auth key must be {KEY_BYTES} bytes, found {len(data)}; restore it "
                            "from backup (or delete it and reset every user's MFA)")
    return data


class SecretBox:
    def __init__(self, key_file: Path, data_dir: Path) -> None:
        self.path = key_path(key_file, data_dir)
        _move_legacy(legacy_key_path(data_dir), self.path)
        self._aead = AESGCM(_load_or_create(self.path))

    def seal(self, plaintext: str, aad: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext.encode(), aad.encode())).decode()

    def open(self, sealed: str, aad: str) -> str:
        try:
            raw = base64.b64decode(sealed)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad.encode()).decode()
        except (InvalidTag, ValueError):
            raise SecurityError(500, f"a stored MFA secret does not decrypt under {self.path} (key replaced, or "
                                "row altered); reset that user's MFA (`trustcam users reset-mfa`)") from None

    def __repr__(self) -> str:
        return f"SecretBox({self.path})"
