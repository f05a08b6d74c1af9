"""The face store with real photos, a real SQLite file and the vault's KEK: matching, templates never in clear,
crypto-shredding that holds against a copy of the database taken before the erasure, expiry, export."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.faces import (
    ERASED,
    FaceStore,
    FaceStoreError,
    Template,
    decrypt_template,
    rewrap_face_keys,
    save_calibration,
    threshold_for,
)
from trustcam.storage.keys import Keyring, LocalKek, RotationReport
from trustcam.storage.schema import EventRow, FaceIdentityRow, FaceTemplateRow
from trustcam.vision import catalog
from trustcam.vision.faces import YUNET, FaceRecognizer, load_image, single_face

THRESHOLD = 0.5  # the tests' own: what matters here is storage; tests/vision covers calibration


@pytest.fixture(scope="module")
def embeddings(data_dir: Path) -> dict[str, np.ndarray]:
    """One embedding per photo of the face_recognition example set (file stem -> embedding)."""
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)
    recognizer = FaceRecognizer()
    root = data_dir / "faces" / "knn_examples"
    found: dict[str, np.ndarray] = {}
    for path in [*root.glob("train/*/*"), root / "test" / "obama1.jpg", root / "test" / "johnsnow_test1.jpg"]:
        image = load_image(path)
        found[f"{path.parent.name}/{path.stem}"] = recognizer.embed(image, single_face(recognizer, image, str(path)))
    image = load_image(root / "test" / "obama_and_biden.jpg")
    for number, face in enumerate(sorted(recognizer.faces_in(image), key=lambda f: f.box[0])):
        found[f"obama_and_biden/{number}"] = recognizer.embed(image, face)
    return found


def templates(embeddings: dict[str, np.ndarray], *keys: str) -> list[Template]:
    return [Template(embeddings[k], hashlib.sha256(k.encode()).hexdigest(), 0.9) for k in keys]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def site(tmp_path: Path) -> tuple[FaceStore, Path, Clock]:
    data = tmp_path / "data"
    vault = VaultConfig(root=tmp_path / "rec", key_file=tmp_path / "keys" / "kek",
                        signing_key_file=tmp_path / "keys" / "sign")
    clock = Clock()
    db = data / "trustcam.db"
    return FaceStore(open_database(f"sqlite:///{db}"), Keyring(vault), data, threshold=THRESHOLD, clock=clock), db, \
        clock


@pytest.fixture
def enrolled(site: tuple[FaceStore, Path, Clock], embeddings: dict[str, np.ndarray]) -> FaceStore:
    store = site[0]
    store.enroll("Barack Obama", templates(embeddings, "obama/obama", "obama/obama2"), consent="signed form 12",
                 by="cli:alice")
    store.enroll("Joe Biden", templates(embeddings, "biden/biden", "biden/biden2"), consent="signed form 13",
                 by="cli:alice")
    return store


def test_enrolled_people_are_recognised_and_strangers_are_not(enrolled: FaceStore,
                                                              embeddings: dict[str, np.ndarray]) -> None:
    match = enrolled.match(embeddings["test/obama1"])
    assert match is not None and match.identity == "Barack Obama"
    assert match.distance < THRESHOLD and match.margin is not None and match.margin > 0.2
    names = {m.identity for key, e in embeddings.items() if key.startswith("obama_and_biden/")
             if (m := enrolled.match(e)) is not None}
    assert names == {"Barack Obama", "Joe Biden"}  # both in the group photo; the bystanders match nobody
    for stranger in ("test/johnsnow_test1", "kit_harington/john1", "rose_leslie/img1", "alex_lacamoire/img1"):
        assert enrolled.match(embeddings[stranger]) is None, stranger


def test_no_template_is_readable_from_the_database_or_the_data_directory(
        enrolled: FaceStore, site: tuple[FaceStore, Path, Clock], embeddings: dict[str, np.ndarray]) -> None:
    enrolled.engine.dispose()
    files = [p for p in site[0].data_dir.rglob("*") if p.is_file()]
    assert site[1] in files
    contents = b"".join(p.read_bytes() for p in files)
    for key in ("obama/obama", "obama/obama2", "biden/biden", "biden/biden2"):
        vector = embeddings[key]
        for packed in (vector.astype("<f4").tobytes(), vector.astype("<f8").tobytes(),
                       vector.astype(">f4").tobytes(), vector.astype(">f8").tobytes()):
            assert packed[:32] not in contents, key  # not even the first 8 floats
    stored = enrolled.templates("Barack Obama")  # yet they decrypt with the key file and the KEK
    assert any(np.array_equal(s, embeddings["obama/obama"]) for s in stored)


def test_erasure_holds_against_a_copy_of_the_database_taken_before(
        enrolled: FaceStore, site: tuple[FaceStore, Path, Clock], tmp_path: Path) -> None:
    store, db, clock = site
    copy = tmp_path / "before-erase.db"
    with sqlite3.connect(db) as live, sqlite3.connect(copy) as backup:
        live.backup(backup)
    data_copy = tmp_path / "data-before-erase"
    shutil.copytree(store.data_dir, data_copy)
    obama = enrolled.need("Barack Obama")

    def attacker(data_dir: Path) -> list[np.ndarray]:
        """Everything an attacker has: the old database, a data directory and the KEK (same keyring)."""
        old = FaceStore(open_database(f"sqlite:///{copy}"), store.keyring, data_dir, threshold=THRESHOLD,
                        clock=clock)
        return old.templates("Barack Obama")

    assert len(attacker(data_copy)) == 2  # control: before the erasure the copy does decrypt (the attack works)
    erasure = enrolled.erase("Barack Obama")
    assert erasure.key_file_removed and erasure.templates == 2
    assert not store.key_path(obama.id).exists()
    with pytest.raises(FaceStoreError, match=r"key file .* is gone"):
        attacker(store.data_dir)  # old database + today's data directory + KEK
    with sqlite3.connect(copy) as old:  # and by hand: the ciphertexts are there, their key is not anywhere
        blobs = old.execute("select id, ciphertext from face_templates where identity_id = ?", (obama.id,)).fetchall()
    assert len(blobs) == 2
    for path in store.data_dir.rglob("*.key"):
        assert obama.id not in path.name
    assert enrolled.get("Barack Obama") is None and enrolled.get("Joe Biden") is not None
    assert enrolled.match(enrolled.templates("Joe Biden")[0]).identity == "Joe Biden"  # the other person is intact


def test_erasure_relabels_past_events_and_export_lists_them(enrolled: FaceStore) -> None:
    with Session(enrolled.engine) as session, session.begin():
        for number, sub_label in enumerate(("Barack Obama", "Barack Obama", "Joe Biden", None)):
            session.add(EventRow(id=f"e{number}", camera="door", label="person", track_id=number, start=100.0 + number,
                                 end=110.0 + number, best_score=0.9, box=[0, 0, 1, 1], zones=[], rules=[],
                                 threat="low", model_name="yolox-nano", model_sha256="0" * 64, sub_label=sub_label,
                                 face_distance=0.3 if sub_label else None, face_margin=0.4 if sub_label else None))
    record = enrolled.export("Barack Obama")
    assert record["consent"] == "signed form 12" and record["enrolled_by"] == "cli:alice"
    assert record["expires_at"] is None and len(record["stored"]["templates"]) == 2
    assert [e["id"] for e in record["events"]] == ["e0", "e1"]
    assert "ciphertext" not in str(record) and "embedding" not in record["stored"]["templates"][0]

    assert enrolled.erase("Barack Obama").events_relabelled == 2
    with Session(enrolled.engine) as session:
        labels = {row.id: row.sub_label for row in session.execute(select(EventRow.id, EventRow.sub_label))}
        distances = session.scalars(select(EventRow.face_distance).where(EventRow.sub_label == ERASED)).all()
    assert labels == {"e0": ERASED, "e1": ERASED, "e2": "Joe Biden", "e3": None}
    assert distances == [None, None]
    with pytest.raises(FaceStoreError, match="no enrolled identity named 'Barack Obama'"):
        enrolled.export("Barack Obama")


def test_expired_enrolment_stops_matching_and_is_shredded(site: tuple[FaceStore, Path, Clock],
                                                          embeddings: dict[str, np.ndarray]) -> None:
    store, _, clock = site
    identity = store.enroll("Barack Obama", templates(embeddings, "obama/obama"), consent="visitor pass", by="x",
                            expires_at=clock.now + 3600)
    assert store.match(embeddings["test/obama1"]) is not None
    clock.now += 3601
    assert store.match(embeddings["test/obama1"]) is None  # expired: never matched, even before shredding
    assert [e.name for e in store.shred_expired()] == ["Barack Obama"]
    assert not store.key_path(identity.id).exists() and store.identities() == []
    with pytest.raises(FaceStoreError, match="in the past"):
        store.enroll("Joe Biden", templates(embeddings, "biden/biden"), consent="x", by="x", expires_at=clock.now - 1)


def test_key_file_is_private_and_bound_to_its_identity(enrolled: FaceStore) -> None:
    obama, biden = enrolled.need("Barack Obama"), enrolled.need("Joe Biden")
    key = enrolled.key_path(obama.id)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    # swapping key files between identities does not decrypt: the wrap is bound to the identity id
    shutil.copyfile(enrolled.key_path(biden.id), key)
    with pytest.raises(FaceStoreError, match="does not open"):
        enrolled.templates("Barack Obama")


def test_a_template_moved_to_another_identity_does_not_decrypt(enrolled: FaceStore) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    biden = enrolled.need("Joe Biden")
    with Session(enrolled.engine) as session:
        obama_row = session.scalars(select(FaceTemplateRow).join(FaceIdentityRow)
                                    .where(FaceIdentityRow.name == "Barack Obama")).first()
        assert obama_row is not None
        aead = AESGCM(enrolled._read_key(biden.id, biden.name))
        with pytest.raises(FaceStoreError, match="does not decrypt"):
            decrypt_template(aead, biden.id, obama_row.id, obama_row.ciphertext)


def test_names_are_checked_and_unique(enrolled: FaceStore, embeddings: dict[str, np.ndarray]) -> None:
    one = templates(embeddings, "rose_leslie/img1")
    with pytest.raises(FaceStoreError, match="already enrolled"):
        enrolled.enroll("Joe Biden", one, consent="x", by="x")
    for bad in ("erased", "unknown face", "", "a/b"):
        with pytest.raises(FaceStoreError, match="a name is"):
            enrolled.enroll(bad, one, consent="x", by="x")
    with pytest.raises(FaceStoreError, match="consent"):
        enrolled.enroll("Rose Leslie", one, consent="  ", by="x")


def test_kek_rotation_rewraps_face_keys(enrolled: FaceStore) -> None:
    old = enrolled.keyring.current()
    new = LocalKek(bytes(range(32)))
    report = RotationReport(old_ids=[old.key_id], new_id=new.key_id)
    rewrap_face_keys(enrolled.data_dir, {old.key_id: old}, new, report)
    assert report.blobs == 2 and not report.problems
    rotated = FaceStore(enrolled.engine, Keyring(enrolled.keyring.config, kek=new), enrolled.data_dir)
    assert len(rotated.templates("Barack Obama")) == 2  # opens with the new KEK alone: the old one may go
    with pytest.raises(FaceStoreError, match="does not open"):
        enrolled.templates("Barack Obama")  # and no longer with the old one


def test_threshold_comes_from_the_calibration_for_the_target_fmr(tmp_path: Path) -> None:
    assert threshold_for(tmp_path, 1e-3) == 0.537661  # built in: measured on faces-id until the operator calibrates
    with pytest.raises(FaceStoreError, match="run `trustcam faces calibrate DATASET --target-fmr 1e-05`"):
        threshold_for(tmp_path, 1e-5)
    save_calibration(tmp_path, {"target_fmr": 1e-5, "threshold": 0.41})
    assert threshold_for(tmp_path, 1e-5) == 0.41
    with pytest.raises(FaceStoreError, match=r"--target-fmr 0\.001`"):
        threshold_for(tmp_path, 1e-3)  # the operator's own calibration replaces the built-in one whole
