"""Evidence bundles: one event's footage with everything a third party needs to check it, without our database.

A bundle is a ZIP file::

    manifest.json        event (with the model name and sha256 that saw it), segments, sha256 of every other file
    manifest.sig         Ed25519 signature (raw 64 bytes) of manifest.json's exact bytes
    clip/segment-NNNNNN.mp4   the decrypted segments overlapping the event ± margin, NNNNNN = chain seq
    clip/event.mp4       the same segments joined into one file (for viewing; when they could be joined)
    snapshot.<ext>       the event's snapshot, when available
    chain.json           the camera's hash-chain rows from the first exported segment to a signed checkpoint
    checkpoint.json      that checkpoint: seq, chain_hash, time, signature (hex), public key (hex)
    checkpoint.msg/.sig  the exact signed bytes and the raw signature, for checking with openssl by hand
    public_key.pem       the vault's Ed25519 public key; its sha256 fingerprint is in the manifest
    README.txt           how to verify, with ``trustcam evidence verify`` or by hand

Why it convinces: each clip's sha256 is in its chain row; each row's chain_hash is the sha256 of its fields
and the previous row's hash, up to a checkpoint signed at recording time. Changing a byte, dropping or
reordering a segment breaks a hash or a link; forging the signature needs the private key. Whoever holds the
bundle can only trust the public key by comparing its fingerprint with the one the operator published.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import tempfile
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
from trustcam.storage.schema import CheckpointRow, EventRow, SegmentRow
from trustcam.storage.vault import (
    ZERO_HASH,
    Vault,
    VaultError,
    chain_hash,
    checkpoint_message,
    public_key_fingerprint,
)

log = logging.getLogger(__name__)

FORMAT = "trustcam-evidence-v1"
SIGNED_NAMES = ("manifest.json", "manifest.sig")  # everything else is listed, with its sha256, in the manifest
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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


# --- export ------------------------------------------------------------------------------------------------------


def export_event(vault: Vault, engine: Engine, event_id: str, out: Path, *, margin_s: float = 5.0) -> Path:
    """Write the evidence bundle of ``event_id`` to ``out`` (a ZIP); returns ``out``.

    The bundle is verified with :func:`verify_bundle` before it is moved into place, so a bundle that would
    not verify is never handed out. Raises VaultError when the event or its footage is missing.
    """
    with Session(engine, expire_on_commit=False) as session:
        event = session.get(EventRow, event_id)
    if event is None:
        raise VaultError(f"event {event_id}: no such event in the database")
    camera = event.camera
    overlapping = vault.segments_between(camera, event.start - margin_s, event.end + margin_s,
                                         include_shredded=True)
    if not any(row.wrapped_key is not None for row in overlapping):
        raise VaultError(f"event {event_id}: no recorded footage of camera {camera} between "
                         f"{_utc(event.start - margin_s)} and {_utc(event.end + margin_s)} (not recorded, or already "
                         "deleted); nothing to export")
    first, last = overlapping[0].seq, overlapping[-1].seq
    with Session(engine, expire_on_commit=False) as session:
        checkpoint = session.scalars(select(CheckpointRow).where(
            CheckpointRow.camera == camera, CheckpointRow.seq >= last, CheckpointRow.public_key == vault.public_key_hex)
            .order_by(CheckpointRow.seq, CheckpointRow.id).limit(1)).first()
    checkpoint = checkpoint or vault.checkpoint(camera)
    assert checkpoint is not None  # the camera has segments
    with Session(engine, expire_on_commit=False) as session:
        chain = list(session.scalars(select(SegmentRow).where(
            SegmentRow.camera == camera, SegmentRow.seq >= first, SegmentRow.seq <= checkpoint.seq)
            .order_by(SegmentRow.seq)))
    exported = [row for row in chain if row.seq <= last]

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".trustcam-export-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "clip").mkdir()
        segments, clips = [], []
        for row in exported:
            entry = _chain_entry(row)
            if row.wrapped_key is None:
                entry.update(file=None, shredded={"time": row.deleted_at, "reason": row.deletion_reason})
            else:
                name = f"clip/segment-{row.seq:06d}.mp4"
                _decrypt_to(vault, row, tmp / name)
                clips.append(tmp / name)
                entry.update(file=name, shredded=None)
            segments.append(entry)
        clip_note = _join_clips(clips, tmp / "clip" / "event.mp4")
        snapshot = _copy_snapshot(vault, event.snapshot, tmp)

        cp = {"camera": camera, "seq": checkpoint.seq, "chain_hash": checkpoint.chain_hash, "time": checkpoint.time,
              "time_utc": _utc(checkpoint.time), "signature": checkpoint.signature,
              "public_key": checkpoint.public_key}
        message = checkpoint_message(camera, checkpoint.seq, checkpoint.chain_hash, checkpoint.time)
        _write_json(tmp / "chain.json", {"format": FORMAT, "camera": camera, "encoding": "trustcam-chain-v1",
                                         "rows": [_chain_entry(row) for row in chain]})
        _write_json(tmp / "checkpoint.json", cp)
        (tmp / "checkpoint.msg").write_bytes(message)
        (tmp / "checkpoint.sig").write_bytes(bytes.fromhex(checkpoint.signature))
        (tmp / "public_key.pem").write_bytes(vault.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        fingerprint = public_key_fingerprint(vault.public_key)
        (tmp / "README.txt").write_text(_readme(camera, fingerprint), encoding="utf-8")

        names = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "created": _utc(time.time()),
            "software": f"trustcam {__version__}",
            "event": {
                "id": event.id, "camera": camera, "label": event.label, "track_id": event.track_id,
                "start": event.start, "end": event.end, "start_utc": _utc(event.start), "end_utc": _utc(event.end),
                "best_score": event.best_score, "box": event.box, "zones": event.zones, "rules": event.rules,
                "threat": event.threat, "legal_hold": bool(event.held),
                "model": {"name": event.model_name, "sha256": event.model_sha256},
            },
            "camera": camera,
            "margin_s": margin_s,
            "segments": segments,
            "clip": "clip/event.mp4" if (tmp / "clip" / "event.mp4").exists() else None,
            "clip_note": clip_note,
            "snapshot": snapshot,
            "checkpoint": {"seq": checkpoint.seq, "chain_hash": checkpoint.chain_hash},
            "public_key_sha256": fingerprint,
            "files": {name: _sha256_file(tmp / name) for name in names},
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        signature = vault.signer.sign(manifest_bytes)

        part = out.with_name(out.name + ".part")
        with zipfile.ZipFile(part, "w", allowZip64=True) as bundle:
            bundle.writestr("manifest.json", manifest_bytes, zipfile.ZIP_DEFLATED)
            bundle.writestr("manifest.sig", signature)
            for name in names:  # video is already compressed: stored as is
                method = zipfile.ZIP_STORED if name.endswith(".mp4") else zipfile.ZIP_DEFLATED
                bundle.write(tmp / name, name, method)
        report = verify_bundle(part)
        if not report.ok:
            part.unlink(missing_ok=True)
            raise VaultError(f"event {event_id}: the bundle does not verify, not written: "
                             + "; ".join(report.problems))
        part.replace(out)
    return out


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _decrypt_to(vault: Vault, row: SegmentRow, path: Path) -> None:
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as handle:
        for piece in vault.open_segment(row):
            digest.update(piece)
            size += len(piece)
            handle.write(piece)
    if size != row.size or digest.hexdigest() != row.sha256:
        raise VaultError(f"segment {row.id} decrypts to content that does not match its chain row (size {size}, "
                         f"expected {row.size}); run `trustcam evidence chain --deep`")


def _copy_snapshot(vault: Vault, snapshot: str | None, tmp: Path) -> str | None:
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
    (tmp / name).write_bytes(data)
    return name


def _join_clips(parts: list[Path], out: Path) -> str:
    """Remux the segments into one file (no re-encoding); returns a note for the manifest.

    Best effort: segments with different codecs or stream layouts are left separate. The joined file is a
    convenience for viewing; the segments are the evidence (their hashes are in the chain).
    """
    if not parts:
        return "no segment available"
    try:
        _remux(parts, out)
    except Exception as exc:  # PyAV raises many types; a missing joined clip is not fatal
        out.unlink(missing_ok=True)
        log.info("segments not joined: %s", exc)
        return f"segments not joined ({exc.__class__.__name__}: {exc}); play clip/segment-*.mp4 in order"
    return f"clip/event.mp4 joins the {len(parts)} segment file(s) in chain order without re-encoding"


def _remux(parts: list[Path], out: Path) -> None:
    import av

    with av.open(str(out), "w", format="mp4") as dst:
        layout: list[tuple[str, str]] | None = None
        targets: list[Any] = []
        offset = Fraction(0)  # seconds already written
        last_dts: dict[int, int] = {}
        for part in parts:
            with av.open(str(part)) as src:
                streams = [s for s in src.streams if s.type in ("video", "audio")]
                here = [(s.type, s.codec_context.name) for s in streams]
                if layout is None:
                    layout = here
                    targets = [dst.add_stream_from_template(s) for s in streams]
                elif here != layout:
                    raise ValueError(f"{part.name} has streams {here}, the first segment {layout}")
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
      in manifest.json must have that sha256 (`sha256sum clip/* chain.json checkpoint.* public_key.pem`).
   c. The clips: `sha256sum clip/segment-*.mp4`; each must equal the "sha256" of the row with that seq in
      chain.json (NNNNNN in the file name is the seq).
   d. The chain: for every row of chain.json, its chain_hash is the sha256 of this text (each line ends with
      a newline; times with exactly 6 decimals):
          f='trustcam-chain-v1\\ncamera=%s\\nseq=%d\\nsegment=%s\\nstart=%.6f\\nend=%.6f\\nsize=%d\\nsha256=%s\\nprev=%s\\n'
          printf "$f" CAMERA SEQ SEGMENT START END SIZE SHA256 PREV_HASH | sha256sum
      and each row's prev_hash equals the chain_hash of the row before it (seq numbers have no gaps). The
      first row's prev_hash is {ZERO_HASH[:8]}... (64 zeros) only if it is seq 1.
   e. The checkpoint: the last row of chain.json has the seq and chain_hash written in checkpoint.msg, and
          openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in checkpoint.msg -sigfile checkpoint.sig
      prints "Signature Verified Successfully". checkpoint.msg was signed when the footage was recorded
      (time= seconds since 1970-01-01 UTC).

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


def verify_bundle(path: Path, *, expected_fingerprint: str | None = None) -> VerifyReport:
    """Check a bundle using nothing but the bundle (and, optionally, the fingerprint the operator published)."""
    report = VerifyReport(ok=False)
    try:
        with zipfile.ZipFile(path) as archive:
            _verify(_Bundle(archive), report, expected_fingerprint)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        report.problems.append(f"{path}: not a readable evidence bundle ({exc})")
    except (KeyError, ValueError, TypeError) as exc:  # malformed content the checks did not foresee
        report.problems.append(f"{path}: malformed bundle ({exc.__class__.__name__}: {exc})")
    report.ok = not report.problems
    return report


def _verify(bundle: _Bundle, report: VerifyReport, expected_fingerprint: str | None) -> None:
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
    if manifest.get("format") != FORMAT:
        problems.append(f"unknown bundle format {manifest.get('format')!r} (expected {FORMAT})")
        return
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
    rows = _verify_chain(bundle, camera, checkpoint, problems)
    segments = _verify_segments(bundle, names, manifest, rows, problems)

    event = manifest.get("event", {})
    facts.append(f"event {event.get('id')}: {event.get('label')} on camera {camera}, {event.get('start_utc')} to "
                 f"{event.get('end_utc')}, threat {event.get('threat')}")
    model = event.get("model", {})
    facts.append(f"detected by model {model.get('name')} (sha256 {model.get('sha256')})")
    live = [s for s in segments if s.get("file")]
    shredded = [s for s in segments if not s.get("file")]
    if segments:
        facts.append(f"{len(live)} segment(s), seq {segments[0]['seq']} to {segments[-1]['seq']}, "
                     f"{_utc(segments[0]['start'])} to {_utc(segments[-1]['end'])}, "
                     f"{sum(s['size'] for s in live)} bytes of video, every sha256 matches its chain row")
    for entry in shredded:
        why = entry.get("shredded") or {}
        facts.append(f"segment seq {entry['seq']} was deleted before export ({why.get('reason')}); its hash is "
                     "still in the chain")
    if checkpoint:
        facts.append(f"hash chain intact from seq {rows[0]['seq'] if rows else '?'} to the checkpoint at seq "
                     f"{checkpoint['seq']}, signed {_utc(checkpoint['time'])}")
    if manifest.get("clip"):
        facts.append(f"{manifest['clip']}: joined view of the segments (sha256 in the signed manifest)")
    facts.append(f"signed by Ed25519 key with sha256 fingerprint {fingerprint}"
                 + (" (matches the expected fingerprint)" if expected_fingerprint else
                    "; compare it with the fingerprint the operator published"))


def _verify_checkpoint(bundle: _Bundle, names: list[str], camera: str, raw_key: bytes, signed: Any,
                       problems: list[str]) -> dict[str, Any] | None:
    if "checkpoint.json" not in names:
        return None
    cp = json.loads(bundle.read("checkpoint.json"))
    message = checkpoint_message(cp["camera"], int(cp["seq"]), cp["chain_hash"], float(cp["time"]))
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


def _verify_chain(bundle: _Bundle, camera: str, checkpoint: dict[str, Any] | None,
                  problems: list[str]) -> list[dict[str, Any]]:
    if "chain.json" not in bundle.archive.namelist():
        return []
    chain = json.loads(bundle.read("chain.json"))
    rows: list[dict[str, Any]] = chain.get("rows", [])
    if chain.get("camera") != camera:
        problems.append(f"chain.json is for camera {chain.get('camera')}, the manifest for {camera}")
    if not rows:
        problems.append("chain.json has no rows")
        return rows
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
    if checkpoint is not None and (rows[-1]["seq"] != checkpoint["seq"]
                                   or rows[-1]["chain_hash"] != checkpoint["chain_hash"]):
        problems.append(f"chain.json ends at seq {rows[-1]['seq']} with hash {rows[-1]['chain_hash'][:16]}…, the "
                        f"signed checkpoint is seq {checkpoint['seq']} with {checkpoint['chain_hash'][:16]}… "
                        "(chain does not reach the signature)")
    return rows


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
    if rows and segments[0]["seq"] != rows[0]["seq"]:
        problems.append(f"chain.json starts at seq {rows[0]['seq']}, the first exported segment is "
                        f"{segments[0]['seq']}")
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

