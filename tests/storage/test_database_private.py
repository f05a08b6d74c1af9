"""data_dir, the SQLite database with its -wal/-shm files, and the key folders are owner-only (0700 folders, 0600
files) whatever the umask: a permissive umask (002 on many desktops, 022 by default) must not leave events, users,
audit entries or keys readable, or their folders writable, by the group or others."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.keys import ENV_KEK, load_kek, load_signing_key

UMASKS = [0o022, 0o002]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=UMASKS, ids=lambda u: f"umask{u:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.mark.parametrize("umask", UMASKS, ids=lambda u: f"umask{u:03o}")
def test_cli_creates_data_dir_and_database_owner_only(tmp_path: Path, umask: int) -> None:
    """A real `trustcam alerts dlq` (it opens the database) under the umask creates data_dir (and the folder above
    it) 0700 and the database, its -wal and -shm 0600."""
    data_dir = tmp_path / "state" / "data"
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data_dir)}))
    script = ("import os, sys; os.umask(int(sys.argv[1], 8)); sys.argv = ['trustcam', *sys.argv[2:]]; "
              "from trustcam.cli import app; app()")
    result = subprocess.run([sys.executable, "-c", script, f"{umask:03o}", "alerts", "dlq", "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "0 dead letter(s)" in result.stdout + result.stderr
    assert {p.name: f"{mode(p):o}" for p in (tmp_path / "state", data_dir)} == {"state": "700", "data": "700"}
    files = {p.name: f"{mode(p):o}" for p in data_dir.iterdir()}  # -wal/-shm only if left open (see below)
    assert "trustcam.db" in files and set(files.values()) == {"600"}, files
    assert (data_dir / "trustcam.db").stat().st_size > 0  # migrated: a real database, not an empty placeholder


def test_open_database_files_are_owner_only_while_open(tmp_path: Path, umask: int) -> None:
    database = tmp_path / "a" / "b" / "trustcam.db"
    engine = open_database(f"sqlite:///{database}")
    with engine.connect() as connection:  # WAL mode: -wal and -shm exist while a connection is open
        connection.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
        connection.exec_driver_sql("INSERT INTO probe VALUES (1)")
        connection.commit()
        for name in ("trustcam.db", "trustcam.db-wal", "trustcam.db-shm"):
            assert mode(database.with_name(name)) == 0o600, name
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert mode(folder) == 0o700, folder
    engine.dispose()


def test_existing_world_readable_database_is_tightened(tmp_path: Path, umask: int) -> None:
    """An install made by an older version (0644 database, 0644 -wal) is made private at the next start; a folder
    that already existed is not touched (it may be shared, like /tmp)."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    database = folder / "trustcam.db"
    older = open_database(f"sqlite:///{database}")  # kept open: its -wal and -shm stay on disk
    with older.connect() as connection:
        connection.exec_driver_sql("PRAGMA user_version = 7")
        names = ("trustcam.db", "trustcam.db-wal", "trustcam.db-shm")
        for name in names:
            (folder / name).chmod(0o644)  # as an older version left them
        open_database(f"sqlite:///{database}").dispose()
        assert {name: f"{mode(folder / name):o}" for name in names} == dict.fromkeys(names, "600")
    older.dispose()
    assert mode(folder) == 0o755


def test_key_folders_are_owner_only(tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vault key and signing key, created at first start in folders that do not exist yet: every folder made
    on the way is 0700 (a group-writable parent would let a group member swap the key folder), each key 0600."""
    monkeypatch.delenv(ENV_KEK, raising=False)
    keys = tmp_path / "config" / "trustcam"
    config = VaultConfig(root=tmp_path / "recordings", key_file=keys / "vault.kek",
                         signing_key_file=tmp_path / "signing" / "deep" / "vault-signing.key")
    load_kek(config)
    load_signing_key(config)
    made = [tmp_path / "config", keys, tmp_path / "signing", tmp_path / "signing" / "deep"]
    assert {str(p.relative_to(tmp_path)): f"{mode(p):o}" for p in made} == {str(p.relative_to(tmp_path)): "700"
                                                                           for p in made}
    assert mode(keys / "vault.kek") == 0o600
    assert mode(tmp_path / "signing" / "deep" / "vault-signing.key") == 0o600
