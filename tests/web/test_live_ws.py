"""Live video over WebSocket + MSE against a real ``trustcam run`` (file cameras, HTTPS), with a real WebSocket client.

What a viewer receives is the camera's own H.264 remuxed (init segment, then fragments from a keyframe) and PyAV
decodes it; the boxes come as JSON with the media time of their frame. Refusals: no credential (4401), a camera not
granted or not existing (4403, same reason text: nothing tells them apart), a page on another origin riding the
session cookie (HTTP 403 before the upgrade). Logging out closes an open socket within 5 s. In Chromium, the live page
plays MSE (the video advances, frames are presented) with the boxes canvas over it.
"""

from __future__ import annotations

import io
import json
import ssl
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from web_helpers import PASSWORD, bearer, bootstrap, person_camera, session, write_config
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.slow


def _web_conftest(config: pytest.Config) -> Any:
    """tests/web/conftest.py as pytest loaded it (its start_server, for one server shared by this module)."""
    return next(p for p in config.pluginmanager.get_plugins()
                if str(getattr(p, "__file__", "")).endswith(str(Path("web") / "conftest.py")))


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, person_video: Path,
         car_video: Path, installed_models: None) -> Iterator[tuple[Any, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("live_ws")
    config = write_config(tmp, {"office": person_camera(person_video, fps=2),
                                "yard": {"source": str(car_video), "detect": {"fps": 1}}})
    with _web_conftest(request.config).start_server(config, tmp / "server.log") as server:
        assert server.setup_token, server.log_tail()
        tokens = bootstrap(server.url, _verify(server), server.setup_token, viewer_cameras=["office"])
        yield server, tokens


def _verify(server: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.cert))


def _ws_url(server: Any, camera: str) -> str:
    return server.url.replace("https://", "wss://") + f"/api/cameras/{camera}/live.ws"


def _open(server: Any, camera: str, **kwargs: object) -> ClientConnection:
    return connect(_ws_url(server, camera), ssl=_verify(server), open_timeout=10, close_timeout=5,
                   max_size=None, **kwargs)  # type: ignore[arg-type]


def _init(ws: ClientConnection) -> tuple[dict, bytes]:
    meta = json.loads(ws.recv(timeout=30))
    assert meta["type"] == "init", meta
    data = ws.recv(timeout=10)
    assert isinstance(data, bytes) and data[4:8] == b"ftyp", data[:16]
    return meta, data


def _close_code(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the server closes; (close code, reason)."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    assert closed.value.rcvd is not None, "the connection dropped without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_fragments_decode_and_boxes_carry_media_time(live) -> None:
    server, tokens = live
    with _open(server, "office", subprotocols=["trustcam.live", f"bearer.{tokens['viewer']}"]) as ws:
        assert ws.subprotocol == "trustcam.live"
        meta, init = _init(ws)
        assert meta["codec"].startswith("avc1.") and meta["mime"] == f'video/mp4; codecs="{meta["codec"]}"'
        assert set(meta["zones"]) == {"table"}
        fragments, texts = [], []
        deadline = time.monotonic() + 30
        while (len(fragments) < 40 or not any(t["type"] == "objects" for t in texts)) and time.monotonic() < deadline:
            message = ws.recv(timeout=10)
            if isinstance(message, bytes):
                assert message[4:8] == b"moof", message[:16]
                fragments.append(message)
            else:
                texts.append(json.loads(message))
    assert len(fragments) >= 40
    frames = list(av.open(io.BytesIO(init + b"".join(fragments))).decode(video=0))
    assert len(frames) >= 30, f"{len(frames)} frames decoded from {len(fragments)} fragments"
    assert (frames[0].width, frames[0].height) == (meta["width"], meta["height"])
    assert frames[0].key_frame  # a new viewer starts at a keyframe
    shown = (frames[0].time - 1.0, frames[-1].time + 5.0)
    objects = [t for t in texts if t["type"] == "objects"]
    assert objects, texts[:5]
    assert all(t["t"] is not None and shown[0] <= t["t"] <= shown[1] for t in objects), (shown, objects[:3])
    clocks = [t for t in texts if t["type"] == "clock"]
    assert clocks and all(abs(c["wall"] - time.time()) < 60 for c in clocks)


def test_session_cookie_with_own_origin_watches_other_origin_is_refused(live) -> None:
    server, _ = live
    client, _ = session(server.url, _verify(server), "viewer")
    cookie = f"trustcam_session={client.cookies.get('trustcam_session')}"
    try:
        with _open(server, "office", additional_headers={"Cookie": cookie}, origin=server.url) as ws:
            _init(ws)
        with pytest.raises(InvalidStatus) as refused:  # cross-site WebSocket hijacking: refused before the upgrade
            _open(server, "office", additional_headers={"Cookie": cookie}, origin="https://evil.example")
        assert refused.value.response.status_code == 403
    finally:
        client.close()


def test_refusals_do_not_tell_ungranted_from_missing(live) -> None:
    server, tokens = live
    with _open(server, "office") as ws:
        assert _close_code(ws)[0] == 4401
    with _open(server, "office", additional_headers=bearer("tc_0000000000000000_forged")) as ws:
        assert _close_code(ws)[0] == 4401
    answers = {}
    for camera in ("yard", "nosuch"):  # yard exists but is not granted to the viewer
        with _open(server, camera, additional_headers=bearer(tokens["viewer"])) as ws:
            code, reason = _close_code(ws)
            answers[camera] = (code, reason.replace(camera, "<name>"))
    assert answers["yard"] == answers["nosuch"] == (4403, "no camera '<name>' that you may watch")
    with _open(server, "yard", additional_headers=bearer(tokens["operator"])) as ws:  # all cameras: allowed
        _init(ws)
    admin = server.client(headers=bearer(tokens["admin"]))
    entries = admin.get("/api/audit", params={"action": "view_live", "limit": 50}).json()["entries"]
    admin.close()
    assert any(e["user"] == "viewer" and e["target"] == "office" and e["outcome"] == "ok" for e in entries), entries
    assert any(e["user"] == "viewer" and e["target"] == "yard" and e["outcome"] == "denied" for e in entries)


def test_logout_closes_the_socket_within_5_s(live) -> None:
    server, _ = live
    client, csrf = session(server.url, _verify(server), "operator", PASSWORD)
    cookie = f"trustcam_session={client.cookies.get('trustcam_session')}"
    with _open(server, "office", additional_headers={"Cookie": cookie}, origin=server.url) as ws:
        _init(ws)
        assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        started = time.monotonic()
        code, reason = _close_code(ws, timeout=10)
        took = time.monotonic() - started
    client.close()
    assert code == 4401, reason
    assert took < 5.0, f"the socket stayed open {took:.1f} s after logout"


def test_live_page_plays_mse_with_boxes_canvas(live) -> None:
    from playwright.sync_api import sync_playwright

    server, _ = live
    client, _ = session(server.url, _verify(server), "viewer")
    cookie = client.cookies.get("trustcam_session")
    client.close()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy="
                                          "no-user-gesture-required"])
        try:
            context = browser.new_context(ignore_https_errors=True)
            context.add_cookies([{"name": "trustcam_session", "value": cookie, "url": server.url}])
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.goto(server.url + "/#/live/office")
            video = page.locator("#live-video")
            video.wait_for(timeout=20_000)
            assert page.locator("#live-boxes").count() == 1
            state = "v => [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames]"
            deadline = time.monotonic() + 30
            first = None
            while True:
                now = video.evaluate(state)
                first = first if first is not None or now[1] == 0 else now
                if first is not None and now[0] > first[0] + 1.0 and now[1] > first[1]:
                    break
                assert time.monotonic() < deadline, f"the video did not advance: {now} {problems}"
                time.sleep(0.5)
            deadline = time.monotonic() + 30  # a loaded machine (CI on 2 cores) may take a while
            while (stats := page.evaluate("() => window.trustcamLive"))["frames"] <= 10:
                assert time.monotonic() < deadline, f"only {stats['frames']} frames shown in 30 s"
                time.sleep(0.5)
            assert stats["codec"].startswith("avc1.")
            latencies = sorted(stats["latencies"])
            assert latencies, stats
            assert statistics.median(latencies) < 2.0, f"glass-to-glass median {statistics.median(latencies):.2f} s"
            assert not [p for p in problems if "Content Security Policy" in p or "pageerror" in p], problems
        finally:
            browser.close()
