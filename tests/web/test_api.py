"""The data API over real HTTPS (uvicorn in-process, real SQLite, real vault with real MP4 segments).

Events: filters, pagination, review and acknowledgement (with history), evidence export (a bundle that
verifies), snapshots from the encrypted vault; a viewer granted one camera sees nothing of the other (404).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from web_helpers import InProcessServer, bootstrap

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.storage.evidence import verify_bundle
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import EventRow
from trustcam.storage.vault import Vault
from trustcam.web.context import AppContext
from trustcam.web.routers.events import NO_EVENT

T0 = 1_700_000_000.0
CLI = [sys.executable, "-m", "trustcam.cli"]
JPEG = b"\xff\xd8\xff\xe0 a real snapshot would be here \xff\xd9"


def _event(i: int, camera: str, label: str, start: float, snapshot: str | None = None) -> EventRow:
    return EventRow(id=f"{i:032x}", camera=camera, label=label, track_id=i, start=start, end=start + 3.0,
                    best_score=0.5 + (i % 5) / 10, box=[10.0, 20.0, 110.0, 220.0], zones=[], rules=[], threat="none",
                    snapshot=snapshot, model_name="yolox-nano", model_sha256="ab" * 32,
                    seen_by="secondary" if i == 100 else None)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> Iterator[tuple[InProcessServer, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("api")
    saved = os.environ.pop(ENV_KEK, None)
    settings = parse_settings({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "vault": {"root": str(tmp / "vault"), "key_file": str(tmp / "keys" / "kek"),
                  "signing_key_file": str(tmp / "keys" / "signing"), "checkpoint_every": 2},
        "cameras": {"front": {"source": "rtsp://user:secret@10.0.0.5/stream"}, "back": {"source": str(car_video)}},
    })
    engine = open_database(settings.resolved_database_url)
    vault = Vault(settings.vault, engine)
    for i in range(3):  # three real 4.8 s segments of the car clip, cut without re-encoding
        clip = tmp / f"seg{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{4.8 * i}", "-i", str(car_video), "-t", "4.8",
                        "-c", "copy", str(clip)], check=True, timeout=60)
        vault.store_segment("back", clip.read_bytes(), T0 + 4.8 * i, T0 + 4.8 * (i + 1), labels=["car"])
    vault.close_camera("back")  # a clean stop signs the head: the last segment is covered, export may use it
    with Session(engine) as session, session.begin():
        for i in range(30):  # 20 on front (person/car alternating), 10 on back (car), one minute apart
            camera, label = ("front", "person" if i % 2 else "car") if i < 20 else ("back", "car")
            session.add(_event(i, camera, label, T0 + 60.0 * i))
        session.add(_event(100, "back", "car", T0 + 5.0, snapshot=vault.store_blob("back", JPEG)))
    ctx = AppContext(settings=settings, engine=engine, bus=Bus(), vault=vault)
    try:
        with InProcessServer(ctx) as server:
            tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "",
                               viewer_cameras=["front"])
            yield server, tokens
    finally:
        if saved is not None:
            os.environ[ENV_KEK] = saved


def test_events_filter_and_paginate(api):
    server, tokens = api
    with server.client(tokens["admin"]) as client:
        page = client.get("/api/events", params={"limit": 7}).json()
        assert page["total"] == 31 and len(page["events"]) == 7
        starts = [e["start"] for e in page["events"]]
        assert starts == sorted(starts, reverse=True)  # newest first
        ids = []
        for offset in range(0, 31, 7):
            ids += [e["id"] for e in client.get("/api/events", params={"limit": 7, "offset": offset}).json()["events"]]
        assert len(ids) == 31 == len(set(ids))  # pages neither overlap nor skip

        front_people = client.get("/api/events", params={"camera": "front", "label": "person"}).json()
        assert front_people["total"] == 10
        assert {(e["camera"], e["label"]) for e in front_people["events"]} == {("front", "person")}
        window = client.get("/api/events", params={"since": T0 + 60 * 5, "until": T0 + 60 * 8}).json()
        assert sorted(e["track_id"] for e in window["events"]) == [5, 6, 7]

        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"since": "yesterday"}, {"since": "inf"}):
            answer = client.get("/api/events", params=bad)
            assert answer.status_code == 422, bad
            assert answer.json()["detail"].startswith("invalid request: ")


def test_review_and_ack_are_stored_with_user_and_history(api):
    server, tokens = api
    event = f"{3:032x}"
    with server.client(tokens["operator"]) as client:
        assert client.post(f"/api/events/{event}/ack").json()["acknowledged"]["user"] == "operator"
        first = client.post(f"/api/events/{event}/review", json={"verdict": "true_positive"})
        assert first.status_code == 200, first.text
        second = client.post(f"/api/events/{event}/review", json={"verdict": "false_positive", "note": "a coat"})
        assert second.json()["review"] == {**second.json()["review"], "verdict": "false_positive", "note": "a coat",
                                           "user": "operator"}
        bad = client.post(f"/api/events/{event}/review", json={"verdict": "maybe"})
        assert bad.status_code == 422 and "verdict" in bad.json()["detail"]
        detail = client.get(f"/api/events/{event}").json()
        assert detail["review"]["verdict"] == "false_positive" and detail["acknowledged"]["user"] == "operator"
        assert detail["seen_by"] is None  # no second opinion ran on it
        assert [h.get("verdict") for h in detail["history"]] == [None, "true_positive", "false_positive"]
        reviewed = client.get("/api/events", params={"reviewed": "true"}).json()
        assert [e["id"] for e in reviewed["events"]] == [event]
        assert client.get("/api/events", params={"reviewed": "false"}).json()["total"] == 30
        assert client.post(f"/api/events/{'f' * 32}/ack").status_code == 404
    with server.client(tokens["admin"]) as admin:
        audit = admin.get("/api/audit", params={"action": "review_event"}).json()
        assert audit["total"] >= 2 and audit["entries"][0]["user"] == "operator"
        assert audit["entries"][0]["details"]["verdict"] == "false_positive"


def test_export_gives_a_bundle_that_verifies(api, tmp_path):
    server, tokens = api
    event = f"{100:032x}"
    with server.client(tokens["operator"]) as client:
        assert client.get(f"/api/events/{event}").json()["seen_by"] == "secondary"  # only the second opinion saw it
        answer = client.post(f"/api/events/{event}/export")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/zip"
        bundle = tmp_path / "bundle.zip"
        bundle.write_bytes(answer.content)
        report = verify_bundle(bundle)
        assert report.ok, report.problems
        with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
            assert archive.read("snapshot.jpg") == JPEG
        no_footage = client.post(f"/api/events/{5:032x}/export")  # front never recorded anything
        assert no_footage.status_code == 409 and "no recorded footage" in no_footage.json()["detail"]
        snapshot = client.get(f"/api/events/{event}/snapshot.jpg")
        assert snapshot.status_code == 200 and snapshot.content == JPEG  # decrypted from the vault
    with server.client(tokens["admin"]) as admin:
        actions = [e["action"] for e in admin.get("/api/audit", params={"limit": 50}).json()["entries"]]
        assert "export_event" in actions and "view_snapshot" in actions
    with server.client(tokens["viewer"]) as viewer:
        assert viewer.post(f"/api/events/{event}/export").status_code == 403  # viewers may not export


def test_viewer_sees_only_granted_cameras(api):
    server, tokens = api
    back_event = f"{25:032x}"
    with server.client(tokens["viewer"]) as client:
        page = client.get("/api/events", params={"limit": 500}).json()
        assert page["total"] == 20 and {e["camera"] for e in page["events"]} == {"front"}
        for path in (f"/api/events/{back_event}", f"/api/events/{back_event}/snapshot.jpg"):
            answer = client.get(path)
            assert (answer.status_code, answer.json()) == (404, {"detail": NO_EVENT}), path
            assert answer.content == client.get(path.replace(back_event, "f" * 32)).content  # as if it did not exist
        for path in ("/api/cameras/back/snapshot.jpg", "/api/cameras/back/live.mjpeg"):
            answer = client.get(path)
            assert (answer.status_code, answer.json()) == (404, {"detail": "no camera named 'back'"}), path
        assert client.get("/api/events", params={"camera": "back"}).status_code == 404
        assert [c["name"] for c in client.get("/api/cameras").json()] == ["front"]
        assert client.get(f"/api/events/{5:032x}").status_code == 200
        assert client.post(f"/api/events/{5:032x}/ack").status_code == 403  # viewers do not acknowledge
        assert client.get("/api/config").status_code == 403


def test_camera_not_granted_answers_like_a_missing_one(api):
    """A viewer cannot tell a camera it may not see from one that does not exist (only the name it sent differs)."""
    server, tokens = api
    with server.client(tokens["viewer"]) as client:
        for path in ("/api/cameras/{}/snapshot.jpg", "/api/cameras/{}/live.mjpeg", "/api/events?camera={}"):
            hidden, missing = client.get(path.format("back")), client.get(path.format("nosuch"))
            assert hidden.status_code == missing.status_code == 404
            assert hidden.json()["detail"].replace("back", "<name>") == missing.json()["detail"].replace("nosuch",
                                                                                                      "<name>")


def test_cameras_and_alerts(api):
    server, tokens = api
    with server.client(tokens["admin"]) as client:
        cameras = {c["name"]: c for c in client.get("/api/cameras").json()}
        assert set(cameras) == {"front", "back"}
        assert cameras["front"]["state"] == "not running" and cameras["front"]["alerts"] == []
        assert client.get("/api/cameras/front/snapshot.jpg").status_code == 503  # no frame yet: says so
        assert client.get("/api/alerts").json() == {"active": [], "recent": []}


def test_unexpected_error_is_json_with_a_reference_and_logged(api, caplog):
    server, tokens = api
    server.ctx.extras["metrics"] = object()  # a broken collaborator: no render()
    try:
        with caplog.at_level(logging.ERROR, logger="trustcam.web"), server.client(tokens["admin"]) as client:
            answer = client.get("/metrics")
    finally:
        del server.ctx.extras["metrics"]
    assert answer.status_code == 500
    detail = answer.json()["detail"]
    assert detail.startswith("internal error; see the server log (reference ") and "Traceback" not in answer.text
    reference = detail.rsplit(" ", 1)[1].rstrip(")")
    assert any(reference in record.getMessage() for record in caplog.records)
    with server.client(tokens["admin"]) as client:
        missing = client.get("/metrics")
    assert missing.status_code == 503 and "metrics" in missing.json()["detail"]


def test_review_stats_and_export_cli(api, tmp_path):
    server, tokens = api
    with server.client(tokens["operator"]) as client:
        for i, verdict in ((20, "true_positive"), (21, "false_positive"), (21, "true_positive"),
                           (22, "false_positive")):
            assert client.post(f"/api/events/{i:032x}/review", json={"verdict": verdict}).status_code == 200
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {server.ctx.settings.data_dir}\n")
    stats = subprocess.run([*CLI, "review", "stats", "--config", str(config)], capture_output=True, text=True,
                           timeout=60)
    assert stats.returncode == 0, stats.stderr
    back = next(line for line in stats.stdout.splitlines() if line.startswith("back "))
    # the latest verdict counts (21 changed to TP): 2 TP, 1 FP → 0.667, Wilson 95% [0.208, 0.939]
    assert back.split()[1:] == ["car", f"yolox-nano@{'ab' * 6}", "2", "1", "0.667", "[0.208,", "0.939]"]
    out = tmp_path / "labels.json"
    export = subprocess.run([*CLI, "review", "export", "--config", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    labels = {label["event"]: label for label in json.loads(out.read_text())["labels"]}
    assert labels[f"{21:032x}"]["verdict"] == "true_positive"
    assert labels[f"{22:032x}"] == {**labels[f"{22:032x}"], "camera": "back", "label": "car", "verdict":
                                    "false_positive", "box": [10.0, 20.0, 110.0, 220.0], "reviewed_by": "operator",
                                    "model": {"name": "yolox-nano", "sha256": "ab" * 32}}
