"""Start-up recovery: make the database, the segment files and the hash chains agree again after a crash.

A segment is written to ``<id>.seg.part`` and renamed once complete, so a ``kill -9`` leaves at most the open
segment behind as a ``.part`` file; it is lost by design and removed here. A ``.seg`` file without a live
database row cannot be decrypted (its wrapped key never reached, or was already removed from, the database),
so it is removed too. A live row whose file has gone is marked lost and recorded as a deletion, never
silently dropped. Chains are only verified, never rewritten: a broken link is evidence and is reported.

Run it before recording starts; running it twice changes nothing the second time.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustcam.storage.schema import DeletionRow, SegmentRow

if TYPE_CHECKING:
    from trustcam.storage.vault import Vault

log = logging.getLogger(__name__)

LOST_REASON = "missing at recovery"


@dataclass
class RecoveryReport:
    """What recovery found and did; paths are relative to the storage root (or mirror) they were under."""

    partial_removed: list[str] = field(default_factory=list)  # unfinished segments (open at the crash): lost
    orphans_removed: list[str] = field(default_factory=list)  # .seg files no live row points at
    missing: list[str] = field(default_factory=list)  # ids of live rows whose file was gone: marked lost
    restored: list[str] = field(default_factory=list)  # ids whose file was copied back from the mirror
    chain_problems: dict[str, list[str]] = field(default_factory=dict)  # camera -> problems
    cameras: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing had to be repaired and every chain verifies."""
        return not (self.partial_removed or self.orphans_removed or self.missing or self.restored
                    or self.warnings or any(self.chain_problems.values()))

    def summary(self) -> str:
        def part(items: list[str], what: str) -> str:
            shown = ", ".join(items[:5]) + (f", … (+{len(items) - 5})" if len(items) > 5 else "")
            return f"{len(items)} {what}" + (f" ({shown})" if items else "")

        problems = {c: p for c, p in self.chain_problems.items() if p}
        chains = (f"chains ok ({len(self.cameras)} camera(s))" if not problems else
                  "chain problems: " + "; ".join(f"{c}: {', '.join(p[:3])}" for c, p in problems.items()))
        lines = [
            "recovery: " + ", ".join([
                part(self.partial_removed, "unfinished segment(s) lost"),
                part(self.orphans_removed, "orphan file(s) removed"),
                part(self.missing, "segment(s) missing, marked lost"),
                part(self.restored, "restored from mirror"),
            ]) + f"; {chains}",
            *(f"warning: {w}" for w in self.warnings),
        ]
        return "\n".join(lines)


def _roots(vault: Vault) -> list[Path]:
    roots = [Path(vault.root)]
    if vault.mirror is not None and Path(vault.mirror).resolve() != roots[0].resolve():
        roots.append(Path(vault.mirror))
    return [r for r in roots if r.is_dir()]


def _files(base: Path, pattern: str, cameras: Sequence[str] | None) -> list[Path]:
    """``pattern`` files under the whole root, or only under the given cameras' folders (``<camera>/…``)."""
    if cameras is None:
        return sorted(base.rglob(pattern))
    return sorted(f for camera in cameras for f in (base / camera).rglob(pattern))


def recover(vault: Vault, deep: bool = False, cameras: Sequence[str] | None = None) -> RecoveryReport:
    """Scan the vault's storage and database, repair what a crash can leave, and report it.

    ``deep`` also decrypts and re-hashes every segment while verifying chains (slow; for audits). ``cameras``
    limits recovery to those cameras' rows and folders: under ``trustcam cluster`` each camera's process shares the
    storage root with other cameras' live processes, whose open ``.part`` segment is not a crash's leftover.
    """
    report = RecoveryReport()
    root = Path(vault.root)
    roots = _roots(vault)
    query = select(SegmentRow.id, SegmentRow.camera, SegmentRow.path, SegmentRow.deleted_at)
    if cameras is not None:
        query = query.where(SegmentRow.camera.in_(list(cameras)))
    with Session(vault.engine) as session:
        rows = list(session.execute(query))
    live = {r.path: r for r in rows if r.deleted_at is None}
    report.cameras = sorted({r.camera for r in rows})

    live_files: dict[Path, int] = {}
    for base in roots:
        for part in _files(base, "*.part", cameras):
            rel = part.relative_to(base).as_posix()
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            report.partial_removed.append(rel if base == root else f"{base}/{rel}")
            log.warning("recovery: removed unfinished segment %s (%d bytes, open at the crash)", rel, size)
        segs = _files(base, "*.seg", cameras)
        orphans = [s for s in segs if s.relative_to(base).as_posix() not in live]
        live_files[base] = len(segs) - len(orphans)
        if not rows and len(orphans) > 1:
            # a database that knows no segment at all beside a full storage folder is the wrong database
            # (a changed database_url), not a crash: its keys may still exist elsewhere, so keep the files
            report.warnings.append(f"{len(orphans)} segment file(s) under {base} but no segment in the database: "
                                   "wrong database_url? files left in place")
            continue
        for seg in orphans:
            rel = seg.relative_to(base).as_posix()
            seg.unlink(missing_ok=True)
            report.orphans_removed.append(rel if base == root else f"{base}/{rel}")
            log.warning("recovery: removed %s, which no live segment row points at", rel)

    mirror = next((r for r in roots if r != root), None)
    absent = [r for r in live.values() if not (root / r.path).is_file()]
    if absent and not live_files.get(root):
        # an unmounted disk looks exactly like total loss: write nothing off, and copy nothing into what may be
        # a bare mount point on the system disk (the vault reads from the mirror meanwhile)
        report.warnings.append(f"no segment file found under {root} while {len(live)} segment(s) are "
                               "recorded: storage not mounted? nothing was marked lost or restored")
        absent = []
    now = time.time()
    lost = []
    for r in absent:
        if mirror is not None and (mirror / r.path).is_file():
            tmp = root / (r.path + ".part")
            try:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(mirror / r.path, tmp)
                tmp.replace(root / r.path)
                report.restored.append(r.id)
            except OSError as exc:  # root read-only or full: the mirror copy still serves reads
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                report.warnings.append(f"segment {r.id}: only on the mirror, copy back failed ({exc})")
        else:
            lost.append(r)
    if lost:
        with Session(vault.engine) as session, session.begin():
            for r in lost:
                row = session.get(SegmentRow, r.id)
                if row is None or row.deleted_at is not None:
                    continue
                row.deleted_at, row.deletion_reason, row.wrapped_key = now, LOST_REASON, None
                session.add(DeletionRow(time=now, camera=row.camera, segment_id=row.id, reason=LOST_REASON))
                report.missing.append(row.id)
                log.warning("recovery: segment %s (%s) has no file; marked lost", row.id, row.path)

    for camera in report.cameras:
        problems = list(vault.verify_chain(camera, deep=deep))
        report.chain_problems[camera] = problems
        for problem in problems:
            log.error("recovery: chain of %s: %s", camera, problem)
    log.info("%s", report.summary())
    return report
