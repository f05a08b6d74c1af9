"""Every route of the app × every role (+ anonymous), with real users, sessions and API tokens, against docs/api.md.

The expected matrix is an explicit table keyed by (method, path). A route added to the app without a line here
fails the test, and so does a line for a route that no longer exists: every route gets a deliberate role decision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from authkit import add_user, harness, login

from trustcam.security.roles import Role

PUBLIC = "public"
ANY = frozenset(Role)
V, OP, A, AU = Role.viewer, Role.operator, Role.admin, Role.auditor
SEE = frozenset({V, OP, A})

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
    ("GET", "/api/cameras/{name}/live.mjpeg"): SEE,
    ("GET", "/api/cameras/{name}/snapshot.jpg"): SEE,
    ("GET", "/api/events"): SEE,
    ("GET", "/api/events/{event_id}"): SEE,
    ("GET", "/api/events/{event_id}/snapshot.jpg"): SEE,
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
}

# Path parameters: real cameras where the answer is finite; 'nosuch' for the endless live stream (an allowed role
# then gets 404, a denied one 401/403 first, which is what is checked); ids that do not exist for changes.
PARAMS = {"name": "office", "event_id": "nosuch", "token_id": "0123456789abcdef", "username": "nobody",
          "row_id": 999999}
LIVE_PARAMS = {**PARAMS, "name": "nosuch"}


def app_routes(app) -> set[tuple[str, str]]:
    """Every operation of the OpenAPI spec, plus the app's own routes kept out of it (spec, docs, index page)."""
    found = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    for route in app.routes:
        if isinstance(route, APIRoute):
            found |= {(m, route.path) for m in route.methods if m != "HEAD"}
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory, person_video):
    tmp = tmp_path_factory.mktemp("roles")
    h = harness(tmp, person_video)
    callers = {}
    for role in Role:
        name = f"{role.value}-user"
        secret = add_user(h, name, role, mfa=role in h.settings.server.mfa_required_for)
        session = h.new_client()
        csrf = login(h, session, name, secret)
        token = session.post("/api/me/tokens", json={"name": "roles test", "days": 1},
                             headers={"X-CSRF-Token": csrf}).json()["token"]
        callers[f"{role.value}/session"] = (role, session, {"X-CSRF-Token": csrf})
        callers[f"{role.value}/token"] = (role, h.new_client(), {"Authorization": f"Bearer {token}"})
    callers["anonymous"] = (None, h.new_client(), {})
    return h, callers


def test_every_route_has_a_role_decision(world):
    h, _ = world
    routes = app_routes(h.client.app)
    assert not routes - set(EXPECTED), f"routes without a role decision in EXPECTED: {sorted(routes - set(EXPECTED))}"
    assert not set(EXPECTED) - routes, f"EXPECTED lists routes the app lacks: {sorted(set(EXPECTED) - routes)}"


def test_matrix(world):
    _, callers = world
    problems = []
    # logout last: it ends the session used for the rest
    order = sorted(EXPECTED, key=lambda k: (k == ("POST", "/api/auth/logout"), k))
    for method, path in order:
        allowed = EXPECTED[(method, path)]
        url = path.format(**(LIVE_PARAMS if path.endswith("live.mjpeg") else PARAMS))
        for who, (role, client, headers) in callers.items():
            kwargs = {"json": {}} if method in ("POST", "PATCH") else {}
            status = client.request(method, url, headers=headers, **kwargs).status_code
            if allowed == PUBLIC:
                ok = status not in (401, 403)
            elif role is None:
                ok = status == 401
            elif role in allowed:
                ok = status not in (401, 403)
            else:
                ok = status in (401, 403, 404)
            if not ok:
                problems.append(f"{method} {path} as {who}: {status} (allowed: "
                                f"{allowed if allowed == PUBLIC else sorted(r.value for r in allowed)})")
    assert not problems, "\n".join(problems)

