"""``/api/audit`` (auditor, admin): read the hash-chained audit log and verify it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from trustcam.security.roles import Role
from trustcam.web.auth import Principal, access_control, audit, require
from trustcam.web.models import ApiModel

router = APIRouter(prefix="/api/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require(Role.auditor, Role.admin))]



class AuditEntry(ApiModel):
    seq: int
    time: float
    user: str
    role: str
    credential: str
    client: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(ApiModel):
    entries: list[AuditEntry] = Field(description="Newest first.")
    total: int


class VerifyOut(ApiModel):
    ok: bool
    entries: int = Field(description="Entries checked before the first problem (all of them when ok).")
    first_bad: int | None = Field(description="Sequence number of the first entry that does not check out.")
    problem: str | None


@router.get("", response_model=AuditPage)
def read_audit(request: Request, principal: Auditor,
               since: float | None = Query(None, description="Epoch seconds, inclusive."),
               until: float | None = Query(None, description="Epoch seconds, exclusive."),
               user: str | None = Query(None, max_length=64), action: str | None = Query(None, max_length=64),
               limit: int = Query(100, ge=1, le=1000),
               offset: int = Query(0, ge=0, le=10_000_000, description="Entries skipped.")) -> AuditPage:
    entries, total = access_control(request).audit_log.query(since=since, until=until, user=user, action=action,
                                                             limit=limit, offset=offset)
    return AuditPage(entries=[AuditEntry(**e) for e in entries], total=total)


@router.post("/verify", response_model=VerifyOut)
def verify_audit(request: Request, principal: Auditor) -> VerifyOut:
    """Re-check the whole hash chain (edited, deleted, inserted or reordered entries are found)."""
    result = access_control(request).audit_log.verify()
    audit(request, principal, "audit.verify", outcome="ok" if result.ok else "failed", entries=result.entries,
          first_bad=result.first_bad)
    return VerifyOut(ok=result.ok, entries=result.entries, first_bad=result.first_bad, problem=result.problem)
