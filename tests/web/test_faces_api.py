"""Face enrolment over the API, over real HTTPS (uvicorn in-process, real SQLite, real vault keys, real photos and
the real YuNet + dlib models): an admin with ``biometrics`` enrols a person from a photo (enrolled_by = that user,
audited), a photo with no face or several faces is refused with the reason and nothing is stored, the list and
the right-of-access export never carry a template, erasure shreds the key file and relabels past events; every
other caller (other roles, even with biometrics, and admins without it) gets 403, anonymous 401.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from web_helpers import PASSWORD, InProcessServer, bootstrap, session, token_for

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import EventRow
from trustcam.vision import catalog
from trustcam.vision.faces import YUNET
from trustcam.web.context import AppContext

EVENT = f"{9:032x}"
NAME = "Barack Obama"
T0 = 1_700_000_000.0


@dataclass
class Site:
    server: InProcessServer
    tokens: dict[str, str]  # admin (no biometrics), operator, viewer, bio (admin + biometrics), bio-op (operator)
    engine: Engine
    data: Path  # the server's data_dir
    photos: Path  # knn_examples
    no_face: bytes  # a JPEG frame of a street with cars and nobody in it
    browser: tuple[httpx.Client, str]  # bio's cookie session and its CSRF token, as the UI has them


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, person_video: Path,
         car_video: Path) -> Iterator[Site]:
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)  # as `make models` does, from ../shared/models
    tmp = tmp_path_factory.mktemp("faces-api")
    with av.open(str(car_video)) as container:
        frame = next(container.decode(container.streams.video[0])).to_ndarray(format="bgr24")
    no_face = cv2.imencode(".jpg", frame)[1].tobytes()
    saved = os.environ.pop(ENV_KEK, None)
    settings = parse_settings({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "vault": {"root": str(tmp / "vault"), "key_file": str(tmp / "keys" / "kek"),
                  "signing_key_file": str(tmp / "keys" / "signing")},
        "cameras": {"door": {"source": str(person_video), "faces": {"enabled": True}}},
    })
    engine = open_database(settings.resolved_database_url)
    with Session(engine) as db, db.begin():  # a past event already naming the person (as recognition would)
        db.add(EventRow(id=EVENT, camera="door", label="person", track_id=1, start=T0, end=T0 + 2.0,
                        best_score=0.9, box=[1.0, 2.0, 30.0, 60.0], zones=[], rules=[], threat="none",
                        model_name="yolox-nano", model_sha256="ab" * 32, sub_label=NAME, face_distance=0.3,
                        face_margin=0.2))
    ctx = AppContext(settings=settings, engine=engine, bus=Bus())
    try:
        with InProcessServer(ctx) as server:
            tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "")
            with server.client(tokens["admin"]) as admin:
                for name, role in (("bio", "admin"), ("bio-op", "operator")):
                    made = admin.post("/api/users", json={"username": name, "password": PASSWORD, "role": role})
                    assert made.status_code == 201, made.text
                    granted = admin.patch(f"/api/users/{name}", json={"biometrics": True})
                    assert granted.json()["biometrics"] is True, granted.text
            browsers = {}
            for name in ("bio", "bio-op"):
                browsers[name] = session(server.url, server.verify, name)
                tokens[name] = token_for(*browsers[name], "tests", name)
            yield Site(server, tokens, engine, settings.data_dir, data_dir / "faces" / "knn_examples", no_face,
                       browsers["bio"])
            for client, _ in browsers.values():
                client.close()
    finally:
        if saved is not None:
            os.environ[ENV_KEK] = saved


def _enrol(site: Site, who: str, name: str, files: list[tuple[str, bytes]], consent: str = "signed form 2026-12",
           **fields: str) -> httpx.Response:
    with site.server.client(site.tokens[who]) as client:
        return client.post("/api/faces", data={"name": name, "consent": consent, **fields},
                           files=[("images", (filename, data, "image/jpeg")) for filename, data in files])


def _audit(site: Site, action: str) -> list[dict]:
    with site.server.client(site.tokens["bio"]) as admin:
        return admin.get("/api/audit", params={"action": action, "limit": 500}).json()["entries"]


def _list(site: Site) -> list[dict]:
    with site.server.client(site.tokens["bio"]) as client:
        answer = client.get("/api/faces")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_only_admins_with_biometrics_get_in(site: Site) -> None:
    routes = [("GET", "/api/faces"), ("POST", "/api/faces"), ("DELETE", f"/api/faces/{NAME}"),
              ("GET", f"/api/faces/{NAME}/export")]
    for who in ("viewer", "operator", "bio-op", "admin"):
        with site.server.client(site.tokens[who]) as client:
            for method, path in routes:
                answer = client.request(method, path)
                assert answer.status_code == 403, (who, method, path, answer.text)
                if who == "admin":
                    assert "'biometrics' permission" in answer.json()["detail"]
    with site.server.client() as anonymous:
        assert all(anonymous.request(m, p).status_code == 401 for m, p in routes)


def test_refused_photos_are_named_with_the_reason_and_nothing_is_stored(site: Site) -> None:
    good = (site.photos / "train" / "obama" / "obama.jpg").read_bytes()
    pair = (site.photos / "test" / "obama_and_biden.jpg").read_bytes()
    answer = _enrol(site, "bio", "Refused Person", [("ok.jpg", good), ("street.jpg", site.no_face),
                                                    ("pair.jpg", pair), ("notes.txt", b"not a picture")])
    assert answer.status_code == 422, answer.text
    refused = {r["image"]: r["reason"] for r in answer.json()["refused"]}
    assert set(refused) == {"street.jpg", "pair.jpg", "notes.txt"}, refused
    assert "no face found" in refused["street.jpg"] and "alone" in refused["pair.jpg"]
    assert "not a readable image" in refused["notes.txt"]
    assert "3 of 4 image(s) refused" in answer.json()["detail"]
    assert all(i["name"] != "Refused Person" for i in _list(site))
    keys = site.data / "faces" / "keys"
    assert not keys.exists() or not list(keys.iterdir())
    for missing in ({"name": "", "consent": "x"}, {"name": "X", "consent": " "}):
        with site.server.client(site.tokens["bio"]) as client:
            assert client.post("/api/faces", data=missing, files=[("images", ("ok.jpg", good))]).status_code == 422


def test_enrol_list_export_erase(site: Site) -> None:
    photo = (site.photos / "train" / "obama" / "obama.jpg").read_bytes()
    answer = _enrol(site, "bio", NAME, [("obama.jpg", photo)], expires="2099-01-01")
    assert answer.status_code == 201, answer.text
    enrolled = answer.json()
    assert (enrolled["name"], enrolled["enrolled_by"], enrolled["templates"]) == (NAME, "bio", 1)
    assert enrolled["consent"] == "signed form 2026-12" and enrolled["expires_at"] == 4070908800.0
    assert _enrol(site, "bio", NAME, [("obama.jpg", photo)]).status_code == 422  # the name must be new
    [listed] = [i for i in _list(site) if i["name"] == NAME]
    assert set(listed) == {"name", "enrolled_by", "enrolled_at", "consent", "expires_at", "templates"}
    [entry] = [e for e in _audit(site, "faces.enroll") if e["target"] == NAME]
    assert entry["user"] == "bio" and entry["details"]["templates"] == 1
    assert not [p for p in site.data.rglob("*") if p.is_file() and p.read_bytes() == photo]  # the photo is not kept

    with site.server.client(site.tokens["bio"]) as client:
        export = client.get(f"/api/faces/{NAME}/export")
    assert export.status_code == 200, export.text
    record = export.json()
    assert (record["identity"], record["enrolled_by"], record["consent"]) == (NAME, "bio", "signed form 2026-12")
    assert [e["id"] for e in record["events"]] == [EVENT]
    [template] = record["stored"]["templates"]
    assert set(template) == {"enrolled_at", "source_image_sha256", "quality"}  # what is kept, not the template
    assert [e["target"] for e in _audit(site, "faces.export")] == [NAME]

    [key] = list((site.data / "faces" / "keys").iterdir())
    with site.server.client(site.tokens["bio"]) as client:
        assert client.delete(f"/api/faces/{NAME}").status_code == 204
        assert client.delete(f"/api/faces/{NAME}").status_code == 404
        assert client.get(f"/api/faces/{NAME}/export").status_code == 404
    assert not key.exists()  # crypto-shredded
    assert all(i["name"] != NAME for i in _list(site))
    with Session(site.engine) as db:
        assert db.get(EventRow, EVENT).sub_label == "erased"
    [erased] = _audit(site, "faces.erase")
    assert (erased["target"], erased["user"], erased["details"]["events_relabelled"]) == (NAME, "bio", 1)


def test_enrol_from_a_browser_session_needs_the_csrf_header(site: Site) -> None:
    photo = (site.photos / "train" / "biden" / "biden.jpg").read_bytes()
    client, csrf = site.browser
    body = {"data": {"name": "Joe Biden", "consent": "on file"}, "files": [("images", ("biden.jpg", photo))]}
    assert client.post("/api/faces", **body).status_code == 403
    answer = client.post("/api/faces", headers={"X-CSRF-Token": csrf}, **body)
    assert answer.status_code == 201, answer.text
    assert client.delete("/api/faces/Joe Biden", headers={"X-CSRF-Token": csrf}).status_code == 204


def test_faces_page_enrols_lists_and_erases(site: Site, browser) -> None:
    """The UI page over the same server: enrol with consent and a photo, see the row, erase after confirming."""
    client, _ = site.browser
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    context.add_cookies([{"name": name, "value": value, "url": site.server.url}  # bio's session: TOTP already used
                         for name, value in client.cookies.items()])
    page = context.new_page()
    try:
        page.goto(f"{site.server.url}/#/faces")
        page.locator("#nav").get_by_role("link", name="Faces").wait_for()
        form = page.locator("#face-form")
        form.locator("input[name=name]").fill("Rose Leslie")
        form.locator("textarea[name=consent]").fill("consent form 12")
        form.locator("input[name=images]").set_input_files(str(site.photos / "train" / "rose_leslie" / "img1.jpg"))
        form.locator("#enrol-face").click()
        row = page.locator("#face-table tr[data-face='Rose Leslie']")
        row.wait_for()
        assert "consent form 12" in row.inner_text() and "bio" in row.inner_text()
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Erase Rose Leslie").click()
        row.wait_for(state="detached")
    finally:
        context.close()
    assert all(i["name"] != "Rose Leslie" for i in _list(site))
