"""The append-only, hash-chained audit log: who did what, when, from where, with which credential.

Each entry's ``hash`` is sha256 over the canonical JSON of all its fields, ``prev_hash`` (the previous
entry's hash) included. Editing an entry breaks its hash; deleting, inserting or reordering entries breaks
the sequence numbers or the links. No code path updates or deletes a row; ``verify`` checks the whole chain.

A chain alone cannot show that its newest entries were cut off, or that the whole log was rebuilt, by someone
with write access to the database. So every ``CHECKPOINT_EVERY`` entries (in the same transaction) and at
clean shutdown the head ``(seq, hash)`` is signed with the vault's Ed25519 signing key, which lives outside the
database. Checkpoints are also due by time: no entry stays unsigned longer than ``checkpoint_every_s`` (the
running service signs its head on a timer, and an append finding an older unsigned entry signs the head first).
``verify`` checks each signature against the configured key, that each signed entry is still in the chain
unchanged, that the chain reaches the last checkpoint, and that no due checkpoint (count or time) is missing.

Still, someone who can write the database can delete the newest entries together with their checkpoints, back
to an older checkpoint: only a record outside the database shows that, so every checkpoint also goes to the
witness (``trustcam.storage.witness``) and ``audit verify --witness FILE`` compares the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trustcam.security.tables import AuditCheckpointRow, AuditRow
from trustcam.storage.database import lock_chain
from trustcam.storage.vault import public_key_fingerprint
from trustcam.storage.witness import CheckpointWitness, WitnessEntry

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
    notes: tuple[str, ...] = ()  # facts that do not fail verification (entries signed late, after a crash)

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
    """``checkpoint_every_s``: the time rule's bound; ``witness`` gets every checkpoint once it is committed;
    ``clock`` is the time entries and checkpoints are stamped with (tests replay a log written in the past)."""

    def __init__(self, engine: Engine, signer: Ed25519PrivateKey, *, witness: CheckpointWitness | None = None,
                 checkpoint_every_s: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.signer = signer
        self.witness = witness
        self.checkpoint_every_s = checkpoint_every_s
        self.clock = clock
        self.public_key_hex = signer.public_key().public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw).hex()
        self.key_fingerprint = public_key_fingerprint(bytes.fromhex(self.public_key_hex))
        self._lock = threading.Lock()
        self._timer: threading.Thread | None = None
        self._timer_stop = threading.Event()

    def _checkpoint_row(self, seq: int, head_hash: str, now: float | None = None) -> AuditCheckpointRow:
        now = round(self.clock(), 6) if now is None else now
        signature = self.signer.sign(checkpoint_message(seq, head_hash, now)).hex()
        return AuditCheckpointRow(seq=seq, hash=head_hash, time=now, signature=signature,
                                  public_key=self.public_key_hex)

    def _witness(self, rows: list[AuditCheckpointRow]) -> None:
        """After the commit: the service log line, and the witness (file, MQTT) when one is configured."""
        for row in rows:
            log.info("audit checkpoint: entry %d, hash %s, signed by key %s", row.seq, row.hash, self.key_fingerprint)
            if self.witness is not None:
                self.witness.record(WitnessEntry(
                    kind="audit", camera="", seq=row.seq, hash=row.hash, time=row.time,
                    message=checkpoint_message(row.seq, row.hash, row.time).decode(), signature=row.signature,
                    public_key=row.public_key))

    def checkpoint(self) -> int | None:
        """Sign the current head unless already signed (clean shutdown, timer); returns its seq, None if the log is
        empty."""
        signed: list[AuditCheckpointRow] = []
        try:
            with self._lock, Session(self.engine, expire_on_commit=False) as session, session.begin():
                lock_chain(session, "audit")
                head = session.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc())
                                       .limit(1)).first()
                if head is None:
                    return None
                if session.get(AuditCheckpointRow, head.seq) is None:
                    signed.append(self._checkpoint_row(head.seq, head.hash))
                    session.add(signed[-1])
        except IntegrityError:  # another process signed the same head at the same moment
            signed.clear()
        self._witness(signed)
        return int(head.seq)

    # --- the time rule's timer (`trustcam run`) --------------------------------------------------------------

    def start_timer(self) -> None:
        """Sign the head now (entries a crash may have left unsigned) and then every ``checkpoint_every_s / 2``
        while it has unsigned entries, so none stays unsigned longer than ``checkpoint_every_s``."""
        if self._timer is not None:
            return
        self._timer_stop.clear()
        self._timer = threading.Thread(target=self._tick, name="audit-checkpoints", daemon=True)
        self._timer.start()

    def stop_timer(self) -> None:
        self._timer_stop.set()
        if self._timer is not None:
            self._timer.join(10)
            self._timer = None

    def _tick(self) -> None:
        while True:
            try:
                self.checkpoint()
            except Exception:  # database locked or gone: try again at the next tick, never stop the service
                log.exception("audit log: signing the head failed; retrying in %.0f s", self.checkpoint_every_s / 2)
            if self._timer_stop.wait(self.checkpoint_every_s / 2):
                return

    def append(self, action: str, *, user: str = "", role: str = "", credential: str = "", client: str = "",
               target: str = "", outcome: str = "ok", details: dict[str, Any] | None = None) -> int:
        """Add an entry at the head of the chain; returns its seq. Safe across threads and processes."""
        details_json = canonical(details or {})
        for _ in range(20):
            signed: list[AuditCheckpointRow] = []
            try:
                with self._lock, Session(self.engine, expire_on_commit=False) as session, session.begin():
                    lock_chain(session, "audit")  # other processes' appends wait here, then read the new head
                    head = session.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc())
                                           .limit(1)).first()
                    now = round(self.clock(), 6)
                    if head is not None and self._time_due(session, head.seq, now):
                        # an entry older than the bound is still unsigned (the service was down or crashed): sign
                        # the head before writing after it, so verify's time rule holds for every log we write
                        signed.append(self._checkpoint_row(head.seq, head.hash, now))
                        session.add(signed[-1])
                    fields: dict[str, Any] = {
                        "seq": (head.seq + 1) if head else 1, "time": now, "user": user,
                        "role": str(role), "credential": credential, "client": client[:64], "action": action,
                        "target": str(target)[:255], "outcome": outcome, "details": details_json,
                        "prev_hash": head.hash if head else GENESIS}
                    fields["hash"] = entry_hash(fields)
                    session.add(AuditRow(**fields))
                    # same transaction: no entry k*N without its checkpoint. One already there for this seq
                    # outlived a cut-off log: it is kept, as the proof verify reports.
                    if fields["seq"] % CHECKPOINT_EVERY == 0 and session.get(AuditCheckpointRow, fields["seq"]) is None:
                        signed.append(self._checkpoint_row(fields["seq"], fields["hash"], now))
                        session.add(signed[-1])
            except IntegrityError:  # another process appended the same seq first (SQLite): chain onto theirs; the
                continue  # failed transaction was rolled back whole, so this also holds on PostgreSQL
            self._witness(signed)
            return int(fields["seq"])
        raise RuntimeError("audit log: could not append after 20 attempts (database contended)")

    def _time_due(self, session: Session, head_seq: int, now: float) -> bool:
        """Whether the oldest entry not covered by a checkpoint was written more than the bound before ``now``."""
        last = session.scalar(select(func.max(AuditCheckpointRow.seq)).where(AuditCheckpointRow.seq <= head_seq)) or 0
        if last >= head_seq:
            return False
        oldest = session.scalar(select(AuditRow.time).where(AuditRow.seq == last + 1))
        return oldest is not None and now - oldest > self.checkpoint_every_s

    def verify(self, now: float | None = None) -> VerifyResult:
        """Check every checkpoint's signature, walk the chain from seq 1 (every seq present, every link and hash
        right, every signed entry unchanged), then that the chain reaches the newest checkpoint and that every
        due checkpoint exists: every ``CHECKPOINT_EVERY`` entries, and by time (no entry written more than
        ``checkpoint_every_s`` after an unsigned one, no unsigned tail older than that at ``now``)."""
        prev, expected, count = GENESIS, 1, 0
        bound = self.checkpoint_every_s
        now = self.clock() if now is None else now
        unsigned: AuditRow | None = None  # oldest entry not yet covered by a checkpoint, in the walk
        late_gap: tuple[int, int, float] | None = None  # first time-rule breach: (uncovered seq, later seq, gap)
        late: list[str] = []
        with Session(self.engine) as session:
            signed = {cp.seq: cp for cp in session.scalars(select(AuditCheckpointRow))}
            last = max(signed, default=None)

            def fail(entries: int, seq: int, problem: str) -> VerifyResult:
                return VerifyResult(False, entries, seq, problem, len(signed), last, self.key_fingerprint,
                                    tuple(late))

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
                if unsigned is not None and late_gap is None and row.time - unsigned.time > bound:
                    late_gap = (unsigned.seq, row.seq, row.time - unsigned.time)
                if unsigned is None and cp is None:
                    unsigned = row
                elif cp is not None:
                    if unsigned is not None and cp.time - unsigned.time > bound:
                        late.append(f"entries {unsigned.seq}–{row.seq} were signed {cp.time - unsigned.time:.0f} s "
                                    f"after entry {unsigned.seq} was written ({_utc(unsigned.time)}), later than "
                                    f"server.audit_checkpoint_every_s ({bound:.0f} s): trustcam was stopped without "
                                    "a clean shutdown; until then a database writer could have changed them")
                    elif cp.time - row.time > bound:
                        late.append(f"entry {row.seq} was signed {cp.time - row.time:.0f} s after it was written "
                                    f"({_utc(row.time)}): trustcam was stopped without a clean shutdown")
                    unsigned = None
                prev, expected, count = row.hash, expected + 1, count + 1
        if last is not None and last > count:
            return fail(count, count + 1, f"the audit log ends at entry {count} but the checkpoint signed at "
                        f"{_utc(signed[last].time)} covers entry {last}: entries after {count} were removed")
        for seq in range(CHECKPOINT_EVERY, count + 1, CHECKPOINT_EVERY):
            if seq not in signed:
                return fail(count, seq, f"its signed checkpoint (one every {CHECKPOINT_EVERY} entries) is missing: "
                            "checkpoints were deleted, so the log may have been rewritten or cut short")
        if late_gap is not None:
            seq, later, gap = late_gap
            return fail(count, seq, f"no signed checkpoint covers it, yet entry {later} was written {gap:.0f} s later "
                        f"(a checkpoint is due within server.audit_checkpoint_every_s = {bound:.0f} s): checkpoints "
                        "were deleted, so the entries from here on may have been rewritten")
        if unsigned is not None and now - unsigned.time > bound:
            return fail(count, unsigned.seq, f"entries {unsigned.seq}–{count} (the newest, written from "
                        f"{_utc(unsigned.time)} on) are covered by no signed checkpoint, though one is due within "
                        f"server.audit_checkpoint_every_s ({bound:.0f} s): checkpoints after entry "
                        f"{unsigned.seq - 1} were deleted (entries after the cut may be gone too), or trustcam "
                        "stopped without a clean shutdown (crash, kill -9, power loss) - then the next entry written "
                        "(a login, a `trustcam users` command) signs them first and this passes; compare with the "
                        "witness (--witness) to tell which")
        return VerifyResult(True, count, checkpoints=len(signed), last_checkpoint=last,
                            key_fingerprint=self.key_fingerprint, notes=tuple(late))

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
