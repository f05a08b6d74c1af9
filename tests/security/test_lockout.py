"""Lockout an attacker cannot turn against the admin, and client addresses behind a reverse proxy.

Real app (``create_app``), real SQLite and argon2; each client comes from its own address (the ASGI peer address,
as uvicorn passes it), or through a proxy that appends X-Forwarded-For.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from authkit import PASSWORD, Harness, add_user, harness, login
from fastapi.testclient import TestClient
from sqlalchemy import select

from trustcam.security.roles import Role
from trustcam.security.tables import AuditRow
from trustcam.web.auth import forwarded_client

ATTACKER, ADMIN_HOME, PROXY = "203.0.113.66", "198.51.100.7", "127.0.0.1"
WRONG = "not the password, a guess"


def client_from(h: Harness, address: str) -> TestClient:
    return TestClient(h.client.app, base_url="https://testserver", client=(address, 40000))


def attempt(client: TestClient, username: str, password: str = WRONG, **headers: str) -> int:
    return client.post("/api/auth/login", json={"username": username, "password": password},
                       headers=headers).status_code


def test_an_attacker_cannot_lock_the_admin_out_from_another_address(tmp_path, database_url):
    h = harness(tmp_path, database_url=database_url, login_max_failures=3, lockout_minutes=10)
    secret = add_user(h, "root-admin", Role.admin)
    attacker = client_from(h, ATTACKER)
    answers = [attempt(attacker, "root-admin") for _ in range(6)]
    assert answers[:3] == [401] * 3 and set(answers[3:]) == {429}  # this address is locked for that name
    assert attempt(attacker, "root-admin", PASSWORD) == 429  # even with the right password
    admin = client_from(h, ADMIN_HOME)
    login(h, admin, "root-admin", secret)  # the real admin, elsewhere, is not locked out
    assert admin.get("/api/me").json()["username"] == "root-admin"
    locks = [e for e in h.service.audit_log.query(action="lockout")[0]]
    assert [(e["client"], e["details"]["scope"]) for e in locks] == [(ATTACKER, "pair")]


def test_spraying_many_names_from_one_address_locks_that_address(tmp_path):
    h = harness(tmp_path, login_max_failures=3, address_max_failures=5, lockout_minutes=10)
    add_user(h, "alice", Role.viewer, mfa=False)
    attacker = client_from(h, ATTACKER)
    assert [attempt(attacker, f"user{i}") for i in range(5)] == [401] * 5  # one guess per name
    assert attempt(attacker, "alice", PASSWORD) == 429
    assert attempt(client_from(h, ADMIN_HOME), "alice", PASSWORD) == 200


def test_repeated_lockouts_last_longer_each_time(tmp_path):
    h = harness(tmp_path, login_max_failures=2, lockout_minutes=0.02)  # 1.2 s, then 2.4 s, then 4.8 s
    add_user(h, "alice", Role.viewer, mfa=False)
    attacker = client_from(h, ATTACKER)
    waits = []
    for _ in range(3):
        assert [attempt(attacker, "alice") for _ in range(2)] == [401, 401]
        locked = attacker.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        assert locked.status_code == 429, locked.text
        wait = int(locked.headers["retry-after"])
        waits.append(wait)
        time.sleep(wait + 0.3)
    assert waits[0] <= 2 < waits[1] <= 3 < waits[2] <= 5, waits
    seconds = [e["details"]["seconds"] for e in h.service.audit_log.query(action="lockout")[0]]
    assert sorted(seconds) == [2, 3, 5]
    assert attempt(attacker, "alice", PASSWORD) == 200
    assert [attempt(attacker, "alice") for _ in range(2)] == [401, 401]  # a full login resets the growth
    locked = attacker.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert int(locked.headers["retry-after"]) <= 2


def _cli(h: Harness, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    server = h.settings.server
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(h.settings.data_dir), "database_url": h.settings.database_url,
        "server": {"auth_key_file": str(server.auth_key_file), "login_max_failures": server.login_max_failures},
        "vault": {"key_file": str(h.settings.vault.key_file),
                  "signing_key_file": str(h.settings.vault.signing_key_file)},
    }))
    return subprocess.run([sys.executable, "-m", "trustcam.cli", "users", "unlock", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def test_users_unlock_lifts_a_lockout_and_is_audited(tmp_path, database_url):
    h = harness(tmp_path, database_url=database_url, login_max_failures=2, address_max_failures=4, lockout_minutes=60)
    add_user(h, "alice", Role.viewer, mfa=False)
    attacker = client_from(h, ATTACKER)
    for _ in range(2):
        attempt(attacker, "alice")
    assert attempt(attacker, "alice", PASSWORD) == 429
    nothing = _cli(h, tmp_path)
    assert nothing.returncode == 1 and "--address" in nothing.stderr
    done = _cli(h, tmp_path, "alice")
    assert done.returncode == 0, done.stderr
    assert f"locked: alice from {ATTACKER}" in done.stderr and "unlocked alice" in done.stderr
    assert attempt(attacker, "alice", PASSWORD) == 200
    for i in range(4):  # now a spray locks the address itself
        attempt(attacker, f"user{i}")
    assert attempt(attacker, "alice", PASSWORD) == 429
    assert _cli(h, tmp_path, "alice").returncode == 0
    assert attempt(attacker, "alice", PASSWORD) == 429  # the name alone does not lift the address's lockout
    assert _cli(h, tmp_path, "--address", ATTACKER).returncode == 0
    assert attempt(attacker, "alice", PASSWORD) == 200
    with h.ctx.engine.connect() as db:  # the CLI wrote to the same database, SQLite file or PostgreSQL
        unlocks = db.execute(select(AuditRow.user, AuditRow.target).where(AuditRow.action == "lockout.unlock")
                             .order_by(AuditRow.seq)).all()
    assert [target for _, target in unlocks] == ["alice", "alice", ATTACKER]
    assert all(user.startswith("cli:") for user, _ in unlocks)


def test_forwarded_for_is_read_only_from_trusted_proxies():
    proxies = ("127.0.0.1", "10.0.0.0/8")
    assert forwarded_client(PROXY, [f"1.2.3.4, {ATTACKER}"], proxies) == ATTACKER  # rightmost untrusted hop
    assert forwarded_client(PROXY, [f"{ATTACKER}, 10.1.2.3"], proxies) == ATTACKER  # skips our inner proxy
    assert forwarded_client(PROXY, ["1.2.3.4", ATTACKER], proxies) == ATTACKER  # the header sent twice
    assert forwarded_client(ATTACKER, ["1.2.3.4"], proxies) == ATTACKER  # not a proxy: header ignored
    assert forwarded_client(PROXY, ["1.2.3.4"], ()) == PROXY  # no proxies configured: header ignored
    assert forwarded_client(PROXY, [], proxies) == PROXY
    assert forwarded_client(PROXY, ["not-an-address"], proxies) == PROXY


def test_behind_a_trusted_proxy_lockout_audit_and_sessions_use_the_real_client(tmp_path):
    h = harness(tmp_path, login_max_failures=3, lockout_minutes=10, trusted_proxies=[PROXY])
    secret = add_user(h, "root-admin", Role.admin)
    proxy = client_from(h, PROXY)
    for _ in range(3):
        assert attempt(proxy, "root-admin", **{"X-Forwarded-For": ATTACKER}) == 401
    assert attempt(proxy, "root-admin", PASSWORD, **{"X-Forwarded-For": ATTACKER}) == 429
    admin = TestClient(h.client.app, base_url="https://testserver", client=(PROXY, 40001),
                       headers={"X-Forwarded-For": ADMIN_HOME})
    login(h, admin, "root-admin", secret)  # through the same proxy, from home: not locked out
    logins = h.service.audit_log.query(action="login")[0]
    assert {e["client"] for e in logins} == {ATTACKER, ADMIN_HOME}
    with sqlite3.connect(h.settings.data_dir / "trustcam.db") as db:
        assert db.execute("SELECT client FROM auth_sessions").fetchall() == [(ADMIN_HOME,)]


def test_without_trusted_proxies_a_forged_forwarded_for_does_not_dodge_the_lockout(tmp_path):
    h = harness(tmp_path, login_max_failures=3, address_max_failures=3, lockout_minutes=10)
    add_user(h, "alice", Role.viewer, mfa=False)
    attacker = client_from(h, ATTACKER)
    for i in range(3):  # each guess claims another address
        assert attempt(attacker, f"user{i}", **{"X-Forwarded-For": f"192.0.2.{i}"}) == 401
    assert attempt(attacker, "alice", PASSWORD, **{"X-Forwarded-For": "192.0.2.200"}) == 429
    assert {e["client"] for e in h.service.audit_log.query(action="login")[0]} == {ATTACKER}
