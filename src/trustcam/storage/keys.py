"""Key-encryption keys (KEK) and the vault's signing key, kept apart from the footage they protect.

Every segment and snapshot is encrypted under its own random data key; only the *wrapped* data key is stored
(in the database, or in a snapshot's header). The KEK that wraps it lives outside the storage root: in a key
file (0600), in the ``TRUSTCAM_VAULT_KEK`` environment secret, or behind any KMS that implements
:class:`KeyEncryptionKey`. Stealing the disk with the recordings therefore reveals nothing, and destroying a
wrapped data key destroys its footage for good (crypto-shredding).

Rotation (``trustcam keys rotate``) replaces the KEK and re-wraps every data key; the video is never
re-encrypted. Old KEK files are kept as ``<key_file>.<key_id>`` until no data key uses them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import stat
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from trustcam.config.schema import NAME_PATTERN, VaultConfig
from trustcam.errors import UserError
from trustcam.storage.private import private_dir
from trustcam.storage.schema import SegmentRow

log = logging.getLogger(__name__)

ENV_KEK = "TRUSTCAM_VAULT_KEK"
ENV_KEK_OLD = "TRUSTCAM_VAULT_KEK_OLD"  # comma-separated base64 keys, only needed to rotate away from an env KEK
KEY_BYTES = 32
WRAP_NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_NAME = re.compile(NAME_PATTERN)
BLOB_MAGIC = b"TCBLOB01"
COPY_CHUNK = 1 << 20


class VaultError(UserError):
    """The vault cannot do what was asked; the message names the segment or file and, where there is one, the fix.

    Defined here (and re-exported by ``trustcam.storage.vault``) because key loading raises it too.
    """


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """The pluggable KMS interface: wraps and unwraps 32-byte data keys, bound to ``aad``.

    ``key_id`` is stored beside every wrapped key so the right KEK is found after a rotation. A KMS
    implementation keeps the key material on its side and only needs these three members.
    """

    key_id: str

    def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


def key_id_of(key: bytes) -> str:
    """Public identifier of a key: the first 16 hex digits of its sha256 (reveals nothing useful about it)."""
    return hashlib.sha256(key).hexdigest()[:16]


class LocalKek:
    """A KEK held in memory: AES-256-GCM key wrap, ``nonce (12 random bytes) ‖ ciphertext ‖ tag``.

    GCM rather than RFC 3394 key wrap because it authenticates ``aad`` too: a wrapped key copied onto another
    segment's row does not unwrap there.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise VaultError(f"a KEK is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = key_id_of(key)

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(WRAP_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:WRAP_NONCE_BYTES], wrapped[WRAP_NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise VaultError(f"a data key does not unwrap under KEK {self.key_id} (altered, or bound to another "
                             "segment)") from None

    def __repr__(self) -> str:  # never print key material
        return f"LocalKek(key_id={self.key_id!r})"


# --- key files --------------------------------------------------------------------------------------------------


def _expand(path: Path) -> Path:
    return Path(os.path.expanduser(path)).absolute()


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    return path.resolve().is_relative_to(_expand(folder).resolve())


def _check_location(path: Path, config: VaultConfig, what: str) -> None:
    for name, folder in (("storage root", config.root), ("mirror", config.mirror)):
        if _inside(path, folder):
            raise VaultError(
                f"{path}: the {what} lies inside the vault's {name} ({folder}); whoever copies the recordings "
                f"would get the key with them. Move it outside (e.g. ~/.config/trustcam/) and set vault."
                f"{'key_file' if what == 'KEK' else 'signing_key_file'} to the new path")


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 (never readable by others, not even for an instant) and fsync it and its folder.

    The key is written to a private temporary file first and then linked into place, so another process never
    reads a half-written key; ``FileExistsError`` when someone else created ``path`` first.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # atomic, and never replaces an existing key
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a crash must not lose the directory entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_secret(path: Path, size: int, what: str) -> bytes:
    """Read a key file, refusing one that others can read or that has the wrong size."""
    try:
        info = path.stat()
    except OSError as exc:
        raise VaultError(f"{path}: cannot read the {what} ({exc.strerror}); check the path in the config") from None
    if not stat.S_ISREG(info.st_mode):
        raise VaultError(f"{path}: the {what} is not a regular file; point the config at the key file")
    if info.st_mode & 0o077:
        raise VaultError(f"{path}: the {what} is readable or writable by group/others (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")
    if info.st_size != size:
        raise VaultError(f"{path}: the {what} must be exactly {size} bytes, found {info.st_size}; restore the "
                         "right file from your backup (a new key cannot decrypt existing recordings)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VaultError(f"{path}: cannot read the {what} ({exc.strerror}); check its owner and permissions") from None


def _load_or_create(path: Path, size: int, what: str, config: VaultConfig) -> bytes:
    _check_location(path, config, what)
    if not path.exists():
        try:
            private_dir(path.parent)  # it and each folder above it that it creates: 0700 whatever the umask
            write_secret(path, secrets.token_bytes(size))
        except FileExistsError:  # another process created it first: use theirs
            pass
        except OSError as exc:
            raise VaultError(f"{path}: cannot create the {what} ({exc.strerror}); make its folder writable or "
                             "set another path in the config") from None
        else:
            log.warning("created a new %s at %s (0600); back it up: without it the recordings cannot be %s", what,
                        path, "decrypted" if what == "KEK" else "proven authentic")
    return _read_secret(path, size, what)


def _env_key(name: str, value: str) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VaultError(f"{name} is not valid base64; set it to 32 random bytes, e.g. "
                         "`head -c 32 /dev/urandom | base64`") from None
    if len(key) != KEY_BYTES:
        raise VaultError(f"{name} decodes to {len(key)} bytes, a KEK is {KEY_BYTES}; set it to 32 random bytes "
                         "in base64 (`head -c 32 /dev/urandom | base64`)")
    return key


def key_file(config: VaultConfig) -> Path:
    return _expand(config.key_file)


def archived_kek_path(config: VaultConfig, key_id: str) -> Path:
    """Where a retired KEK waits until no data key uses it: ``<key_file>.<key_id>``."""
    path = key_file(config)
    return path.with_name(f"{path.name}.{key_id}")


def load_kek(config: VaultConfig) -> KeyEncryptionKey:
    """The current KEK: ``TRUSTCAM_VAULT_KEK`` (base64) if set, else the key file, created 0600 if absent."""
    if value := os.environ.get(ENV_KEK):
        return LocalKek(_env_key(ENV_KEK, value))
    return LocalKek(_load_or_create(key_file(config), KEY_BYTES, "KEK", config))


def load_signing_key(config: VaultConfig) -> Ed25519PrivateKey:
    """The Ed25519 key that signs checkpoints: raw 32-byte private key, same placement rules as the KEK."""
    path = _expand(config.signing_key_file)
    return Ed25519PrivateKey.from_private_bytes(_load_or_create(path, 32, "signing key", config))


def _archived_keks(config: VaultConfig) -> dict[str, LocalKek]:
    path = key_file(config)
    found: dict[str, LocalKek] = {}
    if not path.parent.is_dir():
        return found
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1:]
        if _KEY_ID.match(suffix):
            kek = LocalKek(_read_secret(candidate, KEY_BYTES, "archived KEK"))
            if kek.key_id != suffix:
                raise VaultError(f"{candidate}: holds KEK {kek.key_id}, not {suffix}; restore the right file")
            found[suffix] = kek
    return found


# --- keyring: current KEK plus retired ones --------------------------------------------------------------------


class Keyring:
    """The KEK that wraps new data keys, plus the retired ones that still unwrap older data keys.

    When the KEK comes from the key file, a rotation done by another process (``trustcam keys rotate`` while
    ``trustcam run`` records) is noticed: the file is re-read when it changes, and wrapping plus storing a
    row happen under a shared lock on ``<key_file>.lock`` that the rotation takes exclusively while it swaps
    keys and while it removes retired ones. So no data key is ever stored under a KEK that is being removed.
    """

    def __init__(self, config: VaultConfig, kek: KeyEncryptionKey | None = None) -> None:
        self.config = config
        self._file_based = kek is None and not os.environ.get(ENV_KEK)
        self._current = kek or load_kek(config)
        self._known: dict[str, KeyEncryptionKey] = {self._current.key_id: self._current}
        self._stamp = self._file_stamp()
        self._mutex = threading.Lock()
        if (old := os.environ.get(ENV_KEK_OLD)) and kek is None:
            for item in filter(None, (s.strip() for s in old.split(","))):
                retired = LocalKek(_env_key(ENV_KEK_OLD, item))
                self._known.setdefault(retired.key_id, retired)

    def _file_stamp(self) -> tuple[int, int] | None:
        if not self._file_based:
            return None
        try:
            info = key_file(self.config).stat()
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns)

    def current(self) -> KeyEncryptionKey:
        """The KEK for new data keys (re-read if the key file was replaced by a rotation)."""
        with self._mutex:
            if self._file_based and (stamp := self._file_stamp()) != self._stamp:
                self._current = LocalKek(_read_secret(key_file(self.config), KEY_BYTES, "KEK"))
                self._known[self._current.key_id] = self._current
                self._stamp = stamp
            return self._current

    def get(self, key_id: str) -> KeyEncryptionKey:
        """The KEK with ``key_id``: current, already known, or a retired ``<key_file>.<key_id>``."""
        with self._mutex:
            if key_id in self._known:
                return self._known[key_id]
        if self.current().key_id == key_id:
            return self._current
        path = archived_kek_path(self.config, key_id) if _KEY_ID.match(key_id) else None
        if path is not None and path.exists():
            kek = LocalKek(_read_secret(path, KEY_BYTES, "archived KEK"))
            if kek.key_id == key_id:
                with self._mutex:
                    self._known[key_id] = kek
                return kek
        raise VaultError(f"no KEK with id {key_id} is available (current: {self._current.key_id}); restore "
                         f"{path or 'it'} from your backup, or set {ENV_KEK_OLD} to it if it came from {ENV_KEK}")

    @contextlib.contextmanager
    def shared_lock(self) -> Iterator[KeyEncryptionKey]:
        """Hold off a rotation while a data key is wrapped and stored; yields the KEK to wrap with."""
        if not self._file_based:
            yield self.current()
            return
        with _flock(key_file(self.config), fcntl.LOCK_SH):
            yield self.current()


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    lock = path.with_name(f"{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- rotation ----------------------------------------------------------------------------------------------------

REWRAP_BATCH = 500  # rows per transaction: short enough that camera threads inserting segments never time out


@dataclass
class RotationReport:
    old_ids: list[str]
    new_id: str
    segments: int = 0
    blobs: int = 0
    removed: list[Path] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # retired KEK id -> data keys still using it
    blobs_left: dict[str, int] = field(default_factory=dict)  # KEK id -> snapshots that could not be re-wrapped
    problems: list[str] = field(default_factory=list)


def rewrap_segments(engine: Engine, keks: Mapping[str, KeyEncryptionKey], new: KeyEncryptionKey,
                    report: RotationReport) -> None:
    """Re-wrap every live segment key not under ``new`` (KMS-agnostic; batches of ``REWRAP_BATCH`` rows).

    Each batch is its own short transaction. That is safe because both KEKs stay available until every row
    has moved: an interrupted rotation leaves a mix of old and new wraps that all open, and the next
    rotation finishes the job.
    """
    after = ""
    while True:
        with Session(engine) as session, session.begin():
            rows = session.execute(
                select(SegmentRow.id, SegmentRow.camera, SegmentRow.wrapped_key, SegmentRow.kek_id)
                .where(SegmentRow.wrapped_key.is_not(None), SegmentRow.kek_id != new.key_id, SegmentRow.id > after)
                .order_by(SegmentRow.id).limit(REWRAP_BATCH)).all()
            if not rows:
                return
            for seg_id, camera, wrapped, kek_id in rows:
                after = seg_id
                aad = segment_key_aad(seg_id, camera)
                try:
                    data_key = keks[kek_id].unwrap(base64.b64decode(wrapped), aad) if kek_id in keks else None
                except (VaultError, ValueError) as exc:
                    report.problems.append(f"segment {seg_id}: {exc}; left as it was")
                    continue
                if data_key is None:
                    report.problems.append(f"segment {seg_id}: its KEK {kek_id} is not available; left as it was")
                    continue
                # compare-and-swap: a segment shredded meanwhile must stay shredded, never get a key back
                done = session.execute(
                    update(SegmentRow).where(SegmentRow.id == seg_id, SegmentRow.wrapped_key == wrapped)
                    .values(wrapped_key=base64.b64encode(new.wrap(data_key, aad)).decode(), kek_id=new.key_id))
                report.segments += done.rowcount


# Other key holders re-wrapped with the vault's (face templates' key files): (keks, new KEK, report) -> None.
Rewrapper = Callable[[Mapping[str, KeyEncryptionKey], KeyEncryptionKey, "RotationReport"], None]


def rotate_kek(config: VaultConfig, engine: Engine, also: Sequence[Rewrapper] = ()) -> RotationReport:
    """Replace the KEK and re-wrap every data key (segments in the database, snapshots' headers); no video is
    re-encrypted.

    Key file: a new random KEK replaces it (the old one is first kept as ``<key_file>.<old_id>``, 0600).
    ``TRUSTCAM_VAULT_KEK``: the operator has already set the new key there and the old one(s) in
    ``TRUSTCAM_VAULT_KEK_OLD``; everything is re-wrapped under the env key. Retired key files are removed
    once no data key uses them; a KEK still in use (a key that could not be re-wrapped) is kept and reported.
    """
    env = os.environ.get(ENV_KEK)
    path = key_file(config)
    if not env:
        _check_location(path, config, "KEK")
        if not path.exists():
            raise VaultError(f"{path}: no KEK to rotate (nothing was ever stored); it is created on first start")
    keyring = Keyring(config)
    keks: dict[str, KeyEncryptionKey] = {**_archived_keks(config), **keyring._known}
    lock_target = path if path.parent.is_dir() else None

    with _flock(lock_target, fcntl.LOCK_EX) if lock_target else contextlib.nullcontext():
        if env:
            new: KeyEncryptionKey = keyring.current()
        else:  # swap the key file while writers are held off; from now on they wrap under the new KEK
            old = LocalKek(_read_secret(path, KEY_BYTES, "KEK"))
            keks[old.key_id] = old
            archive = archived_kek_path(config, old.key_id)
            if not archive.exists():
                write_secret(archive, path.read_bytes())
            fresh = secrets.token_bytes(KEY_BYTES)
            tmp = path.with_name(f"{path.name}.new")
            tmp.unlink(missing_ok=True)
            write_secret(tmp, fresh)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            new = LocalKek(fresh)
            keks[new.key_id] = new
    report = RotationReport(old_ids=sorted(k for k in keks if k != new.key_id), new_id=new.key_id)

    rewrap_segments(engine, keks, new, report)
    rewrap_blobs(config, keks, new, report)
    for rewrap in also:  # before old KEKs are deleted: a key left behind keeps its KEK (report.blobs_left)
        rewrap(keks, new, report)

    with _flock(lock_target, fcntl.LOCK_EX) if lock_target else contextlib.nullcontext():
        with Session(engine) as session:
            in_use = dict(session.execute(
                select(SegmentRow.kek_id, func.count()).where(SegmentRow.wrapped_key.is_not(None))
                .group_by(SegmentRow.kek_id)).all())
        for key_id, count in report.blobs_left.items():
            in_use[key_id] = in_use.get(key_id, 0) + count
        for key_id in sorted(_archived_keks(config)):
            if key_id == new.key_id:
                continue
            if in_use.get(key_id):
                report.kept[key_id] = in_use[key_id]
            else:
                archived = archived_kek_path(config, key_id)
                archived.unlink()
                report.removed.append(archived)
        if report.removed:
            fsync_dir(path.parent)
    return report


# --- what a wrapped data key is bound to (shared with the vault, which re-exports these) --------------------------
# Kept here, not in vault.py, so that rotation re-wraps keys without importing the vault (no import cycle).


def segment_key_aad(segment_id: str, camera: str) -> bytes:
    """AAD of a segment's wrapped data key: a wrapped key copied onto another row does not unwrap."""
    return b"trustcam/segment-key/v1\0" + segment_id.encode() + b"\0" + camera.encode()


def blob_key_aad(kind: str, blob_id: str, camera: str) -> bytes:
    return b"trustcam/blob-key/v1\0" + kind.encode() + b"\0" + blob_id.encode() + b"\0" + camera.encode()


def read_full(handle: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or fewer only at the end of the file (a pipe or a slow disk may return short reads)."""
    data = handle.read(size)
    while 0 < len(data) < size and (more := handle.read(size - len(data))):
        data += more
    return data


def blob_header(kek_id: str, wrapped: bytes) -> bytes:
    """A snapshot carries its wrapped key: ``TCBLOB01 ‖ u8 len ‖ kek_id ‖ u16 BE len ‖ wrapped data key``."""
    ident = kek_id.encode()
    return BLOB_MAGIC + struct.pack(">B", len(ident)) + ident + struct.pack(">H", len(wrapped)) + wrapped


def read_blob_header(handle: BinaryIO, ref: str) -> tuple[str, bytes]:
    def take(size: int) -> bytes:
        data = read_full(handle, size)
        if len(data) != size:
            raise VaultError(f"{ref} was altered or truncated (header cut short)")
        return data

    if take(8) != BLOB_MAGIC:
        raise VaultError(f"{ref} was altered or is not a vault snapshot (bad header)")
    kek_id = take(take(1)[0]).decode("ascii", "replace")
    wrapped = take(struct.unpack(">H", take(2))[0])
    return kek_id, wrapped


def parse_blob_ref(ref: str) -> tuple[str, str, str]:
    """(camera, kind, blob id) of a snapshot reference ``<camera>/<kind>/<date>/<id>.blob``."""
    parts = ref.split("/")
    if (len(parts) != 4 or not parts[3].endswith(".blob") or any(p in ("", ".", "..") for p in parts)
            or not _NAME.match(parts[0]) or not _NAME.match(parts[1])):
        raise VaultError(f"{ref!r} is not a vault snapshot reference (<camera>/<kind>/<date>/<id>.blob)")
    return parts[0], parts[1], parts[3].removesuffix(".blob")


def rewrap_blobs(config: VaultConfig, keks: Mapping[str, KeyEncryptionKey], new: KeyEncryptionKey,
                 report: RotationReport) -> None:
    """Re-wrap every snapshot's header key under ``new``; the encrypted body is copied unchanged (crash-safe
    rewrite: ``.part``, fsync, rename). Snapshots that fail are counted in ``report.blobs_left``."""
    for base in filter(None, (_expand(config.root), _expand(config.mirror) if config.mirror else None)):
        if not base.is_dir():
            continue
        for path in sorted(base.glob("*/*/*/*.blob")):
            ref = path.relative_to(base).as_posix()
            kek_id = "?"
            try:
                camera, kind, blob_id = parse_blob_ref(ref)
                with open(path, "rb") as handle:
                    kek_id, wrapped = read_blob_header(handle, ref)
                    if kek_id == new.key_id:
                        continue
                    aad = blob_key_aad(kind, blob_id, camera)
                    if kek_id not in keks:
                        raise VaultError(f"its KEK {kek_id} is not available")
                    header = blob_header(new.key_id, new.wrap(keks[kek_id].unwrap(wrapped, aad), aad))
                    part = path.with_name(path.name + ".part")
                    with open(part, "wb") as out:
                        out.write(header)
                        while piece := handle.read(COPY_CHUNK):
                            out.write(piece)
                        out.flush()
                        os.fsync(out.fileno())
                if not path.exists():  # deleted meanwhile: do not bring it back
                    part.unlink()
                    continue
                os.replace(part, path)
                report.blobs += 1
            except (VaultError, OSError) as exc:
                report.problems.append(f"snapshot {path}: not re-wrapped ({exc})")
                report.blobs_left[kek_id] = report.blobs_left.get(kek_id, 0) + 1
