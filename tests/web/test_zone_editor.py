"""The zone and mask editor in real Chromium against a real ``trustcam run`` (file cameras), saved through the config
API and applied after a restart.

An admin draws a zone with clicks on the camera's picture, drags one point, names it and saves: the config file on
disk holds the polygon (fractions of the frame), the change is audited and the page says a restart is needed. A
motion mask and a privacy mask are drawn with the mouse, an object mask with touch at 390 px wide. A 2-point
polygon shows the server's validation error word for word and leaves the file alone. A viewer gets no editor (no
nav link, the route refused) and viewer and operator get 403 from PATCH /api/config. After a restart on the same
config the zone and masks are in the running config and an enter_zone rule may name the zone. Screenshots:
test-artifacts/ui/zones-desktop.png and zones-390.png.
"""

from __future__ import annotations

import importlib.util
import ssl
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from web_helpers import PASSWORD, bearer, bootstrap, fresh_code, natural_width, person_camera, shot, write_config

PORCH = [(0.10, 0.20), (0.40, 0.20), (0.40, 0.50), (0.10, 0.50)]
PORCH_DRAGGED = (0.45, 0.60)  # where point 3 of PORCH is dragged to
MOTION_MASK = [(0.60, 0.05), (0.95, 0.05), (0.95, 0.30)]
OBJECT_MASK = [(0.05, 0.70), (0.30, 0.70), (0.30, 0.95)]
PRIVACY_MASK = [(0.70, 0.60), (0.98, 0.60), (0.98, 0.98), (0.70, 0.98)]
TOLERANCE = 0.01  # a click lands on a whole pixel


def _web_conftest() -> object:
    """tests/web/conftest.py by path: ``import conftest`` may find another directory's conftest in a full run."""
    spec = importlib.util.spec_from_file_location("web_conftest_for_zones", Path(__file__).with_name("conftest.py"))
    assert spec and spec.loader
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


start_server = _web_conftest().start_server  # type: ignore[attr-defined]



@pytest.fixture
def config(tmp_path: Path, person_video: Path, car_video: Path) -> Path:
    return write_config(tmp_path, {
        "office": person_camera(person_video),  # zone 'table' + rule 'at-table'
        "yard": {"source": str(car_video), "detect": {"fps": 2}, "objects": {"track": ["car", "person"]}},
    })


def _camera(config: Path, name: str = "office") -> dict:
    return yaml.safe_load(config.read_text())["cameras"][name]


def _close(points: list[list[float]], expected: list[tuple[float, float]]) -> bool:
    return len(points) == len(expected) and all(abs(a - b) <= TOLERANCE for p, e in zip(points, expected, strict=True)
                                                for a, b in zip(p, e, strict=True))




def _watch(page) -> list[str]:
    problems: list[str] = []  # JavaScript exceptions and CSP violations: the editor must cause none
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    return problems


def _sign_in(page, url: str, username: str, code: str | None = None) -> None:
    page.goto(url + "/#/login")
    page.locator("#login-form").wait_for()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if code is not None:
        page.get_by_label("Authentication code").fill(code)
        page.get_by_role("button", name="Verify").click()
    page.locator("#whoami").wait_for()


def _at(page, x: float, y: float) -> dict[str, float]:
    """A point of the drawing area (fractions of the frame) as a position inside it, in CSS pixels."""
    box = page.locator("#zones-svg").bounding_box()
    return {"x": x * box["width"], "y": y * box["height"]}


def _new_shape(page, kind: str, name: str | None = None) -> None:
    page.locator("#zones-new").click()
    page.locator("#zones-kind").select_option(kind)
    if name is not None:
        page.locator("#zones-name").fill(name)


def _save(page) -> str:
    page.locator("#zones-save").click()
    page.locator("#zones-saved, #zones-error .flash").first.wait_for()
    assert page.locator("#zones-error .flash").count() == 0, page.locator("#zones-error").inner_text()
    return page.locator("#zones-saved").inner_text()


def _draw_as_admin(browser, server, config: Path) -> None:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems = _watch(page)
    _sign_in(page, server.url, "admin", fresh_code(server.url, "admin"))
    page.locator("#nav").get_by_role("link", name="Zones").click()
    page.locator("#zones-svg").wait_for()
    assert natural_width(page.locator("#zones-img")) > 0
    assert page.locator("#zones-list .zone-pick").all_inner_texts() == ["Zone: table"]  # from GET /api/config

    # a zone: four clicks, one point dragged elsewhere, a name
    _new_shape(page, "zone", "porch")
    svg = page.locator("#zones-svg")
    for x, y in PORCH:
        svg.click(position=_at(page, x, y))
    box = svg.bounding_box()
    page.mouse.move(box["x"] + PORCH[2][0] * box["width"], box["y"] + PORCH[2][1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + PORCH_DRAGGED[0] * box["width"], box["y"] + PORCH_DRAGGED[1] * box["height"], steps=8)
    page.mouse.up()
    assert page.locator("#zones-svg circle.handle").count() == 4
    saved = _save(page)
    assert "cameras.office.zones" in saved and "restart" in saved.lower(), saved  # the restart notice
    zones = _camera(config)["zones"]
    expected = [PORCH[0], PORCH[1], PORCH_DRAGGED, PORCH[3]]
    assert _close(zones["porch"]["coordinates"], expected), zones["porch"]
    assert zones["table"]["objects"] == ["person"]  # the other zone is kept as it was, its labels too

    # a motion mask
    _new_shape(page, "motion")
    for x, y in MOTION_MASK:
        svg.click(position=_at(page, x, y))
    assert "cameras.office.motion.mask" in _save(page)
    masks = _camera(config)["motion"]["mask"]
    assert len(masks) == 1 and _close(masks[0], MOTION_MASK), masks

    # a privacy mask
    _new_shape(page, "privacy")
    for x, y in PRIVACY_MASK:
        svg.click(position=_at(page, x, y))
    assert "cameras.office.privacy_masks" in _save(page)
    masks = _camera(config)["privacy_masks"]
    assert len(masks) == 1 and _close(masks[0], PRIVACY_MASK), masks

    # a 2-point polygon: the server's own words, and the file is left alone
    before = config.read_text()
    _new_shape(page, "zone", "bad")
    for x, y in PORCH[:2]:
        svg.click(position=_at(page, x, y))
    page.locator("#zones-save").click()
    error = page.locator("#zones-error .flash")
    error.wait_for()
    assert "polygon needs ≥ 3 points, got 2" in error.inner_text(), error.inner_text()
    assert config.read_text() == before
    shot(page, "zones-desktop")
    page.locator("#zones-del-shape").click()
    assert "bad" not in " ".join(page.locator("#zones-list").all_inner_texts())

    # a phone: 390 px wide, touch (pointer events from taps), no sideways scrolling
    phone = browser.new_context(ignore_https_errors=True, viewport={"width": 390, "height": 844}, has_touch=True,
                                is_mobile=True, storage_state=context.storage_state())
    phone.set_default_timeout(15_000)
    tiny = phone.new_page()
    problems += _watch(tiny)
    tiny.goto(server.url + "/#/zones/office")
    tiny.locator("#zones-svg").wait_for()
    assert natural_width(tiny.locator("#zones-img")) > 0
    tiny.locator("#zones-new").tap()
    tiny.locator("#zones-kind").select_option("object")
    for x, y in OBJECT_MASK:
        tiny.locator("#zones-svg").tap(position=_at(tiny, x, y))
    frame = tiny.locator("#zones-frame").bounding_box()
    assert frame["x"] >= 0 and frame["x"] + frame["width"] <= 390, frame
    assert tiny.evaluate("() => document.documentElement.scrollWidth") <= 390
    shot(tiny, "zones-390")
    tiny.locator("#zones-save").tap()
    tiny.locator("#zones-saved").wait_for()
    masks = _camera(config)["objects"]["mask"]
    assert len(masks) == 1 and _close(masks[0], OBJECT_MASK), masks
    assert not problems, problems
    phone.close()
    context.close()


def _viewer_has_no_editor(browser, server) -> None:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    _sign_in(page, server.url, "viewer")
    assert page.locator("#nav").get_by_role("link", name="Zones").count() == 0
    page.goto(server.url + "/#/zones")  # typed by hand: the router sends the viewer home instead
    page.wait_for_url("**/#/live")
    page.locator("#main h1").first.wait_for()  # the home screen rendered, not the editor
    assert page.locator("#zones-svg").count() == 0
    context.close()


def test_zone_editor(tmp_path: Path, config: Path, browser, installed_models: None) -> None:
    with start_server(config, tmp_path / "server.log") as server:
        verify = ssl.create_default_context(cafile=str(server.cert))
        tokens = bootstrap(server.url, verify, server.setup_token or "")
        _draw_as_admin(browser, server, config)
        _viewer_has_no_editor(browser, server)
        drawn = config.read_text()
        for role in ("viewer", "operator"):  # the server refuses, whatever the page shows
            answer = httpx.patch(f"{server.url}/api/config", headers=bearer(tokens[role]), verify=verify,
                                 json={"cameras": {"office": {"zones": {}}}})
            assert answer.status_code == 403, (role, answer.text)
        assert config.read_text() == drawn
        with server.client(headers=bearer(tokens["admin"])) as admin:
            entries = admin.get("/api/audit", params={"action": "config_change", "limit": 10}).json()["entries"]
        paths = [c["path"] for e in entries for c in e["details"]["changes"]]
        assert {"cameras.office.zones", "cameras.office.motion.mask", "cameras.office.objects.mask",
                "cameras.office.privacy_masks"} <= set(paths)
        assert {e["user"] for e in entries} == {"admin"}

    # a restart on the same config applies the zone: the running config holds it and a rule may name it
    with start_server(config, tmp_path / "server-again.log") as again, \
            again.client(headers=bearer(tokens["admin"])) as admin:
        cameras = {c["name"]: c for c in admin.get("/api/cameras").json()}
        assert _close(cameras["office"]["zones"]["porch"], [PORCH[0], PORCH[1], PORCH_DRAGGED, PORCH[3]])
        running = admin.get("/api/config").json()
        office = running["config"]["cameras"]["office"]
        assert "porch" in office["zones"] and not running["restart_pending"]
        assert _close(office["motion"]["mask"][0], MOTION_MASK) and _close(office["objects"]["mask"][0], OBJECT_MASK)
        assert _close(office["privacy_masks"][0], PRIVACY_MASK)
        rules = [*office["rules"], {"name": "at-porch", "type": "enter_zone", "zone": "porch"}]
        answer = admin.patch("/api/config", json={"cameras": {"office": {"rules": rules}}})
        assert answer.status_code == 200, answer.text
        rules[-1]["zone"] = "nowhere"
        answer = admin.patch("/api/config", json={"cameras": {"office": {"rules": rules}}})
        assert answer.status_code == 422 and "zone 'nowhere', which does not exist" in answer.text, answer.text
