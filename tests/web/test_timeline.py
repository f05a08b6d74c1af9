"""Recordings timeline and range export over real HTTPS (uvicorn in-process, real SQLite, a real vault holding real
ffmpeg-cut MP4 segments, real events): spans, gaps with their reason, events; a camera not granted answers like
one that does not exist; the exported bundle verifies and holds the range's segments only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pytest import approx
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_helpers import PASSWORD, InProcessServer, bootstrap, session, token_for

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.storage.evidence import verify_bundle
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.retention import _eviction_reason
from trustcam.storage.schema import EventRow, SegmentRow
from trustcam.storage.vault import Vault, public_key_fingerprint
from trustcam.web.context import AppContext

T0 = 1_700_000_000.0
SEG = 4.8  # the car clip's keyframe interval
# seq 1-3 back to back from T0, 20 s not recorded, seq 4-5; then seq 2 shredded by hand, seq 5 evicted
STARTS = [T0, T0 + SEG, T0 + 2 * SEG, T0 + 3 * SEG + 20.0, T0 + 4 * SEG + 20.0]
SHRED_REASON = "shredded by hand: privacy request"


def _event(i: int, camera: str, label: str, start: float) -> EventRow:
    return EventRow(id=f"{i:032x}", camera=camera, label=label, track_id=i, start=start, end=start + 2.0,
                    best_score=0.8, box=[1.0, 2.0, 3.0, 4.0], zones=[], rules=[], threat="low" if i % 2 else "none",
                    snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, car_video: Path
         ) -> Iterator[tuple[InProcessServer, dict[str, str], Vault]]:
    tmp = tmp_path_factory.mktemp("timeline")
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
    for i, start in enumerate(STARTS):  # real segments of the car clip, cut without re-encoding
        clip = tmp / f"seg{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{SEG * (i % 4)}", "-i", str(car_video), "-t",
                        f"{SEG}", "-c", "copy", str(clip)], check=True, timeout=60)
        vault.store_segment("back", clip.read_bytes(), start, start + SEG, labels=["car"])
    vault.close_camera("back")
    with Session(engine) as db:
        ids = {row.seq: row.id for row in db.scalars(select(SegmentRow))}
    vault.shred(ids[2], SHRED_REASON)
    vault.shred(ids[5], _eviction_reason(settings.vault.retention, ()))  # the text disk-space eviction writes
    with Session(engine) as db, db.begin():
        db.add(_event(1, "back", "car", T0 + 6.0))
        db.add(_event(2, "back", "person", T0 + 36.0))
        db.add(_event(3, "back", "car", T0 + 5000.0))  # outside the range asked for
        db.add(_event(4, "front", "person", T0 + 6.0))  # another camera
    ctx = AppContext(settings=settings, engine=engine, bus=Bus(), vault=vault)
    try:
        with InProcessServer(ctx) as server:
            tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "",
                               viewer_cameras=["front"])
            yield server, tokens, vault
    finally:
        if saved is not None:
            os.environ[ENV_KEK] = saved


def test_timeline_spans_gaps_and_events(site):
    server, tokens, _ = site
    with server.client(tokens["admin"]) as client:
        answer = client.get("/api/cameras/back/timeline", params={"start": T0 - 10.0, "end": T0 + 60.0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["camera"], body["start"], body["end"]) == ("back", T0 - 10.0, T0 + 60.0)
    assert [s["seq"] for s in body["segments"]] == [1, 3, 4]  # seq 2 and 5 are deleted
    assert [(s["start"], s["end"]) for s in body["spans"]] == [
        (approx(T0), approx(T0 + SEG)), (approx(STARTS[2]), approx(STARTS[2] + SEG)),
        (approx(STARTS[3]), approx(STARTS[3] + SEG))]
    gaps = [(g["start"], g["end"], g["reason"]) for g in body["gaps"]]
    assert gaps == [
        (approx(T0 - 10.0), approx(T0), "not recorded"),
        (approx(STARTS[1]), approx(STARTS[1] + SEG), "shredded"),
        (approx(STARTS[2] + SEG), approx(STARTS[3]), "not recorded"),
        (approx(STARTS[4]), approx(STARTS[4] + SEG), "evicted"),
        (approx(STARTS[4] + SEG), approx(T0 + 60.0), "not recorded"),
    ]
    assert body["gaps"][1]["detail"] == SHRED_REASON and body["gaps"][3]["detail"].startswith("evicted for disk")
    assert [(e["id"], e["label"], e["threat"]) for e in body["events"]] == [
        (f"{1:032x}", "car", "low"), (f"{2:032x}", "person", "none")]
    assert body["events_truncated"] is False and body["alerts"] == []


def test_timeline_accepts_iso_times_and_bounds_the_range(site):
    server, tokens, _ = site
    with server.client(tokens["viewer"]) as client:
        iso = client.get("/api/cameras/front/timeline", params={"start": "2023-11-14T22:13:20",  # no zone: UTC
                                                                "end": "2023-11-15T00:13:20+01:00"})
        assert iso.status_code == 200, iso.text
        assert (iso.json()["start"], iso.json()["end"]) == (T0, T0 + 3600)
        week = client.get("/api/cameras/front/timeline", params={"start": T0, "end": T0 + 7 * 86400})
        assert week.status_code == 200 and week.json()["gaps"] == [
            {"start": T0, "end": T0 + 7 * 86400, "reason": "not recorded", "detail": None}]
        assert [e["id"] for e in week.json()["events"]] == [f"{4:032x}"]
        for params, expected in (({"start": T0, "end": T0 + 7 * 86400 + 1}, "range too long"),
                                 ({"start": T0 + 10, "end": T0}, "end must be after start"),
                                 ({"start": T0, "end": T0}, "end must be after start"),
                                 ({"start": "last night"}, "invalid request")):
            answer = client.get("/api/cameras/front/timeline", params=params)
            assert answer.status_code == 422 and expected in answer.json()["detail"], (params, answer.text)


def _restricted_operator(server: InProcessServer, tokens: dict[str, str]) -> str:
    """An operator granted camera 'front' only (created through the users API), and its API token."""
    with server.client(tokens["admin"]) as admin:
        created = admin.post("/api/users", json={"username": "op-front", "password": PASSWORD, "role": "operator",
                                                 "cameras": ["front"]})
    assert created.status_code == 201, created.text
    client, user_csrf = session(server.url, server.verify, "op-front")
    try:
        return token_for(client, user_csrf, "tests", "op-front")
    finally:
        client.close()


def _same_answer(client: httpx.Client, method: str, path: str, params: dict[str, float]) -> None:
    hidden = client.request(method, path.format("back"), params=params)
    missing = client.request(method, path.format("nosuch"), params=params)
    assert hidden.status_code == missing.status_code, (hidden.text, missing.text)
    assert hidden.content.replace(b"back", b"<name>") == missing.content.replace(b"nosuch", b"<name>")
    assert {k: v for k, v in hidden.headers.items() if k not in ("date", "content-length")} == \
        {k: v for k, v in missing.headers.items() if k not in ("date", "content-length")}


def test_camera_not_granted_answers_like_a_missing_one(site):
    server, tokens, _ = site
    params = {"start": T0, "end": T0 + 60.0}
    with server.client(tokens["viewer"]) as viewer:
        assert viewer.get("/api/cameras/back/timeline", params=params).status_code == 404
        _same_answer(viewer, "GET", "/api/cameras/{}/timeline", params)
        _same_answer(viewer, "POST", "/api/cameras/{}/export", params)  # viewers never export: 403 for both
        assert viewer.post("/api/cameras/front/export", params=params).status_code == 403
    with server.client(_restricted_operator(server, tokens)) as operator:
        assert operator.post("/api/cameras/back/export", params=params).status_code == 404
        _same_answer(operator, "POST", "/api/cameras/{}/export", params)
        _same_answer(operator, "GET", "/api/cameras/{}/timeline", params)


def test_range_export_verifies_and_holds_only_the_range(site, tmp_path):
    server, tokens, vault = site
    start, end = STARTS[2] + 1.0, STARTS[3] + 1.0  # seq 3 and seq 4, across the unrecorded stretch
    with server.client(tokens["operator"]) as client:
        answer = client.post("/api/cameras/back/export", params={"start": start, "end": end})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/zip"
        assert answer.headers["content-disposition"].startswith('attachment; filename="back-')
        too_long = client.post("/api/cameras/back/export", params={"start": T0, "end": T0 + 86401})
        assert too_long.status_code == 422 and "range too long" in too_long.json()["detail"]
        nothing = client.post("/api/cameras/back/export", params={"start": T0 + 9000, "end": T0 + 9100})
        assert nothing.status_code == 409 and "no recorded footage of camera back" in nothing.json()["detail"]
    report = verify_bundle(answer.content, expected_fingerprint=public_key_fingerprint(vault.public_key))
    assert report.ok, report.problems
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        clips = {name: archive.read(name) for name in archive.namelist() if name.startswith("clip/segment-")}
    assert manifest["export"] == "range" and manifest["range"]["start"] == start and "event" not in manifest
    assert [s["seq"] for s in manifest["segments"]] == [3, 4]
    rows = {row.seq: row for row in vault.segments_between("back", T0 - 1, T0 + 100)}
    assert clips == {f"clip/segment-{seq:06d}.mp4": vault.read_segment(rows[seq]) for seq in (3, 4)}
    assert not list(Path(server.ctx.settings.data_dir).rglob("*.zip"))  # streamed from memory, never on disk
    with server.client(tokens["admin"]) as admin:
        entries = admin.get("/api/audit", params={"action": "export_range"}).json()["entries"]
    outcomes = {(e["user"], e["outcome"]) for e in entries}
    assert ("operator", "ok") in outcomes and ("operator", "failed") in outcomes
    ok = next(e for e in entries if e["outcome"] == "ok")
    assert ok["details"]["camera"] == "back" and ok["details"]["start"] == start and ok["details"]["size"] > 0


def test_timeline_view_in_a_browser(site):
    """The SPA view in real Chromium (UTC): spans, hatched gaps with their reason, event markers leading to the
    event; no script error and no CSP violation (styles are set through the CSSOM)."""
    from playwright.sync_api import sync_playwright

    server, tokens, _ = site
    with server.client(tokens["admin"]) as admin:
        assert admin.post("/api/users", json={"username": "vback", "password": PASSWORD, "role": "viewer",
                                              "cameras": ["back"]}).status_code == 201
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox",
                                                                               "--disable-dev-shm-usage"])
        context = browser.new_context(ignore_https_errors=True, timezone_id="UTC")
        context.set_default_timeout(15_000)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: problems.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text else None)
        page.goto(server.url + "/#/login")
        page.locator("#login-form input[name=username]").fill("vback")
        page.locator("#login-form input[type=password]").fill(PASSWORD)
        page.locator("#login-submit").click()
        page.locator("#live-title").wait_for()
        page.get_by_role("link", name="Recordings timeline of back").click()
        page.locator("#timeline-bar").wait_for()
        page.goto(server.url + "/#/timeline/back?day=2023-11-14")  # T0 is 2023-11-14 22:13:20 UTC
        page.locator("#timeline-bar .tl-event").first.wait_for()
        assert page.locator("#timeline-bar .tl-span").count() == 3
        reasons = [page.locator("#timeline-bar .tl-gap").nth(i).get_attribute("data-reason")
                   for i in range(page.locator("#timeline-bar .tl-gap").count())]
        assert "shredded" in reasons and "evicted" in reasons and "not recorded" in reasons
        assert SHRED_REASON in (page.locator(".tl-gap-shredded").get_attribute("title") or "")
        assert page.locator("#export-range-form").count() == 0  # viewers do not export
        page.locator("#timeline-bar .tl-event").last.click()  # markers 30 s apart overlap on a day: the last is on top
        page.locator("#event-detail").wait_for()
        assert page.url.endswith(f"#/events/{3:032x}")
        assert page.locator("#event-detail h1").inner_text() == "car on back"
        browser.close()
    assert problems == []
