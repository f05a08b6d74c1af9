"""Every route of the app × every role (session and API token, + anonymous) over real HTTPS, against docs/api.md.

The expected matrix is an explicit table keyed by (method, path). A route added to the app without a line here
fails the test, and so does a line for a route that no longer exists: every route gets a deliberate role decision.

Every call names things that EXIST (an event with a snapshot, a camera with a live frame, a user, a token, a dead
letter) with a valid body, so a role that is wrongly admitted gets a 2xx and the test fails: a denied role must get
exactly 403 (anonymous exactly 401), never a 404 that could as well mean "admitted, but no such id". An allowed role
gets the route's success status, or the documented non-404 answer noted in the table.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from web_helpers import InProcessServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from authkit import PASSWORD, Harness, add_user, harness, login, next_code

from support import free_port
from trustcam.alerts.model import Alert, Severity
from trustcam.alerts.outbox import Outbox
from trustcam.ingest.frame import Frame
from trustcam.monitor.metrics import Metrics
from trustcam.security.roles import Role
from trustcam.storage.schema import EventRow

PUBLIC = "public"
ANY = frozenset(Role)
V, OP, A, AU = Role.viewer, Role.operator, Role.admin, Role.auditor
SEE = frozenset({V, OP, A})
EVENT = f"{1:032x}"  # on camera 'office', with a snapshot file
CAMERA = "office"  # has a live frame (snapshot.jpg and live.mjpeg answer 200)
JPEG = b"\xff\xd8\xff\xe0 event snapshot \xff\xd9"
STRONG = "saffron lantern 93 drifting north"  # passes the password policy

EXPECTED: dict[tuple[str, str], frozenset[Role] | str] = {
    ("GET", "/"): PUBLIC,
    ("GET", "/api/health"): PUBLIC,
    ("GET", "/api/auth/setup"): PUBLIC,
    ("POST", "/api/auth/setup"): PUBLIC,
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/mfa"): PUBLIC,
    ("POST", "/api/auth/logout"): ANY,
    ("GET", "/api/openapi.json"): ANY,
    ("GET", "/api/docs"): ANY,
    ("GET", "/api/me"): ANY,
    ("POST", "/api/me/mfa/enroll"): ANY,
    ("POST", "/api/me/mfa/confirm"): ANY,
    ("POST", "/api/me/password"): ANY,
    ("GET", "/api/me/tokens"): ANY,
    ("POST", "/api/me/tokens"): ANY,
    ("DELETE", "/api/me/tokens/{token_id}"): ANY,
    ("GET", "/api/cameras"): SEE,
    ("GET", "/api/cameras/grid"): SEE,
    ("GET", "/api/cameras/{name}/live.mjpeg"): SEE,
    ("GET", "/api/cameras/{name}/snapshot.jpg"): SEE,
    ("GET", "/api/cameras/{name}/timeline"): SEE,
    ("GET", "/api/cameras/{name}/recording.mp4"): SEE,
    ("POST", "/api/cameras/{name}/export"): frozenset({OP, A}),
    ("GET", "/api/events"): SEE,
    ("GET", "/api/events/{event_id}"): SEE,
    ("GET", "/api/events/{event_id}/snapshot.jpg"): SEE,
    ("GET", "/api/events/{event_id}/clip.mp4"): SEE,
    ("POST", "/api/events/{event_id}/ack"): frozenset({OP, A}),
    ("POST", "/api/events/{event_id}/review"): frozenset({OP, A}),
    ("POST", "/api/events/{event_id}/export"): frozenset({OP, A}),
    ("GET", "/api/alerts"): SEE,
    ("GET", "/api/alerts/dead-letters"): frozenset({A}),
    ("POST", "/api/alerts/dead-letters/{row_id}/replay"): frozenset({A}),
    ("GET", "/api/config"): frozenset({A}),
    ("PATCH", "/api/config"): frozenset({A}),
    ("GET", "/api/users"): frozenset({A}),
    ("POST", "/api/users"): frozenset({A}),
    ("PATCH", "/api/users/{username}"): frozenset({A}),
    ("DELETE", "/api/users/{username}"): frozenset({A}),
    ("GET", "/api/tokens"): frozenset({A}),
    ("DELETE", "/api/tokens/{token_id}"): frozenset({A}),
    ("GET", "/api/audit"): frozenset({AU, A}),
    ("POST", "/api/audit/verify"): frozenset({AU, A}),
    ("GET", "/metrics"): frozenset({A}),
    # admins WITH the biometrics permission only; no caller here has it, so every role gets 403 (test_faces_api)
    ("GET", "/api/faces"): frozenset(),
    ("POST", "/api/faces"): frozenset(),
    ("DELETE", "/api/faces/{name}"): frozenset(),
    ("GET", "/api/faces/{name}/export"): frozenset(),
}

# What an allowed caller gets (every caller, for a public route). Not a 2xx only where the answer is documented:
MFA_ROLES_409 = {"mfa_role": 409, "other": 200}  # enrol again while MFA is active: 409 (reset by an admin)
SUCCESS: dict[tuple[str, str], int | dict[str, int]] = {
    ("GET", "/"): 200, ("GET", "/api/health"): 200, ("GET", "/api/auth/setup"): 200,
    ("POST", "/api/auth/setup"): 422, ("POST", "/api/auth/login"): 422, ("POST", "/api/auth/mfa"): 422,  # empty body
    ("POST", "/api/me/mfa/enroll"): MFA_ROLES_409,
    ("POST", "/api/me/mfa/confirm"): 409,  # a code without an enrolment in progress
    ("POST", "/api/me/password"): 422,  # right current password, too weak a new one (a change would end the caller)
    ("POST", "/api/me/tokens"): 201, ("DELETE", "/api/me/tokens/{token_id}"): 204,
    ("POST", "/api/auth/logout"): 204,
    ("POST", "/api/events/{event_id}/export"): 409,  # no footage: this server records nothing
    ("GET", "/api/events/{event_id}/clip.mp4"): 404,  # no footage (the reason in the detail): nothing recorded
    ("POST", "/api/cameras/{name}/export"): 422,  # no start/end given
    ("GET", "/api/cameras/{name}/recording.mp4"): 422,  # no start/end given
    ("POST", "/api/users"): 201, ("DELETE", "/api/users/{username}"): 204, ("DELETE", "/api/tokens/{token_id}"): 204,
}


@dataclass
class Caller:
    name: str  # e.g. "admin/token"
    role: Role | None  # None: anonymous
    client: httpx.Client
    headers: dict[str, str]
    username: str = ""
    user_id: int = 0
    totp_secret: str | None = None


@dataclass
class World:
    h: Harness
    server: InProcessServer
    callers: list[Caller] = field(default_factory=list)
    serial: Iterator[int] = field(default_factory=itertools.count)

    def user(self, role: Role = V) -> tuple[str, int]:
        """A fresh user (a target for changes and deletions)."""
        name = f"target-{next(self.serial)}"
        return name, self.h.service.users.create(name, PASSWORD, role, [CAMERA]).id

    def token_id(self, user_id: int, role: Role) -> str:
        return self.h.service.credentials.create_token(user_id, role, f"target {next(self.serial)}", 1, 30)[1].id

    def dead_letter(self) -> int:
        outbox = Outbox(self.h.ctx.engine)
        alert = Alert(kind="tamper", severity=Severity.critical, camera=CAMERA, message=f"covered {next(self.serial)}")
        outbox.add(alert, ["webhook:hook"])
        [row] = outbox.rows(alert_id=alert.id)
        outbox.dead(row.id, 3, "HTTP 500 'down'")
        return row.id


Request = tuple[str, object]  # (path with real ids, JSON body or None)
REQUESTS: dict[tuple[str, str], Callable[[World, Caller], Request]] = {
    ("POST", "/api/auth/setup"): lambda w, c: ("/api/auth/setup", {}),
    ("POST", "/api/auth/login"): lambda w, c: ("/api/auth/login", {}),
    ("POST", "/api/auth/mfa"): lambda w, c: ("/api/auth/mfa", {}),
    ("POST", "/api/me/mfa/confirm"): lambda w, c: ("/api/me/mfa/confirm", {"code": "123456"}),
    ("POST", "/api/me/password"): lambda w, c: ("/api/me/password", {"current_password": PASSWORD,
                                                                     "new_password": "short"}),
    ("POST", "/api/me/tokens"): lambda w, c: ("/api/me/tokens", {
        "name": f"matrix {next(w.serial)}", "days": 1, "password": PASSWORD,
        "code": next_code(w.h, c.username, c.totp_secret) if c.totp_secret else None}),
    ("DELETE", "/api/me/tokens/{token_id}"): lambda w, c: (
        f"/api/me/tokens/{w.token_id(c.user_id, c.role) if c.role else 'f' * 16}", None),
    ("POST", "/api/events/{event_id}/review"): lambda w, c: (f"/api/events/{EVENT}/review",
                                                             {"verdict": "true_positive", "note": "matrix"}),
    ("POST", "/api/alerts/dead-letters/{row_id}/replay"): lambda w, c: (
        f"/api/alerts/dead-letters/{w.dead_letter()}/replay", None),
    ("PATCH", "/api/config"): lambda w, c: ("/api/config", {"detector": {"score_threshold": 0.4}}),
    ("POST", "/api/users"): lambda w, c: ("/api/users", {"username": f"new-{next(w.serial)}", "password": STRONG,
                                                         "role": "viewer", "cameras": [CAMERA]}),
    ("PATCH", "/api/users/{username}"): lambda w, c: (f"/api/users/{w.user()[0]}", {"cameras": [CAMERA, "yard"]}),
    ("DELETE", "/api/users/{username}"): lambda w, c: (f"/api/users/{w.user()[0]}", None),
    ("DELETE", "/api/tokens/{token_id}"): lambda w, c: (f"/api/tokens/{w.token_id(w.user()[1], V)}", None),
}
IDS = {"name": CAMERA, "event_id": EVENT}


def request_for(world: World, caller: Caller, method: str, path: str) -> Request:
    make = REQUESTS.get((method, path))
    if make is not None:
        return make(world, caller)
    return path.format(**IDS), ({} if method in ("POST", "PATCH") else None)


def success(method: str, path: str, role: Role | None, mfa_roles: list[Role]) -> int:
    expected = SUCCESS.get((method, path), 200)
    if isinstance(expected, dict):
        return expected["mfa_role" if role in mfa_roles else "other"]
    return expected


def app_routes(app) -> set[tuple[str, str]]:
    """Every operation of the OpenAPI spec, plus the app's own routes kept out of it (spec, docs, index page)."""
    found = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    for route in app.routes:
        if isinstance(route, APIRoute):
            found |= {(m, route.path) for m in route.methods if m != "HEAD"}
    return found


def _shape(h: Harness, tmp: Path) -> None:
    """The things the calls name: an event with its snapshot, a live frame, metrics, the config file."""
    snapshot = h.settings.data_dir / "snapshots" / "e1.jpg"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_bytes(JPEG)
    with Session(h.ctx.engine) as session, session.begin():
        session.add(EventRow(id=EVENT, camera=CAMERA, label="person", track_id=1, start=1e9, end=1e9 + 3,
                             best_score=0.9, box=[1.0, 2.0, 30.0, 60.0], zones=[], rules=[], threat="none",
                             snapshot=str(snapshot), model_name="yolox-nano", model_sha256="ab" * 32))
    assert h.ctx.live is not None
    h.ctx.live.publish(CAMERA, Frame(np.zeros((120, 160, 3), np.uint8), 0, time.time()), [])
    h.ctx.extras["metrics"] = Metrics(None, h.ctx.bus)
    config = tmp / "trustcam.yaml"
    config.write_text(yaml.safe_dump(h.settings.model_dump(mode="json"), sort_keys=False))
    h.ctx.config_path = config


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, person_video: Path) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("roles")
    h = harness(tmp, person_video, host="127.0.0.1", port=free_port())
    _shape(h, tmp)
    with InProcessServer(h.ctx) as server:
        w = World(h, server)
        for role in Role:
            mfa = role in h.settings.server.mfa_required_for
            for via in ("session", "token"):  # one user each: their TOTP codes never compete
                name = f"{role.value}-{via}"
                secret = add_user(h, name, role, mfa=mfa)
                user = h.service.users.get(name)
                assert user is not None
                client = server.client()
                if via == "session":
                    headers = {"X-CSRF-Token": login(h, client, name, secret)}  # type: ignore[arg-type]
                else:
                    token, _ = h.service.credentials.create_token(user.id, role, "roles test", 1, 30)
                    headers = {"Authorization": f"Bearer {token}"}
                w.callers.append(Caller(f"{role.value}/{via}", role, client, headers, name, user.id, secret))
        w.callers.append(Caller("anonymous", None, server.client(), {}))
        try:
            yield w
        finally:
            for caller in w.callers:
                caller.client.close()


def _call(caller: Caller, method: str, path: str, body: object) -> tuple[int, str]:
    kwargs = {"json": body} if body is not None else {}
    if path.endswith("live.mjpeg"):  # endless: read the status line, then hang up
        with caller.client.stream(method, path, headers=caller.headers, **kwargs) as response:
            return response.status_code, response.headers.get("content-type", "")
    response = caller.client.request(method, path, headers=caller.headers, **kwargs)
    return response.status_code, response.text[:200]


def test_every_route_has_a_role_decision(world: World) -> None:
    routes = app_routes(world.h.client.app)
    assert not routes - set(EXPECTED), f"routes without a role decision in EXPECTED: {sorted(routes - set(EXPECTED))}"
    assert not set(EXPECTED) - routes, f"EXPECTED lists routes the app lacks: {sorted(set(EXPECTED) - routes)}"
    assert not set(REQUESTS) - set(EXPECTED) and not set(SUCCESS) - set(EXPECTED)


def test_matrix(world: World) -> None:
    problems = []
    mfa_roles = list(world.h.settings.server.mfa_required_for)
    order = sorted(EXPECTED, key=lambda k: (k == ("POST", "/api/auth/logout"), k))  # logout last: it ends sessions
    for method, path in order:
        allowed = EXPECTED[(method, path)]
        for caller in world.callers:
            url, body = request_for(world, caller, method, path)
            status, said = _call(caller, method, url, body)
            if allowed == PUBLIC:
                want = success(method, path, caller.role, mfa_roles)
            elif caller.role is None:
                want = 401
            elif caller.role in allowed:
                want = success(method, path, caller.role, mfa_roles)
            else:
                want = 403
            if status != want:
                problems.append(f"{method} {url} as {caller.name}: {status}, expected {want} ({said})")
    assert not problems, "\n".join(problems)


def test_denied_calls_changed_nothing(world: World) -> None:
    """A 403 is answered before the route runs: the targets of refused deletions and replays are all still there."""
    service = world.h.service
    operator = next(c for c in world.callers if c.name == "operator/token")
    name, user_id = world.user()
    token_id = world.token_id(user_id, V)
    letter = world.dead_letter()
    for method, url in (("DELETE", f"/api/users/{name}"), ("DELETE", f"/api/tokens/{token_id}"),
                        ("POST", f"/api/alerts/dead-letters/{letter}/replay")):
        assert _call(operator, method, url, None)[0] == 403
    assert service.users.get(name) is not None
    assert any(t.id == token_id and t.revoked is None for t in service.credentials.tokens(user_id))
    assert Outbox(world.h.ctx.engine).rows(row_id=letter)[0].state == "dead"
