"""Faces blurred by permission, over real HTTPS (uvicorn in-process, real SQLite, a real vault holding a real video
of two faces made with ffmpeg from a photo): on a camera with ``faces.enabled``, users without ``biometrics`` get
the faces blurred in live MJPEG, the camera snapshot, the event snapshot and the event clip (checked in pixels:
no detail left in the face boxes and YuNet finds no face), never the raw MSE stream, no identity in the events API
and no evidence export; a user granted ``biometrics`` gets the original; granting is admin-only and audited.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from web_helpers import PASSWORD, InProcessServer, audit_entries, bootstrap, cli, first_mjpeg_jpeg, session, token_for

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.events.snapshot import render_snapshot
from trustcam.ingest.frame import Frame
from trustcam.security.roles import Role
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import EventRow
from trustcam.storage.vault import Vault
from trustcam.vision import catalog, face_blur
from trustcam.vision.faces import YUNET, FaceRecognizer
from trustcam.web.auth import Principal
from trustcam.web.context import AppContext
from trustcam.web.routers.live_ws import raw_video_allowed

T0 = 1_700_000_000.0
EVENT = f"{7:032x}"
IDENTITY = "Kit Harington"


@dataclass
class Site:
    server: InProcessServer
    tokens: dict[str, str]  # admin, operator, viewer (none has biometrics), bio (operator granted biometrics)
    frame: np.ndarray  # the live frame as published (and the video's picture)
    snapshot: bytes  # the event snapshot as stored
    faces: list[tuple[float, float, float, float]]  # face boxes in the original frame
    recognizer: FaceRecognizer


def _sharpness(image: np.ndarray, box: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = (round(v) for v in box)
    return float(cv2.Laplacian(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _image(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, data[:64]
    return image


def assert_blurred(site: Site, image: np.ndarray, original: np.ndarray) -> None:
    """Every face box has (almost) no detail left, YuNet finds no face, the picture away from faces stays."""
    assert image.shape == original.shape
    for box in site.faces:
        assert _sharpness(image, box) < 0.1 * _sharpness(original, box), box
    assert site.recognizer.faces_in(image) == [], "a face is still detectable"
    h, w = image.shape[:2]
    corner = (slice(round(0.85 * h), h), slice(0, round(0.1 * w)))  # bottom left: no face near it
    assert np.abs(image[corner].astype(int) - original[corner]).mean() < 8


def assert_original(site: Site, image: np.ndarray, original: np.ndarray) -> None:
    assert image.shape == original.shape
    assert len(site.recognizer.faces_in(image)) == len(site.faces)
    for box in site.faces:
        assert _sharpness(image, box) > 0.5 * _sharpness(original, box), box


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Site]:
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)  # as `make models` does, from ../shared/models
    face_blur.reset()
    tmp = tmp_path_factory.mktemp("faces")
    photo = data_dir / "faces" / "knn_examples" / "test" / "kit_with_rose.jpg"
    video = tmp / "door.mp4"  # 3 s of the photo, H.264 as a camera records it
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-i", str(photo), "-t", "3", "-r", "10",
                    "-vf", "scale=640:-2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10", str(video)],
                   check=True, timeout=60)
    with av.open(str(video)) as container:
        frame = next(container.decode(container.streams.video[0])).to_ndarray(format="bgr24")
    recognizer = FaceRecognizer()
    faces = [f.box for f in recognizer.faces_in(frame)]
    assert len(faces) == 2
    saved = os.environ.pop(ENV_KEK, None)
    settings = parse_settings({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "vault": {"root": str(tmp / "vault"), "key_file": str(tmp / "keys" / "kek"),
                  "signing_key_file": str(tmp / "keys" / "signing"), "checkpoint_every": 1},
        "cameras": {"door": {"source": str(video), "faces": {"enabled": True},
                             "record": {"enabled": True, "mode": "continuous", "pre_capture_s": 0.5,
                                        "post_capture_s": 0.5}}},
    })
    engine = open_database(settings.resolved_database_url)
    vault = Vault(settings.vault, engine)
    vault.store_segment("door", video.read_bytes(), T0, T0 + 3.0, labels=["person"])
    vault.close_camera("door")
    snapshot = render_snapshot(frame, (20.0, 300.0, 120.0, 400.0), "person 0.90")  # box away from the faces
    with Session(engine) as db, db.begin():
        db.add(EventRow(id=EVENT, camera="door", label="person", track_id=1, start=T0 + 1.0, end=T0 + 2.0,
                        best_score=0.9, box=[20.0, 300.0, 120.0, 400.0], zones=[], rules=[], threat="none",
                        snapshot=vault.store_blob("door", snapshot), model_name="yolox-nano",
                        model_sha256="ab" * 32, sub_label=IDENTITY, face_distance=0.31, face_margin=0.22))
    ctx = AppContext(settings=settings, engine=engine, bus=Bus(), vault=vault)
    assert ctx.live is not None
    ctx.live.publish("door", Frame(frame, 0, 0.0), [])
    try:
        with InProcessServer(ctx) as server:
            tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "")
            with server.client(tokens["admin"]) as admin:
                for name in ("bio", "flip"):
                    made = admin.post("/api/users", json={"username": name, "password": PASSWORD,
                                                          "role": "operator"})
                    assert made.status_code == 201 and made.json()["biometrics"] is False, made.text
                granted = admin.patch("/api/users/bio", json={"biometrics": True})
                assert granted.status_code == 200 and granted.json()["biometrics"] is True, granted.text
            for name in ("bio", "flip"):
                client, csrf = session(server.url, server.verify, name)
                tokens[name] = token_for(client, csrf, "tests", name)
                client.close()
            yield Site(server, tokens, frame, snapshot, faces, recognizer)
    finally:
        if saved is not None:
            os.environ[ENV_KEK] = saved


def _get(site: Site, who: str, path: str, **params: object) -> httpx.Response:
    with site.server.client(site.tokens[who]) as client:
        answer = client.get(path, params=params)
    assert answer.status_code == 200, (who, path, answer.text)
    return answer


def _first_mjpeg_jpeg(site: Site, who: str) -> bytes:
    with site.server.client(site.tokens[who]) as client:
        return first_mjpeg_jpeg(client, "door")


def _audit(site: Site, action: str) -> list[dict]:
    with site.server.client(site.tokens["admin"]) as admin:
        return audit_entries(admin, action)




def test_live_mjpeg_blurs_faces_without_the_permission(site: Site) -> None:
    for who in ("viewer", "admin"):  # no role implies it, admins included
        assert_blurred(site, _image(_first_mjpeg_jpeg(site, who)), site.frame)
    assert_original(site, _image(_first_mjpeg_jpeg(site, "bio")), site.frame)
    views = {e["user"]: e["details"]["faces_blurred"] for e in _audit(site, "view_live")}
    assert views == {"viewer": True, "admin": True, "bio": False}, views


def test_camera_snapshot_blurs_faces_without_the_permission(site: Site) -> None:
    assert_blurred(site, _image(_get(site, "operator", "/api/cameras/door/snapshot.jpg").content), site.frame)
    assert_original(site, _image(_get(site, "bio", "/api/cameras/door/snapshot.jpg").content), site.frame)


def test_event_snapshot_blurs_faces_without_the_permission(site: Site) -> None:
    path = f"/api/events/{EVENT}/snapshot.jpg"
    assert_blurred(site, _image(_get(site, "viewer", path).content), _image(site.snapshot))
    assert _get(site, "bio", path).content == site.snapshot  # the original, byte for byte


def test_event_clip_blurs_faces_and_is_never_served_from_the_other_cache_entry(site: Site) -> None:
    path = f"/api/events/{EVENT}/clip.mp4"
    original = _get(site, "bio", path).content  # built first: the original clip sits in the cache
    blurred = _get(site, "viewer", path).content
    assert blurred != original
    with av.open(io.BytesIO(blurred)) as container:
        shown = [f.to_ndarray(format="bgr24") for f in container.decode(container.streams.video[0])]
    with av.open(io.BytesIO(original)) as container:
        plain = [f.to_ndarray(format="bgr24") for f in container.decode(container.streams.video[0])]
    assert len(shown) == len(plain) >= 20
    for i in (0, len(shown) // 2, len(shown) - 1):
        assert_blurred(site, shown[i], plain[i])
        assert_original(site, plain[i], site.frame)


def test_raw_live_video_only_with_the_permission(site: Site) -> None:
    camera = site.server.ctx.settings.cameras["door"]
    for role in (Role.viewer, Role.operator, Role.admin):
        assert not raw_video_allowed(Principal(1, "u", role, None, "session", "s1", unmasked=True), camera)
        assert raw_video_allowed(Principal(1, "u", role, None, "session", "s1", biometrics=True), camera)


def test_identities_only_with_the_permission(site: Site) -> None:
    for who in ("viewer", "operator", "admin"):
        listed = _get(site, who, "/api/events").json()["events"]
        one = _get(site, who, f"/api/events/{EVENT}").json()
        for event in (*listed, one):
            assert event["sub_label"] is None and event["face_distance"] is None and event["face_margin"] is None
        assert IDENTITY not in _get(site, who, "/api/events").text
    one = _get(site, "bio", f"/api/events/{EVENT}").json()
    assert (one["sub_label"], one["face_distance"], one["face_margin"]) == (IDENTITY, 0.31, 0.22)


def test_exports_are_refused_to_users_who_see_faces_blurred(site: Site) -> None:
    span = {"start": T0, "end": T0 + 3.0}
    for who in ("operator", "admin"):
        with site.server.client(site.tokens[who]) as client:
            for answer in (client.post(f"/api/events/{EVENT}/export"),
                           client.post("/api/cameras/door/export", params=span)):
                assert answer.status_code == 403, answer.text
                assert "'biometrics'" in answer.json()["detail"] and "unmasked" not in answer.json()["detail"]
                assert not answer.content.startswith(b"PK")
    refused = [e for e in _audit(site, "export_event") + _audit(site, "export_range") if e["outcome"] == "refused"]
    assert len(refused) == 4 and {e["details"]["reason"] for e in refused} == {"faces"}, refused
    with site.server.client(site.tokens["bio"]) as bio:
        bundle = bio.post(f"/api/events/{EVENT}/export")
        assert bundle.status_code == 200, bundle.text
        assert bundle.content.startswith(b"PK")


def test_granting_and_revoking_is_admin_only_and_audited(site: Site) -> None:
    path = "/api/cameras/door/snapshot.jpg"
    for who in ("operator", "viewer", "flip"):  # nobody but an admin, not even for themselves
        with site.server.client(site.tokens[who]) as client:
            for target in (who, "flip"):
                assert client.patch(f"/api/users/{target}", json={"biometrics": True}).status_code == 403
    assert _get(site, "flip", "/api/me").json()["biometrics"] is False
    assert_blurred(site, _image(_get(site, "flip", path).content), site.frame)
    with site.server.client(site.tokens["admin"]) as admin:
        assert admin.patch("/api/users/flip", json={"biometrics": True}).json()["biometrics"] is True
        assert _get(site, "flip", "/api/me").json()["biometrics"] is True
        assert_original(site, _image(_get(site, "flip", path).content), site.frame)
        assert admin.patch("/api/users/flip", json={"biometrics": False}).json()["biometrics"] is False
        assert_blurred(site, _image(_get(site, "flip", path).content), site.frame)  # at the next request
        listed = {u["username"]: u["biometrics"] for u in admin.get("/api/users").json()}
    assert listed == {"admin": False, "operator": False, "viewer": False, "bio": True, "flip": False}
    grants = [(e["target"], e["user"]) for e in _audit(site, "biometrics.grant")]
    revokes = [(e["target"], e["user"]) for e in _audit(site, "biometrics.revoke")]
    assert sorted(grants) == [("bio", "admin"), ("flip", "admin")] and revokes == [("flip", "admin")]



def test_cli_grants_and_revokes_with_an_audit_entry(tmp_path: Path) -> None:
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    made = cli(config, "users", "create", "erin", "--role", "operator", "--biometrics", "--password-stdin",
                stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert "erin\toperator\tcameras=all\tbiometrics" in cli(config, "users", "list").stdout
    revoked = cli(config, "users", "grant-biometrics", "erin", "--revoke")
    assert revoked.returncode == 0 and "no longer sees faces unblurred" in revoked.stderr, revoked.stderr
    assert "erin\toperator\tcameras=all\n" in cli(config, "users", "list").stdout + "\n"
    granted = cli(config, "users", "grant-biometrics", "erin")
    assert granted.returncode == 0 and "now sees faces unblurred" in granted.stderr, granted.stderr
    missing = cli(config, "users", "grant-biometrics", "nobody")
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr
    shown = [yaml.safe_load(line) for line in cli(config, "audit", "show", "--json").stdout.splitlines()]
    assert [(e["action"], e["target"]) for e in shown] == [
        ("user.create", "erin"), ("biometrics.revoke", "erin"), ("biometrics.grant", "erin")]
    assert shown[0]["details"]["biometrics"] is True and shown[2]["user"].startswith("cli:")


def test_migration_gives_existing_users_no_biometrics_permission(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from trustcam.storage.database import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'trustcam.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as db:
        config.attributes["connection"] = db  # what storage.database hands the migrations
        command.upgrade(config, "0011")
    with engine.begin() as db:
        db.execute(text("insert into users (username, role, password_hash, recovery_codes, totp_last_step, "
                        "mfa_enabled, disabled, created, updated, unmasked) values ('old', 'admin', 'x', '[]', 0, 0, "
                        "0, 1, 1, 1)"))
    engine.dispose()
    migrated = open_database(url)  # upgrades to head, as `trustcam run` does at start
    with migrated.connect() as db:
        assert db.execute(text("select biometrics from users where username = 'old'")).scalar() == 0
