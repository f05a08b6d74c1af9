"""Privacy masks by permission, over real HTTPS (uvicorn in-process, real SQLite, a real vault holding real
ffmpeg-cut segments of the car clip): users without ``unmasked`` get black pixels inside the camera's mask in live
MJPEG, the camera snapshot, the event snapshot and the event clip (checked on the decoded pixels); a user granted
``unmasked`` gets the original pixels; the vault keeps the original bytes; evidence exports are refused to users
who see the camera masked; granting and revoking is admin-only and audited (API and CLI).
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
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session
from web_helpers import PASSWORD, InProcessServer, audit_entries, bootstrap, cli, first_mjpeg_jpeg, session, token_for

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.events.snapshot import render_snapshot
from trustcam.ingest.frame import Frame
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.storage.evidence import decrypt_segment
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import EventRow, SegmentRow
from trustcam.storage.vault import Vault
from trustcam.web.context import AppContext

T0 = 1_700_000_000.0
SEG_S = 4.8
EVENT = f"{1:032x}"
MASK = [[0.05, 0.05], [0.45, 0.05], [0.45, 0.45], [0.05, 0.45]]
SNAPSHOT_BOX = (500.0, 260.0, 700.0, 400.0)  # drawn far from the mask


@dataclass
class Site:
    server: InProcessServer
    tokens: dict[str, str]  # admin, operator, viewer (none has unmasked), trusted (operator granted unmasked)
    parts: list[bytes]  # the segments as stored
    frame: np.ndarray  # the live frame as published
    snapshot: bytes  # the event snapshot as stored
    vault: Vault


def _inside(image: np.ndarray, margin: float = 0.03) -> np.ndarray:
    """Pixels well inside the mask (JPEG and codec blocks blur its edges by a few pixels)."""
    h, w = image.shape[:2]
    return image[round((0.05 + margin) * h):round((0.45 - margin) * h),
                 round((0.05 + margin) * w):round((0.45 - margin) * w)]


def _outside(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return image[round(0.55 * h):round(0.95 * h), round(0.55 * w):round(0.95 * w)]


def _first_frame(video: Path) -> np.ndarray:
    with av.open(str(video)) as container:
        return next(container.decode(container.streams.video[0])).to_ndarray(format="bgr24")


def _frames(mp4: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(mp4)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(container.streams.video[0])]


def _image(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, data[:64]
    return image


def _assert_masked(image: np.ndarray, original: np.ndarray, tolerance: float = 6.0) -> None:
    assert image.shape == original.shape
    assert _inside(image).max() <= 16, f"inside the mask: max {_inside(image).max()}, mean {_inside(image).mean()}"
    assert np.abs(_outside(image).astype(int) - _outside(original)).mean() < tolerance  # the rest stays visible


def _assert_original(image: np.ndarray, original: np.ndarray, tolerance: float = 6.0) -> None:
    assert image.shape == original.shape
    assert _inside(image).mean() > 30, "the masked area is dark: not the original picture"
    assert np.abs(_inside(image).astype(int) - _inside(original)).mean() < tolerance


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("privacy")
    saved = os.environ.pop(ENV_KEK, None)
    record = {"enabled": True, "mode": "continuous", "pre_capture_s": 1.0, "post_capture_s": 1.0}
    settings = parse_settings({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "vault": {"root": str(tmp / "vault"), "key_file": str(tmp / "keys" / "kek"),
                  "signing_key_file": str(tmp / "keys" / "signing"), "checkpoint_every": 2},
        "cameras": {"back": {"source": str(car_video), "record": record, "privacy_masks": [MASK]}},
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
    vault.close_camera("back")
    frame = _first_frame(car_video)
    snapshot = render_snapshot(frame, SNAPSHOT_BOX, "car 0.80")
    with Session(engine) as db, db.begin():
        db.add(EventRow(id=EVENT, camera="back", label="car", track_id=1, start=T0 + 6.0, end=T0 + 10.0,
                        best_score=0.8, box=list(SNAPSHOT_BOX), zones=[], rules=[], threat="none",
                        snapshot=vault.store_blob("back", snapshot), model_name="yolox-nano",
                        model_sha256="ab" * 32))
    ctx = AppContext(settings=settings, engine=engine, bus=Bus(), vault=vault)
    assert ctx.live is not None
    ctx.live.publish("back", Frame(frame, 0, 0.0), [])
    try:
        with InProcessServer(ctx) as server:
            tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "",
                               viewer_cameras=["back"])
            with server.client(tokens["admin"]) as admin:
                for name in ("trusted", "flip"):
                    made = admin.post("/api/users", json={"username": name, "password": PASSWORD,
                                                          "role": "operator"})
                    assert made.status_code == 201 and made.json()["unmasked"] is False, made.text
                granted = admin.patch("/api/users/trusted", json={"unmasked": True})
                assert granted.status_code == 200 and granted.json()["unmasked"] is True, granted.text
            for name in ("trusted", "flip"):
                client, csrf = session(server.url, server.verify, name)
                tokens[name] = token_for(client, csrf, "tests", name)
                client.close()
            yield Site(server, tokens, parts, frame, snapshot, vault)
    finally:
        if saved is not None:
            os.environ[ENV_KEK] = saved


def _get(site: Site, who: str, path: str) -> httpx.Response:
    with site.server.client(site.tokens[who]) as client:
        answer = client.get(path)
    assert answer.status_code == 200, (who, path, answer.text)
    return answer


def _first_mjpeg_jpeg(site: Site, who: str) -> bytes:
    with site.server.client(site.tokens[who]) as client:
        return first_mjpeg_jpeg(client, "back")


def _audit(site: Site, action: str) -> list[dict]:
    with site.server.client(site.tokens["admin"]) as admin:
        return audit_entries(admin, action)




def test_live_mjpeg_is_masked_without_the_permission(site: Site) -> None:
    for who in ("viewer", "operator", "admin"):  # no role implies it, admins included
        _assert_masked(_image(_first_mjpeg_jpeg(site, who)), site.frame)
    _assert_original(_image(_first_mjpeg_jpeg(site, "trusted")), site.frame)
    views = {e["user"]: e["details"]["masked"] for e in _audit(site, "view_live")}
    assert views == {"viewer": True, "operator": True, "admin": True, "trusted": False}, views


def test_camera_snapshot_is_masked_without_the_permission(site: Site) -> None:
    for who in ("viewer", "admin"):
        _assert_masked(_image(_get(site, who, "/api/cameras/back/snapshot.jpg").content), site.frame)
    _assert_original(_image(_get(site, "trusted", "/api/cameras/back/snapshot.jpg").content), site.frame)


def test_event_snapshot_is_masked_without_the_permission(site: Site) -> None:
    path = f"/api/events/{EVENT}/snapshot.jpg"
    stored = _image(site.snapshot)
    _assert_masked(_image(_get(site, "viewer", path).content), stored)
    assert _get(site, "trusted", path).content == site.snapshot  # the original, byte for byte


def test_event_clip_is_masked_and_never_served_from_the_other_cache_entry(site: Site) -> None:
    path = f"/api/events/{EVENT}/clip.mp4"
    original = _get(site, "trusted", path).content  # built first: an unmasked clip sits in the cache
    masked = _get(site, "viewer", path).content  # within the cache TTL: must not be the cached original
    assert masked != original
    plain, shown = _frames(original), _frames(masked)
    assert len(shown) == len(plain) > 100
    for i in (0, len(shown) // 2, len(shown) - 1):
        _assert_masked(shown[i], plain[i], tolerance=8.0)
        assert _inside(plain[i]).mean() > 30, "the unmasked clip must show the original picture"
    remuxed = _frames(site.parts[1]) + _frames(site.parts[2])  # the clip joins segments 1 and 2 as recorded
    assert len(plain) == len(remuxed)
    assert all(np.array_equal(a, b) for a, b in zip(plain[::25], remuxed[::25], strict=True))
    assert _get(site, "operator", path).content == masked  # the masked build is cached for every masked user


def test_vault_keeps_the_original_footage(site: Site) -> None:
    _get(site, "viewer", f"/api/events/{EVENT}/clip.mp4")
    with Session(site.vault.engine) as db:
        rows = list(db.scalars(select(SegmentRow).where(SegmentRow.camera == "back").order_by(SegmentRow.seq)))
    assert [decrypt_segment(site.vault, row) for row in rows] == site.parts
    assert site.vault.read_blob(_snapshot_ref(site)) == site.snapshot
    assert site.vault.verify_chain("back", deep=True) == []


def _snapshot_ref(site: Site) -> str:
    with Session(site.vault.engine) as db:
        return str(db.get(EventRow, EVENT).snapshot)


def test_exports_are_refused_to_users_who_see_the_camera_masked(site: Site) -> None:
    span = {"start": T0, "end": T0 + 3 * SEG_S}
    with site.server.client(site.tokens["operator"]) as operator:
        for answer in (operator.post(f"/api/events/{EVENT}/export"),
                       operator.post("/api/cameras/back/export", params=span)):
            assert answer.status_code == 403, answer.text
            assert "privacy masks" in answer.json()["detail"] and "unmasked" in answer.json()["detail"]
            assert not answer.content.startswith(b"PK")
    refused = [e for e in _audit(site, "export_event") + _audit(site, "export_range") if e["user"] == "operator"]
    assert len(refused) == 2 and all(e["outcome"] == "refused" for e in refused), refused
    assert {e["details"]["reason"] for e in refused} == {"privacy masks"}
    with site.server.client(site.tokens["trusted"]) as trusted:
        bundle = trusted.post(f"/api/events/{EVENT}/export")
        assert bundle.status_code == 200, bundle.text
        assert bundle.content.startswith(b"PK")


def test_granting_and_revoking_is_admin_only_and_audited(site: Site) -> None:
    path = "/api/cameras/back/snapshot.jpg"
    for who in ("operator", "viewer", "flip"):  # nobody but an admin, not even for themselves
        with site.server.client(site.tokens[who]) as client:
            for target in (who, "flip"):
                assert client.patch(f"/api/users/{target}", json={"unmasked": True}).status_code == 403
    _assert_masked(_image(_get(site, "flip", path).content), site.frame)
    with site.server.client(site.tokens["admin"]) as admin:
        assert admin.patch("/api/users/flip", json={"unmasked": True}).json()["unmasked"] is True
        _assert_original(_image(_get(site, "flip", path).content), site.frame)
        assert admin.patch("/api/users/flip", json={"unmasked": False}).json()["unmasked"] is False
        _assert_masked(_image(_get(site, "flip", path).content), site.frame)  # takes effect at the next request
        listed = {u["username"]: u["unmasked"] for u in admin.get("/api/users").json()}
    assert listed["trusted"] is True and listed["flip"] is False and listed["admin"] is False
    grants = [(e["action"], e["target"], e["user"]) for e in _audit(site, "unmasked.grant")]
    revokes = [(e["action"], e["target"], e["user"]) for e in _audit(site, "unmasked.revoke")]
    assert ("unmasked.grant", "flip", "admin") in grants and ("unmasked.grant", "trusted", "admin") in grants
    assert revokes == [("unmasked.revoke", "flip", "admin")]



def test_cli_grants_and_revokes_with_an_audit_entry(tmp_path: Path) -> None:
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    made = cli(config, "users", "create", "carol", "--role", "viewer", "--unmasked", "--password-stdin",
                stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert cli(config, "users", "create", "dave", "--role", "viewer", "--password-stdin",
                stdin=PASSWORD + "\n").returncode == 0
    listing = cli(config, "users", "list").stdout
    assert "carol\tviewer\tcameras=all\tunmasked" in listing and "dave\tviewer\tcameras=all\n" in listing + "\n"
    revoked = cli(config, "users", "grant-unmasked", "carol", "--revoke")
    assert revoked.returncode == 0 and "no longer sees behind privacy masks" in revoked.stderr, revoked.stderr
    granted = cli(config, "users", "grant-unmasked", "dave")
    assert granted.returncode == 0 and "now sees behind privacy masks" in granted.stderr, granted.stderr
    missing = cli(config, "users", "grant-unmasked", "nobody")
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr
    listing = cli(config, "users", "list").stdout
    assert "carol\tviewer\tcameras=all\n" in listing + "\n" and "dave\tviewer\tcameras=all\tunmasked" in listing
    shown = [yaml.safe_load(line) for line in cli(config, "audit", "show", "--json").stdout.splitlines()]
    assert [(e["action"], e["target"]) for e in shown] == [
        ("user.create", "carol"), ("user.create", "dave"), ("unmasked.revoke", "carol"), ("unmasked.grant", "dave")]
    assert shown[0]["details"]["unmasked"] is True and shown[2]["user"].startswith("cli:")


def test_migration_gives_existing_users_no_unmasked_permission(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from trustcam.storage.database import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'trustcam.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as db:
        config.attributes["connection"] = db  # what storage.database hands the migrations
        command.upgrade(config, "0007")
    with engine.begin() as db:
        db.execute(text("insert into users (username, role, password_hash, recovery_codes, totp_last_step, "
                        "mfa_enabled, disabled, created, updated) values ('old', 'admin', 'x', '[]', 0, 0, 0, 1, 1)"))
    engine.dispose()
    migrated = open_database(url)  # upgrades to head, as `trustcam run` does at start
    with migrated.connect() as db:
        assert db.execute(text("select unmasked from users where username = 'old'")).scalar() == 0
