"""GET /api/events after its speed-up (prepared queries per filter shape, JSON columns decoded once per page, review
states read on the page's connection, the answer serialised once): every page is exactly what the one-event route
says about each of its events, filters select what they say, and the prepared queries, shared by all callers,
never carry one caller's cameras into another's answer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from authkit import PASSWORD, Harness, harness

from trustcam.security.roles import Role
from trustcam.storage.reviews import Reviews, Verdict
from trustcam.storage.schema import EventRow

T0 = 1_700_000_000.0
CAMERAS = ("office", "yard")


def _row(i: int) -> EventRow:
    return EventRow(id=f"{i:032x}", camera=CAMERAS[i % 2], label=("person", "car")[i % 3 == 0], track_id=i,
                    start=T0 + i * 1.25 + 1e-6, end=T0 + i * 1.25 + 3.5, best_score=0.5 + i / 1000,
                    box=[1.5, 2.0, 30.25, 60.0 + i], zones=["door", "é"] if i % 5 else [],
                    rules=[{"name": "loiter", "seconds": i}] if i % 4 == 0 else [],
                    threat=("none", "high")[i % 7 == 0], snapshot=None, model_name="yolox-nano",
                    model_sha256="ab" * 32, held=int(i % 11 == 0), seen_by=(None, "both")[i % 2],
                    sub_label="alice" if i % 6 == 0 else None, face_distance=0.31 if i % 6 == 0 else None,
                    face_margin=0.12 if i % 6 == 0 else None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Harness, dict[str, dict[str, str]]]:
    h = harness(tmp_path_factory.mktemp("events_list"), Path("clip.mp4"))  # cameras office and yard
    with Session(h.ctx.engine) as session, session.begin():
        session.add_all(_row(i) for i in range(120))
    reviews = Reviews(h.ctx.engine)
    for i in range(0, 120, 3):
        reviews.acknowledge(f"{i:032x}", "op", 1)
        if i % 6 == 0:
            reviews.review(f"{i:032x}", Verdict.true_positive, "op", 1, 'first "thought"')
            reviews.review(f"{i:032x}", Verdict.false_positive, "lead", 2)  # the latest verdict is current
    headers = {}
    for name, cameras, biometrics in (("all", None, True), ("office", ["office"], False), ("yard", ["yard"], False),
                                      ("none", [], False)):
        user = h.service.users.create(f"viewer-{name}", PASSWORD, Role.viewer, cameras, biometrics=biometrics)
        token, _ = h.service.credentials.create_token(user.id, Role.viewer, "t", 1, 30)
        headers[name] = {"Authorization": f"Bearer {token}"}
    return h, headers


def _page(h: Harness, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = h.client.get("/api/events", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return answer.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("who", ["all", "office"])
def test_every_listed_event_is_what_the_event_route_says(world, who: str) -> None:
    """Same values and key order as GET /api/events/{id} (less its history), reviews and identities included."""
    h, headers = world
    listed = _page(h, headers[who], limit=500)["events"]
    assert len(listed) == (120 if who == "all" else 60)
    for event in listed:
        one = h.client.get(f"/api/events/{event['id']}", headers=headers[who]).json()
        del one["history"]
        assert list(event.items()) == list(one.items())
    with_identity = [e for e in listed if e["sub_label"] is not None]
    assert bool(with_identity) == (who == "all")  # biometrics permission only
    verdicts = [e["review"]["verdict"] for e in listed if e["review"]]
    assert verdicts and set(verdicts) == {"false_positive"}


def test_filters_select_what_they_say(world) -> None:
    h, headers = world
    rows = [_row(i) for i in range(120)]
    newest = sorted(rows, key=lambda r: (-r.start, r.id))
    reviewed = {f"{i:032x}" for i in range(0, 120, 6)}
    cases: list[tuple[dict[str, Any], list[EventRow]]] = [
        ({}, newest),
        ({"camera": "yard", "label": "car"}, [r for r in newest if r.camera == "yard" and r.label == "car"]),
        ({"since": T0 + 20, "until": T0 + 60}, [r for r in newest if T0 + 20 <= r.start < T0 + 60]),
        ({"reviewed": True}, [r for r in newest if r.id in reviewed]),
        ({"reviewed": False, "label": "person"}, [r for r in newest if r.id not in reviewed and r.label == "person"]),
    ]
    for params, expected in cases:
        for limit, offset in ((50, 0), (7, 3), (500, 0), (10, 200)):
            page = _page(h, headers["all"], limit=limit, offset=offset, **params)
            assert page["total"] == len(expected), params
            assert [e["id"] for e in page["events"]] == [r.id for r in expected[offset:offset + limit]], params


def test_shared_prepared_queries_never_carry_one_callers_cameras_into_anothers(world) -> None:
    """The same query shape (limited to granted cameras) for three callers in turn, twice: each sees only theirs,
    and a caller granted no camera sees nothing at all."""
    h, headers = world
    for _ in range(2):
        for who, cameras in (("office", {"office"}), ("yard", {"yard"}), ("none", set()), ("all", set(CAMERAS))):
            page = _page(h, headers[who], limit=500)
            assert {e["camera"] for e in page["events"]} == cameras
            assert page["total"] == 60 * len(cameras)
    for who in ("office", "none"):
        probe = h.client.get("/api/events", params={"camera": "yard"}, headers=headers[who])
        assert probe.status_code == 404 and probe.json() == {"detail": "no camera named 'yard'"}
