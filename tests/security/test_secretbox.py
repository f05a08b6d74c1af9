"""The TOTP encryption key lives outside data_dir, owner-only: a copy of data_dir does not carry its own key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trustcam.security.errors import SecurityError
from trustcam.security.secretbox import SecretBox, legacy_key_path


def test_the_key_is_created_owner_only_outside_data_dir(tmp_path: Path) -> None:
    data, key = tmp_path / "data", tmp_path / "keys" / "auth.key"
    box = SecretBox(key, data)
    sealed = box.seal("JBSWY3DPEHPK3PXP", "user:1")
    assert key.stat().st_mode & 0o777 == 0o600 and (key.parent.stat().st_mode & 0o077) == 0
    assert not (data / "secrets").exists()  # nothing of the key under data_dir
    assert SecretBox(key, data).open(sealed, "user:1") == "JBSWY3DPEHPK3PXP"


def test_a_key_inside_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(SecurityError, match="lies inside data_dir"):
        SecretBox(data / "keys" / "auth.key", data)


def test_a_group_readable_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "auth.key"
    SecretBox(key, tmp_path / "data")
    os.chmod(key, 0o640)
    with pytest.raises(SecurityError, match="chmod 600"):
        SecretBox(key, tmp_path / "data")


def test_a_key_left_in_data_dir_by_an_older_version_is_moved_and_still_opens_its_secrets(tmp_path: Path) -> None:
    data, key = tmp_path / "data", tmp_path / "keys" / "auth.key"
    legacy = legacy_key_path(data)
    legacy.parent.mkdir(parents=True, mode=0o700)
    legacy.write_bytes(os.urandom(32))
    legacy.chmod(0o600)
    old = legacy.read_bytes()
    sealed = SecretBox(key, data).seal("seed", "user:7")
    assert not legacy.exists() and key.read_bytes() == old
    assert SecretBox(key, data).open(sealed, "user:7") == "seed"
