"""Enrolled faces: identities with their consent record, encrypted templates, matching, erasure and export.

Templates are biometric data that cannot be revoked like a password, so they are treated as the most sensitive
data here:

* Each identity has its own random AES-256-GCM data key. Its templates are stored in the database only encrypted
  (bound to identity and template id). The data key, wrapped by the vault's KEK, lives in a 0600 file
  ``<data_dir>/faces/keys/<identity id>.key`` and **not** in the database.
* Erasure overwrites and unlinks that file (and fsyncs the folder), then deletes the rows: a copy of the database
  taken before the erasure, together with the data directory and the KEK, no longer decrypts the templates.
* Unknown faces are never stored here; expired enrolments are shredded like an erasure (``shred_expired``).
* Nothing in this module logs, prints or exports a template.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from trustcam.errors import UserError
from trustcam.storage.keys import (
    KEY_BYTES,
    KeyEncryptionKey,
    Keyring,
    RotationReport,
    VaultError,
    fsync_dir,
    write_secret,
)
from trustcam.storage.private import private_dir
from trustcam.storage.schema import EventRow, FaceIdentityRow, FaceTemplateRow

UNKNOWN = "unknown face"  # an event's sub_label when a face matched nobody (no template is kept)
ERASED = "erased"  # an event's sub_label once its identity was erased
RESERVED = {UNKNOWN, ERASED}
KEY_MAGIC = b"TCFACEK1"
NONCE_BYTES = 12
EMBEDDING_DTYPE = np.dtype("<f4")
CALIBRATION_FILE = "calibration.json"
_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,64}$")


class FaceStoreError(UserError):
    """An enrolment, match, erasure or export cannot be done; the message names the identity and the fix."""


@dataclass(frozen=True)
class Match:
    """The nearest enrolled identity within the threshold; ``margin`` is how much farther the next identity is
    (None with a single identity enrolled): a small margin means the two are easily confused."""

    identity: str
    distance: float
    margin: float | None


@dataclass(frozen=True)
class Template:
    """One enrolment image's embedding and what is recorded about it (never the image itself)."""

    embedding: np.ndarray
    source_sha256: str
    quality: float


@dataclass(frozen=True)
class Identity:
    id: str
    name: str
    created_at: float
    created_by: str
    consent: str
    expires_at: float | None
    templates: int


@dataclass(frozen=True)
class Erasure:
    name: str
    templates: int
    events_relabelled: int
    key_file_removed: bool


def _key_aad(identity_id: str) -> bytes:
    return b"trustcam/face-key/v1\0" + identity_id.encode()


def _template_aad(identity_id: str, template_id: str) -> bytes:
    """A template's ciphertext copied onto another identity or row does not decrypt."""
    return b"trustcam/face-template/v1\0" + identity_id.encode() + b"\0" + template_id.encode()


def shred_file(path: Path) -> bool:
    """Overwrite ``path`` with random bytes, fsync, unlink, fsync its folder; False if it was already gone.

    On copy-on-write or flash storage the overwrite may not reach the old blocks: the wrapped key is still useless
    without the KEK, and ``trustcam keys rotate`` afterwards retires the KEK that wrapped it.
    """
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        os.write(fd, secrets.token_bytes(max(size, 1)))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)
    return True


class FaceStore:
    """Identities, their encrypted templates and matching against them.

    ``threshold`` is the match distance (from ``trustcam faces calibrate``, see :func:`threshold_for`). The decrypted
    gallery is cached in memory and reloaded when another process enrols or erases someone.
    """

    def __init__(self, engine: Engine, keyring: Keyring, data_dir: Path, *, threshold: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.keyring = keyring
        self.data_dir = Path(data_dir)
        self.threshold = threshold
        self.clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._next_expiry = math.inf  # the cached gallery is rebuilt when an enrolment in it expires
        self._names: list[str] = []
        self._owner = np.empty(0, dtype=np.int64)
        self._matrix = np.empty((0, 0), dtype=np.float32)

    # --- keys -----------------------------------------------------------------------------------------------

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "faces" / "keys"

    def key_path(self, identity_id: str) -> Path:
        return self.keys_dir / f"{identity_id}.key"

    def _write_key(self, identity_id: str, data_key: bytes) -> None:
        private_dir(self.keys_dir)
        with self.keyring.shared_lock() as kek:  # a rotation waits until this key is written under the KEK
            write_secret(self.key_path(identity_id),
                         _key_file_bytes(kek.key_id, kek.wrap(data_key, _key_aad(identity_id))))

    def _read_key(self, identity_id: str, name: str) -> bytes:
        path = self.key_path(identity_id)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise FaceStoreError(f"identity '{name}': its key file {path} is gone, so its templates cannot be "
                                 f"decrypted (erased, or the data directory was not restored whole); run `trustcam "
                                 f"faces erase '{name}'` to remove what is left and enrol the person again") from None
        try:
            kek_id, wrapped = _parse_key_file(blob)
            return self.keyring.get(kek_id).unwrap(wrapped, _key_aad(identity_id))
        except (ValueError, struct.error, VaultError) as exc:
            raise FaceStoreError(f"identity '{name}': key file {path} does not open ({exc}); restore it from the "
                                 "backup of the data directory together with the KEK") from None

    # --- enrolment ------------------------------------------------------------------------------------------

    def enroll(self, name: str, templates: Sequence[Template], *, consent: str, by: str,
               expires_at: float | None = None) -> Identity:
        """Record a new identity with its consent and encrypted templates; the name must be new."""
        name = name.strip()
        if not _NAME.match(name) or name.lower() in RESERVED:
            raise FaceStoreError(f"'{name}': a name is 1-64 printable characters without '/' or '\\', and not "
                                 f"{' or '.join(sorted(RESERVED))}")
        if not consent.strip():
            raise FaceStoreError("--consent is empty; state the legal basis or the person's consent")
        if not templates:
            raise FaceStoreError(f"'{name}': no usable image; give at least one photo with exactly one face")
        now = self.clock()
        if expires_at is not None and expires_at <= now:
            raise FaceStoreError(f"'{name}': the expiry date is in the past; give a future date")
        if self.get(name) is not None:
            raise FaceStoreError(f"'{name}' is already enrolled; erase it first (`trustcam faces erase`) or use "
                                 "another name")
        identity_id = secrets.token_hex(16)
        data_key = secrets.token_bytes(KEY_BYTES)
        self._write_key(identity_id, data_key)
        aead = AESGCM(data_key)
        try:
            with Session(self.engine) as session, session.begin():
                session.add(FaceIdentityRow(id=identity_id, name=name, created_at=now, created_by=by[:128],
                                            consent=consent.strip()[:2000], expires_at=expires_at))
                session.flush()
                for template in templates:
                    template_id = secrets.token_hex(16)
                    vector = np.asarray(template.embedding, dtype=EMBEDDING_DTYPE).reshape(-1)
                    nonce = secrets.token_bytes(NONCE_BYTES)
                    sealed = aead.encrypt(nonce, vector.tobytes(), _template_aad(identity_id, template_id))
                    session.add(FaceTemplateRow(id=template_id, identity_id=identity_id, enrolled_at=now,
                                                source_sha256=template.source_sha256,
                                                quality=float(template.quality), ciphertext=nonce + sealed))
        except Exception:
            shred_file(self.key_path(identity_id))  # no orphan key for rows that were never written
            raise
        return self.need(name)

    # --- reading --------------------------------------------------------------------------------------------

    def _identity(self, session: Session, row: FaceIdentityRow) -> Identity:
        count = len(session.scalars(select(FaceTemplateRow.id).where(FaceTemplateRow.identity_id == row.id)).all())
        return Identity(row.id, row.name, row.created_at, row.created_by, row.consent, row.expires_at, count)

    def get(self, name: str) -> Identity | None:
        with Session(self.engine) as session:
            row = session.scalar(select(FaceIdentityRow).where(FaceIdentityRow.name == name.strip()))
            return self._identity(session, row) if row is not None else None

    def need(self, name: str) -> Identity:
        identity = self.get(name)
        if identity is None:
            known = ", ".join(i.name for i in self.identities()) or "none"
            raise FaceStoreError(f"no enrolled identity named '{name}' (enrolled: {known})")
        return identity

    def identities(self) -> list[Identity]:
        with Session(self.engine) as session:
            rows = session.scalars(select(FaceIdentityRow).order_by(FaceIdentityRow.name)).all()
            return [self._identity(session, row) for row in rows]

    def templates(self, name: str) -> list[np.ndarray]:
        """The decrypted templates of one identity (for matching and tests; never printed or exported)."""
        identity = self.need(name)
        aead = AESGCM(self._read_key(identity.id, identity.name))
        with Session(self.engine) as session:
            rows = session.execute(select(FaceTemplateRow.id, FaceTemplateRow.ciphertext)
                                   .where(FaceTemplateRow.identity_id == identity.id)
                                   .order_by(FaceTemplateRow.id)).all()
        return [decrypt_template(aead, identity.id, template_id, blob) for template_id, blob in rows]

    # --- matching -------------------------------------------------------------------------------------------

    def _gallery_stamp(self) -> tuple[Any, ...]:
        with Session(self.engine) as session:
            rows = session.execute(select(FaceIdentityRow.id, FaceIdentityRow.expires_at)).all()
            count = len(session.scalars(select(FaceTemplateRow.id)).all())
        return (tuple(sorted((r.id, r.expires_at) for r in rows)), count)

    def _gallery(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Decrypted templates of every unexpired identity: (names, owner index per row, matrix)."""
        stamp = self._gallery_stamp()
        now = self.clock()
        with self._lock:
            if stamp != self._stamp or now >= self._next_expiry:
                names: list[str] = []
                owners: list[int] = []
                vectors: list[np.ndarray] = []
                for identity in self.identities():
                    if identity.expires_at is not None and identity.expires_at <= now:
                        continue  # expired: never matched, shredded by shred_expired
                    names.append(identity.name)
                    for vector in self.templates(identity.name):
                        owners.append(len(names) - 1)
                        vectors.append(vector)
                self._names, self._owner = names, np.asarray(owners, dtype=np.int64)
                self._matrix = np.stack(vectors) if vectors else np.empty((0, 0), dtype=np.float32)
                self._stamp = stamp
                self._next_expiry = min((e for _, e in stamp[0] if e is not None and e > now), default=math.inf)
            return self._names, self._owner, self._matrix

    def nearest(self, embedding: np.ndarray) -> Match | None:
        """The nearest identity whatever its distance (None with nobody enrolled): for assessment."""
        names, owners, matrix = self._gallery()
        if not len(matrix):
            return None
        distances = np.linalg.norm(matrix - np.asarray(embedding, dtype=np.float32).reshape(1, -1), axis=1)
        per_identity = np.full(len(names), np.inf)
        np.minimum.at(per_identity, owners, distances)
        order = np.argsort(per_identity)
        best = float(per_identity[order[0]])
        margin = float(per_identity[order[1]]) - best if len(order) > 1 else None
        return Match(names[int(order[0])], round(best, 6), None if margin is None else round(margin, 6))

    def match(self, embedding: np.ndarray, threshold: float | None = None) -> Match | None:
        """The enrolled identity this face belongs to, or None (an unknown face: nothing is stored)."""
        limit = threshold if threshold is not None else self.threshold
        if limit is None:
            raise FaceStoreError("no match threshold; run `trustcam faces calibrate` (or pass threshold_for(...))")
        found = self.nearest(embedding)
        return found if found is not None and found.distance <= limit else None

    # --- erasure, expiry, access ----------------------------------------------------------------------------

    def erase(self, name: str) -> Erasure:
        """Crypto-shred the identity's templates (key file first: the irreversible step), delete its rows and put
        "erased" in place of its name on past events. Safe to repeat after a crash half-way."""
        identity = self.need(name)
        removed = shred_file(self.key_path(identity.id))
        with Session(self.engine) as session, session.begin():
            session.execute(delete(FaceTemplateRow).where(FaceTemplateRow.identity_id == identity.id))
            session.execute(delete(FaceIdentityRow).where(FaceIdentityRow.id == identity.id))
            relabelled = session.execute(update(EventRow).where(EventRow.sub_label == identity.name)
                                         .values(sub_label=ERASED, face_distance=None, face_margin=None)).rowcount
        with self._lock:
            self._stamp = None
        return Erasure(identity.name, identity.templates, int(relabelled or 0), removed)

    def shred_expired(self) -> list[Erasure]:
        """Erase every identity whose enrolment has expired (run at start and periodically)."""
        now = self.clock()
        with Session(self.engine) as session:
            names = session.scalars(select(FaceIdentityRow.name).where(FaceIdentityRow.expires_at.is_not(None),
                                                                       FaceIdentityRow.expires_at <= now)).all()
        return [self.erase(name) for name in names]

    def export(self, name: str) -> dict[str, Any]:
        """A right-of-access answer: what is stored about the person and on which events (never template bytes)."""
        identity = self.need(name)
        with Session(self.engine) as session:
            templates = session.execute(select(FaceTemplateRow.enrolled_at, FaceTemplateRow.source_sha256,
                                               FaceTemplateRow.quality)
                                        .where(FaceTemplateRow.identity_id == identity.id)
                                        .order_by(FaceTemplateRow.enrolled_at)).all()
            events = session.execute(select(EventRow.id, EventRow.camera, EventRow.label, EventRow.start,
                                            EventRow.end, EventRow.face_distance)
                                     .where(EventRow.sub_label == identity.name).order_by(EventRow.start)).all()
        return {
            "identity": identity.name,
            "enrolled_at": _iso(identity.created_at),
            "enrolled_by": identity.created_by,
            "consent": identity.consent,
            "expires_at": _iso(identity.expires_at) if identity.expires_at is not None else None,
            "stored": {
                "templates": [{"enrolled_at": _iso(t.enrolled_at), "source_image_sha256": t.source_sha256,
                               "quality": t.quality} for t in templates],
                "template_format": "128-d face embedding (dlib ResNet), AES-256-GCM encrypted; the key is outside "
                                   "the database; the enrolment images are not kept",
            },
            "events": [{"id": e.id, "camera": e.camera, "label": e.label, "start": _iso(e.start),
                        "end": _iso(e.end), "distance": e.face_distance} for e in events],
        }


def rewrap_face_keys(data_dir: Path, keks: Mapping[str, KeyEncryptionKey], new: KeyEncryptionKey,
                     report: RotationReport) -> None:
    """KEK rotation for face data keys (``<data_dir>/faces/keys``), like ``rewrap_blobs`` for snapshots: each key
    file is rewritten under ``new`` (private temporary file, fsync, rename); one that fails is counted in
    ``report.blobs_left`` so its old KEK is kept rather than deleted with the enrolment still depending on it."""
    folder = Path(data_dir) / "faces" / "keys"
    for path in sorted(folder.glob("*.key")) if folder.is_dir() else ():
        identity_id, kek_id = path.stem, "?"
        try:
            kek_id, wrapped = _parse_key_file(path.read_bytes())
            if kek_id == new.key_id:
                continue
            if kek_id not in keks:
                raise VaultError(f"its KEK {kek_id} is not available")
            data_key = keks[kek_id].unwrap(wrapped, _key_aad(identity_id))
            part = path.with_name(f"{path.name}.new")
            part.unlink(missing_ok=True)
            write_secret(part, _key_file_bytes(new.key_id, new.wrap(data_key, _key_aad(identity_id))))
            if not path.exists():  # erased meanwhile: do not bring the key back
                part.unlink()
                continue
            os.replace(part, path)
            fsync_dir(folder)
            report.blobs += 1
        except (VaultError, ValueError, OSError) as exc:
            report.problems.append(f"face key {path}: not re-wrapped ({exc})")
            report.blobs_left[kek_id] = report.blobs_left.get(kek_id, 0) + 1


def _key_file_bytes(kek_id: str, wrapped: bytes) -> bytes:
    """``TCFACEK1 ‖ u8 len ‖ kek_id ‖ u16 BE len ‖ wrapped data key`` (the snapshot header's layout)."""
    ident = kek_id.encode()
    return KEY_MAGIC + struct.pack(">B", len(ident)) + ident + struct.pack(">H", len(wrapped)) + wrapped


def _parse_key_file(blob: bytes) -> tuple[str, bytes]:
    if not blob.startswith(KEY_MAGIC) or len(blob) < len(KEY_MAGIC) + 3:
        raise ValueError("not a face key file (bad header)")
    start = len(KEY_MAGIC) + 1
    length = blob[len(KEY_MAGIC)]
    kek_id = blob[start:start + length].decode("ascii")
    (size,) = struct.unpack(">H", blob[start + length:start + length + 2])
    wrapped = blob[start + length + 2:start + length + 2 + size]
    if len(wrapped) != size:
        raise ValueError("truncated")
    return kek_id, wrapped


def decrypt_template(aead: AESGCM, identity_id: str, template_id: str, blob: bytes) -> np.ndarray:
    try:
        plain = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _template_aad(identity_id, template_id))
    except (InvalidTag, ValueError):
        raise FaceStoreError(f"template {template_id} does not decrypt (altered, or moved to another identity)") \
            from None
    return np.frombuffer(plain, dtype=EMBEDDING_DTYPE).copy()


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


# --- the calibrated threshold ---------------------------------------------------------------------------------

# Measured by `trustcam faces calibrate ../shared/data/faces-id` (deep-funneled variant: 756 images of 126 people,
# 1890 genuine and 283,500 impostor pairs): used until the operator calibrates on their own cameras' faces, which
# replaces it (<data_dir>/faces/calibration.json). LFW press photos are easier than CCTV: calibrate on your own.
BUILTIN_CALIBRATION: dict[str, Any] = {
    "dataset": "faces-id (LFW subset), lfw_deepfunneled_250",
    "thresholds": {
        "0.01": {"target_fmr": 0.01, "threshold": 0.618766, "fmr": 0.01, "fnmr": 0.012169,
                 "genuine_pairs": 1890, "impostor_pairs": 283500, "supported": True},
        "0.001": {"target_fmr": 0.001, "threshold": 0.537661, "fmr": 0.000998, "fnmr": 0.114815,
                  "genuine_pairs": 1890, "impostor_pairs": 283500, "supported": True},
    },
}


def calibration_path(data_dir: Path) -> Path:
    return Path(data_dir) / "faces" / CALIBRATION_FILE


def save_calibration(data_dir: Path, record: dict[str, Any]) -> Path:
    """Add one calibrated threshold to ``<data_dir>/faces/calibration.json`` (keyed by target FMR)."""
    path = calibration_path(data_dir)
    private_dir(path.parent)
    current = load_calibration(data_dir) if path.is_file() else {"thresholds": {}}
    current["thresholds"][_fmr_key(record["target_fmr"])] = record
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_calibration(data_dir: Path) -> dict[str, Any]:
    path = calibration_path(data_dir)
    if not path.is_file():
        return copy.deepcopy(BUILTIN_CALIBRATION)
    try:
        loaded = json.loads(path.read_text())
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("thresholds"), dict):
        raise FaceStoreError(f"{path}: unreadable calibration; run `trustcam faces calibrate` again")
    return loaded


def _fmr_key(target_fmr: float) -> str:
    return f"{target_fmr:.3g}"


def threshold_for(data_dir: Path, target_fmr: float) -> float:
    """The match distance calibrated for ``target_fmr`` (a camera's ``faces.target_fmr``)."""
    entry = load_calibration(data_dir)["thresholds"].get(_fmr_key(target_fmr))
    if entry is None or not math.isfinite(float(entry.get("threshold", math.nan))):
        raise FaceStoreError(f"no threshold calibrated for target FMR {target_fmr:g}; run `trustcam faces calibrate "
                             f"DATASET --target-fmr {target_fmr:g}`")
    return float(entry["threshold"])
