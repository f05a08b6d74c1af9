"""Sessions and credentials end when the right behind them ends.

Live MJPEG streams over real HTTPS (uvicorn in-process, real SQLite, frames decoded from the real clip and handed to
the live view the way camera workers do): disabling the user, removing the camera grant, logging out, changing the
password or revoking the token closes an open stream. API tokens: creating one needs the password (and a code with
MFA); a password change or MFA reset revokes them; a token of a role that needs MFA stops working without it.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import pyotp
import pytest
from web_helpers import InProcessServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from authkit import PASSWORD, add_user, harness, login, make_settings, next_code

from support import free_port
from trustcam.bus import Bus
from trustcam.ingest.frame import Frame
from trustcam.security.access import AccessControl
from trustcam.security.roles import Role
from trustcam.storage.database import open_database
from trustcam.web.context import AppContext

BOUNDARY = b"--trustcam-frame"
END_WITHIN_S = 5.0  # the bound; the stream re-checks every 2 s


@dataclass
class LiveWorld:
    server: InProcessServer
    service: AccessControl
    admin: httpx.Client
    admin_csrf: str

    def login(self, username: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
        client = self.server.client()
        answer = client.post("/api/auth/login", json={"username": username, "password": password})
        assert answer.status_code == 200 and not answer.json()["mfa_required"], answer.text
        return client, answer.json()["csrf_token"]

    def same_session(self, client: httpx.Client) -> httpx.Client:
        """A second connection with the same session cookie (the first is busy streaming)."""
        other = self.server.client()
        other.cookies.update(client.cookies)
        return other


def _feed(ctx: AppContext, video: Path, stop: threading.Event) -> None:
    """Hand decoded frames of the real clip to the live view, ~10 per second, as a camera worker would."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < 30:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(image, (320, 180)))
    capture.release()
    assert frames, f"cannot decode {video}"
    index = 0
    while not stop.wait(0.1):
        assert ctx.live is not None
        ctx.live.publish("office", Frame.from_image(frames[index % len(frames)], index, index / 10), [])
        index += 1


@pytest.fixture
def live_world(tmp_path: Path, person_video: Path) -> Iterator[LiveWorld]:
    settings = make_settings(tmp_path, person_video, host="127.0.0.1", port=free_port())
    engine = open_database(settings.resolved_database_url)
    ctx = AppContext(settings=settings, engine=engine, bus=Bus())
    service = ctx.extras["access_control"] = AccessControl(settings, engine)
    admin_user = service.users.create("root-admin", PASSWORD, Role.admin)
    secret = service.users.start_enrolment(admin_user)
    service.users.confirm_enrolment(admin_user, pyotp.TOTP(secret).at(time.time() - 30))  # previous step
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(ctx, person_video, stop), daemon=True)
    feeder.start()
    try:
        with InProcessServer(ctx) as server:
            admin = server.client()
            first = admin.post("/api/auth/login", json={"username": "root-admin", "password": PASSWORD}).json()
            done = admin.post("/api/auth/mfa", json={"challenge": first["challenge"],
                                                     "code": pyotp.TOTP(secret).now()})
            assert done.status_code == 200, done.text
            yield LiveWorld(server, service, admin, done.json()["csrf_token"])
            admin.close()
    finally:
        stop.set()
        feeder.join(5)


def _watch_then(client: httpx.Client, change: callable, headers: dict[str, str] | None = None) -> int:
    """Open the live stream, read frames for a while (past one re-check), make ``change``, then read until the
    stream ends; returns the frames read before the change. Fails if the stream still runs ``END_WITHIN_S`` later."""
    with client.stream("GET", "/api/cameras/office/live.mjpeg", headers=headers) as stream:
        assert stream.status_code == 200, stream.read()
        chunks = stream.iter_bytes()
        seen, started = 0, time.monotonic()
        for chunk in chunks:
            seen += chunk.count(BOUNDARY)
            if seen >= 3 and time.monotonic() - started > 3.0:
                break
        assert seen >= 3, "the stream sent no frames"
        change()
        changed = time.monotonic()
        for _ in chunks:
            if time.monotonic() - changed > END_WITHIN_S:
                pytest.fail(f"the live stream still runs {END_WITHIN_S:.0f} s after the change")
        ended = time.monotonic() - changed
    assert ended <= END_WITHIN_S, f"the live stream ended {ended:.1f} s after the change (at most {END_WITHIN_S} s)"
    return seen


def _ended_audited(world: LiveWorld, reason: str) -> None:
    entries = world.service.audit_log.query(action="view_live.ended")[0]
    assert entries and reason in entries[0]["details"]["reason"], entries


def test_disabling_the_user_ends_their_open_stream(live_world):
    live_world.service.users.create("vera", PASSWORD, Role.viewer)
    vera, _ = live_world.login("vera")
    _watch_then(vera, lambda: live_world.admin.patch("/api/users/vera", json={"disabled": True},
                                                     headers={"X-CSRF-Token": live_world.admin_csrf})
                .raise_for_status())
    _ended_audited(live_world, "disabled")


def test_removing_the_camera_grant_ends_the_stream(live_world):
    live_world.service.users.create("vera", PASSWORD, Role.viewer, cameras=["office", "yard"])
    vera, _ = live_world.login("vera")
    _watch_then(vera, lambda: live_world.admin.patch("/api/users/vera", json={"cameras": ["yard"]},
                                                     headers={"X-CSRF-Token": live_world.admin_csrf})
                .raise_for_status())
    _ended_audited(live_world, "camera no longer granted")
    assert vera.get("/api/me").status_code == 200  # the session itself is still fine


def test_logging_out_ends_the_stream(live_world):
    live_world.service.users.create("vera", PASSWORD, Role.viewer)
    vera, csrf = live_world.login("vera")
    other = live_world.same_session(vera)
    _watch_then(vera, lambda: other.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).raise_for_status())
    _ended_audited(live_world, "signed out")


def test_changing_the_password_ends_session_and_token_streams(live_world):
    live_world.service.users.create("vera", PASSWORD, Role.viewer)
    vera, csrf = live_world.login("vera")
    made = vera.post("/api/me/tokens", json={"name": "wall screen", "days": 1, "password": PASSWORD},
                     headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    other = live_world.same_session(vera)
    result: dict[str, object] = {}
    token_client = live_world.server.client(token)

    def watch_with_token() -> None:
        try:
            result["frames"] = _watch_then(token_client, lambda: changed.wait(60))
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc

    changed = threading.Event()
    watcher = threading.Thread(target=watch_with_token)
    watcher.start()

    def change_password() -> None:
        answer = other.post("/api/me/password", json={"current_password": PASSWORD,
                                                      "new_password": "a brand new passphrase 5521"},
                            headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 204, answer.text
        changed.set()

    _watch_then(vera, change_password)
    watcher.join(END_WITHIN_S + 30)
    assert "error" not in result, result.get("error")
    assert result.get("frames", 0) >= 3
    assert token_client.get("/api/me").status_code == 401  # the token was revoked with the password change


def test_revoking_the_token_ends_its_stream(live_world):
    live_world.service.users.create("vera", PASSWORD, Role.viewer)
    vera, csrf = live_world.login("vera")
    made = vera.post("/api/me/tokens", json={"name": "wall screen", "days": 1, "password": PASSWORD},
                     headers={"X-CSRF-Token": csrf}).json()
    token_client = live_world.server.client(made["token"])
    _watch_then(token_client, lambda: vera.delete(f"/api/me/tokens/{made['info']['id']}",
                                                  headers={"X-CSRF-Token": csrf}).raise_for_status())


# --- API tokens ---------------------------------------------------------------------------------------------------


def test_creating_a_token_needs_the_password_and_a_code_and_counts_failures(tmp_path):
    h = harness(tmp_path, login_max_failures=3, lockout_minutes=10)
    secret = add_user(h, "alice", Role.admin)
    client = h.new_client()
    csrf = login(h, client, "alice", secret)  # a stolen session cookie is all an attacker would have
    headers = {"X-CSRF-Token": csrf}
    body = {"name": "ci", "days": 1}
    assert client.post("/api/me/tokens", json=body, headers=headers).status_code == 422  # password missing
    wrong = client.post("/api/me/tokens", json={**body, "password": "a guessed password"}, headers=headers)
    assert wrong.status_code == 403 and "password" in wrong.json()["detail"]
    no_code = client.post("/api/me/tokens", json={**body, "password": PASSWORD}, headers=headers)
    assert no_code.status_code == 403 and "code" in no_code.json()["detail"]
    failed = [e for e in h.service.audit_log.query(action="token.create")[0] if e["outcome"] == "failed"]
    assert len(failed) == 2 and {e["user"] for e in failed} == {"alice"}
    bad_code = client.post("/api/me/tokens", json={**body, "password": PASSWORD, "code": "000000"}, headers=headers)
    assert bad_code.status_code == 403
    locked = client.post("/api/me/tokens", json={**body, "password": PASSWORD,
                                                 "code": next_code(h, "alice", secret)}, headers=headers)
    assert locked.status_code == 429  # three wrong answers: like three failed logins
    relogin = h.new_client().post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert relogin.status_code == 429
    assert h.service.credentials.tokens() == []


def test_a_password_change_and_an_mfa_reset_revoke_the_users_tokens(tmp_path):
    h = harness(tmp_path)
    admin_secret = add_user(h, "root-admin", Role.admin)
    add_user(h, "olga", Role.operator, mfa=False)
    olga = h.new_client()
    csrf = login(h, olga, "olga", None)

    def new_token() -> dict[str, str]:
        made = olga.post("/api/me/tokens", json={"name": "script", "days": 1, "password": PASSWORD},
                         headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
        return {"Authorization": f"Bearer {made.json()['token']}"}

    first = new_token()
    assert h.new_client().get("/api/me", headers=first).status_code == 200
    new_password = "an entirely new passphrase 8812"
    assert olga.post("/api/me/password", json={"current_password": PASSWORD, "new_password": new_password},
                     headers={"X-CSRF-Token": csrf}).status_code == 204
    assert h.new_client().get("/api/me", headers=first).status_code == 401
    assert all(t.revoked is not None for t in h.service.credentials.tokens())

    olga = h.new_client()
    answer = olga.post("/api/auth/login", json={"username": "olga", "password": new_password}).json()
    csrf = answer["csrf_token"]
    secret = olga.post("/api/me/mfa/enroll", headers={"X-CSRF-Token": csrf}).json()["secret"]
    olga.post("/api/me/mfa/confirm", json={"code": next_code(h, "olga", secret)}, headers={"X-CSRF-Token": csrf})
    made = olga.post("/api/me/tokens", json={"name": "script", "days": 1, "password": new_password,
                                             "code": next_code(h, "olga", secret)}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    second = {"Authorization": f"Bearer {made.json()['token']}"}
    assert h.new_client().get("/api/me", headers=second).status_code == 200
    admin = h.new_client()
    admin_csrf = login(h, admin, "root-admin", admin_secret)
    assert admin.patch("/api/users/olga", json={"reset_mfa": True},
                       headers={"X-CSRF-Token": admin_csrf}).status_code == 200
    assert h.new_client().get("/api/me", headers=second).status_code == 401


def test_a_token_whose_role_needs_mfa_stops_working_while_its_owner_has_none(tmp_path):
    h = harness(tmp_path)
    add_user(h, "olga", Role.operator, mfa=False)
    olga = h.new_client()
    csrf = login(h, olga, "olga", None)
    tokens = {}
    for role in ("operator", "viewer"):
        made = olga.post("/api/me/tokens", json={"name": role, "days": 1, "role": role, "password": PASSWORD},
                         headers={"X-CSRF-Token": csrf})
        tokens[role] = {"Authorization": f"Bearer {made.json()['token']}"}
    assert h.new_client().get("/api/me", headers=tokens["operator"]).status_code == 200
    # The policy is tightened (operators must use MFA) and the server restarted on the same database.
    stricter = harness(tmp_path, mfa_required_for=["operator"])
    refused = stricter.new_client().get("/api/me", headers=tokens["operator"])
    assert refused.status_code == 401 and "MFA" in refused.json()["detail"]
    assert stricter.new_client().get("/api/me", headers=tokens["viewer"]).status_code == 200  # viewers need none
    # An admin token stops too when the owner's MFA is switched off behind the server's back.
    secret = add_user(stricter, "root-admin", Role.admin)
    admin = stricter.new_client()
    admin_csrf = login(stricter, admin, "root-admin", secret)
    made = admin.post("/api/me/tokens", json={"name": "ci", "days": 1, "password": PASSWORD,
                                              "code": next_code(stricter, "root-admin", secret)},
                      headers={"X-CSRF-Token": admin_csrf})
    admin_token = {"Authorization": f"Bearer {made.json()['token']}"}
    assert stricter.new_client().get("/api/users", headers=admin_token).status_code == 200
    with sqlite3.connect(tmp_path / "data" / "trustcam.db") as db:
        db.execute("UPDATE users SET mfa_enabled=0 WHERE username='root-admin'")
    assert stricter.new_client().get("/api/users", headers=admin_token).status_code == 401
