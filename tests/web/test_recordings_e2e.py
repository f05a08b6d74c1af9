"""Recordings end to end: a real ``trustcam run`` records a looping file camera (events mode, 2 s segments, every
segment checkpointed), and real Chromium plays what it recorded.

One story: wait for an event whose footage is stored and signed → its clip plays on the event page (time advances,
frames decoded) → the timeline player seeks (a click on an unrecorded stretch skips to the next recording), plays,
changes speed and steps one frame → a range export downloaded through the API verifies with `trustcam evidence
verify --fingerprint` → a viewer of camera A gets 404 (403 for the export) on every recordings path of camera B,
which has footage. Screenshots at desktop and phone (390 px) widths go to test-artifacts/ui/.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_helpers import PASSWORD, bearer, bootstrap, person_camera, shot, write_config

from trustcam.config.loader import load_settings
from trustcam.storage.keys import load_signing_key
from trustcam.storage.vault import public_key_fingerprint

SEGMENT_S, PRE_S, POST_S = 2.0, 2.0, 2.0
WAIT_S = 100.0  # the first person walks in 7 s into the clip; the event ends ~15 s later


RunningServer = Any  # tests/web/conftest.py's server, through its running_server fixture


@pytest.fixture
def server_config(tmp_path: Path, person_video: Path) -> Path:
    """office: the person clip, recorded around events; lobby: the same clip, recorded continuously (running_server
    of tests/web/conftest.py starts `trustcam run` with it)."""
    record = {"enabled": True, "segment_s": SEGMENT_S, "pre_capture_s": PRE_S, "post_capture_s": POST_S}
    keys = tmp_path / "keys"
    return write_config(tmp_path, {
        "office": {**person_camera(person_video), "record": {**record, "mode": "events"}},
        "lobby": {**person_camera(person_video, fps=3.0), "record": {**record, "mode": "continuous"}},
    }, vault={"root": str(tmp_path / "vault"), "key_file": str(keys / "vault.kek"),
              "signing_key_file": str(keys / "vault-signing.key"), "checkpoint_every": 1, "checkpoint_every_s": 5})


def _client(server: RunningServer, token: str) -> httpx.Client:
    return server.client(headers=bearer(token))


def _recorded_event(server: RunningServer, operator: httpx.Client, camera: str) -> dict:
    """An ended event of ``camera`` whose clip is stored and whose footage a checkpoint covers (exports)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        events = operator.get("/api/events", params={"camera": camera, "limit": 20}).json()["events"]
        for event in sorted(events, key=lambda e: e["start"]):
            if event["end"] + POST_S + 2 * SEGMENT_S + 1 > time.time():
                continue  # its last segment may not be closed yet
            clip = operator.get(f"/api/events/{event['id']}/clip.mp4", headers={"Range": "bytes=0-0"})
            span = {"start": event["start"], "end": event["end"]}
            if clip.status_code == 206 and operator.post(f"/api/cameras/{camera}/export", params=span).is_success:
                return event
        time.sleep(1.0)
    pytest.fail(f"no recorded, checkpointed event on {camera} within {WAIT_S:.0f}s:\n{server.log_tail()}")


def _wait(condition, message: str, timeout_s: float = 20.0) -> None:
    """Poll (page.wait_for_function would need 'unsafe-eval' in the CSP)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)



def _clock(page) -> float:
    return float(page.locator("#tl-clock").get_attribute("data-time") or "nan")


def test_recordings_play_seek_export_and_stay_private(running_server: RunningServer, tmp_path: Path) -> None:
    server = running_server
    verify = ssl.create_default_context(cafile=str(server.cert))
    tokens = bootstrap(server.url, verify, server.setup_token or "", viewer_cameras=["office"])
    with _client(server, tokens["operator"]) as operator, _client(server, tokens["viewer"]) as viewer:
        event = _recorded_event(server, operator, "office")
        other = _recorded_event(server, operator, "lobby")
        _export_verifies(server, operator, event, tmp_path)
        _other_camera_is_hidden(operator, viewer, event, other)
    _browser(server, event)


def _export_verifies(server: RunningServer, operator: httpx.Client, event: dict, tmp_path: Path) -> None:
    """The range bundle the timeline's form downloads checks out with the published key, and only with it."""
    answer = operator.post("/api/cameras/office/export", params={"start": event["start"], "end": event["end"]})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip", answer.text
    bundle = tmp_path / "range.zip"
    bundle.write_bytes(answer.content)
    settings = load_settings(server.config)
    fingerprint = public_key_fingerprint(load_signing_key(settings.vault).public_key())

    def verify(key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "trustcam.cli", "evidence", "verify", str(bundle),
                               "--fingerprint", key], capture_output=True, text=True, timeout=60)

    good = verify(fingerprint)
    assert good.returncode == 0 and good.stdout.startswith("VERIFIED"), good.stdout + good.stderr
    forged = verify("0" * 64)  # someone else's key: not the operator's evidence
    assert forged.returncode == 1 and "NOT VERIFIED" in forged.stdout, forged.stdout + forged.stderr


def _other_camera_is_hidden(operator: httpx.Client, viewer: httpx.Client, mine: dict, other: dict) -> None:
    """Every recordings path of 'lobby' (which has footage: the operator gets it) refuses the viewer of 'office'."""
    def paths(event: dict) -> list[tuple[str, str, dict]]:
        camera, window = event["camera"], {"start": event["start"] - 1, "end": event["end"] + 1}
        return [("GET", f"/api/events/{event['id']}/clip.mp4", {}),
                ("GET", f"/api/events/{event['id']}/snapshot.jpg", {}),
                ("GET", f"/api/cameras/{camera}/recording.mp4", window),
                ("GET", f"/api/cameras/{camera}/timeline", window),
                ("POST", f"/api/cameras/{camera}/export", window)]

    for method, path, params in paths(other):
        if "snapshot" not in path or other["has_snapshot"]:
            assert operator.request(method, path, params=params).status_code == 200, path
        refused = viewer.request(method, path, params=params)
        assert refused.status_code == (403 if path.endswith("/export") else 404), (path, refused.text)
        assert b"ftyp" not in refused.content and b"PK" not in refused.content[:2], path  # no footage leaks
    for method, path, params in paths(mine):  # the viewer's own camera plays (exporting is for operators)
        if method == "GET" and "snapshot" not in path:
            assert viewer.request(method, path, params=params).status_code == 200, path


def _browser(server: RunningServer, event: dict) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy="
                                          "no-user-gesture-required"])
        try:
            context = browser.new_context(ignore_https_errors=True, timezone_id="UTC",
                                          viewport={"width": 1280, "height": 900})
            context.set_default_timeout(20_000)
            page = context.new_page()
            problems: list[str] = []  # script errors and CSP violations: the views must have none
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text)
                    if msg.type == "error" and "Content Security Policy" in msg.text else None)
            login = context.request.post(f"{server.url}/api/auth/login",
                                         data={"username": "viewer", "password": PASSWORD})
            assert login.ok, login.text()
            _event_clip(page, server, event)
            _timeline(page, server, event)
            assert problems == [], problems
        finally:
            browser.close()


def _event_clip(page, server: RunningServer, event: dict) -> None:
    page.goto(f"{server.url}/#/events/{event['id']}")
    video = page.locator("#event-video")
    video.wait_for()
    _wait(lambda: video.evaluate("v => v.readyState") >= 1, "the event clip's metadata never loaded")
    expected = event["end"] - event["start"]
    assert video.evaluate("v => v.duration") >= expected, "the clip is shorter than the event"
    video.evaluate("v => { v.muted = true; return v.play(); }")
    _wait(lambda: video.evaluate("v => v.currentTime") > 1.0, "the event clip did not play")
    assert video.evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames") > 0
    assert video.evaluate("v => v.error") is None
    video.evaluate("v => v.pause()")
    shot(page, "event-clip-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    time.sleep(0.3)  # layout settles
    box = video.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box  # fits the phone
    shot(page, "event-clip-390")
    page.set_viewport_size({"width": 1280, "height": 900})


def _timeline(page, server: RunningServer, event: dict) -> None:
    day = datetime.fromtimestamp(event["start"], UTC).strftime("%Y-%m-%d")
    page.goto(f"{server.url}/#/timeline/office?day={day}")
    page.locator("#timeline-bar .tl-span").first.wait_for()
    video, status = page.locator("#timeline-video"), page.locator("#tl-player-status")

    page.locator("#timeline-bar").click(position={"x": 2, "y": 24})  # 00:00: nothing recorded then
    _wait(lambda: "skipped to" in status.inner_text(), f"a gap was not skipped: {status.inner_text()}")
    _wait(lambda: video.evaluate("v => !v.paused && v.currentTime > 0.3"), "the timeline did not play")
    first = _clock(page)
    _wait(lambda: _clock(page) > first + 0.5, "the wall clock did not follow playback")

    page.locator(".tl-speed[data-rate='4']").click()
    assert video.evaluate("v => v.playbackRate") == 4
    assert page.locator(".tl-speed[data-rate='4']").get_attribute("aria-pressed") == "true"
    play_event = page.locator(".tl-play-event").first
    target = float(play_event.get_attribute("data-start") or "nan") - 2
    play_event.click()  # 2 s before the event (or the next recording, when that is not recorded)
    _wait(lambda: not video.evaluate("v => v.paused") and target - 0.5 <= _clock(page) <= target + 15,
          f"the event's play button did not play from {target}: {_clock(page)}, {status.inner_text()}")

    moment = event["start"]  # the event page links to the timeline, its player paused at the event, to the frame
    page.goto(f"{server.url}/#/events/{event['id']}")
    page.locator("#event-timeline").click()
    _wait(lambda: abs(_clock(page) - moment) < 0.05, f"the player did not seek to {moment}: {status.inner_text()}")
    assert video.evaluate("v => v.paused")
    before = video.evaluate("v => v.currentTime")
    page.locator("#tl-step").click()
    _wait(lambda: video.evaluate("v => !v.seeking && v.currentTime !== " + repr(before)), "no frame step")
    assert abs(video.evaluate("v => v.currentTime") - before - 0.1) < 0.01  # one frame of the 10 fps clip
    assert abs(_clock(page) - moment - 0.1) < 0.05 and video.evaluate("v => v.paused")
    assert video.evaluate("v => v.error") is None
    shot(page, "timeline-desktop")

    page.set_viewport_size({"width": 390, "height": 844})
    time.sleep(0.3)
    for selector in ("#timeline-bar", "#timeline-video", "#tl-play", "#tl-step", ".tl-speed[data-rate='8']"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
        if selector.startswith(("#tl-", ".tl-")):
            assert box["height"] >= 44, (selector, box)  # finger-sized
    page.locator("#timeline-bar").click(position={"x": 2, "y": 24})
    _wait(lambda: video.evaluate("v => !v.paused"), "a tap on the bar did not play at 390 px")
    video.evaluate("v => v.pause()")
    shot(page, "timeline-390")
