"""The camera grid: config `camera_groups`, `GET /api/cameras/grid` per role, and the grid view in real Chromium.

API (real uvicorn over HTTPS, real SQLite, real auth): a viewer granted one camera gets only that camera and only
the groups holding it, cut down to it, so no name of a hidden camera leaks; an admin gets every camera with its
health, AI coverage, canary and recording badges. A group naming an unknown camera is refused by `trustcam config
check` with a message naming it and the known cameras. UI: a real `trustcam run` with two file cameras; the grid
shows two decoded tiles, one column at 390 px, filters by group, and a tile opens the camera's live view.
Screenshots go to test-artifacts/ui/grid-*.png.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import (
    PASSWORD,
    InProcessServer,
    bootstrap,
    natural_width,
    person_camera,
    shot,
    video_plays,
    write_config,
)

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.events.model import CameraCoverage
from trustcam.monitor.canary import CanaryResult
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.vision.detectors.failover import CoverageChange
from trustcam.web.context import AppContext

GROUPS = {
    "street": {"cameras": ["front", "back"], "order": 2},  # holds the viewer's camera and a hidden one
    "garden": {"cameras": ["back", "shed"], "order": 1},  # no camera of the viewer's: must not be listed at all
    "entrance": {"cameras": ["front"], "order": 3},
}


@pytest.fixture(scope="module")
def grid_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("grid")
    settings = parse_settings({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port(), "auth_key_file": str(tmp / "keys" / "auth.key")},
        "cameras": {"front": {"source": "rtsp://10.0.0.5/front"},
                    "back": {"source": "rtsp://10.0.0.6/back", "record": {"enabled": True}},
                    "shed": {"source": "rtsp://10.0.0.7/shed"}},
        "camera_groups": GROUPS,
    })
    engine = open_database(settings.resolved_database_url)
    ctx = AppContext(settings=settings, engine=engine, bus=Bus())
    # What the running system publishes: the backup detector took over on 'back', the canary missed on 'front'.
    ctx.bus.publish(CameraCoverage("back", CoverageChange(time.time(), "degraded", "nanodet-m-320", "yolox-nano",
                                                          "hung")))
    ctx.bus.publish(CanaryResult(camera="front", probe=1, outcome="missed", time=time.time(),
                                 message="the test person was not detected", score=None))
    with InProcessServer(ctx) as server:
        yield server, bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "",
                                viewer_cameras=["front"])


def test_viewer_sees_only_granted_cameras_and_groups(grid_api) -> None:
    server, tokens = grid_api
    with server.client(tokens["viewer"]) as viewer:
        answer = viewer.get("/api/cameras/grid")
    assert answer.status_code == 200, answer.text
    grid = answer.json()
    assert [c["name"] for c in grid["cameras"]] == ["front"]
    assert grid["groups"] == [{"name": "street", "order": 2, "cameras": ["front"]},
                              {"name": "entrance", "order": 3, "cameras": ["front"]}]
    for hidden in ("back", "shed", "garden"):  # neither a hidden camera nor a group of hidden cameras is named
        assert hidden not in answer.text, hidden


def test_admin_sees_every_camera_with_badges(grid_api) -> None:
    server, tokens = grid_api
    with server.client(tokens["admin"]) as admin:
        grid = admin.get("/api/cameras/grid").json()
    cameras = {c["name"]: c for c in grid["cameras"]}
    assert list(cameras) == ["front", "back", "shed"]  # config order
    assert [g["name"] for g in grid["groups"]] == ["garden", "street", "entrance"]  # by order
    assert grid["groups"][1]["cameras"] == ["front", "back"]
    front, back, shed = cameras["front"], cameras["back"], cameras["shed"]
    assert front["state"] == "not running" and front["live"] is False  # no worker in this server
    assert front["canary"]["outcome"] == "missed" and front["canary"]["passed"] is False
    assert any(a["kind"] == "canary" for a in front["alerts"])
    assert back["coverage"] == "degraded" and back["recording"] is True
    assert back["alerts"][0]["kind"] == "coverage"
    assert shed["coverage"] == "full" and shed["canary"] is None and shed["recording"] is False


def test_operator_too_and_auditor_refused(grid_api) -> None:
    server, tokens = grid_api
    with server.client(tokens["operator"]) as operator:
        assert len(operator.get("/api/cameras/grid").json()["cameras"]) == 3  # no grant list: all cameras
    with server.client() as anonymous:
        assert anonymous.get("/api/cameras/grid").status_code == 401


def test_group_naming_unknown_camera_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"front": {"source": "rtsp://10.0.0.5/front"},
                                     "yard": {"source": "rtsp://10.0.0.6/yard"}},
                          camera_groups={"outside": {"cameras": ["front", "yrad"]}})
    done = subprocess.run([sys.executable, "-m", "trustcam.cli", "config", "check", str(config)],
                          capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "camera_groups.outside.cameras lists camera 'yrad', which does not exist" in out, out
    assert "did you mean 'yard'?" in out and "known cameras: front, yard" in out, out
    assert "Traceback" not in out


# ---------------------------------------------------------------- the grid view in real Chromium


@pytest.fixture
def server_config(tmp_path: Path, person_video: Path, car_video: Path) -> Path:
    """The shared two-camera server (office: person clip, yard: car clip) with one group per camera."""
    return write_config(tmp_path, {
        "office": person_camera(person_video),
        "yard": {"source": str(car_video), "detect": {"fps": 2}, "objects": {"track": ["car", "person"]}},
    }, camera_groups={"inside": {"cameras": ["office"], "order": 1}, "outside": {"cameras": ["yard"], "order": 2}})





def test_grid_ui(running_server, browser) -> None:
    server = running_server
    verify = ssl.create_default_context(cafile=str(server.cert))
    bootstrap(server.url, verify, server.setup_token or "")  # makes "viewer": all cameras, no MFA needed
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []  # JavaScript exceptions and CSP violations: the view must have none
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)

    page.goto(server.url + "/#/login")
    page.locator("#login-form").wait_for()
    page.get_by_label("Username").fill("viewer")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#nav").get_by_role("link", name="Cameras").click()
    tiles = page.locator("#camera-grid .tile")
    tiles.nth(1).wait_for()
    assert tiles.count() == 2
    assert [tiles.nth(i).get_attribute("data-camera") for i in range(2)] == ["office", "yard"]
    for i in range(2):
        assert natural_width(tiles.nth(i).locator("img")) > 0
    tiles.first.locator(".badges", has_text="connected").wait_for(timeout=20_000)  # health badge refreshes
    assert "AI full" in tiles.first.inner_text()
    desktop = [tiles.nth(i).bounding_box() for i in range(2)]
    assert desktop[0]["y"] == desktop[1]["y"] and desktop[1]["x"] > desktop[0]["x"], desktop  # side by side
    shot(page, "grid-desktop")

    page.set_viewport_size({"width": 390, "height": 844})
    time.sleep(0.3)  # layout settles
    phone = [tiles.nth(i).bounding_box() for i in range(2)]
    assert abs(phone[0]["x"] - phone[1]["x"]) < 1, phone  # one column: same left edge...
    assert phone[1]["y"] >= phone[0]["y"] + phone[0]["height"], phone  # ...stacked
    assert phone[0]["x"] + phone[0]["width"] <= 390, phone  # no sideways scrolling
    shot(page, "grid-390")

    page.set_viewport_size({"width": 1280, "height": 900})
    page.locator("#grid-group").select_option("outside")
    page.locator("#grid-title", has_text="outside").wait_for()
    assert page.locator("#camera-grid .tile").count() == 1
    assert page.locator("#camera-grid .tile").first.get_attribute("data-camera") == "yard"

    page.locator("#camera-grid .tile a").first.click()  # a tile opens that camera's live view
    page.locator("#live-title", has_text="yard").wait_for()
    video_plays(page.locator("#live-video"))  # low-latency live (MSE) of yard plays
    assert not problems, problems
    context.close()
