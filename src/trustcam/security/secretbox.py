"""Encryption at rest for small secrets (TOTP seeds): AES-256-GCM under ``<data_dir>/secrets/auth.key``.

A copy of the database alone does not reveal anyone's second factor. The key file is created 0600 on
first use and refused if others can read it. Each ciphertext is bound (AAD) to what it belongs to, so a
seed copied onto another user's row does not decrypt there.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustcam.security.errors import SecurityError
from trustcam.storage.keys import write_secret

KEY_BYTES = 32
NONCE_BYTES = 12


def key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "secrets" / "auth.key"


def _load_or_create(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            write_secret(path, secrets.token_bytes(KEY_BYTES))
    info = path.stat()
    if info.st_mode & 0o077:
        raise SecurityError(500, f"{path}: the auth key is readable by group/others (mode "
                            f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise SecurityError(500, f"{path}: the auth key must be {KEY_BYTES} bytes, found {len(data)}; restore it "
                            "from backup (or delete it and reset every user's MFA)")
    return data


class SecretBox:
    def __init__(self, data_dir: Path) -> None:
        self.path = key_path(data_dir)
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
