"""Evidence bundles: one event's footage with everything a third party needs to check it, without our database.

A range export (:func:`build_range_bundle`) is the same bundle for a time range of one camera instead of an event:
its manifest says ``"export": "range"`` and holds ``range`` instead of ``event``, its joined view is
``clip/range.mp4``. A bundle is a ZIP file, built in memory (decrypted video never touches the server's disk)::

    manifest.json        event (with the model name and sha256 that saw it, and its sealed record), segments (each
                         with when it was recorded and when a checkpoint first signed it), the checkpoint policy,
                         sha256 of every other file
    manifest.sig         Ed25519 signature (raw 64 bytes) of manifest.json's exact bytes
    clip/segment-NNNNNN.mp4   the decrypted segments overlapping the event ± margin, NNNNNN = chain seq
    clip/event.mp4       the same segments joined into one file (for viewing; when they could be joined)
    snapshot.<ext>       the event's snapshot, when available
    chain.json           the camera's hash-chain rows from the checkpoint before the first exported segment (or
                         the chain start) to the checkpoint that covers the last one
    checkpoints.json     every checkpoint in that range, as signed while recording (policy and sealed events)
    checkpoint.json      the covering checkpoint: seq, chain_hash, time, signature (hex), public key (hex)
    checkpoint.msg/.sig  its exact signed bytes and the raw signature, for checking with openssl by hand
    public_key.pem       the vault's Ed25519 public key; its sha256 fingerprint is in the manifest
    README.txt           how to verify, with ``trustcam evidence verify`` or by hand

Why it convinces: each clip's sha256 is in its chain row; each row's chain_hash is the sha256 of its fields
and the previous row's hash, up to a checkpoint signed at recording time, never at export: export refuses
footage no checkpoint covers yet, and verification reports how long after recording each segment was signed
(``--max-sign-delay``) and fails where a checkpoint that the signed policy made due is missing. Changing a
byte, dropping or reordering a segment breaks a hash or a link; forging a signature needs the private key.
Whoever holds the bundle can only trust the public key by comparing its fingerprint with the one the operator
published.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import math
import os
import secrets
import time
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trustcam import __version__
from trustcam.storage.keys import fsync_dir
from trustcam.storage.schema import CheckpointRow, EventRow, SegmentRow
from trustcam.storage.vault import (
    EVENT_FIELDS,
    ZERO_HASH,
    Policy,
    SignedHead,
    Vault,
    VaultError,
    chain_hash,
    changed_fields,
    checkpoint_gaps,
    checkpoint_message,
    event_digest,
    event_record,
    public_key_fingerprint,
    row_message,
)

log = logging.getLogger(__name__)

FORMAT = "trustcam-evidence-v2"
FORMATS = ("trustcam-evidence-v1", FORMAT)  # v1 bundles (no checkpoints.json) still verify, with fewer checks
SIGNED_NAMES = ("manifest.json", "manifest.sig")  # everything else is listed, with its sha256, in the manifest
MAX_RANGE_BYTES = 2 << 30  # a range bundle holds its video twice in memory (segments and joined view)
_ROW_FIELDS = ("seq", "segment", "start", "end", "size", "sha256", "prev_hash", "chain_hash")


@dataclass
class VerifyReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    fingerprint: str | None = None


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"


def _chain_entry(row: SegmentRow) -> dict[str, Any]:
    return {"seq": row.seq, "segment": row.id, "start": row.start, "end": row.end, "size": row.size,
            "sha256": row.sha256, "prev_hash": row.prev_hash, "chain_hash": row.chain_hash}


def _checkpoint_entry(cp: CheckpointRow) -> dict[str, Any]:
    return {"camera": cp.camera, "seq": cp.seq, "chain_hash": cp.chain_hash, "time": cp.time,
            "time_utc": _utc(cp.time), "every": cp.every, "every_s": cp.every_s, "events": cp.events or [],
            "message": row_message(cp).decode(), "signature": cp.signature, "public_key": cp.public_key}


def _message_of(cp: dict[str, Any]) -> bytes:
    return checkpoint_message(cp["camera"], int(cp["seq"]), cp["chain_hash"], float(cp["time"]),
                              every=cp.get("every"), every_s=cp.get("every_s"),
                              events=[entry[:2] for entry in cp.get("events") or []])


# --- export ------------------------------------------------------------------------------------------------------


def export_event(vault: Vault, engine: Engine, event_id: str, out: Path, *, margin_s: float = 5.0) -> Path:
    """Write the evidence bundle of ``event_id`` to ``out`` (a ZIP, mode 0600, atomically); returns ``out``."""
    out = Path(out)
    write_private(out, build_bundle(vault, engine, event_id, margin_s=margin_s))
    return out


def write_private(path: Path, data: bytes) -> None:
    """Readable by the owner only, never seen half-written: a private temp file, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@dataclass
class _Subject:
    """What a bundle shows: one event (with its sealed record) or a plain time range of one camera. Everything
    else (footage, chain excerpt, checkpoints, signature, self-check) is built by the same core, so a range export
    is exactly as checkable as an event export."""

    camera: str
    start: float  # footage overlapping [start, end] is exported
    end: float
    name: str  # "event <id>" or "range export": starts every error message
    clip: str  # file name of the joined view
    fields: dict[str, Any]  # the subject's own manifest entries ("event" and "margin_s", or "range")
    snapshot: str | None = None


def build_bundle(vault: Vault, engine: Engine, event_id: str, *, margin_s: float = 5.0) -> bytes:
    """The evidence bundle of ``event_id`` as ZIP bytes, built in memory.

    Uses only checkpoints signed while recording; nothing is signed here except the manifest. The bundle is
    verified with :func:`verify_bundle` before it is returned, so one that would not verify is never handed out.
    Raises VaultError when the event or its footage is missing, no checkpoint covers the footage yet, or the
    event record was changed after it was sealed.
    """
    with Session(engine, expire_on_commit=False) as session:
        event = session.get(EventRow, event_id)
    if event is None:
        raise VaultError(f"event {event_id}: no such event in the database")
    subject = _Subject(event.camera, event.start - margin_s, event.end + margin_s, f"event {event_id}",
                       "clip/event.mp4", {}, event.snapshot)
    overlapping = _footage(vault, subject)
    seal, problems = vault.event_problems(event_id)
    if problems:
        raise VaultError(f"event {event_id}: not exported: " + "; ".join(problems))
    record = event_record(event)
    subject.fields = {
        "event": {
            "id": event.id, "camera": event.camera, "label": event.label, "track_id": event.track_id,
            "start": event.start, "end": event.end, "start_utc": _utc(event.start), "end_utc": _utc(event.end),
            "best_score": event.best_score, "box": event.box, "zones": event.zones, "rules": event.rules,
            "threat": event.threat, "legal_hold": bool(event.held),
            "model": {"name": event.model_name, "sha256": event.model_sha256},
            "record": record,
            "seal": ({"seq": seal.seq, "time": seal.time, "time_utc": _utc(seal.time), "digest": event_digest(record)}
                     if seal is not None else None),
        },
        "margin_s": margin_s,
    }
    return _assemble(vault, engine, subject, overlapping, seal)


def build_range_bundle(vault: Vault, engine: Engine, camera: str, start: float, end: float, *,
                       max_bytes: int = MAX_RANGE_BYTES) -> bytes:
    """The evidence bundle of every segment of ``camera`` overlapping [start, end] (epoch s), as ZIP bytes.

    Same footage, chain, checkpoint and self-check rules as :func:`build_bundle`; the manifest says ``"export":
    "range"`` and carries the range instead of an event, so nobody mistakes it for a detection. Raises
    VaultError for an empty or inverted range, a range without footage, more than ``max_bytes`` of video (the
    bundle is built in memory), or footage no checkpoint covers yet.
    """
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise VaultError(f"range export: the end ({end}) must be after the start ({start}), both finite epoch "
                         "seconds; pass the range again")
    subject = _Subject(camera, start, end, "range export", "clip/range.mp4", {
        "range": {"camera": camera, "start": start, "end": end, "start_utc": _utc(start), "end_utc": _utc(end)}})
    overlapping = _footage(vault, subject)
    size = sum(row.size for row in overlapping if row.wrapped_key is not None)
    if size > max_bytes:
        raise VaultError(f"range export: {size / 2**20:.0f} MiB of video between {_utc(start)} and {_utc(end)}, "
                         f"more than the {max_bytes / 2**20:.0f} MiB a bundle built in memory may hold; export a "
                         "shorter range (several bundles if needed)")
    return _assemble(vault, engine, subject, overlapping, None)


def _footage(vault: Vault, subject: _Subject) -> list[SegmentRow]:
    """The chain rows overlapping the subject (shredded ones too: the manifest says what was deleted); refuses a
    subject none of whose footage still exists."""
    overlapping = vault.segments_between(subject.camera, subject.start, subject.end, include_shredded=True)
    if not any(row.wrapped_key is not None for row in overlapping):
        raise VaultError(f"{subject.name}: no recorded footage of camera {subject.camera} between "
                         f"{_utc(subject.start)} and {_utc(subject.end)} (not recorded, or already deleted); nothing "
                         "to export")
    return overlapping


def _assemble(vault: Vault, engine: Engine, subject: _Subject, overlapping: list[SegmentRow],
              seal: CheckpointRow | None) -> bytes:
    """The shared core: decrypted segments, chain excerpt and checkpoints signed while recording, the signed
    manifest; verified before it is returned."""
    camera = subject.camera
    first, last = overlapping[0].seq, overlapping[-1].seq
    with Session(engine, expire_on_commit=False) as session:
        signed = list(session.scalars(select(CheckpointRow).where(
            CheckpointRow.camera == camera, CheckpointRow.public_key == vault.public_key_hex)
            .order_by(CheckpointRow.seq, CheckpointRow.id)))
    covering = next((cp for cp in signed if cp.seq >= last), None)
    if covering is None:
        raise VaultError(_not_covered(vault, engine, subject.name, camera, overlapping[-1], signed))
    before = [cp.seq for cp in signed if cp.seq < first]
    start_seq = min(before[-1] if before else 1, seal.seq if seal else first)
    end_seq = max(covering.seq, seal.seq if seal else covering.seq)
    with Session(engine, expire_on_commit=False) as session:
        chain = list(session.scalars(select(SegmentRow).where(
            SegmentRow.camera == camera, SegmentRow.seq >= start_seq, SegmentRow.seq <= end_seq)
            .order_by(SegmentRow.seq)))
    checkpoints = [cp for cp in signed if start_seq <= cp.seq <= end_seq]
    exported = [row for row in chain if first <= row.seq <= last]

    files: dict[str, bytes] = {}
    segments, clips = [], []
    for row in exported:
        entry = _chain_entry(row)
        signed_at = min(cp.time for cp in checkpoints if cp.seq >= row.seq)
        entry.update(recorded=row.end, recorded_utc=_utc(row.end), signed=signed_at, signed_utc=_utc(signed_at))
        if row.wrapped_key is None:
            entry.update(file=None, shredded={"time": row.deleted_at, "reason": row.deletion_reason})
        else:
            name = f"clip/segment-{row.seq:06d}.mp4"
            files[name] = decrypt_segment(vault, row)
            clips.append(files[name])
            entry.update(file=name, shredded=None)
        segments.append(entry)
    joined, clip_note = _join_clips(clips, subject.clip)
    if joined is not None:
        files[subject.clip] = joined
    snapshot = _copy_snapshot(vault, subject.snapshot, files)

    policy = {"every": vault.policy.every, "every_s": vault.policy.every_s}
    message = row_message(covering)
    files["chain.json"] = _json({"format": FORMAT, "camera": camera, "encoding": "trustcam-chain-v1",
                                 "rows": [_chain_entry(row) for row in chain]})
    files["checkpoints.json"] = _json({"format": FORMAT, "camera": camera, "policy": policy,
                                       "checkpoints": [_checkpoint_entry(cp) for cp in checkpoints]})
    files["checkpoint.json"] = _json(_checkpoint_entry(covering))
    files["checkpoint.msg"] = message
    files["checkpoint.sig"] = bytes.fromhex(covering.signature)
    files["public_key.pem"] = vault.public_key.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    fingerprint = public_key_fingerprint(vault.public_key)
    files["README.txt"] = _readme(camera, fingerprint).encode()

    manifest = {
        "format": FORMAT,
        "created": _utc(time.time()),
        "software": f"trustcam {__version__}",
        "export": "event" if "event" in subject.fields else "range",
        **subject.fields,
        "camera": camera,
        "policy": policy,
        "segments": segments,
        "clip": subject.clip if joined is not None else None,
        "clip_note": clip_note,
        "snapshot": snapshot,
        "checkpoint": {"seq": covering.seq, "chain_hash": covering.chain_hash},
        "public_key_sha256": fingerprint,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as bundle:
        bundle.writestr("manifest.json", manifest_bytes, zipfile.ZIP_DEFLATED)
        bundle.writestr("manifest.sig", vault.signer.sign(manifest_bytes))
        for name, data in sorted(files.items()):  # video is already compressed: stored as is
            bundle.writestr(name, data, zipfile.ZIP_STORED if name.endswith(".mp4") else zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    report = verify_bundle(data)
    if not report.ok:
        raise VaultError(f"{subject.name}: the bundle does not verify, not exported: " + "; ".join(report.problems))
    return data


def _not_covered(vault: Vault, engine: Engine, what: str, camera: str, newest: SegmentRow,
                 signed: list[CheckpointRow]) -> str:
    """Why there is nothing to export yet, and how long until there is."""
    policy = vault.policy
    last_cp = signed[-1] if signed else None
    with Session(engine) as session:
        since = session.scalar(select(SegmentRow.end if last_cp else SegmentRow.start).where(
            SegmentRow.camera == camera, SegmentRow.seq == (last_cp.seq if last_cp else 1)))
        head = session.scalar(select(SegmentRow.end).where(SegmentRow.camera == camera)
                              .order_by(SegmentRow.seq.desc()).limit(1))
    wait = math.ceil(max(0.0, (since or newest.start) + float(policy.every_s or 0) - (head or newest.end))) + 1
    return (f"{what}: footage not yet covered by a checkpoint (camera {camera} up to seq {newest.seq}, "
            f"recorded until {_utc(newest.end)}); export never signs old footage. Wait about {wait} s (a checkpoint "
            f"is signed {policy.text()} of recording) or stop the camera cleanly, then export again")


def _json(data: object) -> bytes:
    return json.dumps(data, indent=2).encode()


def decrypt_segment(vault: Vault, row: SegmentRow) -> bytes:
    """A segment's plaintext, in memory, checked against its chain row (export and the web player share it)."""
    data = b"".join(vault.open_segment(row))
    if len(data) != row.size or hashlib.sha256(data).hexdigest() != row.sha256:
        raise VaultError(f"segment {row.id} decrypts to content that does not match its chain row (size "
                         f"{len(data)}, expected {row.size}); run `trustcam evidence chain --deep`")
    return data


def _copy_snapshot(vault: Vault, snapshot: str | None, files: dict[str, bytes]) -> str | None:
    """The event's snapshot: a vault reference (decrypted) or a plain file; skipped when neither is readable."""
    if not snapshot:
        return None
    data: bytes | None = None
    if snapshot.endswith(".blob"):
        with contextlib.suppress(VaultError, OSError):
            data = vault.read_blob(snapshot)
    elif Path(snapshot).is_file():
        data = Path(snapshot).read_bytes()
    if data is None:
        log.warning("snapshot %s not readable; exported without it", snapshot)
        return None
    name = "snapshot.png" if data.startswith(b"\x89PNG") else "snapshot.jpg"
    files[name] = data
    return name


def _join_clips(parts: list[bytes], name: str = "clip/event.mp4") -> tuple[bytes | None, str]:
    """Remux the segments into one file (no re-encoding, in memory); returns it and a note for the manifest.

    Best effort: segments with different codecs or stream layouts are left separate. The joined file is a
    convenience for viewing; the segments are the evidence (their hashes are in the chain).
    """
    if not parts:
        return None, "no segment available"
    try:
        joined = remux_segments(parts)
    except Exception as exc:  # PyAV raises many types; a missing joined clip is not fatal
        log.info("segments not joined: %s", exc)
        return None, f"segments not joined ({exc.__class__.__name__}: {exc}); play clip/segment-*.mp4 in order"
    return joined, f"{name} joins the {len(parts)} segment file(s) in chain order without re-encoding"


FRAGMENTED_MP4 = "frag_keyframe+empty_moov+default_base_moof"  # moov first, a fragment per keyframe


def remux_segments(parts: list[bytes], *, fragmented: bool = False) -> bytes:
    """The segments joined into one MP4 in chain order, without re-encoding, in memory (raises on mismatched streams).

    ``fragmented``: the index comes first and the media in keyframe fragments, so a browser can play and seek it
    over HTTP range requests; a plain file keeps its index at the end (faststart would need a file on disk).
    """
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4", options={"movflags": FRAGMENTED_MP4} if fragmented else {}) as dst:
        layout: list[tuple[str, str]] | None = None
        targets: list[Any] = []
        offset = Fraction(0)  # seconds already written
        last_dts: dict[int, int] = {}
        for number, part in enumerate(parts, 1):
            with av.open(io.BytesIO(part)) as src:
                streams = [s for s in src.streams if s.type in ("video", "audio")]
                here = [(s.type, s.codec_context.name) for s in streams]
                if layout is None:
                    layout = here
                    targets = [dst.add_stream_from_template(s) for s in streams]
                elif here != layout:
                    raise ValueError(f"segment {number} has streams {here}, the first segment {layout}")
                base = Fraction(src.start_time or 0, 1_000_000)
                end = offset
                for packet in src.demux(streams):
                    if packet.dts is None or packet.size == 0:
                        continue
                    position = streams.index(packet.stream)
                    tb = packet.time_base
                    shift = round((offset - base) / tb)
                    packet.dts += shift
                    packet.pts = packet.pts + shift if packet.pts is not None else packet.dts
                    if packet.dts <= last_dts.get(position, -(1 << 62)):
                        continue  # overlap at a cut: never send the muxer a non-increasing dts
                    last_dts[position] = packet.dts
                    end = max(end, (packet.pts + (packet.duration or 0)) * tb)
                    packet.stream = targets[position]
                    dst.mux(packet)
                offset = end
    return out.getvalue()


def _readme(camera: str, fingerprint: str) -> str:
    return f"""trustcam evidence bundle ({FORMAT}), camera {camera}

This archive holds recorded video and the cryptographic records needed to show it was not changed after
recording. Nothing outside the archive is needed, except the operator's published key fingerprint.

1. Quick check (trustcam installed):
       trustcam evidence verify THIS.zip --fingerprint <fingerprint the operator published>
   It prints VERIFIED and what was checked, or each problem found.

2. By hand (unzip, sha256sum, openssl 3):
   a. The public key: `openssl pkey -pubin -in public_key.pem -outform DER | tail -c 32 | sha256sum`
      must print {fingerprint}
      and that must equal the fingerprint the operator published (otherwise anyone could have signed).
   b. The manifest: `openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in manifest.json
      -sigfile manifest.sig` must print "Signature Verified Successfully". Every file listed under "files"
      in manifest.json must have that sha256 (`sha256sum clip/* *.json checkpoint.* public_key.pem`).
   c. The clips: `sha256sum clip/segment-*.mp4`; each must equal the "sha256" of the row with that seq in
      chain.json (NNNNNN in the file name is the seq).
   d. The chain: for every row of chain.json, its chain_hash is the sha256 of this text (each line ends with
      a newline; times with exactly 6 decimals):
          f='trustcam-chain-v1\\ncamera=%s\\nseq=%d\\nsegment=%s\\nstart=%.6f\\nend=%.6f\\nsize=%d\\nsha256=%s\\nprev=%s\\n'
          printf "$f" CAMERA SEQ SEGMENT START END SIZE SHA256 PREV_HASH | sha256sum
      and each row's prev_hash equals the chain_hash of the row before it (seq numbers have no gaps). The
      first row's prev_hash is {ZERO_HASH[:8]}... (64 zeros) only if it is seq 1.
   e. The checkpoint: chain.json reaches the seq and chain_hash written in checkpoint.msg (at or after the
      last exported segment), and
          openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in checkpoint.msg -sigfile checkpoint.sig
      prints "Signature Verified Successfully". checkpoint.msg was signed while recording (time= seconds since
      1970-01-01 UTC); "signed" minus "recorded" of each segment in manifest.json is how long after recording
      its footage was signed. checkpoints.json holds every checkpoint of the range with its exact signed text
      ("message"): its every=/every_s= lines are the policy (a checkpoint at most every N segments / S seconds
      of footage) that `trustcam evidence verify` checks was kept, so no checkpoint was removed.

A removed, added, reordered or altered clip breaks (c) or (d); rewritten history breaks (e). Segments marked
"shredded" in manifest.json were deleted under the retention policy before the export: their hashes remain in
the chain, their video no longer exists anywhere.
"""


# --- verify ------------------------------------------------------------------------------------------------------


class _Bundle:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self._hashes: dict[str, str] = {}

    def read(self, name: str) -> bytes:
        return self.archive.read(name)

    def sha256(self, name: str) -> str:
        if name not in self._hashes:
            digest = hashlib.sha256()
            with self.archive.open(name) as handle:
                while piece := handle.read(1 << 20):
                    digest.update(piece)
            self._hashes[name] = digest.hexdigest()
        return self._hashes[name]


def verify_bundle(source: Path | bytes, *, expected_fingerprint: str | None = None,
                  max_sign_delay: float | None = None) -> VerifyReport:
    """Check a bundle (a file, or its bytes) using nothing but the bundle and, optionally, the fingerprint the
    operator published. ``max_sign_delay``: fail when footage was first signed more than that many seconds after
    it was recorded (a checkpoint signed late, e.g. at export, proves nothing about the time before)."""
    report = VerifyReport(ok=False)
    name = "the bundle" if isinstance(source, bytes) else str(source)
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            _verify(_Bundle(archive), report, expected_fingerprint, max_sign_delay)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        report.problems.append(f"{name}: not a readable evidence bundle ({exc})")
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:  # malformed content
        report.problems.append(f"{name}: malformed bundle ({exc.__class__.__name__}: {exc})")
    report.ok = not report.problems
    return report


def _verify(bundle: _Bundle, report: VerifyReport, expected_fingerprint: str | None,
            max_sign_delay: float | None) -> None:
    problems, facts = report.problems, report.facts
    names = bundle.archive.namelist()
    if len(names) != len(set(names)):
        problems.append("the archive holds two entries with the same name (one hides the other)")
    for needed in ("manifest.json", "manifest.sig", "public_key.pem", "chain.json", "checkpoint.json"):
        if needed not in names:
            problems.append(f"{needed} is missing")
    if "manifest.json" not in names or "public_key.pem" not in names:
        return

    manifest_bytes = bundle.read("manifest.json")
    manifest = json.loads(manifest_bytes)
    if manifest.get("format") not in FORMATS:
        problems.append(f"unknown bundle format {manifest.get('format')!r} (expected {FORMAT})")
        return
    if manifest["format"] == FORMAT and "checkpoints.json" not in names:
        problems.append("checkpoints.json is missing")
    try:
        key = serialization.load_pem_public_key(bundle.read("public_key.pem"))
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        problems.append("public_key.pem is not an Ed25519 public key")
        return
    raw_key = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fingerprint = report.fingerprint = public_key_fingerprint(raw_key)

    def signed(signature: bytes, message: bytes) -> bool:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    if "manifest.sig" in names and not signed(bundle.read("manifest.sig"), manifest_bytes):
        problems.append("manifest.sig: the manifest's signature is not valid for public_key.pem")
    if manifest.get("public_key_sha256") != fingerprint:
        problems.append(f"public_key.pem (fingerprint {fingerprint}) is not the key named in the manifest "
                        f"({manifest.get('public_key_sha256')})")
    if expected_fingerprint is not None and expected_fingerprint.strip().lower().replace(":", "") != fingerprint:
        problems.append(f"the bundle is signed by key {fingerprint}, not by the expected key {expected_fingerprint}")

    # every file is listed with its sha256, nothing unlisted
    listed: dict[str, str] = manifest.get("files", {})
    for name in names:
        if name not in listed and name not in SIGNED_NAMES and not name.endswith("/"):
            problems.append(f"{name}: not listed in the manifest (added after export)")
    for name, digest in listed.items():
        if name not in names:
            problems.append(f"{name}: listed in the manifest but missing from the bundle (removed)")
        elif bundle.sha256(name) != digest:
            problems.append(f"{name}: sha256 differs from the manifest (file altered)")

    camera = manifest.get("camera")
    checkpoint = _verify_checkpoint(bundle, names, camera, raw_key, signed, problems)
    rows = _rows(bundle, camera, problems)
    by_seq = {row["seq"]: row for row in rows}
    checkpoints = _verify_checkpoints(bundle, names, camera, raw_key, signed, by_seq, problems)
    if "checkpoints.json" not in names and checkpoint is not None:  # a v1 bundle: its one checkpoint
        checkpoints = [checkpoint]
    _verify_chain(camera, rows, checkpoint, checkpoints, manifest["format"] == FORMAT, problems)
    segments = _verify_segments(bundle, names, manifest, rows, problems)
    if manifest["format"] == FORMAT and rows:
        configured = manifest.get("policy") or {}
        heads = [SignedHead(cp["seq"], cp["time"], cp.get("every"), cp.get("every_s")) for cp in checkpoints]
        problems += checkpoint_gaps(camera, [(r["seq"], r["start"], r["end"]) for r in rows], heads,
                                    Policy(int(configured["every"]), configured.get("every_s")))
    delays = _sign_delays(segments, checkpoints, manifest["format"] == FORMAT, max_sign_delay, problems)

    kind = manifest.get("export", "event")  # bundles made before range exports carry no "export": events
    if kind == "range":
        facts += _verify_range(manifest, rows, segments, problems)
    elif kind == "event":
        event = manifest.get("event", {})
        facts.append(f"event {event.get('id')}: {event.get('label')} on camera {camera}, {event.get('start_utc')} "
                     f"to {event.get('end_utc')}, threat {event.get('threat')}")
        model = event.get("model", {})
        facts.append(f"detected by model {model.get('name')} (sha256 {model.get('sha256')})")
        facts += _verify_event(event, checkpoints, problems)
    else:
        problems.append(f"manifest: unknown export kind {kind!r} (expected 'event' or 'range')")
    live = [s for s in segments if s.get("file")]
    shredded = [s for s in segments if not s.get("file")]
    if segments:
        facts.append(f"{len(live)} segment(s), seq {segments[0]['seq']} to {segments[-1]['seq']}, "
                     f"{_utc(segments[0]['start'])} to {_utc(segments[-1]['end'])}, "
                     f"{sum(s['size'] for s in live)} bytes of video, every sha256 matches its chain row")
    facts += delays
    for entry in shredded:
        why = entry.get("shredded") or {}
        facts.append(f"segment seq {entry['seq']} was deleted before export ({why.get('reason')}); its hash is "
                     "still in the chain")
    if checkpoint:
        facts.append(f"hash chain intact from seq {rows[0]['seq'] if rows else '?'} to the checkpoint at seq "
                     f"{checkpoint['seq']}, signed {_utc(checkpoint['time'])}"
                     + (f"; {len(checkpoints)} checkpoint(s) in range, none missing under the signed policy"
                        if manifest["format"] == FORMAT else ""))
    if manifest.get("clip"):
        facts.append(f"{manifest['clip']}: joined view of the segments (sha256 in the signed manifest)")
    facts.append(f"signed by Ed25519 key with sha256 fingerprint {fingerprint}"
                 + (" (matches the expected fingerprint)" if expected_fingerprint else
                    "; compare it with the fingerprint the operator published"))


def _verify_checkpoint(bundle: _Bundle, names: list[str], camera: str, raw_key: bytes, signed: Any,
                       problems: list[str]) -> dict[str, Any] | None:
    """checkpoint.json, .msg and .sig: the covering checkpoint, checkable by hand."""
    if "checkpoint.json" not in names:
        return None
    cp = json.loads(bundle.read("checkpoint.json"))
    message = _message_of(cp)
    if cp["camera"] != camera:
        problems.append(f"checkpoint.json is for camera {cp['camera']}, the manifest for {camera}")
    if cp.get("public_key") != raw_key.hex():
        problems.append("checkpoint.json names another public key than public_key.pem")
    if "checkpoint.msg" in names and bundle.read("checkpoint.msg") != message:
        problems.append("checkpoint.msg differs from the fields of checkpoint.json")
    try:
        signature = bytes.fromhex(cp["signature"])
    except ValueError:
        signature = b""
    if "checkpoint.sig" in names and bundle.read("checkpoint.sig") != signature:
        problems.append("checkpoint.sig differs from the signature in checkpoint.json")
    if not signed(signature, message):
        problems.append(f"checkpoint at seq {cp['seq']}: signature is not valid for public_key.pem (forged or "
                        "altered)")
    return cp


def _verify_checkpoints(bundle: _Bundle, names: list[str], camera: str, raw_key: bytes, signed: Any,
                        by_seq: dict[int, dict[str, Any]], problems: list[str]) -> list[dict[str, Any]]:
    """The checkpoints of checkpoints.json whose signature covers their fields and whose chain hash is in
    chain.json; the others are problems."""
    if "checkpoints.json" not in names:
        return []
    data = json.loads(bundle.read("checkpoints.json"))
    valid = []
    for cp in data.get("checkpoints", []):
        where = f"checkpoints.json seq {cp.get('seq')}"
        message = _message_of(cp)
        found = []
        if cp.get("camera") != camera:
            found.append(f"{where}: for camera {cp.get('camera')}, the manifest for {camera}")
        if cp.get("message") is not None and cp["message"].encode() != message:
            found.append(f"{where}: its message differs from its fields")
        if cp.get("public_key") != raw_key.hex() or not signed(bytes.fromhex(cp.get("signature", "")), message):
            found.append(f"{where}: signature is not valid for public_key.pem (forged or altered, policy and "
                         "sealed events included)")
        row = by_seq.get(cp.get("seq"))
        if row is None or row["chain_hash"] != cp.get("chain_hash"):
            found.append(f"{where}: its chain_hash is not the chain.json row at that seq (chain does not reach "
                         "the signature)")
        problems += found
        if not found:
            valid.append(cp)
    return valid


def _rows(bundle: _Bundle, camera: str, problems: list[str]) -> list[dict[str, Any]]:
    if "chain.json" not in bundle.archive.namelist():
        return []
    chain = json.loads(bundle.read("chain.json"))
    if chain.get("camera") != camera:
        problems.append(f"chain.json is for camera {chain.get('camera')}, the manifest for {camera}")
    rows: list[dict[str, Any]] = chain.get("rows", [])
    if not rows:
        problems.append("chain.json has no rows")
    return rows


def _verify_chain(camera: str, rows: list[dict[str, Any]], checkpoint: dict[str, Any] | None,
                  checkpoints: list[dict[str, Any]], v2: bool, problems: list[str]) -> None:
    if not rows:
        return
    for before, row in itertools.pairwise(rows):
        if row["seq"] != before["seq"] + 1:
            problems.append(f"chain.json: seq {before['seq']} is followed by {row['seq']} (segment removed or "
                            "reordered)")
        if row["prev_hash"] != before["chain_hash"]:
            problems.append(f"chain.json seq {row['seq']}: prev_hash is not the chain_hash of seq {before['seq']} "
                            "(chain broken)")
    for row in rows:
        if chain_hash(camera, row["seq"], row["segment"], row["start"], row["end"], row["size"], row["sha256"],
                      row["prev_hash"]) != row["chain_hash"]:
            problems.append(f"chain.json seq {row['seq']}: chain_hash does not match the row (row altered)")
    if rows[0]["seq"] == 1 and rows[0]["prev_hash"] != ZERO_HASH:
        problems.append("chain.json seq 1: prev_hash should be 64 zeros")
    if v2 and rows[0]["seq"] != 1 and not any(cp["seq"] == rows[0]["seq"] for cp in checkpoints):
        problems.append(f"chain.json starts at seq {rows[0]['seq']}, neither the chain start nor a signed "
                        "checkpoint: the policy cannot be checked from there")
    if checkpoint is None:
        return
    if not any(r["seq"] == checkpoint["seq"] and r["chain_hash"] == checkpoint["chain_hash"] for r in rows):
        problems.append(f"chain.json ends at seq {rows[-1]['seq']} with hash {rows[-1]['chain_hash'][:16]}…, the "
                        f"signed checkpoint is seq {checkpoint['seq']} with {checkpoint['chain_hash'][:16]}… "
                        "(chain does not reach the signature)")
    elif not v2 and rows[-1]["seq"] != checkpoint["seq"]:
        problems.append(f"chain.json ends at seq {rows[-1]['seq']}, after the signed checkpoint at seq "
                        f"{checkpoint['seq']}")
    if v2 and not any(cp["signature"] == checkpoint["signature"] for cp in checkpoints):
        problems.append("checkpoint.json is not one of the valid checkpoints of checkpoints.json")


def _verify_segments(bundle: _Bundle, names: list[str], manifest: dict[str, Any], rows: list[dict[str, Any]],
                     problems: list[str]) -> list[dict[str, Any]]:
    segments: list[dict[str, Any]] = manifest.get("segments", [])
    if not segments:
        problems.append("the manifest lists no segment")
        return segments
    by_seq = {row["seq"]: row for row in rows}
    for before, entry in itertools.pairwise(segments):
        if entry["seq"] != before["seq"] + 1:
            problems.append(f"manifest: segment seq {before['seq']} is followed by {entry['seq']} (segment removed "
                            "or reordered)")
    for seq in range(segments[0]["seq"], segments[-1]["seq"] + 1):
        if seq in by_seq and not any(entry["seq"] == seq for entry in segments):
            problems.append(f"chain seq {seq} lies between exported segments but is not in the manifest (removed)")
    if rows and segments[0]["seq"] < rows[0]["seq"]:
        problems.append(f"chain.json starts at seq {rows[0]['seq']}, after the first exported segment "
                        f"{segments[0]['seq']}")
    checkpoint = manifest.get("checkpoint") or {}
    if checkpoint.get("seq") is not None and checkpoint["seq"] < segments[-1]["seq"]:
        problems.append(f"the checkpoint at seq {checkpoint['seq']} does not cover the last exported segment "
                        f"{segments[-1]['seq']}")
    for entry in segments:
        seq = entry["seq"]
        row = by_seq.get(seq)
        if row is None:
            problems.append(f"segment seq {seq}: not in chain.json")
        elif any(entry.get(k) != row[k] for k in _ROW_FIELDS):
            problems.append(f"segment seq {seq}: manifest entry differs from its chain row")
        name = entry.get("file")
        if not name:
            continue
        if name != f"clip/segment-{seq:06d}.mp4":
            problems.append(f"segment seq {seq}: file {name} does not carry its seq (renamed or swapped)")
        if name not in names:
            problems.append(f"segment seq {seq}: {name} is missing from the bundle (removed)")
            continue
        if row is not None and bundle.sha256(name) != row["sha256"]:
            problems.append(f"{name}: sha256 does not match chain seq {seq} (clip altered or swapped)")
        if row is not None and bundle.archive.getinfo(name).file_size != row["size"]:
            problems.append(f"{name}: size does not match chain seq {seq}")
    return segments


def _sign_delays(segments: list[dict[str, Any]], checkpoints: list[dict[str, Any]], v2: bool,
                 max_sign_delay: float | None, problems: list[str]) -> list[str]:
    """How long after recording each segment was first signed (facts), and the ones signed too late (problems)."""
    facts = []
    for entry in segments:
        times = [cp["time"] for cp in checkpoints if cp["seq"] >= entry["seq"]]
        if not times:
            problems.append(f"segment seq {entry['seq']}: no valid checkpoint covers it")
            continue
        signed_at, recorded = min(times), entry["end"]
        delay = signed_at - recorded
        if v2 and entry.get("signed") != signed_at:
            problems.append(f"segment seq {entry['seq']}: the manifest says it was signed {entry.get('signed')}, "
                            f"its first checkpoint says {signed_at}")
        facts.append(f"segment seq {entry['seq']}: recorded until {_utc(recorded)}, signed {_utc(signed_at)} "
                      f"({delay:.1f} s later)")
        if max_sign_delay is not None and delay > max_sign_delay:
            problems.append(f"segment seq {entry['seq']} (recorded until {_utc(recorded)}) was first signed "
                            f"{_utc(signed_at)}, {delay:.0f} s later: more than --max-sign-delay {max_sign_delay:g} "
                            "s, so the signature proves nothing about the footage before then (signed late, e.g. "
                            "at export)")
    return facts


def _verify_range(manifest: dict[str, Any], rows: list[dict[str, Any]], segments: list[dict[str, Any]],
                  problems: list[str]) -> list[str]:
    """A range export holds every segment of its range that the chain excerpt shows, and nothing outside it: a
    segment left out or slipped in is a problem, even though each one alone would verify."""
    span = manifest["range"]
    start, end = float(span["start"]), float(span["end"])
    if span.get("camera") != manifest.get("camera"):
        problems.append(f"manifest: the range is of camera {span.get('camera')}, the bundle of "
                        f"{manifest.get('camera')}")
    if not end > start:
        problems.append(f"manifest: the range ends ({_utc(end)}) before it starts ({_utc(start)})")
    listed = {entry["seq"] for entry in segments}
    for entry in segments:
        if not (entry["start"] < end and entry["end"] > start):
            problems.append(f"segment seq {entry['seq']} lies outside the exported range (added)")
    for row in rows:
        if row["start"] < end and row["end"] > start and row["seq"] not in listed:
            problems.append(f"chain seq {row['seq']} overlaps the exported range but is not in the manifest (left "
                            "out)")
    return [f"range export (no event): camera {manifest.get('camera')}, {_utc(start)} to {_utc(end)}; every "
            "segment of the chain excerpt in that range is included"]


def _verify_event(event: dict[str, Any], checkpoints: list[dict[str, Any]], problems: list[str]) -> list[str]:
    """The manifest's event against its sealed record: the digest a checkpoint signed, and every field shown."""
    record = event.get("record")
    if not isinstance(record, dict):
        return ["event record not sealed (bundle format v1)"]
    shown = {**{k: event.get(k) for k in EVENT_FIELDS if k in event},
             "model_name": (event.get("model") or {}).get("name"),
             "model_sha256": (event.get("model") or {}).get("sha256")}
    for name, value in shown.items():
        if record.get(name) != value:
            problems.append(f"manifest: event field {name} ({value!r}) differs from the event record "
                            f"({record.get(name)!r})")
    event_id = record.get("id")
    seal = next(((cp, entry) for cp in checkpoints for entry in cp.get("events") or [] if entry[0] == event_id),
                None)
    if seal is not None:
        cp, entry = seal
        if event_digest(record) != entry[1]:
            problems.append(f"event {event_id} record edited after it was sealed (checkpoint at seq {cp['seq']}): "
                            f"{changed_fields(entry[2] if len(entry) > 2 else None, entry[1], record)}")
            return []
        return [f"event record sealed by the checkpoint at seq {cp['seq']}, signed {_utc(cp['time'])} "
                f"({cp['time'] - record['end']:.1f} s after the event ended)"]
    if any(cp.get("every") is not None and cp["time"] < record["end"] for cp in checkpoints):
        problems.append(f"event {event_id} was never sealed into the chain, though sealing was in force before it "
                        "ended: its record may have been added or rewritten without trace")
        return []
    return ["event record not sealed (it ended before event sealing was in force)"]
