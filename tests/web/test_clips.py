"""Event clips in the browser: GET /api/events/{id}/clip.mp4 over real HTTPS (uvicorn in-process, real SQLite, a
real vault holding real ffmpeg-cut segments of the car clip), and the event page playing it in real Chromium.

The clip is the decrypted segments overlapping the event ± the camera's pre/post capture, joined into one MP4 that
PyAV decodes; ranges answer 206 with the exact bytes (416 when unsatisfiable); a built clip is cached, so the
browser's many range requests make one audited view; an event on a camera the viewer may not see answers exactly
like a missing event; no footage answers 404 with the reason (recording off, deleted, none in that mode).
GET /api/cameras/{name}/recording.mp4 (the timeline player) answers the segments overlapping a time range through
the same builder, says where the footage starts, is bounded to 30 min, and hides cameras not granted.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from sqlalchemy.orm import Session
from web_helpers import PASSWORD, InProcessServer, bootstrap

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import EventRow
from trustcam.storage.vault import Vault
from trustcam.web.context import AppContext
from trustcam.web.routers import recordings
from trustcam.web.routers.events import NO_EVENT
from trustcam.web.routers.recordings import Clip, ClipCache

T0 = 1_700_000_000.0
SEG_S = 4.8
CLIP = f"{1:032x}"  # back, [T0+6, T0+10] ± 1 s: overlaps segments 1 and 2, not 0
FRONT = f"{2:032x}"  # front: recording disabled
SHREDDED = f"{3:032x}"  # side: its only segment was crypto-shredded by retention
MOTION = f"{4:032x}"  # garage: records in motion mode, kept nothing then
LONG = f"{5:032x}"  # back, over segment 0 only: made "too long" by lowering the limit
MISSING = "f" * 32


def _event(event_id: str, camera: str, start: float, end: float) -> EventRow:
    return EventRow(id=event_id, camera=camera, label="car", track_id=1, start=start, end=end, best_score=0.8,
                    box=[10.0, 20.0, 110.0, 220.0], zones=[], rules=[], threat="none", snapshot=None,
                    model_name="yolox-nano", model_sha256="ab" * 32)


def _decoded(data: bytes) -> tuple[int, float]:
    """(video frames, seconds from the first frame's start to the last frame's end) as PyAV decodes them."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        step = 1 / float(stream.average_rate or stream.guessed_rate or 25)
        times = [float(f.pts * f.time_base) for f in frames]
    return len(frames), (max(times) - min(times) + step) if times else 0.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> Iterator[tuple[InProcessServer, dict, list]]:
    tmp = tmp_path_factory.mktemp("clips")
    saved = os.environ.pop(ENV_KEK, None)
    record = {"enabled": True, "mode": "continuous", "pre_capture_s": 1.0, "post_capture_s": 1.0}
    settings = parse_settings({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "vault": {"root": str(tmp / "vault"), "key_file": str(tmp / "keys" / "kek"),
                  "signing_key_file": str(tmp / "keys" / "signing")},
        "cameras": {"back": {"source": str(car_video), "record": record},
                    "front": {"source": str(car_video)},
                    "side": {"source": str(car_video), "record": record},
                    "garage": {"source": str(car_video), "record": {**record, "mode": "motion"}}},
    })
    engine = open_database(settings.resolved_database_url)
    vault = Vault(settings.vault, engine)
    parts = []
    for i in range(3):  # three real 4.8 s segments of the car clip, cut without re-encoding
        clip = tmp / f"seg{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{SEG_S * i}", "-i", str(car_video), "-t", f"{SEG_S}",
                        "-c", "copy", str(clip)], check=True, timeout=60)
        parts.append(clip.read_bytes())
        vault.store_segment("back", parts[-1], T0 + SEG_S * i, T0 + SEG_S * (i + 1), labels=["car"])
    gone = vault.store_segment("side", parts[0], T0, T0 + SEG_S, labels=["car"])
    vault.shred(gone.id, "retention: 30 days")
    with Session(engine) as session, session.begin():
        session.add(_event(CLIP, "back", T0 + 6.0, T0 + 10.0))
        session.add(_event(FRONT, "front", T0 + 6.0, T0 + 10.0))
        session.add(_event(SHREDDED, "side", T0 + 1.0, T0 + 3.0))
        session.add(_event(MOTION, "garage", T0 + 1.0, T0 + 3.0))
        session.add(_event(LONG, "back", T0 + 1.0, T0 + 2.0))
    ctx = AppContext(settings=settings, engine=engine, bus=Bus(), vault=vault)
    try:
        with InProcessServer(ctx) as server:
            tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "",
                               viewer_cameras=["front"])
            yield server, tokens, parts
    finally:
        if saved is not None:
            os.environ[ENV_KEK] = saved


def test_clip_is_the_overlapping_footage_as_one_mp4_and_one_audited_view(clips):
    server, tokens, parts = clips
    url = f"/api/events/{CLIP}/clip.mp4"
    with server.client(tokens["operator"]) as client:
        whole = client.get(url)
        assert whole.status_code == 200, whole.text
        assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
        assert int(whole.headers["content-length"]) == len(whole.content)
        frames, seconds = _decoded(whole.content)
        expected = [_decoded(part) for part in parts[1:]]  # segment 0 ends before the event's pre-capture
        assert frames == sum(n for n, _ in expected), (frames, expected)
        assert abs(seconds - sum(s for _, s in expected)) < 0.25, (seconds, expected)
        assert whole.content[4:8] == b"ftyp" and b"moov" in whole.content[:4096]  # index first: playable at once
        for _ in range(3):  # the browser's range requests come from the cache
            assert client.get(url, headers={"Range": "bytes=0-1023"}).status_code == 206
    with server.client(tokens["admin"]) as admin:
        views = admin.get("/api/audit", params={"action": "view_clip"}).json()["entries"]
    mine = [e for e in views if e["target"] == f"event:{CLIP}"]
    assert len(mine) == 1, views  # one build, one audited view
    assert mine[0]["user"] == "operator" and mine[0]["details"]["segments"] == 2
    assert mine[0]["details"]["size"] == len(whole.content)


def test_ranges_answer_the_exact_bytes(clips):
    server, tokens, _ = clips
    url = f"/api/events/{CLIP}/clip.mp4"
    with server.client(tokens["viewer"]) as viewer:  # the viewer may not see 'back': the operator asks
        assert viewer.get(url).status_code == 404
    with server.client(tokens["operator"]) as client:
        data = client.get(url).content
        size = len(data)
        for header, first, last in (("bytes=100-199", 100, 199), ("bytes=-50", size - 50, size - 1),
                                    (f"bytes={size - 10}-", size - 10, size - 1),
                                    (f"bytes=5-{size + 1000}", 5, size - 1), ("bytes=0-0", 0, 0)):
            part = client.get(url, headers={"Range": header})
            assert part.status_code == 206, (header, part.text)
            assert part.content == data[first:last + 1], header
            assert part.headers["content-range"] == f"bytes {first}-{last}/{size}", header
            assert int(part.headers["content-length"]) == last - first + 1
        for bad in (f"bytes={size}-", "bytes=50-10", "bytes=-0", "bytes=abc", "items=0-10"):
            refused = client.get(url, headers={"Range": bad})
            assert refused.status_code == 416, bad
            assert refused.headers["content-range"] == f"bytes */{size}"
            assert "not satisfiable" in refused.json()["detail"]
        several = client.get(url, headers={"Range": "bytes=0-9,20-29"})  # multipart not offered: the whole clip
        assert several.status_code == 200 and several.content == data
        etag = several.headers["etag"]
        stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"another-version"'})
        assert stale.status_code == 200 and stale.content == data  # a changed clip is never spliced into an old one
        assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206


def test_event_of_a_camera_not_granted_answers_like_a_missing_one(clips):
    server, tokens, _ = clips
    with server.client(tokens["viewer"]) as viewer:  # granted 'front' only; CLIP is on 'back', with footage
        hidden = viewer.get(f"/api/events/{CLIP}/clip.mp4", headers={"Range": "bytes=0-99"})
        missing = viewer.get(f"/api/events/{MISSING}/clip.mp4", headers={"Range": "bytes=0-99"})
        assert (hidden.status_code, hidden.json()) == (404, {"detail": NO_EVENT})
        assert hidden.content == missing.content
        assert {k: v for k, v in hidden.headers.items() if k != "date"} == \
               {k: v for k, v in missing.headers.items() if k != "date"}
        assert viewer.get(f"/api/events/{FRONT}/clip.mp4").status_code == 404  # its own camera: the reason instead
    with server.client() as anonymous:
        assert anonymous.get(f"/api/events/{CLIP}/clip.mp4").status_code == 401


def test_no_footage_answers_404_with_the_reason(clips):
    server, tokens, _ = clips
    with server.client(tokens["viewer"]) as viewer:
        off = viewer.get(f"/api/events/{FRONT}/clip.mp4")
        assert off.status_code == 404
        assert "recording is disabled for camera 'front'" in off.json()["detail"]
        assert "cameras.front.record.enabled" in off.json()["detail"]
    with server.client(tokens["operator"]) as client:
        shredded = client.get(f"/api/events/{SHREDDED}/clip.mp4").json()["detail"]
        assert "was deleted on" in shredded and "retention: 30 days" in shredded
        motion = client.get(f"/api/events/{MOTION}/clip.mp4").json()["detail"]
        assert "no recorded segment of camera 'garage'" in motion and "record.mode: motion" in motion


def test_no_vault_and_too_long_footage_are_refused_with_the_reason(clips, monkeypatch):
    server, tokens, parts = clips
    with server.client(tokens["operator"]) as client:
        monkeypatch.setattr(server.ctx, "vault", None)  # as in a process that opened no vault
        answer = client.get(f"/api/events/{MOTION}/clip.mp4")
        assert answer.status_code == 404 and "vault is not open" in answer.json()["detail"]
        monkeypatch.undo()
        monkeypatch.setattr(recordings, "MAX_CLIP_BYTES", len(parts[0]) - 1)  # footage held in memory is bounded
        answer = client.get(f"/api/events/{LONG}/clip.mp4")
        assert answer.status_code == 413, answer.text
        assert "more than the" in answer.json()["detail"] and "export it as evidence" in answer.json()["detail"]


def test_recording_by_time_is_the_overlapping_segments_with_their_wall_clock_start(clips):
    server, tokens, parts = clips
    url = "/api/cameras/back/recording.mp4"
    window = {"start": T0 + SEG_S + 1.0, "end": T0 + 2 * SEG_S + 1.0}  # inside segment 1, into segment 2
    with server.client(tokens["operator"]) as client:
        whole = client.get(url, params=window)
        assert whole.status_code == 200, whole.text
        assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
        assert float(whole.headers["x-footage-start"]) == T0 + SEG_S  # whole segments: from segment 1's start
        assert float(whole.headers["x-footage-end"]) == T0 + 3 * SEG_S
        assert float(whole.headers["x-footage-fps"]) > 0
        assert _decoded(whole.content)[0] == sum(_decoded(part)[0] for part in parts[1:])
        part = client.get(url, params=window, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == whole.content[10:20]
        iso = client.get(url, params={"start": "2023-11-14T22:13:20", "end": "2023-11-14T22:13:21"})  # T0, UTC
        assert iso.status_code == 200 and float(iso.headers["x-footage-start"]) == T0
        too_long = client.get(url, params={"start": T0, "end": T0 + 1801})
        assert too_long.status_code == 422 and "range too long" in too_long.json()["detail"]
        inverted = client.get(url, params={"start": T0 + 5, "end": T0})
        assert inverted.status_code == 422 and "end must be after start" in inverted.json()["detail"]
        none = client.get(url, params={"start": T0 + 100, "end": T0 + 200})
        assert none.status_code == 404 and "no recorded segment of camera 'back'" in none.json()["detail"]
        shredded = client.get("/api/cameras/side/recording.mp4", params={"start": T0, "end": T0 + 2})
        assert shredded.status_code == 404 and "retention: 30 days" in shredded.json()["detail"]
    with server.client(tokens["admin"]) as admin:
        views = admin.get("/api/audit", params={"action": "view_recording"}).json()["entries"]
    assert sorted((e["user"], e["target"], e["details"]["segments"]) for e in views) == [  # one per build
        ("operator", "back", 1), ("operator", "back", 2)]


def test_recording_of_a_camera_not_granted_answers_like_a_missing_one(clips):
    server, tokens, _ = clips
    params = {"start": T0, "end": T0 + 10}
    with server.client(tokens["viewer"]) as viewer:  # granted 'front' only; 'back' has footage
        hidden = viewer.get("/api/cameras/back/recording.mp4", params=params)
        missing = viewer.get("/api/cameras/nosuch/recording.mp4", params=params)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.content.replace(b"back", b"<name>") == missing.content.replace(b"nosuch", b"<name>")
        assert {k: v for k, v in hidden.headers.items() if k not in ("date", "content-length")} == \
               {k: v for k, v in missing.headers.items() if k not in ("date", "content-length")}
        off = viewer.get("/api/cameras/front/recording.mp4", params=params)  # its own camera: the reason
        assert off.status_code == 404 and "recording is disabled for camera 'front'" in off.json()["detail"]
    with server.client() as anonymous:
        assert anonymous.get("/api/cameras/back/recording.mp4", params=params).status_code == 401


def test_clip_cache_is_a_bounded_lru_with_a_lifetime():
    built: list[str] = []

    def build(key: str) -> Clip:
        built.append(key)
        return Clip(key.encode(), f'"{key}"', 1, 0.0, 1.0)

    cache = ClipCache(size=2, ttl_s=0.3)
    assert cache.get_or_build("a", lambda: build("a")) == (build_a := Clip(b"a", '"a"', 1, 0.0, 1.0), True)
    assert cache.get_or_build("a", lambda: build("a")) == (build_a, False)
    cache.get_or_build("b", lambda: build("b"))
    cache.get_or_build("a", lambda: build("a"))  # a is now the most recent
    cache.get_or_build("c", lambda: build("c"))  # evicts b, the least recently used
    assert cache.get_or_build("a", lambda: build("a"))[1] is False
    assert cache.get_or_build("b", lambda: build("b"))[1] is True
    time.sleep(0.35)
    assert cache.get_or_build("b", lambda: build("b"))[1] is True  # expired
    assert built == ["a", "b", "c", "b", "b"]


def test_event_page_plays_the_clip_in_chromium(clips):
    from playwright.sync_api import sync_playwright

    server, _, _ = clips
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(ignore_https_errors=True)
            problems: list[str] = []
            page = context.new_page()
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text)
                    if msg.type == "error" and "Content Security Policy" in msg.text else None)
            login = context.request.post(f"{server.url}/api/auth/login",
                                         data={"username": "operator", "password": PASSWORD})
            assert login.ok, login.text()  # the session cookie now rides on the page's media requests too
            page.goto(f"{server.url}/#/events/{CLIP}")
            video = page.locator("#event-video")
            video.wait_for()
            _wait(lambda: video.evaluate("v => v.readyState") >= 1, "the clip's metadata never loaded")
            assert abs(video.evaluate("v => v.duration") - 14.4 + SEG_S) < 0.5  # segments 1 and 2
            video.evaluate("v => { v.muted = true; return v.play(); }")
            _wait(lambda: video.evaluate("v => v.currentTime") > 1.0, "playback did not advance")
            assert video.evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames") > 0
            video.evaluate("v => { v.currentTime = 7.5; }")  # seeking fetches a range from the cached clip
            _wait(lambda: video.evaluate("v => !v.seeking && v.currentTime >= 7.5"), "the seek did not finish")
            assert video.evaluate("v => v.error") is None

            page.goto(f"{server.url}/#/events/{MOTION}")
            reason = page.locator("#clip-reason")
            reason.wait_for()
            assert "record.mode: motion" in reason.inner_text()
            assert problems == []
        finally:
            browser.close()


def _wait(condition, message: str, timeout_s: float = 20.0) -> None:
    """Poll (page.wait_for_function would need 'unsafe-eval' in the CSP)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)
