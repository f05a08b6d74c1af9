"""The append-only, hash-chained audit log: who did what, when, from where, with which credential.

Each entry's ``hash`` is sha256 over the canonical JSON of all its fields, ``prev_hash`` (the previous
entry's hash) included. Editing an entry breaks its hash; deleting, inserting or reordering entries breaks
the sequence numbers or the links. No code path updates or deletes a row; ``verify`` checks the whole chain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trustcam.security.tables import AuditRow

log = logging.getLogger(__name__)

GENESIS = "0" * 64
FIELDS = ("seq", "time", "user", "role", "credential", "client", "action", "target", "outcome", "details",
          "prev_hash")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: fields[k] for k in FIELDS}).encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad: int | None = None  # seq of the first entry that does not check out
    problem: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries, hash chain verified"
        return f"audit log entry {self.first_bad}: {self.problem}"


def row_dict(row: AuditRow) -> dict[str, Any]:
    return {"seq": row.seq, "time": row.time, "user": row.user, "role": row.role, "credential": row.credential,
            "client": row.client, "action": row.action, "target": row.target, "outcome": row.outcome,
            "details": json.loads(row.details), "prev_hash": row.prev_hash, "hash": row.hash}


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()

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
            except IntegrityError:  # another process appended the same seq first: chain onto theirs
                continue
            return int(fields["seq"])
        raise RuntimeError("audit log: could not append after 20 attempts (database contended)")

    def verify(self) -> VerifyResult:
        """Walk the chain from seq 1: every seq present, every link and every hash right."""
        prev, expected, count = GENESIS, 1, 0
        with Session(self.engine) as session:
            for row in session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars():
                fields = {k: getattr(row, k) for k in FIELDS}
                if row.seq != expected:
                    return VerifyResult(False, count, expected, f"missing (found seq {row.seq} next): entries were "
                                        "deleted")
                if row.prev_hash != prev:
                    return VerifyResult(False, count, row.seq, "does not link to the entry before it: entries were "
                                        "reordered, replaced or inserted")
                if entry_hash(fields) != row.hash:
                    return VerifyResult(False, count, row.seq, "its content does not match its hash: it was edited")
                prev, expected, count = row.hash, expected + 1, count + 1
        return VerifyResult(True, count)

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
