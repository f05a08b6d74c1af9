"""The security core without HTTP: password policy and hashing, setup token, secrets at rest, lockout, audit chain."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from argon2 import PasswordHasher
from authkit import PASSWORD, make_settings  # tests/security is on sys.path (pytest rootdir-less import)
from sqlalchemy import text

from trustcam.security import passwords, totp
from trustcam.security.access import AccessControl
from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role
from trustcam.security.setup import ensure_setup_token, token_path
from trustcam.storage.database import open_database


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> AccessControl:
    """On SQLite and on PostgreSQL (the ``database_url`` fixture)."""
    settings = make_settings(tmp_path, database_url=database_url, login_max_failures=3, lockout_minutes=0.05)
    return AccessControl(settings, open_database(settings.resolved_database_url))


@pytest.fixture
def sqlite_service(tmp_path: Path) -> AccessControl:
    """SQLite only: for what reads the database file itself, or times argon2 (nothing database-specific)."""
    settings = make_settings(tmp_path, login_max_failures=3, lockout_minutes=0.05)
    return AccessControl(settings, open_database(settings.resolved_database_url))


def sql(service: AccessControl, statement: str, **params: object) -> list[tuple[object, ...]]:
    """What an intruder with write access to the database runs, on either back-end (raw SQL, no trustcam code)."""
    with service.engine.begin() as connection:
        result = connection.execute(text(statement), params)
        return [tuple(row) for row in result] if result.returns_rows else []


def test_policy_says_why_a_password_is_refused():
    with pytest.raises(SecurityError, match="too short: 5 characters, at least 12"):
        passwords.check_policy("abcde", "alice")
    with pytest.raises(SecurityError, match=r"too weak \(strength [0-2]/4.*\): .*common"):
        passwords.check_policy("password1234", "alice")
    with pytest.raises(SecurityError, match="must not contain the user name"):
        passwords.check_policy("Alicewonderland-7391x", "alice")
    passwords.check_policy(PASSWORD, "alice")  # strong enough: no exception


def test_argon2id_hash_verifies_and_is_upgraded_when_parameters_change(service):
    service.users.create("alice", PASSWORD, Role.viewer)
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    sql(service, "UPDATE users SET password_hash=:old WHERE username='alice'", old=old)
    assert passwords.needs_rehash(old)
    assert service.users.check_password("alice", "wrong password entirely") is None
    assert service.users.check_password("alice", PASSWORD) is not None
    [(new,)] = sql(service, "SELECT password_hash FROM users WHERE username='alice'")
    assert new.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and new != old
    assert not passwords.needs_rehash(new)


def test_unknown_user_costs_an_argon2_verification_too(sqlite_service):
    service = sqlite_service
    service.users.create("alice", PASSWORD, Role.viewer)

    def timed(name: str) -> float:
        start = time.perf_counter()
        service.users.check_password(name, "not the right password")
        return time.perf_counter() - start

    known = min(timed("alice") for _ in range(3))
    unknown = min(timed("nobody") for _ in range(3))
    assert unknown > 0.5 * known, (known, unknown)  # both pay for argon2, not a shortcut lookup


def test_setup_token_is_0600_stable_until_a_user_exists(tmp_path):
    settings = make_settings(tmp_path)
    engine = open_database(settings.resolved_database_url)
    token = ensure_setup_token(settings, engine)
    assert token and len(token) >= 40
    path = token_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_setup_token(settings, engine) == token  # a restart prints the same one
    AccessControl(settings, engine).users.create("root-admin", PASSWORD, Role.admin)
    assert ensure_setup_token(settings, engine) is None
    assert not path.exists()


def test_totp_secret_is_encrypted_at_rest_and_key_file_0600(sqlite_service):
    service = sqlite_service
    user = service.users.create("alice", PASSWORD, Role.admin)
    secret = service.users.start_enrolment(user)
    raw = (service.settings.data_dir / "trustcam.db").read_bytes()
    wal = service.settings.data_dir / "trustcam.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert secret.encode() not in raw
    key = service.settings.server.auth_key_file
    assert not key.is_relative_to(service.settings.data_dir)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    key.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        AccessControl(service.settings, service.engine)


def test_totp_code_is_not_accepted_twice(service):
    import pyotp

    user = service.users.create("alice", PASSWORD, Role.admin)
    secret = service.users.start_enrolment(user)
    codes = service.users.confirm_enrolment(user, pyotp.TOTP(secret).now())
    assert len(codes) == 10 and len(set(codes)) == 10
    user = service.users.need("alice")
    later = pyotp.TOTP(secret).at(time.time() + 30)
    assert service.users.check_second_factor(user, later) == "totp"
    assert service.users.check_second_factor(user, later) is None  # replay within its window
    assert service.users.check_second_factor(user, pyotp.TOTP(secret).now()) is None  # older step than last used
    assert service.users.check_second_factor(user, codes[0]) == "recovery_code"
    assert service.users.check_second_factor(user, codes[0]) is None
    assert service.users.check_second_factor(user, codes[1].upper().replace("-", " ")) == "recovery_code"
    assert service.users.recovery_codes_left(user) == 8
    assert totp.recovery_hash(codes[0]) != totp.recovery_hash(codes[2])


def insert_entry(service: AccessControl, values: tuple[object, ...]) -> None:
    """A raw INSERT of a whole audit_log row (its 12 columns in table order)."""
    names = [f"v{i}" for i in range(len(values))]
    statement = f"INSERT INTO audit_log VALUES ({', '.join(':' + n for n in names)})"
    sql(service, statement, **dict(zip(names, values, strict=True)))


def _audit(service: AccessControl, n: int) -> None:
    for i in range(n):
        service.record("test.action", username=f"user{i}", client="127.0.0.1", target=f"t{i}", n=i)
    assert service.audit_log.verify().ok


def test_audit_verify_detects_an_edited_entry(service):
    _audit(service, 5)
    sql(service, "UPDATE audit_log SET outcome='failed' WHERE seq=3")
    result = service.audit_log.verify()
    assert (result.ok, result.first_bad, result.entries) == (False, 3, 2)
    assert "edited" in (result.problem or "")


def test_audit_verify_detects_a_deleted_entry(service):
    _audit(service, 5)
    sql(service, "DELETE FROM audit_log WHERE seq=2")
    result = service.audit_log.verify()
    assert (result.ok, result.first_bad) == (False, 2)
    assert "deleted" in (result.problem or "")


def test_audit_verify_detects_reordered_entries(service):
    _audit(service, 5)
    # swap the contents of entries 2 and 4, keeping every row self-consistent
    rows = {r[0]: r for r in sql(service, "SELECT * FROM audit_log WHERE seq IN (2, 4)")}
    for seq, other in ((2, 4), (4, 2)):
        sql(service, "DELETE FROM audit_log WHERE seq=:seq", seq=seq)
        insert_entry(service, (seq, *rows[other][1:]))
    result = service.audit_log.verify()
    assert (result.ok, result.first_bad) == (False, 2)


def test_audit_verify_detects_an_inserted_entry(service):
    _audit(service, 3)
    [row] = sql(service, "SELECT * FROM audit_log WHERE seq=3")
    insert_entry(service, (4, *row[1:]))
    assert service.audit_log.verify().first_bad == 4


def test_cli_audit_verify_exits_1_naming_the_entry(service, tmp_path):
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(service.settings.data_dir),
                                      "database_url": service.settings.database_url}))
    _audit(service, 4)
    cmd = [sys.executable, "-m", "trustcam.cli", "audit", "verify", "--config", str(config)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "4 entries" in ok.stderr, ok.stderr
    sql(service, "UPDATE audit_log SET target='nothing to see' WHERE seq=3")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "audit log entry 3" in bad.stderr and "edited" in bad.stderr and "Traceback" not in bad.stderr
