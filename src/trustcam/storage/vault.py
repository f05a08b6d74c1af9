"""The evidence vault: encrypted segments and snapshots, a per-camera hash chain and signed checkpoints.

Why it is built this way:

* **Confidentiality, and deletion that really deletes.** Each segment is encrypted with AES-256-GCM under its
  own random 32-byte data key. Only the data key wrapped by the KEK (``keys.py``) is stored, in the segment's
  database row. Destroying that wrapped key (:meth:`Vault.shred`) makes the file noise forever, even in
  backups and on the mirror: this is how retention deletes (crypto-shredding).
* **Tamper evidence.** Every segment's plaintext sha256 joins the camera's hash chain (:func:`chain_message`);
  every ``checkpoint_every`` segments the head is signed with Ed25519 (:func:`checkpoint_message`). Rows can
  be deleted or edited in the database, but not without breaking a link or a signature.
* **Streaming.** Segments are encrypted and decrypted in 1 MiB chunks, so memory does not grow with the file.

Encrypted stream format (segments and snapshots)::

    stream  = MAGIC "TCVAULT1" (8) ‖ nonce_prefix (8 random bytes) ‖ chunk_size (u32 BE) ‖ chunk_0 ‖ … ‖ chunk_n
    chunk_i = AES-256-GCM(data_key, nonce = nonce_prefix ‖ u32 BE i, plaintext_i (chunk_size bytes, the last
              may be shorter), aad = context ‖ u32 BE i ‖ u8 final)

``context`` names the object (``segment_context``/``blob_context``: kind, id, camera), so a file moved to
another id, chunks reordered or dropped, or a file cut at a chunk boundary (the new last chunk was not
sealed as final) all fail authentication.

A segment file (``<root>/<camera>/<YYYY-MM-DD UTC of start>/<id>.seg``) is just the stream; its wrapped key
is in ``segments.wrapped_key``. A snapshot file (``<root>/<camera>/<kind>/<YYYY-MM-DD>/<id>.blob``) has no
row, so it carries its wrapped key in a small header before the stream::

    blob = MAGIC "TCBLOB01" (8) ‖ u8 len ‖ kek_id (ASCII) ‖ u16 BE len ‖ wrapped data key ‖ stream
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trustcam.config.schema import NAME_PATTERN, VaultConfig
from trustcam.storage.database import lock_chain
from trustcam.storage.keys import (  # the key-binding helpers live in keys.py (rotation needs them, no cycle)
    KeyEncryptionKey,
    Keyring,
    VaultError,
    blob_key_aad,
    fsync_dir,
    load_signing_key,
    rewrap_blobs,
    segment_key_aad,
)
from trustcam.storage.keys import blob_header as _blob_header
from trustcam.storage.keys import parse_blob_ref as _parse_ref
from trustcam.storage.keys import read_blob_header as _read_blob_header
from trustcam.storage.keys import read_full as _read_full
from trustcam.storage.leases import Fences
from trustcam.storage.schema import CheckpointRow, DeletionRow, EventRow, SegmentRow
from trustcam.storage.witness import CheckpointWitness, WitnessEntry

__all__ = [
    "ZERO_HASH",
    "Failover",
    "Policy",
    "Vault",
    "VaultError",
    "blob_key_aad",
    "chain_hash",
    "chain_message",
    "checkpoint_gaps",
    "checkpoint_message",
    "event_digest",
    "event_record",
    "public_key_fingerprint",
    "rewrap_blobs",
    "segment_key_aad",
]

log = logging.getLogger(__name__)
APPEND_ATTEMPTS = 20  # appends racing another process on the same camera (SQLite: no chain lock) before giving up

CHUNK = 1 << 20
MAGIC = b"TCVAULT1"
TAG = 16
HEADER = struct.Struct(">8s8sI")
ZERO_HASH = "0" * 64
_NAME = re.compile(NAME_PATTERN)


# --- canonical encodings (third parties recompute these: keep them byte-for-byte stable) -------------------------


def chain_message(camera: str, seq: int, segment_id: str, start: float, end: float, size: int, sha256: str,
                  prev_hash: str) -> bytes:
    """The bytes whose sha256 is a segment's ``chain_hash``: UTF-8 text, one ``key=value`` line each, ``\\n``
    after every line, times as seconds since the epoch with exactly 6 decimals, hashes as lower-case hex::

        trustcam-chain-v1
        camera=front
        seq=12
        segment=3f9c…(32 hex)
        start=1700000000.000000
        end=1700000010.000000
        size=1048576
        sha256=<64 hex, sha256 of the plaintext segment>
        prev=<64 hex, chain_hash of seq-1; 64 zeros for seq 1>

    By hand: ``printf 'trustcam-chain-v1\\ncamera=front\\n…prev=…\\n' | sha256sum``.
    """
    return (f"trustcam-chain-v1\ncamera={camera}\nseq={seq}\nsegment={segment_id}\nstart={start:.6f}\n"
            f"end={end:.6f}\nsize={size}\nsha256={sha256}\nprev={prev_hash}\n").encode()


def chain_hash(camera: str, seq: int, segment_id: str, start: float, end: float, size: int, sha256: str,
               prev_hash: str) -> str:
    return hashlib.sha256(chain_message(camera, seq, segment_id, start, end, size, sha256, prev_hash)).hexdigest()


def checkpoint_message(camera: str, seq: int, chain_hash: str, time: float, *, every: int | None = None,
                       every_s: float | None = None, events: Sequence[Sequence[str]] = ()) -> bytes:
    """The bytes a checkpoint's Ed25519 signature covers, same conventions as :func:`chain_message`.

    v1 (``every`` None: checkpoints written before the policy was signed)::

        trustcam-checkpoint-v1
        camera=front
        seq=12
        chain_hash=<64 hex>
        time=1700000123.456789

    v2 also signs the checkpoint policy in force (so a laxer one cannot be claimed afterwards) and the event
    records sealed by this checkpoint (``event id:sha256 of its record``, comma-separated, in order; may be
    empty)::

        trustcam-checkpoint-v2
        camera=front
        seq=12
        chain_hash=<64 hex>
        time=1700000123.456789
        every=6
        every_s=60.000000
        events=3f9c…:9a41…,77d0…:0c2e…
    """
    if every is None:
        return (f"trustcam-checkpoint-v1\ncamera={camera}\nseq={seq}\nchain_hash={chain_hash}\n"
                f"time={time:.6f}\n").encode()
    sealed = ",".join(f"{entry[0]}:{entry[1]}" for entry in events)
    return (f"trustcam-checkpoint-v2\ncamera={camera}\nseq={seq}\nchain_hash={chain_hash}\ntime={time:.6f}\n"
            f"every={every}\nevery_s={float(every_s or 0.0):.6f}\nevents={sealed}\n").encode()


def row_message(row: CheckpointRow) -> bytes:
    """The signed bytes of a stored checkpoint (v1 or v2, by whether it carries a policy)."""
    return checkpoint_message(row.camera, row.seq, row.chain_hash, row.time, every=row.every,
                              every_s=row.every_s, events=[entry[:2] for entry in row.events or []])


EVENT_FIELDS = ("id", "camera", "label", "track_id", "start", "end", "best_score", "box", "zones", "rules",
                "threat", "snapshot", "model_name", "model_sha256")
"""What a sealed event record is made of: everything the evidence manifest states about the event (the legal
hold flag is not part of it: it is meant to change)."""


def event_record(row: EventRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in EVENT_FIELDS}


def event_digest(record: dict[str, Any]) -> str:
    """sha256 (hex) of the record's canonical JSON: keys sorted, no whitespace (``separators=(",", ":")``), ASCII
    only, numbers as Python's ``json`` writes them. Recomputable from an evidence manifest's ``event.record``."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def changed_fields(sealed: object, digest: str, current: dict[str, Any]) -> str:
    """``field best_score (sealed 0.91, now 0.5)``, from the sealed copy kept beside the digest; that copy is
    trusted only when it still hashes to the signed digest."""
    if not isinstance(sealed, dict) or event_digest(sealed) != digest:
        return "fields unknown (the stored copy of the sealed record was altered too)"
    names = [name for name in EVENT_FIELDS if sealed.get(name) != current.get(name)]
    return ", ".join(f"field {name} (sealed {sealed.get(name)!r}, now {current.get(name)!r})"
                     for name in names) or "fields unknown"


# --- the checkpoint policy and the gap rule -----------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A checkpoint is due every ``every`` segments and every ``every_s`` seconds of footage (None: by count only,
    as v1 checkpoints were written)."""

    every: int
    every_s: float | None

    def due(self, segments: int, seconds: float) -> bool:
        return segments >= self.every or (self.every_s is not None and seconds >= self.every_s)

    def text(self) -> str:
        return f"every {self.every} segments" + (f" or {self.every_s:g} s" if self.every_s is not None else "")


@dataclass(frozen=True)
class SignedHead:
    """A checkpoint that verified (signature and chain hash): what the gap rule counts."""

    seq: int
    time: float
    every: int | None
    every_s: float | None

    def policy(self, configured: Policy) -> Policy:
        return Policy(self.every, self.every_s) if self.every is not None else Policy(configured.every, None)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def checkpoint_gaps(camera: str, segments: Iterable[tuple[int, float, float]], heads: Sequence[SignedHead],
                    configured: Policy) -> list[str]:
    """Where a due checkpoint is missing: one problem per gap, naming the first segment left uncovered.

    ``segments`` are (seq, start, end) in seq order, starting at seq 1 (the chain start) or at a checkpoint's
    seq. Walking them, after each checkpoint (or the chain start) a new one must be signed no later than at the
    first segment where ``every`` segments or ``every_s`` seconds of footage have passed, judged by the policy
    the previous checkpoint signed (from the chain start: ``configured``; after a v1 checkpoint: count only).
    The recorder signs exactly there, in the transaction that appends that segment, so a genuine chain always
    passes, the tail after the newest checkpoint included. Deleting checkpoints, or rewriting history and
    dropping the checkpoints that no longer match, leaves a gap.
    """
    by_seq: dict[int, SignedHead] = {}
    for head in sorted(heads, key=lambda h: (h.seq, h.time)):
        by_seq[head.seq] = head
    first = min(by_seq.values(), key=lambda h: h.seq, default=None)
    policy = Policy(configured.every, None) if first is not None and first.every is None else configured
    problems: list[str] = []
    prev_seq: int | None = None  # None: nothing seen yet
    covered_end: float | None = None
    first_open: tuple[int, float] | None = None  # first segment after the previous checkpoint
    in_gap = False
    for seq, start, end in segments:
        if prev_seq is None:
            prev_seq, covered_end = (0, start) if seq == 1 else (seq, end)
            if seq != 1:
                policy = by_seq[seq].policy(configured) if seq in by_seq else policy
                continue
        assert covered_end is not None
        if first_open is None:
            first_open = (seq, start)
        if seq in by_seq:
            prev_seq, covered_end, first_open, in_gap = seq, end, None, False
            policy = by_seq[seq].policy(configured)
            continue
        if in_gap or not policy.due(seq - prev_seq, end - covered_end):
            continue
        in_gap = True
        after = f"the checkpoint at seq {prev_seq}" if prev_seq else "the start of the chain"
        following = next((h.seq for h in sorted(by_seq.values(), key=lambda h: h.seq) if h.seq > seq), None)
        then = f"the next one is at seq {following}" if following is not None else "none was signed after it"
        problems.append(
            f"camera {camera} seq {first_open[0]} ({_utc(first_open[1])}): footage not covered by a checkpoint in "
            f"time: one was due at seq {seq} ({policy.text()} after {after}) but {then} (checkpoints deleted, or "
            "history rewritten after recording)")
    return problems


def public_key_fingerprint(public_key: Ed25519PublicKey | bytes) -> str:
    """sha256 (hex) of the raw 32-byte Ed25519 public key: what the operator publishes and an expert compares."""
    raw = public_key if isinstance(public_key, bytes) else public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def segment_context(segment_id: str, camera: str) -> bytes:
    return b"trustcam/segment/v1\0" + segment_id.encode() + b"\0" + camera.encode() + b"\0"


def blob_context(kind: str, blob_id: str, camera: str) -> bytes:
    return b"trustcam/blob/v1\0" + kind.encode() + b"\0" + blob_id.encode() + b"\0" + camera.encode() + b"\0"


# --- the chunked AES-GCM stream -------------------------------------------------------------------------------


def _chunks(data: bytes | BinaryIO, size: int) -> Iterator[bytes | memoryview]:
    """Fixed-size pieces (the last may be shorter): the reader relies on every non-final chunk being full."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for offset in range(0, len(view), size):
            yield view[offset:offset + size]
        return
    while True:
        piece = data.read(size)
        if not piece:
            return
        while len(piece) < size and (more := data.read(size - len(piece))):
            piece += more
        yield piece


def _chunk_aad(context: bytes, index: int, final: bool) -> bytes:
    return context + struct.pack(">IB", index, final)


def encrypt_stream(data_key: bytes, context: bytes, data: bytes | BinaryIO, write: Callable[[bytes], object],
                   chunk_size: int = CHUNK) -> tuple[int, str]:
    """Encrypt ``data`` chunk by chunk into ``write``; returns the plaintext's size and sha256."""
    prefix = secrets.token_bytes(8)
    write(HEADER.pack(MAGIC, prefix, chunk_size))
    aead = AESGCM(data_key)
    digest = hashlib.sha256()
    size = 0
    pieces = _chunks(data, chunk_size)
    current = next(pieces, b"")
    index = 0
    while True:
        following = next(pieces, None)  # look ahead: the last chunk is sealed as final
        final = following is None
        digest.update(current)
        size += len(current)
        write(aead.encrypt(prefix + struct.pack(">I", index), current, _chunk_aad(context, index, final)))
        if following is None:
            return size, digest.hexdigest()
        current, index = following, index + 1


def decrypt_stream(data_key: bytes, context: bytes, handle: BinaryIO, what: str) -> Iterator[bytes]:
    """Yield the plaintext chunk by chunk, each authenticated before it is yielded."""
    altered = f"{what} was altered or truncated"
    header = _read_full(handle, HEADER.size)
    if len(header) != HEADER.size:
        raise VaultError(f"{altered} (header missing)")
    magic, prefix, chunk_size = HEADER.unpack(header)
    if magic != MAGIC or not 0 < chunk_size <= 1 << 26:
        raise VaultError(f"{altered} (bad header)")
    aead = AESGCM(data_key)
    block = chunk_size + TAG
    current = _read_full(handle, block)
    index = 0
    while True:
        following = _read_full(handle, block) if len(current) == block else b""
        final = not following
        try:
            plain = aead.decrypt(prefix + struct.pack(">I", index), current, _chunk_aad(context, index, final))
        except (InvalidTag, ValueError):
            raise VaultError(f"{altered} (chunk {index} fails authentication)") from None
        yield plain
        if final:
            return
        current, index = following, index + 1


def seal_problems(camera: str, checkpoints: Sequence[CheckpointRow], events: dict[str, dict[str, Any]], *,
                  only: str | None = None) -> list[str]:
    """Sealed event records that were edited or deleted since, and events that ended after sealing began (the
    camera's first v2 checkpoint) but were never sealed. ``checkpoints`` must be verified ones."""
    problems: list[str] = []
    sealed: dict[str, tuple[str, object, CheckpointRow]] = {}
    for cp in checkpoints:
        for entry in cp.events or []:
            sealed.setdefault(entry[0], (entry[1], entry[2] if len(entry) > 2 else None, cp))
    for event_id, (digest, copy, cp) in sealed.items():
        if only is not None and event_id != only:
            continue
        record = events.get(event_id)
        if record is None:
            problems.append(f"event {event_id} (camera {camera}) was sealed at seq {cp.seq} ({_utc(cp.time)}) but "
                            "its record is gone from the database (deleted after it was sealed)")
        elif event_digest(record) != digest:
            problems.append(f"event {event_id} record edited after it was sealed (camera {camera}, checkpoint at "
                            f"seq {cp.seq}, {_utc(cp.time)}): {changed_fields(copy, digest, record)}")
    since = min((cp.time for cp in checkpoints if cp.every is not None), default=None)
    for event_id, record in events.items():
        if (only is None or event_id == only) and event_id not in sealed and since is not None \
                and record["end"] > since:
            problems.append(f"event {event_id} ({record['label']} on camera {camera}, ended {_utc(record['end'])}) "
                            "was never sealed into the chain, though sealing was in force since "
                            f"{_utc(since)}: its record may have been added or rewritten without trace")
    return problems


# --- the vault -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failover:
    """A write the storage root refused, kept on the mirror instead (to copy back once the root is repaired)."""

    time: float
    camera: str
    object_id: str
    path: Path  # where it was written
    error: str  # why the root refused it


def _expand(path: Path) -> Path:
    return Path(os.path.expanduser(path)).absolute()


def _check_name(value: str, what: str) -> None:
    if not _NAME.match(value):
        raise VaultError(f"{what} {value!r} must be lower-case letters, digits, '_' or '-' (it names a folder)")


class _Sink:
    def __init__(self, base: Path, rel: str) -> None:
        self.base = base
        self.final = base / rel
        self.part = self.final.with_name(self.final.name + ".part")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.handle: BinaryIO = open(self.part, "wb")  # noqa: SIM115 - closed in commit/abort

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.part, self.final)
        fsync_dir(self.final.parent)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.part.unlink(missing_ok=True)


class Vault:
    """Stores, opens, shreds and verifies recordings; one instance is shared by all camera threads.

    ``on_alert`` is called with one human-readable line when a storage path starts or stops failing (root
    failed over to the mirror, mirror no longer mirroring, both back); ``failovers`` lists what was written
    to the mirror only.
    """

    def __init__(self, config: VaultConfig, engine: Engine, kek: KeyEncryptionKey | None = None,
                 signer: Ed25519PrivateKey | None = None, *, on_alert: Callable[[str], None] | None = None,
                 hold_margin_s: float = 5.0, witness: CheckpointWitness | None = None,
                 fences: Fences | None = None) -> None:
        self.config = config
        self.engine = engine
        self.fences = fences  # camera leases (several machines): a stale worker's segments/checkpoints are refused
        self.root = _expand(config.root)
        self.mirror = _expand(config.mirror) if config.mirror else None
        self.keyring = Keyring(config, kek)
        self.signer = signer or load_signing_key(config)
        self.public_key = self.signer.public_key()
        self.public_key_hex = self.public_key.public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw).hex()
        self.on_alert = on_alert
        self.witness = witness  # every committed checkpoint is also recorded there, outside the database
        self.policy = Policy(config.checkpoint_every, config.checkpoint_every_s)
        self.hold_margin_s = hold_margin_s  # a held event also holds this much footage before and after it
        self.chunk_size = CHUNK  # plaintext bytes per GCM chunk (recorded in each file's header)
        self.failovers: list[Failover] = []
        self._failing: dict[Path, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- writing ------------------------------------------------------------------------------------------------

    def _camera_lock(self, camera: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(camera, threading.Lock())

    def _alert(self, message: str) -> None:
        log.warning("%s", message)
        if self.on_alert is not None:
            try:
                self.on_alert(message)
            except Exception:  # an alert channel failing must not lose the recording
                log.exception("alert callback failed")

    def _storage_state(self, base: Path, error: str | None) -> None:
        """Alert on transitions only: a root down for an hour is one alert, not 360."""
        with self._guard:
            was = self._failing.get(base)
            if error is None:
                self._failing.pop(base, None)
            else:
                self._failing[base] = error
        name = "storage root" if base == self.root else "mirror"
        if error is not None and was is None:
            other = self.mirror if base == self.root else self.root
            then = (f"recording continues on the mirror {other}" if base == self.root and other
                    else "recordings are no longer mirrored" if base != self.root else "recording stopped")
            self._alert(f"vault {name} {base} failed ({error}); {then}")
        elif error is None and was is not None:
            self._alert(f"vault {name} {base} works again")

    def _write(self, rel: str, data: bytes | BinaryIO, produce: Callable[[Callable[[bytes], None]], tuple[int, str]],
               camera: str, object_id: str) -> tuple[int, str, list[Path]]:
        """Write one encrypted object to the root and the mirror at once (crash-safe: ``.part``, fsync, rename).

        A path that fails is dropped and the write goes on with the other; only if both fail is it an error.
        Writing both copies from the same encryption pass means the input is read once and never needs seeking.
        """
        sinks: list[_Sink] = []
        errors: dict[Path, str] = {}
        for base in filter(None, (self.root, self.mirror)):
            try:
                sinks.append(_Sink(base, rel))
            except OSError as exc:
                errors[base] = f"{exc.__class__.__name__}: {exc.strerror or exc}"

        def drop(sink: _Sink, exc: OSError) -> None:
            errors[sink.base] = f"{exc.__class__.__name__}: {exc.strerror or exc}"
            sink.abort()
            sinks.remove(sink)

        def write(buffer: bytes) -> None:
            for sink in list(sinks):
                try:
                    sink.handle.write(buffer)
                except OSError as exc:
                    drop(sink, exc)
            if not sinks:
                raise VaultError("no storage path accepted the write")

        try:
            if not sinks:
                raise VaultError("no storage path accepted the write")
            size, sha = produce(write)
            for sink in list(sinks):
                try:
                    sink.commit()
                except OSError as exc:
                    drop(sink, exc)
        except VaultError:
            for sink in sinks:
                sink.abort()
            sinks.clear()
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        for base in filter(None, (self.root, self.mirror)):
            self._storage_state(base, errors.get(base))
        if not sinks:
            where = "; ".join(f"{base}: {why}" for base, why in errors.items())
            raise VaultError(f"cannot store {object_id} of camera {camera}: no storage path is writable ({where}); "
                             "check that the disks are mounted, writable and not full")
        written = [sink.final for sink in sinks]
        if self.root in errors and self.mirror is not None:
            self.failovers.append(Failover(time.time(), camera, object_id, written[0], errors[self.root]))
        return size, sha, written

    def store_segment(self, camera: str, data: bytes | BinaryIO, start: float, end: float, *,
                      has_motion: bool = False, labels: Sequence[str] = ()) -> SegmentRow:
        """Encrypt ``data`` (bytes or a readable binary stream) as a new segment and append it to the chain.

        Encryption and file writing happen outside any lock; only the chain append (read the head, insert
        the row) holds the camera's lock, in one short transaction. Thread-safe; cameras do not wait on
        each other. Raises VaultError if neither the root nor the mirror can take the file.
        """
        _check_name(camera, "camera")
        if not end >= start:
            raise VaultError(f"segment of camera {camera}: end {end} is before start {start}")
        start, end = round(float(start), 6), round(float(end), 6)
        segment_id = uuid.uuid4().hex
        rel = f"{camera}/{time.strftime('%Y-%m-%d', time.gmtime(start))}/{segment_id}.seg"
        data_key = secrets.token_bytes(32)
        context = segment_context(segment_id, camera)
        chunk_size = self.chunk_size
        size, sha, written = self._write(
            rel, data, lambda write: encrypt_stream(data_key, context, data, write, chunk_size), camera,
            f"segment {segment_id}")
        try:
            with self.keyring.shared_lock() as kek:
                wrapped = base64.b64encode(kek.wrap(data_key, segment_key_aad(segment_id, camera))).decode()
                row = self._append(SegmentRow(
                    id=segment_id, camera=camera, start=start, end=end, path=rel, size=size, sha256=sha,
                    wrapped_key=wrapped, kek_id=kek.key_id, has_motion=int(has_motion), labels=list(labels),
                    held=0))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return row

    def _append(self, row: SegmentRow) -> SegmentRow:
        """Append to the chain and, when one is due, sign the new head in the same transaction: a crash never
        leaves a due checkpoint unsigned (which the gap rule would report as a deleted checkpoint)."""
        with self._camera_lock(row.camera):
            for attempt in range(APPEND_ATTEMPTS):
                try:
                    with Session(self.engine, expire_on_commit=False) as session, session.begin():
                        lock_chain(session, f"vault:{row.camera}")  # across processes; the camera lock is in-process
                        if self.fences is not None:  # LeaseLost: rolled back, store_segment removes the files
                            self.fences.check(session, row.camera)
                        head = session.execute(
                            select(SegmentRow.seq, SegmentRow.chain_hash).where(SegmentRow.camera == row.camera)
                            .order_by(SegmentRow.seq.desc()).limit(1)).first()
                        row.seq = head.seq + 1 if head else 1
                        row.prev_hash = head.chain_hash if head else ZERO_HASH
                        row.chain_hash = chain_hash(row.camera, row.seq, row.id, row.start, row.end, row.size,
                                                    row.sha256, row.prev_hash)
                        session.add(row)
                        checkpoint = self._due_checkpoint(session, row)
                    if checkpoint is not None:
                        self._witness(checkpoint)
                    return row
                except IntegrityError:  # another process appended to this camera's chain at the same moment
                    if attempt == APPEND_ATTEMPTS - 1:
                        raise VaultError(f"camera {row.camera}: cannot append segment {row.id} to the hash chain "
                                         "(another process keeps writing this camera); run one recorder per "
                                         "camera") from None
                    time.sleep(random.uniform(0.0, 0.02))  # SQLite has no chain lock: let the other writer finish
                    row = SegmentRow(**{c: getattr(row, c) for c in (
                        "id", "camera", "start", "end", "path", "size", "sha256", "wrapped_key", "kek_id",
                        "has_motion", "labels", "held")})
        raise AssertionError("unreachable")

    def _due_checkpoint(self, session: Session, row: SegmentRow) -> CheckpointRow | None:
        """Sign ``row`` as the head when the previous checkpoint's signed policy, or the configured one, says a
        checkpoint is due (:func:`checkpoint_gaps` checks the former)."""
        last = session.scalars(select(CheckpointRow).where(CheckpointRow.camera == row.camera)
                               .order_by(CheckpointRow.seq.desc(), CheckpointRow.time.desc()).limit(1)).first()
        if last is None:
            prev_seq, policy = 0, self.policy
            covered_end = session.scalar(select(SegmentRow.start).where(
                SegmentRow.camera == row.camera, SegmentRow.seq == 1)) if row.seq > 1 else row.start
        else:
            prev_seq = last.seq
            policy = SignedHead(last.seq, last.time, last.every, last.every_s).policy(self.policy)
            covered_end = session.scalar(select(SegmentRow.end).where(
                SegmentRow.camera == row.camera, SegmentRow.seq == last.seq))
        covered_end = row.start if covered_end is None else covered_end
        segments, seconds = row.seq - prev_seq, row.end - covered_end
        if not (policy.due(segments, seconds) or self.policy.due(segments, seconds)):
            return None
        checkpoint = self._checkpoint_row(row.camera, row.seq, row.chain_hash, [])
        session.add(checkpoint)
        return checkpoint

    def _checkpoint_row(self, camera: str, seq: int, head_hash: str,
                        records: Sequence[dict[str, Any]]) -> CheckpointRow:
        """A signed v2 checkpoint; ``events`` keeps [id, digest, sealed copy] (the copy names edited fields)."""
        now = round(time.time(), 6)
        events = [[record["id"], event_digest(record), record] for record in records]
        row = CheckpointRow(camera=camera, seq=seq, chain_hash=head_hash, time=now, every=self.policy.every,
                            every_s=float(self.policy.every_s), events=events, public_key=self.public_key_hex)
        row.signature = self.signer.sign(row_message(row)).hex()
        return row

    def _witness(self, row: CheckpointRow) -> None:
        if self.witness is None:
            return
        try:
            self.witness.record(WitnessEntry(
                kind="footage", camera=row.camera, seq=row.seq, hash=row.chain_hash, time=row.time,
                message=row_message(row).decode(), signature=row.signature, public_key=row.public_key))
        except Exception:  # the protocol says never raises; a broken witness must not stop recording anyway
            log.exception("witness: checkpoint of camera %s seq %d not recorded", row.camera, row.seq)

    def _sign_head(self, camera: str, records: Sequence[dict[str, Any]]) -> CheckpointRow | None:
        with self._camera_lock(camera), Session(self.engine, expire_on_commit=False) as session, session.begin():
            lock_chain(session, f"vault:{camera}")
            if self.fences is not None:
                self.fences.check(session, camera)
            head = session.execute(select(SegmentRow.seq, SegmentRow.chain_hash).where(SegmentRow.camera == camera)
                                   .order_by(SegmentRow.seq.desc()).limit(1)).first()
            if head is None:
                return None
            row = self._checkpoint_row(camera, head.seq, head.chain_hash, records)
            session.add(row)
        self._witness(row)
        return row

    def checkpoint(self, camera: str) -> CheckpointRow | None:
        """Sign the camera's chain head now (None if it has no segment yet). Only ever called while recording
        (clean stop, sealing): signing old footage on demand would bless whatever the database holds by then."""
        return self._sign_head(camera, [])

    def close_camera(self, camera: str) -> CheckpointRow | None:
        """Clean stop: sign the head unless the newest checkpoint already covers it, so no footage is left in the
        unsigned tail (the part a crash leaves open to undetected edits, at most one checkpoint interval)."""
        with Session(self.engine) as session:
            head = session.scalar(select(func.max(SegmentRow.seq)).where(SegmentRow.camera == camera))
            signed = session.scalar(select(func.max(CheckpointRow.seq)).where(CheckpointRow.camera == camera))
        if head is None or (signed is not None and signed >= head):
            return None
        return self.checkpoint(camera)

    def seal_event(self, event_id: str) -> CheckpointRow | None:
        """Seal an ended event's record into its camera's chain: a checkpoint at the current head whose signed
        message carries the record's digest (:func:`event_digest`). None when the camera has no footage yet."""
        with Session(self.engine) as session:
            event = session.get(EventRow, event_id)
            record = event_record(event) if event is not None else None
        if record is None:
            raise VaultError(f"event {event_id}: no such event in the database; it cannot be sealed")
        row = self._sign_head(record["camera"], [record])
        if row is None:
            log.info("event %s not sealed: camera %s has no footage in the vault yet", event_id, record["camera"])
        return row

    # -- reading ------------------------------------------------------------------------------------------------

    def _row(self, row_or_id: SegmentRow | str) -> SegmentRow:
        """Always re-read: a rotation may have re-wrapped the key since the caller loaded its row."""
        segment_id = row_or_id if isinstance(row_or_id, str) else row_or_id.id
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(SegmentRow, segment_id)
        if row is None:
            raise VaultError(f"segment {segment_id}: no such segment in the database")
        return row

    def _locate(self, rel: str) -> Path | None:
        for base in filter(None, (self.root, self.mirror)):
            if (base / rel).is_file():
                return base / rel
        return None

    def _data_key(self, row: SegmentRow) -> bytes:
        if row.wrapped_key is None:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(row.deleted_at or 0))
            raise VaultError(f"segment {row.id} was shredded on {when} ({row.deletion_reason}); its key is "
                             "destroyed and the footage cannot be recovered")
        kek = self.keyring.get(row.kek_id)
        try:
            return kek.unwrap(base64.b64decode(row.wrapped_key), segment_key_aad(row.id, row.camera))
        except (VaultError, ValueError):
            raise VaultError(f"segment {row.id}: its wrapped data key does not unwrap under KEK {row.kek_id} "
                             "(the database row was altered)") from None

    def open_segment(self, row_or_id: SegmentRow | str) -> Iterator[bytes]:
        """The plaintext as a stream of authenticated chunks.

        Missing key or file raise at once; tampering raises VaultError ("segment X was altered or truncated")
        when the damaged chunk is reached, before any of its bytes are yielded.
        """
        row = self._row(row_or_id)
        data_key = self._data_key(row)
        path = self._locate(row.path)
        if path is None:
            places = " or ".join(str(b / row.path) for b in filter(None, (self.root, self.mirror)))
            raise VaultError(f"segment {row.id}: file missing ({places})")

        def stream() -> Iterator[bytes]:
            with open(path, "rb") as handle:
                yield from decrypt_stream(data_key, segment_context(row.id, row.camera), handle, f"segment {row.id}")

        return stream()

    def read_segment(self, row_or_id: SegmentRow | str) -> bytes:
        return b"".join(self.open_segment(row_or_id))

    def segments_between(self, camera: str, start: float, end: float, *,
                         include_shredded: bool = False) -> list[SegmentRow]:
        """Segments of ``camera`` overlapping [start, end], in chain order."""
        query = (select(SegmentRow).where(SegmentRow.camera == camera, SegmentRow.start < end, SegmentRow.end > start)
                 .order_by(SegmentRow.seq))
        if not include_shredded:
            query = query.where(SegmentRow.wrapped_key.is_not(None))
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    # -- deleting -----------------------------------------------------------------------------------------------

    def is_held(self, row_or_id: SegmentRow | str) -> bool:
        """Under legal hold: the segment itself, or a held event of its camera within ``hold_margin_s``."""
        row = self._row(row_or_id)
        with Session(self.engine) as session:
            return self._held(session, row)

    def _held(self, session: Session, row: SegmentRow) -> bool:
        if row.held:
            return True
        margin = self.hold_margin_s
        return session.execute(select(EventRow.id).where(
            EventRow.camera == row.camera, EventRow.held != 0, EventRow.start <= row.end + margin,
            EventRow.end >= row.start - margin).limit(1)).first() is not None

    def shred(self, segment_id: str, reason: str, *, force: bool = False) -> None:
        """Crypto-shred a segment: destroy its wrapped key, remove its files, record a DeletionRow.

        The chain row stays (its hashes are still known), so the chain verifies across the gap. SQLite's
        ``secure_delete`` is switched on for the update and the WAL truncated, so the old wrapped key does not
        linger in the database files. Shredding an already shredded segment does nothing. A held segment is
        refused unless ``force``.
        """
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            sqlite = self.engine.dialect.name == "sqlite"
            if sqlite:
                session.connection().exec_driver_sql("PRAGMA secure_delete=ON")
            row = session.get(SegmentRow, segment_id)
            if row is None:
                raise VaultError(f"segment {segment_id}: no such segment in the database")
            if row.wrapped_key is not None:
                if not force and self._held(session, row):
                    raise VaultError(f"segment {segment_id} (camera {row.camera}) is under legal hold and was not "
                                     "deleted; release the hold first (or force, with the authority to do so)")
                row.wrapped_key = None
                row.deleted_at = time.time()
                row.deletion_reason = reason[:255]
                session.add(DeletionRow(time=row.deleted_at, camera=row.camera, segment_id=segment_id,
                                        reason=reason[:255]))
        for base in filter(None, (self.root, self.mirror)):
            try:
                (base / row.path).unlink(missing_ok=True)
            except OSError as exc:  # the key is gone already: what is left is noise, but say so
                log.warning("segment %s shredded but %s could not be removed: %s", segment_id, base / row.path, exc)
        if sqlite:
            self._truncate_wal()

    def _truncate_wal(self) -> None:
        """Copy the WAL into the database and empty it, so the old wrapped key is not left in the WAL file.

        Waits at most 0.2 s for readers (never the connection's long busy timeout): when they are busy, the WAL
        is overwritten by later commits anyway.
        """
        try:
            with self.engine.connect() as connection:
                previous = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
                connection.exec_driver_sql("PRAGMA busy_timeout=200")
                try:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    connection.exec_driver_sql(f"PRAGMA busy_timeout={int(previous or 0)}")
        except Exception as exc:  # best effort: the key is already destroyed in the database proper
            log.info("WAL checkpoint after shredding skipped: %s", exc)

    # -- verifying ----------------------------------------------------------------------------------------------

    def cameras(self) -> list[str]:
        with Session(self.engine) as session:
            names = set(session.scalars(select(SegmentRow.camera).distinct()))
            names |= set(session.scalars(select(CheckpointRow.camera).distinct()))
        return sorted(names)

    def verify_chain(self, camera: str | None = None, *, deep: bool = False) -> list[str]:
        """Problems found in the hash chain(s); empty means intact.

        Checks: seq consecutive from 1, each prev_hash is the previous chain_hash, each chain_hash recomputes
        from its row, every checkpoint matches its row and carries a valid signature by this vault's key, no due
        checkpoint is missing (:func:`checkpoint_gaps`), every sealed event record is unchanged and every event
        that ended since sealing began was sealed, every live segment's file exists (``deep``: decrypts it and
        compares size and sha256).
        """
        problems: list[str] = []
        for name in [camera] if camera else self.cameras():
            problems += self._verify_camera(name, deep)
        return problems

    def _verify_camera(self, camera: str, deep: bool) -> list[str]:
        problems: list[str] = []
        hashes: dict[int, str] = {}
        spans: list[tuple[int, float, float]] = []
        expected_seq, prev = 1, ZERO_HASH
        with Session(self.engine) as session:
            rows = session.scalars(select(SegmentRow).where(SegmentRow.camera == camera)
                                   .order_by(SegmentRow.seq).execution_options(yield_per=1000))
            for row in rows:
                where = f"camera {camera} seq {row.seq} (segment {row.id})"
                if row.seq != expected_seq:
                    problems.append(f"camera {camera}: seq jumps from {expected_seq - 1} to {row.seq} "
                                    "(segments removed from the database)")
                if row.prev_hash != prev:
                    problems.append(f"{where}: prev_hash does not match the previous chain_hash (chain broken)")
                if chain_hash(camera, row.seq, row.id, row.start, row.end, row.size, row.sha256,
                              row.prev_hash) != row.chain_hash:
                    problems.append(f"{where}: chain_hash does not match the row (row altered)")
                hashes[row.seq] = row.chain_hash
                spans.append((row.seq, row.start, row.end))
                expected_seq, prev = row.seq + 1, row.chain_hash
                if row.wrapped_key is not None:
                    problems += self._check_file(row, where, deep)
            checkpoints = list(session.scalars(select(CheckpointRow).where(CheckpointRow.camera == camera)
                                               .order_by(CheckpointRow.id)))
            events = {row.id: event_record(row) for row in session.scalars(
                select(EventRow).where(EventRow.camera == camera))}
        valid: list[CheckpointRow] = []
        for cp in checkpoints:
            found = self.checkpoint_problems(cp, hashes.get(cp.seq))
            problems += found
            if not found:
                valid.append(cp)
        heads = [SignedHead(cp.seq, cp.time, cp.every, cp.every_s) for cp in valid]
        problems += checkpoint_gaps(camera, spans, heads, self.policy)
        problems += seal_problems(camera, valid, events)
        return problems

    def checkpoint_problems(self, cp: CheckpointRow, chain_at_seq: str | None) -> list[str]:
        """Why a stored checkpoint cannot be trusted: it does not match the chain row at its seq, its signature
        does not cover its fields (policy and sealed events included), or another key signed it."""
        where = f"camera {cp.camera} checkpoint at seq {cp.seq}"
        problems = []
        if chain_at_seq != cp.chain_hash:
            problems.append(f"{where}: signed chain_hash {cp.chain_hash[:16]}… does not match the chain "
                            "(history rewritten)")
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(cp.public_key)).verify(
                bytes.fromhex(cp.signature), row_message(cp))
        except (InvalidSignature, ValueError, TypeError, IndexError):
            problems.append(f"{where}: signature is not valid (its fields, policy or sealed events were altered)")
        if cp.public_key != self.public_key_hex:
            problems.append(f"{where}: signed by key {public_key_fingerprint(bytes.fromhex(cp.public_key))[:16]}"
                            f"…, not this vault's key {public_key_fingerprint(self.public_key)[:16]}…")
        return problems

    def event_problems(self, event_id: str) -> tuple[CheckpointRow | None, list[str]]:
        """The checkpoint that sealed this event (None: never sealed) and what is wrong with its record."""
        with Session(self.engine, expire_on_commit=False) as session:
            event = session.get(EventRow, event_id)
            if event is None:
                return None, [f"event {event_id}: no such event in the database"]
            checkpoints = list(session.scalars(select(CheckpointRow).where(
                CheckpointRow.camera == event.camera, CheckpointRow.every.is_not(None)).order_by(CheckpointRow.id)))
        valid = [cp for cp in checkpoints if not self.checkpoint_problems(cp, cp.chain_hash)]
        seal = next((cp for cp in valid for entry in cp.events or [] if entry[0] == event_id), None)
        return seal, seal_problems(event.camera, valid, {event_id: event_record(event)}, only=event_id)

    def _check_file(self, row: SegmentRow, where: str, deep: bool) -> list[str]:
        if self._locate(row.path) is None:
            return [f"{where}: file {row.path} is missing from the root and the mirror"]
        if not deep:
            return []
        digest, size = hashlib.sha256(), 0
        try:
            for piece in self.open_segment(row):
                digest.update(piece)
                size += len(piece)
        except VaultError as exc:
            return [f"{where}: {exc}"]
        if size != row.size or digest.hexdigest() != row.sha256:
            return [f"{where}: decrypted content does not match its recorded size/sha256"]
        return []

    # -- snapshots (blobs) --------------------------------------------------------------------------------------

    def store_blob(self, camera: str, data: bytes | BinaryIO, kind: str = "snapshot") -> str:
        """Encrypt a snapshot (or any small file) under its own data key; returns its reference (a path relative
        to the root: ``<camera>/<kind>/<YYYY-MM-DD>/<id>.blob``) for ``read_blob``.

        The wrapped key travels in the file's header (module docstring). Written under the rotation lock, so
        a concurrent ``keys rotate`` re-wraps it too.
        """
        _check_name(camera, "camera")
        _check_name(kind, "kind")
        blob_id = uuid.uuid4().hex
        ref = f"{camera}/{kind}/{time.strftime('%Y-%m-%d', time.gmtime())}/{blob_id}.blob"
        data_key = secrets.token_bytes(32)
        with self.keyring.shared_lock() as kek:
            header = _blob_header(kek.key_id, kek.wrap(data_key, blob_key_aad(kind, blob_id, camera)))

            def produce(write: Callable[[bytes], None]) -> tuple[int, str]:
                write(header)
                return encrypt_stream(data_key, blob_context(kind, blob_id, camera), data, write, self.chunk_size)

            self._write(ref, data, produce, camera, f"{kind} {blob_id}")
        return ref

    def read_blob(self, ref: str) -> bytes:
        camera, kind, blob_id = _parse_ref(ref)
        path = self._locate(ref)
        if path is None:
            raise VaultError(f"{kind} {ref}: file missing from the root and the mirror")
        with open(path, "rb") as handle:
            kek_id, wrapped = _read_blob_header(handle, ref)
            try:
                data_key = self.keyring.get(kek_id).unwrap(wrapped, blob_key_aad(kind, blob_id, camera))
            except VaultError as exc:
                raise VaultError(f"{kind} {ref} was altered or moved (its key does not unwrap: {exc})") from None
            return b"".join(decrypt_stream(data_key, blob_context(kind, blob_id, camera), handle, f"{kind} {ref}"))

    def delete_blob(self, ref: str) -> None:
        """Remove a snapshot (both copies). Its key was in the file; the next KEK rotation makes any copy left
        in a backup unreadable for good."""
        _parse_ref(ref)
        for base in filter(None, (self.root, self.mirror)):
            (base / ref).unlink(missing_ok=True)
