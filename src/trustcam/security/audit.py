"""The append-only, hash-chained audit log: who did what, when, from where, with which credential.

Each entry's ``hash`` is sha256 over the canonical JSON of all its fields, ``prev_hash`` (the previous
entry's hash) included. Editing an entry breaks its hash; deleting, inserting or reordering entries breaks
the sequence numbers or the links. No code path updates or deletes a row; ``verify`` checks the whole chain.

A chain alone cannot show that its newest entries were cut off, or that the whole log was rebuilt, by someone
with write access to the database. So every ``CHECKPOINT_EVERY`` entries (in the same transaction) and at
clean shutdown the head ``(seq, hash)`` is signed with the vault's Ed25519 signing key, which lives outside the
database. ``verify`` checks each signature against the configured key, that each signed entry is still in the
chain unchanged, that the chain reaches the last checkpoint, and that no due checkpoint is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trustcam.security.tables import AuditCheckpointRow, AuditRow
from trustcam.storage.vault import public_key_fingerprint

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CHECKPOINT_EVERY = 20  # a format constant, not a setting: verify expects a checkpoint at every multiple of it
FIELDS = ("seq", "time", "user", "role", "credential", "client", "action", "target", "outcome", "details",
          "prev_hash")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: fields[k] for k in FIELDS}).encode()).hexdigest()


def checkpoint_message(seq: int, head_hash: str, when: float) -> bytes:
    """The bytes an audit checkpoint's signature covers (own prefix: never mistaken for a footage checkpoint)."""
    return f"trustcam-audit-checkpoint-v1\nseq={seq}\nhash={head_hash}\ntime={when:.6f}\n".encode()


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad: int | None = None  # seq of the first entry that does not check out
    problem: str | None = None
    checkpoints: int = 0  # signed checkpoints checked
    last_checkpoint: int | None = None  # seq the newest checkpoint signs
    key_fingerprint: str = ""  # sha256 of the raw public key that must have signed every checkpoint

    def describe(self) -> str:
        if self.ok:
            last = f" (newest signs entry {self.last_checkpoint})" if self.last_checkpoint is not None else ""
            return (f"audit log intact: {self.entries} entries, hash chain verified, {self.checkpoints} signed "
                    f"checkpoints verified{last}")
        return f"audit log entry {self.first_bad}: {self.problem}"


def row_dict(row: AuditRow) -> dict[str, Any]:
    return {"seq": row.seq, "time": row.time, "user": row.user, "role": row.role, "credential": row.credential,
            "client": row.client, "action": row.action, "target": row.target, "outcome": row.outcome,
            "details": json.loads(row.details), "prev_hash": row.prev_hash, "hash": row.hash}


class AuditLog:
    def __init__(self, engine: Engine, signer: Ed25519PrivateKey) -> None:
        self.engine = engine
        self.signer = signer
        self.public_key_hex = signer.public_key().public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw).hex()
        self.key_fingerprint = public_key_fingerprint(bytes.fromhex(self.public_key_hex))
        self._lock = threading.Lock()

    def _checkpoint_row(self, seq: int, head_hash: str) -> AuditCheckpointRow:
        now = round(time.time(), 6)
        signature = self.signer.sign(checkpoint_message(seq, head_hash, now)).hex()
        log.info("audit checkpoint: entry %d, hash %s, signed by key %s", seq, head_hash, self.key_fingerprint)
        return AuditCheckpointRow(seq=seq, hash=head_hash, time=now, signature=signature,
                                  public_key=self.public_key_hex)

    def checkpoint(self) -> int | None:
        """Sign the current head unless already signed (clean shutdown); returns its seq, None if the log is empty."""
        try:
            with self._lock, Session(self.engine) as session, session.begin():
                head = session.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc())
                                       .limit(1)).first()
                if head is None:
                    return None
                if session.get(AuditCheckpointRow, head.seq) is None:
                    session.add(self._checkpoint_row(head.seq, head.hash))
        except IntegrityError:  # another process signed the same head at the same moment
            pass
        return int(head.seq)

    def append(self, action: str, *, user: str = "", role: str = "", credential: str = "", client: str = "",
               target: str = "", outcome: str = "ok", details: dict[str, Any] | None = None) -> int:
        """Add an entry at the head of the chain; returns its seq. Safe across threads and processes."""
        details_json = canonical(details or {})
        for _ in range(20):
            try:
                with self._lock, Session(self.engine) as session, session.begin():
                    head = session.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc())
                                           .limit(1)).first()
                    fields: dict[str, Any] = {
                        "seq": (head.seq + 1) if head else 1, "time": round(time.time(), 6), "user": user,
                        "role": str(role), "credential": credential, "client": client[:64], "action": action,
                        "target": str(target)[:255], "outcome": outcome, "details": details_json,
                        "prev_hash": head.hash if head else GENESIS}
                    fields["hash"] = entry_hash(fields)
                    session.add(AuditRow(**fields))
                    # same transaction: no entry k*N without its checkpoint. One already there for this seq
                    # outlived a cut-off log: it is kept, as the proof verify reports.
                    if fields["seq"] % CHECKPOINT_EVERY == 0 and session.get(AuditCheckpointRow, fields["seq"]) is None:
                        session.add(self._checkpoint_row(fields["seq"], fields["hash"]))
            except IntegrityError:  # another process appended the same seq first: chain onto theirs
                continue
            return int(fields["seq"])
        raise RuntimeError("audit log: could not append after 20 attempts (database contended)")

    def verify(self) -> VerifyResult:
        """Check every checkpoint's signature, walk the chain from seq 1 (every seq present, every link and hash
        right, every signed entry unchanged), then that the chain reaches the newest checkpoint and that every
        due checkpoint exists."""
        prev, expected, count = GENESIS, 1, 0
        with Session(self.engine) as session:
            signed = {cp.seq: cp for cp in session.scalars(select(AuditCheckpointRow))}
            last = max(signed, default=None)

            def fail(entries: int, seq: int, problem: str) -> VerifyResult:
                return VerifyResult(False, entries, seq, problem, len(signed), last, self.key_fingerprint)

            for seq in sorted(signed):
                if problem := self._signature_problem(signed[seq]):
                    return fail(0, seq, problem)
            for row in session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars():
                fields = {k: getattr(row, k) for k in FIELDS}
                if row.seq != expected:
                    return fail(count, expected, f"missing (found seq {row.seq} next): entries were deleted")
                if row.prev_hash != prev:
                    return fail(count, row.seq, "does not link to the entry before it: entries were reordered, "
                                "replaced or inserted")
                if entry_hash(fields) != row.hash:
                    return fail(count, row.seq, "its content does not match its hash: it was edited")
                if (cp := signed.get(row.seq)) is not None and cp.hash != row.hash:
                    return fail(count, row.seq, f"the checkpoint signed at {_utc(cp.time)} covers hash "
                                f"{cp.hash[:16]}…, the chain now has {row.hash[:16]}…: the log was rewritten")
                prev, expected, count = row.hash, expected + 1, count + 1
        if last is not None and last > count:
            return fail(count, count + 1, f"the audit log ends at entry {count} but the checkpoint signed at "
                        f"{_utc(signed[last].time)} covers entry {last}: entries after {count} were removed")
        for seq in range(CHECKPOINT_EVERY, count + 1, CHECKPOINT_EVERY):
            if seq not in signed:
                return fail(count, seq, f"its signed checkpoint (one every {CHECKPOINT_EVERY} entries) is missing: "
                            "checkpoints were deleted, so the log may have been rewritten or cut short")
        return VerifyResult(True, count, checkpoints=len(signed), last_checkpoint=last,
                            key_fingerprint=self.key_fingerprint)

    def _signature_problem(self, cp: AuditCheckpointRow) -> str | None:
        if cp.public_key != self.public_key_hex:
            try:
                other = public_key_fingerprint(bytes.fromhex(cp.public_key))[:16] + "…"
            except ValueError:
                other = "an unreadable key"
            return (f"its checkpoint is signed by key {other}, not this server's signing key "
                    f"{self.key_fingerprint[:16]}…: the checkpoint was forged (or vault.signing_key_file points at "
                    "another key; restore the right one)")
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(cp.public_key)).verify(
                bytes.fromhex(cp.signature), checkpoint_message(cp.seq, cp.hash, cp.time))
        except (InvalidSignature, ValueError):
            return "its checkpoint's signature is not valid: the checkpoint was forged or altered"
        return None

    def query(self, *, since: float | None = None, until: float | None = None, user: str | None = None,
              action: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        conditions = []
        if since is not None:
            conditions.append(AuditRow.time >= since)
        if until is not None:
            conditions.append(AuditRow.time < until)
        if user:
            conditions.append(AuditRow.user == user)
        if action:
            conditions.append(AuditRow.action == action)
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(AuditRow).where(*conditions)) or 0
            rows = session.execute(select(AuditRow).where(*conditions).order_by(AuditRow.seq.desc())
                                   .limit(limit).offset(offset)).scalars().all()
            return [row_dict(r) for r in rows], int(total)
