"""Retention, legal hold and eviction against a real SQLite database, the real vault and a real small disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from trustcam.bus import Bus
from trustcam.config.schema import RecordConfig, RetentionConfig, Settings, VaultConfig
from trustcam.storage import retention
from trustcam.storage.database import open_database
from trustcam.storage.retention import (
    DISK_FULL,
    LOW_DISK,
    RetentionWorker,
    StorageAlert,
    StorageGuard,
    apply_retention,
    evict_for_space,
    hold_event,
)
from trustcam.storage.schema import DeletionRow, EventRow, SegmentRow
from trustcam.storage.vault import Vault

NOW = 1_750_000_000.0
H, D, MB = 3600.0, 86400.0, 1024 * 1024
POLICY = RetentionConfig(footage_without_events_h=24, event_days={"default": 30, "person": 30, "car": 7})


def make_vault(tmp_path: Path, root: Path | None = None, **config: object) -> Vault:
    cfg = VaultConfig(root=root or tmp_path / "rec", key_file=tmp_path / "keys" / "vault.kek",
                      signing_key_file=tmp_path / "keys" / "signing.key", retention=POLICY, **config)
    return Vault(cfg, open_database(f"sqlite:///{tmp_path / 'db' / 'trustcam.db'}"))


def store(vault: Vault, camera: str, ended_ago: float, labels: tuple[str, ...] = (), size: int = 1000,
          length: float = 10.0, now: float = NOW, **kw: object) -> str:
    end = now - ended_ago
    return vault.store_segment(camera, os.urandom(size), end - length, end, labels=labels, **kw).id


def add_event(engine, camera: str, start: float, end: float, label: str = "person") -> str:
    eid = uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(EventRow(id=eid, camera=camera, label=label, track_id=1, start=start, end=end, best_score=0.9,
                             box=[0, 0, 1, 1], zones=[], rules=[], threat="none", model_name="m",
                             model_sha256="0" * 64))
    return eid


def segment(engine, sid: str) -> SegmentRow:
    with Session(engine) as session:
        return session.get(SegmentRow, sid)


def deletions(engine) -> dict[str, str]:
    with Session(engine) as session:
        return {d.segment_id: d.reason for d in session.scalars(select(DeletionRow))}


def test_retention_shreds_exactly_the_expired_segments_per_rule_label_and_camera(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    settings = Settings(vault=vault.config, cameras={
        "front": {"source": "x.mp4"},
        "back": {"source": "y.mp4", "record": RecordConfig(
            retention=RetentionConfig(footage_without_events_h=1, event_days={"default": 2}))},
    })
    front = {
        "quiet_25h": (store(vault, "front", 25 * H), True),
        "quiet_23h": (store(vault, "front", 23 * H), False),
        "person_29d": (store(vault, "front", 29 * D, ("person",)), False),
        "person_31d": (store(vault, "front", 31 * D, ("person",)), True),
        "car_8d": (store(vault, "front", 8 * D, ("car",)), True),
        "car_person_8d": (store(vault, "front", 8 * D, ("car", "person")), False),  # the longer label wins
        "dog_29d": (store(vault, "front", 29 * D, ("dog",)), False),  # 'default' days
        "held_quiet_100h": (store(vault, "front", 100 * H), False),
        # stored before its event was known: the overlapping event still earns it the person retention
        "late_event_2d": (store(vault, "front", 2 * D), False),
    }
    back = {
        "quiet_2h": (store(vault, "back", 2 * H), True),  # camera override: 1 h
        "quiet_30m": (store(vault, "back", 0.5 * H), False),
        "person_3d": (store(vault, "back", 3 * D, ("person",)), True),  # camera override: 2 days
        "person_1d": (store(vault, "back", 1 * D, ("person",)), False),
    }
    segs = {**front, **back}
    with Session(vault.engine) as session, session.begin():
        session.get(SegmentRow, segs["held_quiet_100h"][0]).held = 1
    late = segment(vault.engine, segs["late_event_2d"][0])
    add_event(vault.engine, "front", late.start + 2, late.end + 30)
    kept_data = {sid: vault.read_segment(sid) for sid, expired in segs.values() if not expired}

    shredded = apply_retention(vault, settings, now=NOW)

    assert set(shredded) == {sid for sid, expired in segs.values() if expired}
    reasons = deletions(vault.engine)
    assert set(reasons) == set(shredded)
    assert "without events" in reasons[segs["quiet_25h"][0]] and "24 h" in reasons[segs["quiet_25h"][0]]
    assert "person" in reasons[segs["person_31d"][0]] and "30 days" in reasons[segs["person_31d"][0]]
    assert "car" in reasons[segs["car_8d"][0]] and "7 days" in reasons[segs["car_8d"][0]]
    assert "1 h" in reasons[segs["quiet_2h"][0]] and "2 days" in reasons[segs["person_3d"][0]]
    for sid in shredded:
        row = segment(vault.engine, sid)
        assert row.deleted_at is not None and row.wrapped_key is None
        assert not (vault.root / row.path).exists()
    for sid, data in kept_data.items():
        assert vault.read_segment(sid) == data
    assert apply_retention(vault, settings, now=NOW) == []  # idempotent
    # much later, everything unheld goes; the held segment never does
    later = apply_retention(vault, settings, now=NOW + 365 * D)
    assert segs["held_quiet_100h"][0] not in later
    assert segment(vault.engine, segs["held_quiet_100h"][0]).deleted_at is None
    assert len(later) == len(kept_data) - 1


def test_hold_and_unhold_follow_overlapping_events(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    t = NOW - 90 * D
    a = vault.store_segment("front", b"a" * 100, t, t + 10).id
    b = vault.store_segment("front", b"b" * 100, t + 10, t + 20).id
    c = vault.store_segment("front", b"c" * 100, t + 20, t + 30).id
    far = vault.store_segment("front", b"d" * 100, t + 36, t + 46).id  # 6 s after the second event: outside ± 5 s
    other_camera = vault.store_segment("back", b"e" * 100, t + 10, t + 20).id
    first = add_event(vault.engine, "front", t + 12, t + 18)  # b, and a/c through the 5 s margin
    second = add_event(vault.engine, "front", t + 22, t + 25)  # c (and b through the margin)

    assert set(hold_event(vault.engine, first)) == {a, b, c}
    assert set(hold_event(vault.engine, second)) == set()  # already held by the first
    assert {s for s in (a, b, c, far, other_camera) if segment(vault.engine, s).held} == {a, b, c}
    with Session(vault.engine) as session:
        assert session.get(EventRow, first).held == 1

    assert set(apply_retention(vault, None, now=NOW)) == {far, other_camera}
    assert all(segment(vault.engine, s).deleted_at is None for s in (a, b, c))

    assert set(hold_event(vault.engine, first, held=False)) == {a}  # b, c still overlap the held second event
    assert set(hold_event(vault.engine, second, held=False)) == {b, c}
    assert not any(segment(vault.engine, s).held for s in (a, b, c))
    assert set(apply_retention(vault, None, now=NOW)) == {a, b, c}
    with pytest.raises(KeyError):
        hold_event(vault.engine, "nope")


def test_a_held_event_protects_footage_recorded_after_the_hold(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    t = NOW - 90 * D
    event = add_event(vault.engine, "front", t, t + 60)
    hold_event(vault.engine, event)  # placed while the event is still being recorded
    later = vault.store_segment("front", b"x" * 100, t + 30, t + 40).id
    assert apply_retention(vault, None, now=NOW) == []
    assert segment(vault.engine, later).held == 1


# --- a real small disk ----------------------------------------------------------------------------------------

DISK_MB = 8


def _try(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real, small filesystem: tmpfs, else a loop-mounted ext4 image, else (last resort) a simulated one."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    only = os.environ.get("TRUSTCAM_TEST_SMALL_DISK")  # tmpfs | ext4 | simulated: force one kind
    image = tmp_path / "disk.img"
    if only in (None, "tmpfs") and _try(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mnt)]):
        kind = "tmpfs"
    else:
        with open(image, "wb") as handle:
            handle.truncate((DISK_MB + 4) * MB)  # ext4 metadata and journal take a few MB of it
        if (only in (None, "ext4") and _try(["mkfs.ext4", "-q", "-m", "0", str(image)])
                and _try(["mount", "-o", "loop", str(image), str(mnt)])):
            kind = "ext4 loop"
        else:
            kind = "simulated"
            warnings.warn("no mountable small filesystem here: free space is simulated with shutil.disk_usage",
                          stacklevel=1)
            real = shutil.disk_usage

            def usage(path: str | os.PathLike[str]) -> shutil._ntuple_diskusage:
                if not Path(path).resolve().is_relative_to(mnt.resolve()):
                    return real(path)
                used = sum(f.stat().st_size for f in mnt.rglob("*") if f.is_file())
                return shutil._ntuple_diskusage(DISK_MB * MB, used, DISK_MB * MB - used)

            monkeypatch.setattr(retention.shutil, "disk_usage", usage)
    print(f"small disk: {kind}")
    try:
        yield mnt
    finally:
        if kind != "simulated" and not _try(["umount", str(mnt)]):
            _try(["umount", "-l", str(mnt)])


def test_eviction_order_on_a_real_small_disk(tmp_path: Path, small_disk: Path) -> None:
    vault = make_vault(tmp_path, root=small_disk, min_free_mb=1)
    settings = Settings(vault=vault.config)
    seg = 768 * 1024
    # stored oldest first; the order they must go in is not the order they were stored in
    held = store(vault, "front", 9 * H, size=seg)
    person_old = store(vault, "front", 8 * H, ("person",), size=seg)
    quiet_motion = store(vault, "front", 7 * H, size=seg, has_motion=True)
    car = store(vault, "front", 6 * H, ("car",), size=seg)
    quiet_still = store(vault, "front", 5 * H, size=seg)
    person_new = store(vault, "front", 4 * H, ("person",), size=seg)
    late_car = store(vault, "front", 3 * H, size=seg)  # stored before its car event finished: car footage
    row = segment(vault.engine, late_car)
    add_event(vault.engine, "front", row.start + 1, row.end + 20, label="car")
    with Session(vault.engine) as session, session.begin():
        session.get(SegmentRow, held).held = 1
    order = [quiet_still, quiet_motion, car, late_car, person_old, person_new]

    free = shutil.disk_usage(small_disk).free
    needed = int(free + 4.5 * seg - vault.config.min_free_mb * MB)  # takes five segments to free
    alerts: list[StorageAlert] = []
    evicted = evict_for_space(vault, settings, needed_bytes=needed, now=NOW, alert=alerts.append)

    assert evicted == order[:5]
    assert retention.free_bytes(vault) >= vault.config.min_free_mb * MB + needed
    assert segment(vault.engine, held).deleted_at is None
    assert all("evicted for disk space" in deletions(vault.engine)[s] for s in evicted)
    assert [a.message.split(" at ")[0] for a in alerts] == [LOW_DISK]
    assert evict_for_space(vault, settings, now=NOW) == []  # enough room: nothing more goes


def test_recording_never_fails_on_a_filling_disk_and_held_evidence_survives(tmp_path: Path,
                                                                            small_disk: Path) -> None:
    vault = make_vault(tmp_path, root=small_disk, min_free_mb=2)
    bus, alerts = Bus(), []
    bus.subscribe(StorageAlert, alerts.append)
    guard = StorageGuard(vault, Settings(vault=vault.config), publish=bus.publish, alert_every_s=0)
    seg, stored, held = MB, [], {}
    start = time.perf_counter()
    for i in range(3 * DISK_MB):  # three times what the disk holds
        data = os.urandom(seg)
        guard.ensure_space(seg)
        t = NOW - 1000 + 10 * i
        row = vault.store_segment("front", data, t, t + 10, labels=("person",) if i % 3 == 0 else ())
        stored.append(row.id)
        if i in (2, 5):  # an incident early on: put it on legal hold
            hold_event(vault.engine, add_event(vault.engine, "front", t + 6, t + 8))
            held[row.id] = data
    elapsed = time.perf_counter() - start

    assert len(stored) == 3 * DISK_MB  # every write succeeded
    for sid, data in held.items():
        assert vault.read_segment(sid) == data
    live = [s for s in stored if segment(vault.engine, s).deleted_at is None]
    assert set(held) <= set(live) and len(live) < len(stored)
    assert any(a.message.startswith(LOW_DISK) for a in alerts)
    assert not any(a.message.startswith(DISK_FULL) for a in alerts)

    # now every segment left is evidence: nothing may go, and the operator is told
    with Session(vault.engine) as session, session.begin():
        for sid in live:
            session.get(SegmentRow, sid).held = 1
    guard.ensure_space(seg)
    assert alerts[-1].message.startswith(DISK_FULL) and alerts[-1].camera is None
    assert [s for s in stored if segment(vault.engine, s).deleted_at is None] == live
    total = shutil.disk_usage(small_disk).total / MB
    print(f"{len(stored)} x 1 MB stored through a {total:.1f} MB disk in {elapsed:.2f} s, "
          f"{len(stored) - len(live)} evicted, {len(alerts)} alert(s)")


def test_retention_worker_runs_and_stops_promptly(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    old = store(vault, "front", 100 * D, now=time.time())
    keep = store(vault, "front", 1 * H, now=time.time())
    worker = RetentionWorker(vault, Settings(vault=vault.config), interval_s=3600).start()
    deadline = time.monotonic() + 10
    while worker.passes < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 1.0
    assert worker.shredded == [old]
    assert segment(vault.engine, keep).deleted_at is None
