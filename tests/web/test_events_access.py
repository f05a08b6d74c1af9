"""An event on a camera the caller may not see answers exactly like an event that does not exist, on every event
route: same status, same body bytes, same headers. Otherwise a viewer could probe ids (and learn which cameras
exist and when they saw something) from the difference."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from authkit import Harness, add_user, harness

from trustcam.security.roles import Role
from trustcam.storage.schema import EventRow

GRANTED, HIDDEN = "office", "yard"
MISSING_ID = "f" * 32
T0 = 1_700_000_000.0
# every route that takes an event id, with a body that passes validation (so the id check is what answers)
ROUTES = [("GET", "/api/events/{id}", None), ("GET", "/api/events/{id}/snapshot.jpg", None),
          ("GET", "/api/events/{id}/clip.mp4", None),
          ("POST", "/api/events/{id}/ack", None),
          ("POST", "/api/events/{id}/review", {"verdict": "true_positive", "note": "probe"}),
          ("POST", "/api/events/{id}/export", None)]


def _event(i: int, camera: str, snapshot: str) -> EventRow:
    return EventRow(id=f"{i:032x}", camera=camera, label="person", track_id=i, start=T0 + i, end=T0 + i + 3.0,
                    best_score=0.9, box=[1.0, 2.0, 30.0, 60.0], zones=[], rules=[], threat="none", snapshot=snapshot,
                    model_name="yolox-nano", model_sha256="ab" * 32)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, person_video: Path) -> tuple[Harness, dict[str, dict[str, str]]]:
    h = harness(tmp_path_factory.mktemp("events_access"), person_video)
    snapshots = h.settings.data_dir / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    with Session(h.ctx.engine) as session, session.begin():
        for i, camera in ((1, GRANTED), (2, HIDDEN)):
            jpeg = snapshots / f"{i}.jpg"
            jpeg.write_bytes(b"\xff\xd8\xff\xe0 snapshot " + camera.encode() + b" \xff\xd9")
            session.add(_event(i, camera, str(jpeg)))
    headers = {}
    for role in (Role.viewer, Role.operator):  # both granted only GRANTED
        user = h.service.users.create(f"{role.value}-one-camera", "correct horse battery staple 42", role, [GRANTED])
        token, _ = h.service.credentials.create_token(user.id, role, "t", 1, 30)
        headers[role.value] = {"Authorization": f"Bearer {token}"}
    add_user(h, "boss", Role.admin)  # an admin exists, as in every real install
    return h, headers


def _answer(h: Harness, method: str, path: str, body: object, headers: dict[str, str]) -> tuple[int, bytes, list]:
    response = h.client.request(method, path, headers=headers, **({"json": body} if body is not None else {}))
    return response.status_code, response.content, sorted(response.headers.multi_items())


@pytest.mark.parametrize("role", ["viewer", "operator"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_hidden_event_answers_like_a_missing_one(world, role: str, method: str, path: str, body: object) -> None:
    h, headers = world
    hidden = _answer(h, method, path.format(id=f"{2:032x}"), body, headers[role])
    missing = _answer(h, method, path.format(id=MISSING_ID), body, headers[role])
    if hidden[0] == 403:  # the role may not use this route at all (viewer: ack, review, export): no id check
        assert missing == hidden
        return
    assert hidden[0] == 404, hidden
    assert hidden == missing  # status, body bytes, headers: byte for byte
    assert HIDDEN.encode() not in hidden[1] and f"{2:032x}".encode() not in hidden[1]


def test_granted_event_is_served_and_hidden_one_untouched(world) -> None:
    """The control: the same callers reach the granted camera's event, so the 404 above is the camera check; and
    the probes above changed nothing about the hidden event."""
    h, headers = world
    granted = f"{1:032x}"
    assert h.client.get(f"/api/events/{granted}", headers=headers["viewer"]).status_code == 200
    snapshot = h.client.get(f"/api/events/{granted}/snapshot.jpg", headers=headers["viewer"])
    assert snapshot.status_code == 200 and b"office" in snapshot.content
    acked = h.client.post(f"/api/events/{granted}/ack", headers=headers["operator"])
    assert acked.status_code == 200 and acked.json()["acknowledged"]["user"] == "operator-one-camera"
    admin_token, _ = h.service.credentials.create_token(h.service.users.get("boss").id, Role.admin, "t", 1, 30)
    hidden = h.client.get(f"/api/events/{2:032x}", headers={"Authorization": f"Bearer {admin_token}"}).json()
    assert hidden["acknowledged"] is None and hidden["review"] is None and hidden["history"] == []
