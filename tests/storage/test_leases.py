"""No split brain: camera leases with fencing tokens, on a real SQLite file and a real PostgreSQL server.

Each holder has its own engine (its own connections), as separate nodes would; a paused or partitioned node is
simulated with an injected clock that jumps past the TTL, and the restart storm runs in real threads and processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from support import wait_until
from trustcam.bus import Bus
from trustcam.config.schema import Settings, ThreatLevel, VaultConfig
from trustcam.events.model import Event
from trustcam.rules.engine import RuleHit
from trustcam.service import CameraWorker
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.leases import Fences, Lease, LeaseKeeper, LeaseLost, Leases, check_fence
from trustcam.storage.schema import CameraLeaseRow, CheckpointRow, EventRow, SegmentRow
from trustcam.storage.vault import Vault

T0 = 1_700_000_000.0
TTL = 10.0


class Clock:
    """A node's clock, moved by hand: ``advance`` is the node pausing (or being partitioned) for that long."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Node:
    """One machine: its own engine, clock, leases, fences, event store and vault (the storage root is shared)."""

    def __init__(self, url: str, vault_config: VaultConfig, clock: Clock, name: str) -> None:
        self.engine = open_database(url)
        self.clock = clock
        self.name = name
        self.leases = Leases(self.engine, clock)
        self.fences = Fences(clock)
        self.store = EventStore(self.engine, self.fences)
        self.vault = Vault(vault_config, self.engine, fences=self.fences)

    def acquire(self, camera: str = "front") -> Lease | None:
        lease = self.leases.acquire(camera, self.name, TTL)
        if lease is not None:
            self.fences.hold(lease)
        return lease


def make_event(i: int, camera: str = "front", end: float = 5.0) -> Event:
    return Event(
        id=f"{i:032x}", camera=camera, label="person", track_id=i, start=T0 + i, end=T0 + i + end,
        best_score=0.9, best_box=(1, 2, 3, 4), best_time=T0 + i + 1, zones=["door"],
        rules=[RuleHit("door-entry", "enter_zone", ThreatLevel.high, i, T0 + i + 2, "door")],
        snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32,
    )


@pytest.fixture
def vault_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VaultConfig:
    monkeypatch.delenv(ENV_KEK, raising=False)
    return VaultConfig(root=tmp_path / "vault", key_file=tmp_path / "keys" / "vault.kek",
                       signing_key_file=tmp_path / "keys" / "signing.key", checkpoint_every=100)


def count(engine: Engine, query: object) -> int:
    with Session(engine) as session:
        return int(session.scalar(query))  # type: ignore[call-overload]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_two_holders_race_exactly_one_wins(database_url: str, vault_config: VaultConfig) -> None:
    """Two nodes acquire the same free camera at the same instant, 10 times over: one lease, the other None."""
    clock = Clock()
    nodes = [Node(database_url, vault_config, clock, f"node-{n}") for n in range(2)]
    for round_ in range(10):
        camera = f"cam{round_}"
        barrier = threading.Barrier(2)
        results: dict[str, Lease | None] = {}

        def race(node: Node, camera: str = camera, barrier: threading.Barrier = barrier,
                 results: dict[str, Lease | None] = results) -> None:
            barrier.wait()
            results[node.name] = node.leases.acquire(camera, node.name, TTL)

        threads = [threading.Thread(target=race, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        won = [lease for lease in results.values() if lease is not None]
        assert len(results) == 2 and len(won) == 1, results
        assert won[0].token == 1 and won[0].expires_at == T0 + TTL
        assert nodes[0].leases.current(camera) == won[0]


def test_paused_holder_loses_and_its_writes_are_refused(database_url: str, vault_config: VaultConfig) -> None:
    """Node A is paused (partitioned) past its TTL; node B takes the camera with a higher token; A's event insert,
    event update, segment and checkpoint are all refused with LeaseLost and leave nothing behind."""
    clock_a, clock_b = Clock(), Clock()
    a = Node(database_url, vault_config, clock_a, "node-a")
    b = Node(database_url, vault_config, clock_b, "node-b")
    lease_a = a.acquire()
    assert lease_a is not None and lease_a.token == 1
    assert b.acquire() is None  # held and not expired: B waits as a standby
    a.store.save(make_event(1))  # A writes while it holds the lease
    a.vault.store_segment("front", b"segment one" * 1000, T0, T0 + 4)

    clock_b.advance(TTL + 1)  # A is frozen: it renews nothing, and B's clock says A's lease has expired
    lease_b = b.acquire()
    assert lease_b is not None and lease_b.token == 2 and lease_b.holder == "node-b"

    files_before = files_under(vault_config.root)
    with pytest.raises(LeaseLost, match=r"camera front: write refused.*token 1 is stale: token 2 was since given to "
                                        r"node-b"):
        a.store.save(make_event(2))
    with pytest.raises(LeaseLost, match="token 1 is stale"):
        a.store.save(make_event(1, end=60.0))  # an update of A's own earlier event
    with pytest.raises(LeaseLost, match="token 1 is stale"):
        a.vault.store_segment("front", b"segment two" * 1000, T0 + 4, T0 + 8)
    with pytest.raises(LeaseLost, match="token 1 is stale"):
        a.vault.checkpoint("front")
    with pytest.raises(LeaseLost, match="lease not renewed for node-a"):
        a.leases.renew("front", "node-a", lease_a.token, TTL)
    assert not a.leases.release(lease_a)  # a stale holder cannot free the camera under B either

    engine = b.engine
    assert files_under(vault_config.root) == files_before  # the refused segment's files were removed
    assert count(engine, select(func.count()).select_from(SegmentRow)) == 1
    assert count(engine, select(func.count()).select_from(CheckpointRow)) == 0
    assert count(engine, select(func.count()).select_from(EventRow)) == 1
    with Session(engine) as session:
        assert session.get(EventRow, f"{1:032x}").end == T0 + 1 + 5.0  # not A's late update

    b.store.save(make_event(3))  # the new holder writes, and continues the camera's one chain
    row = b.vault.store_segment("front", b"segment three" * 1000, T0 + 8, T0 + 12)
    assert row.seq == 2
    assert b.vault.checkpoint("front") is not None
    assert b.vault.verify_chain("front") == []


def test_expired_lease_is_refused_beyond_the_grace_until_renewed(database_url: str,
                                                                 vault_config: VaultConfig) -> None:
    """A holder whose lease lapsed without a takeover writes within the grace, is refused after it, and may renew
    (nobody took the token) and write again."""
    clock = Clock()
    a = Node(database_url, vault_config, clock, "node-a")
    lease = a.acquire()
    assert lease is not None
    clock.advance(TTL + a.fences.grace_s - 0.5)
    a.store.save(make_event(1))  # expired, but within the grace (clock skew between nodes)
    clock.advance(1.0)
    with pytest.raises(LeaseLost, match=r"token 1 expired 2\.5 s ago"):
        a.store.save(make_event(2))
    renewed = a.leases.renew("front", "node-a", lease.token, TTL)
    assert renewed.token == 1 and renewed.expires_at == clock() + TTL
    a.store.save(make_event(2))
    assert count(a.engine, select(func.count()).select_from(EventRow)) == 2


def test_a_takeover_waits_for_an_in_flight_fenced_write(database_url: str, vault_config: VaultConfig) -> None:
    """The fence check and the write are one transaction: B's acquisition waits until A's write commits, so a write
    can never land after a takeover that it did not see."""
    clock_a, clock_b = Clock(), Clock(T0 + TTL + 1)
    a = Node(database_url, vault_config, clock_a, "node-a")
    b = Node(database_url, vault_config, clock_b, "node-b")
    lease_a = a.acquire()
    assert lease_a is not None
    got: list[Lease | None] = []
    with Session(a.engine) as session, session.begin():
        check_fence(session, "front", lease_a.token, clock_a())
        taker = threading.Thread(target=lambda: got.append(b.acquire()))
        taker.start()
        taker.join(0.8)
        assert taker.is_alive() and not got, "the takeover did not wait for the fenced write"
        session.add(EventRow(id="e" * 32, camera="front", label="person", track_id=1, start=T0, end=T0 + 1,
                             best_score=0.9, box=[1, 2, 3, 4], zones=[], rules=[], threat="low", snapshot=None,
                             model_name="m", model_sha256="ab" * 32))
    taker.join(30)
    assert got and got[0] is not None and got[0].token == 2
    assert count(b.engine, select(func.count()).select_from(EventRow)) == 1  # committed before the takeover
    with pytest.raises(LeaseLost):
        a.store.save(make_event(2))


def test_restart_storm_in_threads_never_gives_two_valid_holders(database_url: str,
                                                                vault_config: VaultConfig) -> None:
    """20 workers restart at once, three times (each time after the previous winner died: its TTL passed): each
    storm has exactly one winner with a higher token, and of every winner so far only the newest can write."""
    clock = Clock()
    nodes = [Node(database_url, vault_config, clock, f"node-{n:02d}") for n in range(20)]
    winners: list[tuple[Node, Lease]] = []
    for storm in range(3):
        barrier = threading.Barrier(len(nodes))
        results: list[tuple[Node, Lease | None]] = []
        lock = threading.Lock()

        def restart(node: Node, barrier: threading.Barrier = barrier,
                    results: list[tuple[Node, Lease | None]] = results, lock: threading.Lock = lock) -> None:
            barrier.wait()
            lease = node.acquire()
            with lock:
                results.append((node, lease))

        threads = [threading.Thread(target=restart, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        won = [(node, lease) for node, lease in results if lease is not None]
        assert len(results) == 20 and len(won) == 1, [lease for _, lease in won]
        assert won[0][1].token == storm + 1
        winners.append((won[0][0], won[0][1]))
        valid = []
        for n, (node, lease) in enumerate(winners):  # each winner writes with the token it won (one node may
            fences = Fences(clock)                   # win twice: its older token is fenced like anyone's)
            fences.hold(lease)
            try:
                EventStore(node.engine, fences).save(make_event(100 * storm + n))
                valid.append(lease.token)
            except LeaseLost:
                pass
        assert valid == [storm + 1]
        clock.advance(TTL + 5)  # the winner dies: its lease expires, the next storm begins
    assert count(nodes[0].engine, select(CameraLeaseRow.token)) == 3


STORM_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from sqlalchemy.orm import Session
    from trustcam.storage.database import open_database
    from trustcam.storage.leases import Fences, LeaseLost, Leases, holder_id
    from trustcam.storage.schema import EventRow

    url, folder = sys.argv[1], Path(sys.argv[2])
    engine = open_database(url)
    holder = holder_id()
    (folder / f"ready-{holder}").touch()
    while not (folder / "go").exists():
        time.sleep(0.001)
    lease = Leases(engine).acquire("front", holder, 60.0)
    wrote = False
    if lease is not None:
        fences = Fences()
        fences.hold(lease)
        try:
            with Session(engine) as session, session.begin():
                fences.check(session, "front")
                session.add(EventRow(id=holder.rsplit(":", 1)[1] * 4, camera="front", label="person", track_id=1,
                                     start=1.0, end=2.0, best_score=0.9, box=[1, 2, 3, 4], zones=[], rules=[],
                                     threat="low", snapshot=None, model_name="m", model_sha256="ab" * 32))
            wrote = True
        except LeaseLost:
            pass
    print(json.dumps({"holder": holder, "token": lease.token if lease else None, "wrote": wrote}))
""")


@pytest.mark.slow  # 20 interpreters starting on the test machine's cores: 15-25 s
def test_restart_storm_of_20_processes_has_one_holder(database_url: str, tmp_path: Path) -> None:
    """20 real processes start at once (a node coming back, a scheduler restarting everything) and race for one
    camera: exactly one holds it and writes; the other 19 stay standbys."""
    engine = open_database(database_url)  # migrated once here: the children start like restarted workers
    folder = tmp_path / "storm"
    folder.mkdir()
    children = [subprocess.Popen([sys.executable, "-c", STORM_CHILD, database_url, str(folder)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(20)]
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready-*"))) < 20:
        assert time.monotonic() < deadline and all(c.poll() is None for c in children), \
            [c.communicate()[1][-2000:] for c in children if c.poll() is not None]
        time.sleep(0.05)
    (folder / "go").touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    winners = [r for r in results if r["token"] is not None]
    assert len(winners) == 1 and winners[0]["token"] == 1 and winners[0]["wrote"], results
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(EventRow)) == 1
        lease = session.get(CameraLeaseRow, "front")
        assert lease is not None and lease.holder == winners[0]["holder"] and lease.token == 1


def test_single_box_needs_no_lease(tmp_path: Path, vault_config: VaultConfig) -> None:
    """No lease configured: the stores write as before and the lease table stays empty. With fences configured but
    no lease held, a camera's write is refused."""
    engine = open_database(f"sqlite:///{tmp_path / 'data' / 'trustcam.db'}")
    EventStore(engine).save(make_event(1))
    vault = Vault(vault_config, engine)
    vault.store_segment("front", b"segment" * 1000, T0, T0 + 4)
    assert vault.checkpoint("front") is not None
    assert count(engine, select(func.count()).select_from(CameraLeaseRow)) == 0
    with pytest.raises(LeaseLost, match="camera front: write refused, this worker holds no lease"):
        EventStore(engine, Fences()).save(make_event(2))
    assert count(engine, select(func.count()).select_from(EventRow)) == 1


def test_camera_worker_waits_for_the_lease_and_stops_when_it_loses_it(person_video: Path, installed_models: None,
                                                                      tmp_path: Path) -> None:
    """A real worker on a clip: a standby while another node holds the camera, analysing once it is released, and
    stopped (for good) when another node takes the camera over; then it releases nothing it no longer holds."""
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"), "detector": {"failover": []},
        "cameras": {"cam": {"source": str(person_video), "detect": {"fps": 5}, "objects": {"track": ["person"]}}}})
    engine = open_database(settings.resolved_database_url)
    leases, fences = Leases(engine), Fences()
    other = Leases(engine).acquire("cam", "node-b", 60.0)
    assert other is not None
    keeper = LeaseKeeper(leases, fences, "cam", "node-a", ttl_s=1.5, retry_s=0.1)
    worker = CameraWorker("cam", settings.cameras["cam"], settings, Bus(), tmp_path / "snapshots", lease=keeper)
    worker.start()
    try:
        time.sleep(1.0)
        assert worker.is_alive() and worker.pipeline.stats.frames == 0 and fences.token("cam") is None
        assert Leases(engine).release(other)  # node B stops cleanly
        wait_until(lambda: worker.pipeline.stats.frames > 5, 60, "the worker to take the lease and analyse")
        assert keeper.lease is not None and keeper.lease.token == 2 and fences.token("cam") == 2
        time.sleep(1.0)  # renewed every 0.5 s: still held, although its first TTL has passed
        assert worker.is_alive() and Leases(engine).current("cam") is not None
        taker = Leases(engine, clock=lambda: time.time() + 60)  # a node whose view says the lease expired
        assert taker.acquire("cam", "node-c", 60.0) is not None
        wait_until(lambda: not worker.is_alive(), 30, "the worker to stop after losing its lease")
    finally:
        worker.stop()
        worker.join(30)
    assert worker.lease_lost is not None and "token 2 is stale: token 3 was since given to node-c" in \
        worker.lease_lost
    assert fences.token("cam") is None
    current = Leases(engine).current("cam")
    assert current is not None and current.holder == "node-c"  # the stopped worker did not release node C's lease
