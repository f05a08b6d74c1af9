"""Authentication over the real app (``create_app``, real SQLite, argon2 and TOTP), and one real HTTPS server."""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import pyotp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from authkit import PASSWORD, add_user, harness, login, next_code

from trustcam.security.roles import Role
from trustcam.security.setup import ensure_setup_token


def test_login_with_totp_gives_a_strict_session_cookie(tmp_path):
    h = harness(tmp_path)
    secret = add_user(h, "alice", Role.admin)
    client = h.new_client()
    first = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert first.status_code == 200 and first.json()["mfa_required"] is True
    assert "set-cookie" not in first.headers  # no session before the second factor
    wrong = client.post("/api/auth/mfa", json={"challenge": first.json()["challenge"], "code": "000000"})
    assert wrong.status_code == 401
    done = client.post("/api/auth/mfa", json={"challenge": first.json()["challenge"],
                                              "code": next_code(h, "alice", secret)})
    assert done.status_code == 200, done.text
    cookie = done.headers["set-cookie"]
    assert cookie.startswith("trustcam_session=")
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    me = client.get("/api/me").json()
    assert me["username"] == "alice" and me["role"] == "admin" and me["csrf_token"] == done.json()["csrf_token"]
    anonymous = h.new_client().get("/api/me")
    assert anonymous.status_code == 401 and "log in" in anonymous.json()["detail"]


def test_wrong_password_and_unknown_user_get_the_same_answer(tmp_path):
    h = harness(tmp_path)
    add_user(h, "alice", Role.viewer, mfa=False)
    client = h.new_client()
    wrong = client.post("/api/auth/login", json={"username": "alice", "password": "not the password at all"})
    unknown = client.post("/api/auth/login", json={"username": "mallory", "password": "not the password at all"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong user name or password"}
    failed = [e for e in h.service.audit_log.query(action="login")[0] if e["outcome"] == "failed"]
    assert len(failed) == 2 and {e["user"] for e in failed} == {"alice", ""}


def test_lockout_refuses_even_the_right_password_then_expires(tmp_path):
    h = harness(tmp_path, login_max_failures=3, lockout_minutes=0.05)  # 3 s
    add_user(h, "alice", Role.viewer, mfa=False)
    client = h.new_client()
    for _ in range(3):
        assert client.post("/api/auth/login", json={"username": "alice", "password": "guess guess guess"}
                           ).status_code == 401
    locked = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429, locked.text
    assert 1 <= int(locked.headers["retry-after"]) <= 3 and "try again" in locked.json()["detail"]
    actions = [(e["action"], e["outcome"]) for e in h.service.audit_log.query()[0]]
    assert ("lockout", "locked") in actions and ("login", "locked") in actions
    time.sleep(3.2)
    assert client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD}).status_code == 200


def test_lockout_per_address_covers_many_user_names(tmp_path):
    h = harness(tmp_path, login_max_failures=3, address_max_failures=3, lockout_minutes=0.05)
    add_user(h, "alice", Role.viewer, mfa=False)
    client = h.new_client()
    for name in ("u1", "u2", "u3"):  # a spray over user names from one address
        client.post("/api/auth/login", json={"username": name, "password": "guess guess guess"})
    assert client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD}).status_code == 429


def test_csrf_is_required_on_unsafe_methods_with_a_cookie(tmp_path):
    h = harness(tmp_path)
    secret = add_user(h, "alice", Role.admin)
    client = h.new_client()
    csrf = login(h, client, "alice", secret)
    body = {"name": "ci", "days": 7, "password": PASSWORD}
    missing = client.post("/api/me/tokens", json=body)
    wrong = client.post("/api/me/tokens", json=body, headers={"X-CSRF-Token": "0" * 64})
    assert missing.status_code == wrong.status_code == 403 and "X-CSRF-Token" in missing.json()["detail"]
    assert client.post("/api/me/tokens", json={**body, "code": next_code(h, "alice", secret)},
                       headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.get("/api/me/tokens").status_code == 200  # safe methods need none


def test_bearer_token_works_without_csrf_and_dies_when_revoked_or_expired(tmp_path):
    h = harness(tmp_path)
    secret = add_user(h, "alice", Role.admin)
    client = h.new_client()
    csrf = login(h, client, "alice", secret)
    made = client.post("/api/me/tokens", json={"name": "ci", "days": 1, "role": "operator", "password": PASSWORD,
                                               "code": next_code(h, "alice", secret)},
                       headers={"X-CSRF-Token": csrf}).json()
    token, token_id = made["token"], made["info"]["id"]
    assert token.startswith(f"tc_{token_id}_")
    script = h.new_client()
    auth = {"Authorization": f"Bearer {token}"}
    me = script.get("/api/me", headers=auth).json()
    assert me["role"] == "operator" and me["via"] == "token" and me["csrf_token"] is None
    assert script.get("/api/users", headers=auth).status_code == 403  # the token's role, not the owner's
    assert script.post("/api/me/tokens", json={"name": "x", "days": 1, "password": PASSWORD,
                                               "code": next_code(h, "alice", secret)},
                       headers=auth).status_code == 201  # no CSRF
    higher = script.post("/api/me/tokens", json={"name": "x", "days": 1, "role": "admin", "password": PASSWORD},
                         headers=auth)
    assert higher.status_code == 403  # an operator token mints no admin token, though its owner is an admin
    raw = (h.settings.data_dir / "trustcam.db").read_bytes()
    assert token.split("_")[2].encode() not in raw  # only its sha256 is stored
    bad = script.get("/api/me", headers={"Authorization": f"Bearer {token[:-2]}xx"})
    assert bad.status_code == 401
    with sqlite3.connect(h.settings.data_dir / "trustcam.db") as db:
        db.execute("UPDATE api_tokens SET expires=? WHERE id=?", (time.time() - 1, token_id))
    assert script.get("/api/me", headers=auth).status_code == 401
    with sqlite3.connect(h.settings.data_dir / "trustcam.db") as db:
        db.execute("UPDATE api_tokens SET expires=? WHERE id=?", (time.time() + 3600, token_id))
    assert script.get("/api/me", headers=auth).status_code == 200
    assert client.delete(f"/api/me/tokens/{token_id}", headers={"X-CSRF-Token": csrf}).status_code == 204
    revoked = script.get("/api/me", headers=auth)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    too_long = client.post("/api/me/tokens", json={"name": "x", "days": 91, "password": PASSWORD},
                           headers={"X-CSRF-Token": csrf})
    assert too_long.status_code == 422


def test_token_role_cannot_exceed_the_owner(tmp_path):
    h = harness(tmp_path)
    add_user(h, "olga", Role.operator, mfa=False)
    client = h.new_client()
    csrf = login(h, client, "olga", None)
    answer = client.post("/api/me/tokens", json={"name": "x", "days": 1, "role": "admin", "password": PASSWORD},
                         headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 403 and "cannot create a token with role admin" in answer.json()["detail"]


def test_setup_token_creates_the_first_admin_once(tmp_path):
    h = harness(tmp_path)
    token = ensure_setup_token(h.settings, h.ctx.engine)
    assert token
    client = h.new_client()
    assert client.get("/api/auth/setup").json() == {"setup_required": True}  # public: the UI shows the setup form
    body = {"setup_token": token, "username": "root-admin", "password": PASSWORD}
    assert client.post("/api/auth/setup", json={**body, "setup_token": "x" * 43}).status_code == 403
    weak = client.post("/api/auth/setup", json={**body, "password": "password"})
    assert weak.status_code == 422 and "too short" in weak.json()["detail"]
    made = client.post("/api/auth/setup", json=body)
    assert made.status_code == 201 and made.json() == {"username": "root-admin", "role": "admin"}
    assert not (h.settings.data_dir / "setup-token").exists()
    again = client.post("/api/auth/setup", json={**body, "username": "second"})
    assert again.status_code == 409 and "already done" in again.json()["detail"]
    assert [u.username for u in h.service.users.all()] == ["root-admin"]
    assert client.get("/api/auth/setup").json() == {"setup_required": False}


def test_admin_without_mfa_can_only_enrol(tmp_path):
    h = harness(tmp_path)
    add_user(h, "root-admin", Role.admin, mfa=False)
    client = h.new_client()
    answer = client.post("/api/auth/login", json={"username": "root-admin", "password": PASSWORD}).json()
    assert answer["mfa_required"] is False and answer["mfa_enrolment_required"] is True
    csrf = answer["csrf_token"]
    for method, path in (("GET", "/api/users"), ("GET", "/api/audit"), ("GET", "/api/me/tokens"),
                         ("GET", "/api/cameras"), ("GET", "/api/openapi.json")):
        denied = client.request(method, path, headers={"X-CSRF-Token": csrf})
        assert denied.status_code == 403 and "two-factor" in denied.json()["detail"], (path, denied.text)
    assert client.get("/api/me").json()["mfa_required"] is True
    enrol = client.post("/api/me/mfa/enroll", headers={"X-CSRF-Token": csrf}).json()
    assert enrol["otpauth_uri"].startswith("otpauth://totp/trustcam:root-admin?") and "<svg" in enrol["qr_svg"]
    bad = client.post("/api/me/mfa/confirm", json={"code": "123456"}, headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 400
    codes = client.post("/api/me/mfa/confirm", json={"code": next_code(h, "root-admin", enrol["secret"])},
                        headers={"X-CSRF-Token": csrf}).json()["recovery_codes"]
    assert len(codes) == 10
    assert client.get("/api/users").status_code == 200  # enrolled: the session is no longer restricted


def test_recovery_code_logs_in_once(tmp_path):
    h = harness(tmp_path)
    secret = h.service.users.start_enrolment(h.service.users.create("alice", PASSWORD, Role.admin))
    codes = h.service.users.confirm_enrolment(h.service.users.need("alice"), pyotp.TOTP(secret).now())

    def with_code(code: str) -> int:
        client = h.new_client()
        challenge = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD}).json()
        return client.post("/api/auth/mfa", json={"challenge": challenge["challenge"], "code": code}).status_code

    assert with_code(codes[3]) == 200
    assert with_code(codes[3]) == 401
    used = h.service.audit_log.query(action="mfa.recovery_code_used")[0]
    assert len(used) == 1 and used[0]["details"]["codes_left"] == 9


def test_logout_password_change_and_disable_end_sessions(tmp_path):
    h = harness(tmp_path)
    add_user(h, "root-admin", Role.admin, mfa=False)
    add_user(h, "vera", Role.viewer, mfa=False)
    admin_secret = h.service.users.start_enrolment(h.service.users.need("root-admin"))
    h.service.users.confirm_enrolment(h.service.users.need("root-admin"), next_code(h, "root-admin", admin_secret))
    a, b = h.new_client(), h.new_client()
    csrf_a, csrf_b = login(h, a, "vera", None), login(h, b, "vera", None)
    assert a.post("/api/auth/logout", headers={"X-CSRF-Token": csrf_a}).status_code == 204
    assert a.get("/api/me").status_code == 401 and b.get("/api/me").status_code == 200
    new_password = "another long passphrase 913"
    wrong = b.post("/api/me/password", json={"current_password": "nope nope nope", "new_password": new_password},
                   headers={"X-CSRF-Token": csrf_b})
    assert wrong.status_code == 403
    ok = b.post("/api/me/password", json={"current_password": PASSWORD, "new_password": new_password},
                headers={"X-CSRF-Token": csrf_b})
    assert ok.status_code == 204 and b.get("/api/me").status_code == 401
    c = h.new_client()
    assert c.post("/api/auth/login", json={"username": "vera", "password": new_password}).status_code == 200
    admin = h.new_client()
    csrf_admin = login(h, admin, "root-admin", admin_secret)
    assert admin.patch("/api/users/vera", json={"disabled": True}, headers={"X-CSRF-Token": csrf_admin}
                       ).status_code == 200
    assert c.get("/api/me").status_code == 401
    assert c.post("/api/auth/login", json={"username": "vera", "password": new_password}).status_code == 401
    last = admin.patch("/api/users/root-admin", json={"role": "viewer"}, headers={"X-CSRF-Token": csrf_admin})
    assert last.status_code == 409 and "last active admin" in last.json()["detail"]


def test_idle_session_expires(tmp_path):
    h = harness(tmp_path, session_idle_minutes=0.02)  # 1.2 s
    add_user(h, "vera", Role.viewer, mfa=False)
    client = h.new_client()
    login(h, client, "vera", None)
    assert client.get("/api/me").status_code == 200
    time.sleep(1.5)
    assert client.get("/api/me").status_code == 401


def test_viewer_sees_only_granted_cameras(tmp_path, person_video):
    h = harness(tmp_path, person_video)
    add_user(h, "vera", Role.viewer, cameras=["office"], mfa=False)
    client = h.new_client()
    login(h, client, "vera", None)
    hidden = client.get("/api/cameras/yard/snapshot.jpg")
    missing = client.get("/api/cameras/nosuch/snapshot.jpg")
    assert hidden.status_code == missing.status_code == 404
    assert "yard" in hidden.json()["detail"] and "nosuch" in missing.json()["detail"]
    assert [c["name"] for c in client.get("/api/cameras").json()] == ["office"]


def test_password_never_reaches_logs_or_audit(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    h = harness(tmp_path, login_max_failures=2, lockout_minutes=0.05)
    secret = add_user(h, "alice", Role.admin)
    client = h.new_client()
    csrf = login(h, client, "alice", secret)
    wrong_password = "a wrong password that is long"
    client.post("/api/auth/login", json={"username": "alice", "password": wrong_password})
    client.post("/api/users", json={"username": "bob", "password": PASSWORD, "role": "viewer"},
                headers={"X-CSRF-Token": csrf})
    client.post("/api/users", json={"username": "bob2", "password": "weak", "role": "viewer"},
                headers={"X-CSRF-Token": csrf})
    entries = str(h.service.audit_log.query(limit=1000)[0])
    assert "user.create" in entries and "login" in entries
    for password in (PASSWORD, wrong_password):
        assert password not in caplog.text and password not in entries
        with sqlite3.connect(h.settings.data_dir / "trustcam.db") as db:
            dump = "\n".join(db.iterdump())
        assert password not in dump


def test_real_https_server_setup_login_and_secure_cookie(running_server):
    """`trustcam run` (uvicorn, TLS): the printed setup token creates the admin, who must enrol MFA at login."""
    assert running_server.setup_token, running_server.log_tail()
    assert running_server.setup_token in running_server.log_tail(100_000)  # printed for the operator
    with running_server.client() as client:
        made = client.post("/api/auth/setup", json={"setup_token": running_server.setup_token,
                                                    "username": "root-admin", "password": PASSWORD})
        assert made.status_code == 201, made.text
        answer = client.post("/api/auth/login", json={"username": "root-admin", "password": PASSWORD})
        assert answer.status_code == 200 and answer.json()["mfa_enrolment_required"] is True
        assert "secure" in answer.headers["set-cookie"].lower()
        csrf = answer.json()["csrf_token"]
        assert client.get("/api/users").status_code == 403
        enrol = client.post("/api/me/mfa/enroll", headers={"X-CSRF-Token": csrf}).json()
        confirm = client.post("/api/me/mfa/confirm", json={"code": pyotp.TOTP(enrol["secret"]).now()},
                              headers={"X-CSRF-Token": csrf})
        assert confirm.status_code == 200
        assert client.get("/api/users").json()[0]["mfa_enrolled"] is True
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):  # no plain HTTP on the port
            httpx.get(running_server.url.replace("https://", "http://") + "/api/health", timeout=5).raise_for_status()
