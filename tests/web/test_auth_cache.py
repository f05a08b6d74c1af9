"""The principal cache (trustcam.web.auth.PrincipalCache): most requests authenticate without a database query or a
thread hop, yet nothing is refused or allowed later than without it. Any commit to the database, from this process
(the API) or another (the CLI, a row edited by hand), retires every cached principal before the next request.

The entries' time limit is raised to an hour in these tests, so what refuses a credential below is the change
detection and not the entry ageing out."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from authkit import PASSWORD, Harness, add_user, harness, login

from trustcam.security.access import AccessControl
from trustcam.security.roles import Role
from trustcam.storage.database import open_database
from trustcam.storage.schema import EventRow
from trustcam.web.auth import PrincipalCache

T0 = 1_700_000_000.0


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    h = harness(tmp_path, Path("clip.mp4"))  # cameras office and yard (never opened here)
    with Session(h.ctx.engine) as session, session.begin():
        for i, camera in enumerate(("office", "yard")):
            session.add(EventRow(id=f"{i:032x}", camera=camera, label="person", track_id=i, start=T0 + i,
                                 end=T0 + i + 1, best_score=0.9, box=[1.0, 2.0, 3.0, 4.0], zones=[], rules=[],
                                 threat="none", snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32))
    return h


def _cache(h: Harness) -> PrincipalCache:
    cache = h.ctx.extras.setdefault("principal_cache", PrincipalCache.for_engine(h.ctx.engine))
    cache.ttl_s = 3600.0  # only change detection may retire an entry in these tests
    return cache  # type: ignore[no-any-return]


def _warm(h: Harness, get: Callable[[], Any]) -> None:
    """Requests until one is answered from the cache (the first lookup writes last_used, which is a change)."""
    _cache(h)
    queries = _credential_queries(h)
    for _ in range(3):
        queries.clear()
        assert get().status_code == 200
        if not queries:
            return
    raise AssertionError(f"never answered from the cache: {queries}")


def _viewer_token(h: Harness, cameras: list[str] | None = None) -> tuple[dict[str, str], str]:
    user = h.service.users.create("vera", PASSWORD, Role.viewer, cameras)
    token, info = h.service.credentials.create_token(user.id, Role.viewer, "dashboard", 1, 30)
    return {"Authorization": f"Bearer {token}"}, info.id


def _cameras(h: Harness, headers: dict[str, str]) -> set[str]:
    answer = h.client.get("/api/events", headers=headers)
    assert answer.status_code == 200, answer.text
    return {e["camera"] for e in answer.json()["events"]}


def _credential_queries(h: Harness) -> list[str]:
    """Every statement from now on that reads or writes API tokens or sessions (what a lookup starts with)."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "api_tokens" in statement or "auth_sessions" in statement:
            seen.append(statement)

    event.listen(h.ctx.engine, "before_cursor_execute", record)
    return seen


def test_a_cached_token_is_not_looked_up_again(h: Harness) -> None:
    """The control for the tests below: once warm, requests are answered from the cache (no credential query)."""
    headers, _ = _viewer_token(h)
    assert _cameras(h, headers) == {"office", "yard"}
    _warm(h, lambda: h.client.get("/api/events", headers=headers))
    queries = _credential_queries(h)
    assert _cameras(h, headers) == {"office", "yard"}
    assert h.client.get("/api/me", headers=headers).status_code == 200
    assert queries == []


def test_a_token_revoked_through_the_api_is_refused_at_once(h: Harness) -> None:
    headers, token_id = _viewer_token(h)
    _warm(h, lambda: h.client.get("/api/events", headers=headers))
    assert h.client.delete(f"/api/me/tokens/{token_id}", headers=headers).status_code == 204
    refused = h.client.get("/api/events", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_a_change_by_another_process_is_seen_at_once(h: Harness) -> None:
    """The CLI (``trustcam users disable``) works on the database with its own engine and its own AccessControl:
    nothing in the server's process is told, and yet the next request is refused."""
    headers, _ = _viewer_token(h)
    _warm(h, lambda: h.client.get("/api/events", headers=headers))
    cli = AccessControl(h.settings, open_database(h.settings.resolved_database_url))
    cli.users.update(cli.users.need("vera"), disabled=True)
    assert h.client.get("/api/events", headers=headers).status_code == 401


def test_narrowed_camera_grants_apply_to_the_next_request(h: Harness) -> None:
    """A cached principal never shows events of a camera taken away from its user (here by another process)."""
    headers, _ = _viewer_token(h)
    assert _cameras(h, headers) == {"office", "yard"}
    _warm(h, lambda: h.client.get("/api/events", headers=headers))
    cli = AccessControl(h.settings, open_database(h.settings.resolved_database_url))
    cli.users.update(cli.users.need("vera"), cameras=["office"])
    assert _cameras(h, headers) == {"office"}
    assert h.client.get("/api/events", params={"camera": "yard"}, headers=headers).status_code == 404


def test_a_row_edited_by_hand_is_seen_at_once(h: Harness) -> None:
    headers, token_id = _viewer_token(h)
    _warm(h, lambda: h.client.get("/api/events", headers=headers))
    with sqlite3.connect(h.settings.data_dir / "trustcam.db") as db:
        db.execute("UPDATE api_tokens SET expires=? WHERE id=?", (time.time() - 1, token_id))
    assert h.client.get("/api/events", headers=headers).status_code == 401


def test_a_logged_out_session_is_refused_at_once(h: Harness) -> None:
    add_user(h, "olga", Role.viewer, mfa=False)
    browser = h.new_client()
    csrf = login(h, browser, "olga", None)
    _warm(h, lambda: browser.get("/api/events"))
    cookie = browser.cookies.get("trustcam_session")
    assert browser.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code in (200, 204)
    replay = h.new_client()
    replay.cookies.set("trustcam_session", cookie)
    assert replay.get("/api/events").status_code == 401


def test_csrf_is_still_checked_on_every_cached_request(h: Harness) -> None:
    add_user(h, "olga", Role.viewer, mfa=False)
    browser = h.new_client()
    csrf = login(h, browser, "olga", None)
    _warm(h, lambda: browser.get("/api/me"))
    assert browser.post("/api/auth/logout").status_code == 403  # no X-CSRF-Token: refused, cache or not
    assert browser.post("/api/auth/logout", headers={"X-CSRF-Token": csrf + "0"}).status_code == 403


def test_last_used_is_still_written_for_a_busy_token(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token used without pause is looked up again once its entry is a second old, so ``last_used`` keeps
    moving (at most 5 s behind, as before the cache); requests in between write nothing."""
    headers, token_id = _viewer_token(h)

    def last_used() -> float:
        with sqlite3.connect(h.settings.data_dir / "trustcam.db") as db:
            return float(db.execute("SELECT last_used FROM api_tokens WHERE id=?", (token_id,)).fetchone()[0])

    assert h.client.get("/api/me", headers=headers).status_code == 200
    first = last_used()
    assert abs(first - time.time()) < 5
    assert h.client.get("/api/me", headers=headers).status_code == 200  # cached: no write
    assert last_used() == first
    later = time.time() + 30  # half a minute of steady use later
    monkeypatch.setattr(time, "time", lambda: later)
    assert h.client.get("/api/me", headers=headers).status_code == 200
    assert last_used() == later


def test_postgresql_and_in_memory_databases_are_never_cached() -> None:
    """Only SQLite tells cheaply that nothing changed; elsewhere every request is looked up, as before."""
    for url in ("postgresql+psycopg://trustcam@127.0.0.1:1/trustcam", "sqlite://"):
        assert PrincipalCache.for_engine(create_engine(url)).version is None
