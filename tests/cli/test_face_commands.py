"""`trustcam faces` as an operator uses it (typer's runner, real config, database, KEK and photos): enrolment with
consent and refusals, export, erasure, expiry, calibration; each change audited."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from trustcam.cli import app
from trustcam.config.loader import load_settings
from trustcam.storage.database import open_database
from trustcam.storage.faces import FaceStore, threshold_for
from trustcam.storage.keys import Keyring
from trustcam.vision import catalog
from trustcam.vision.faces import YUNET, FaceRecognizer, load_image, single_face


@pytest.fixture(scope="module", autouse=True)
def face_model() -> None:
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "trustcam.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\nvault:\n  root: {tmp_path / 'rec'}\n"
                    f"  key_file: {tmp_path / 'keys' / 'kek'}\n  signing_key_file: {tmp_path / 'keys' / 'sign'}\n")
    return path


@pytest.fixture(scope="module")
def photos(data_dir: Path) -> Path:
    return data_dir / "faces" / "knn_examples"


def cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["faces", *args, "--config", str(config)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def audit(config: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(config.parent / "data" / "trustcam.db") as db:
        return db.execute("select action, user, target from audit_log order by seq").fetchall()


def test_enrolment_refuses_photos_without_exactly_one_face_and_stores_nothing(config: Path, photos: Path,
                                                                                tmp_path: Path) -> None:
    empty = tmp_path / "wall.png"
    cv2.imwrite(str(empty), np.full((480, 640, 3), 200, np.uint8))
    group = photos / "test" / "kit_with_rose.jpg"
    good = photos / "train" / "kit_harington" / "john1.jpeg"
    code, output = cli(config, "enroll", "Kit", str(good), str(empty), str(group), "--consent", "staff, contract §4")
    assert code == 2
    assert f"{empty}: no face found" in output and f"{group}: 2 faces found" in output
    assert "nothing was stored" in output
    assert cli(config, "list") == (0, "")


def test_enrol_export_erase_round_trip_is_audited(config: Path, photos: Path) -> None:
    obama = [str(p) for p in sorted((photos / "train" / "obama").iterdir())]
    code, output = cli(config, "enroll", "Barack Obama", *obama, "--consent", "signed form 12", "--expires",
                       "2099-01-01", "--by", "alice")
    assert code == 0 and "enrolled 'Barack Obama' from 2 image(s), expires 2099-01-01" in output
    code, output = cli(config, "list")
    assert code == 0 and "Barack Obama\ttemplates=2" in output and "by=alice" in output and "2099-01-01" in output

    code, output = cli(config, "export", "Barack Obama")
    record = json.loads(output)
    assert record["consent"] == "signed form 12" and record["expires_at"] == "2099-01-01T00:00:00Z"
    assert record["enrolled_by"] == "alice" and len(record["stored"]["templates"]) == 2 and record["events"] == []

    code, output = cli(config, "erase", "Barack Obama", "--yes")
    assert code == 0 and "2 template(s) shredded" in output
    code, output = cli(config, "export", "Barack Obama")
    assert code == 1 and "no enrolled identity named 'Barack Obama'" in output
    assert [a for a in audit(config) if a[0].startswith("faces.")] == [
        ("faces.enroll", "alice", "Barack Obama"), ("faces.export", f"cli:{_user()}", "Barack Obama"),
        ("faces.erase", f"cli:{_user()}", "Barack Obama")]
    assert CliRunner().invoke(app, ["audit", "verify", "--config", str(config)]).exit_code == 0


def _user() -> str:
    import getpass

    return getpass.getuser()


def test_an_expired_enrolment_is_shredded_by_the_next_command(config: Path, photos: Path) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 2))
    code, output = cli(config, "enroll", "Rose", str(photos / "train" / "rose_leslie" / "img1.jpg"), "--consent",
                       "visitor", "--expires", soon)
    assert code == 0, output
    time.sleep(2.2)
    code, output = cli(config, "list")
    assert code == 0 and "'Rose': enrolment expired, templates shredded" in output and "templates=" not in output
    assert ("faces.expire", "trustcam", "Rose") in audit(config)
    assert not list((config.parent / "data" / "faces" / "keys").glob("*.key"))


def test_bad_dates_and_empty_consent_are_refused(config: Path, photos: Path) -> None:
    image = str(photos / "train" / "obama" / "obama.jpg")
    assert cli(config, "enroll", "X", image, "--consent", "ok", "--expires", "next week")[0] == 2
    code, output = cli(config, "enroll", "X", image, "--consent", "ok", "--expires", "2001-01-01")
    assert code == 1 and "in the past" in output
    assert cli(config, "enroll", "X", image, "--consent", " ")[0] == 2


def test_calibrate_reports_threshold_fnmr_and_a_set_too_small(config: Path, data_dir: Path) -> None:
    code, output = cli(config, "calibrate", str(data_dir / "faces-id"), "--target-fmr", "1e-3", "--identities", "5")
    assert code == 0, output
    assert "30 images of 5 people" in output and "genuine pairs: 75, impostor pairs: 360" in output
    assert "threshold at FMR 0.001:" in output and "FNMR" in output
    assert "too small to support FMR 0.001" in output and "30000 pairs" in output
    assert "target_fmr: 0.001" in output
    threshold = threshold_for(config.parent / "data", 1e-3)
    assert f"{threshold:.4f}" in output and 0.3 < threshold < 0.7


def test_keys_rotate_rewraps_face_keys_so_enrolments_survive_the_old_kek(config: Path, photos: Path) -> None:
    """`trustcam keys rotate` deletes a retired KEK once nothing uses it: face key files must be re-wrapped first,
    or every enrolment would silently become undecryptable."""
    obama = [str(p) for p in sorted((photos / "train" / "obama").iterdir())]
    assert cli(config, "enroll", "Barack Obama", *obama, "--consent", "signed form 12")[0] == 0
    key_files = list((config.parent / "data" / "faces" / "keys").glob("*.key"))
    before = {p: p.read_bytes() for p in key_files}
    result = CliRunner().invoke(app, ["keys", "rotate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "removed retired KEK" in result.output and "kept retired KEK" not in result.output
    assert key_files and all(p.read_bytes() != data for p, data in before.items())
    settings = load_settings(config)
    store = FaceStore(open_database(settings.resolved_database_url), Keyring(settings.vault), settings.data_dir,
                      threshold=0.6)
    recognizer = FaceRecognizer()
    image = load_image(Path(obama[0]))
    match = store.match(recognizer.embed(image, single_face(recognizer, image, obama[0])))  # decrypts templates
    assert match is not None and match.identity == "Barack Obama"
