"""PostgreSQL restarted mid-run (issue 14): a real ``Service`` analyses a looping clip with its events and alerts in a
PostgreSQL server of its own, which is stopped (``pg_ctl stop -m fast``) for at least 8 s and started again. The
camera keeps analysing throughout; the events that ended and the alerts raised while the server was down are stored
once it is back, each exactly once, and the alerts reach a real webhook receiver once. The camera records into the
vault throughout: the segments cut during the outage are stored once it is back, the events that ended meanwhile are
sealed, and `evidence chain` finds one unbroken, signed chain with every event sealed."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alerts.alerts_infra import Receiver  # tests/ is on sys.path (pyproject)
from support import wait_until
from trustcam.alerts.model import Alert
from trustcam.config.schema import Settings
from trustcam.events.model import EventEnded
from trustcam.service import Service
from trustcam.storage.leases import holder_id
from trustcam.storage.schema import EventRow

TESTS = Path(__file__).resolve().parents[1]
MIN_OUTAGE_S = 8.0
MAX_OUTAGE_S = 30.0
LEASE_TTL_S = 45.0  # longer than the longest outage the test allows: the lease must survive it


class Restartable:
    """A PostgreSQL server of this test alone (the session's shared server must not go down under other tests),
    built by tests/conftest.py's PostgresServer, that can be stopped and started again on the same port."""

    def __init__(self, conftest: Any) -> None:
        self.server = conftest.PostgresServer()
        self.pg_ctl = conftest._pg_bin("pg_ctl")
        self.server.start()
        self.server.admin("CREATE DATABASE trustcam")

    def stop_fast(self) -> None:
        """Like a restart by the operator or systemd: sessions are terminated, the port closes."""
        self.server._run(self.pg_ctl, "-D", str(self.server.data), "-m", "fast", "-w", "stop")

    def start_again(self) -> None:
        s = self.server
        options = (f"-p {s.port} -k {s.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=300")
        s._run(self.pg_ctl, "-D", str(s.data), "-l", str(s.root / "server.log"), "-o", options, "-w", "-t", "60",
               "start")


@pytest.fixture
def postgres(request: pytest.FixtureRequest) -> Iterator[Restartable]:
    conftest = next(plugin for plugin in request.config.pluginmanager.get_plugins()
                    if getattr(plugin, "__file__", None) == str(TESTS / "conftest.py"))
    server = Restartable(conftest)
    yield server
    server.server.stop()


@pytest.fixture
def looping_clip(person_video: Path, tmp_path: Path) -> Path:
    """16 s of the person clip (one person leaves, the next walks to the table), played in a loop by the camera:
    an event ends and a rule alert is raised every loop, so any 8 s window sees one or the other."""
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "15", "-t", "16", "-i", str(person_video), "-an", "-c:v",
                    "libx264", "-preset", "ultrafast", "-g", "10", str(clip)], check=True, timeout=60)
    return clip


class Seen:
    """What the camera thread published, with the wall time it was published."""

    def __init__(self, service: Service) -> None:
        self.ended: list[tuple[float, str]] = []
        self.alerts: list[tuple[float, Alert]] = []
        self._lock = threading.Lock()
        service.bus.subscribe(EventEnded, lambda m: self._add(self.ended, m.event.id))
        service.bus.subscribe(Alert, lambda a: self._add(self.alerts, a))

    def _add(self, into: list[Any], item: object) -> None:
        with self._lock:
            into.append((time.time(), item))

    def ended_between(self, start: float, end: float) -> list[str]:
        with self._lock:
            return [event_id for at, event_id in self.ended if start <= at <= end]

    def alerts_between(self, start: float, end: float) -> list[Alert]:
        with self._lock:
            return [alert for at, alert in self.alerts if start <= at <= end]


@pytest.mark.slow
@pytest.mark.parametrize("leased", [False, True], ids=["single-box", "camera-lease"])
def test_postgresql_restarted_mid_run_loses_nothing(postgres: Restartable, looping_clip: Path, installed_models: None,
                                                    tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                    leased: bool) -> None:
    """Also as a cluster's camera process runs (a camera lease, every write fenced): an outage shorter than the
    lease's TTL costs nothing, and the buffered writes still carry the token the database accepts."""
    receiver = Receiver()
    receiver.start()
    secret = tmp_path / "hook.secret"
    secret.write_text("restart-test-secret\n")
    secret.chmod(0o600)
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"), "database_url": postgres.server.url("trustcam"),
        "detector": {"failover": []},
        "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "vault.kek"),
                  "signing_key_file": str(tmp_path / "keys" / "signing.key")},
        "alerts": {"webhooks": [{"name": "ops", "url": receiver.url, "secret_file": str(secret)}]},
        "cameras": {"cam": {
            "source": str(looping_clip), "detect": {"fps": 5}, "objects": {"track": ["person"]},
            "record": {"enabled": True, "mode": "continuous", "segment_s": 2},
            "zones": {"table": {"coordinates": [[0.40, 0.55], [0.90, 0.55], [0.90, 1.0], [0.40, 1.0]],
                                "objects": ["person"]}},
            "rules": [{"name": "at-table", "type": "enter_zone", "zone": "table", "threat": "high"}]}}})
    service = Service(settings, lease_holder=holder_id() if leased else None, lease_ttl_s=LEASE_TTL_S)
    seen = Seen(service)
    worker = service.workers[0]
    [webhook] = [sink for sink in service.alerts.sinks if sink.name == "webhook:ops"]
    service.start()
    try:
        wait_until(lambda: worker.pipeline.stats.frames >= 10, 30, "the camera to analyse frames")
        with caplog.at_level(logging.INFO):
            postgres.stop_fast()
            down_at, frames_at_stop = time.time(), worker.pipeline.stats.frames
            # down for at least 8 s, and until an event has ended and a rule alert was raised with it down
            while time.time() - down_at < MIN_OUTAGE_S or not (
                    seen.ended_between(down_at, time.time())
                    and any(a.kind == "rule" for a in seen.alerts_between(down_at, time.time()))):
                assert time.time() - down_at < MAX_OUTAGE_S, "no event ended / no rule alert within 30 s of outage"
                time.sleep(0.1)
            up_at = time.time()
            frames_in_outage = worker.pipeline.stats.frames - frames_at_stop
            assert worker.is_alive() and worker.restarts == 0, "the camera stopped while the database was down"
            postgres.start_again()
            back_at = time.time()
            outage_s = back_at - down_at
            ended = seen.ended_between(down_at, up_at)
            raised = [a for a in seen.alerts_between(down_at, up_at) if webhook.accepts(a)]

            def stored() -> dict[str, int]:
                with Session(service.engine) as session:
                    return dict(session.execute(select(EventRow.id, func.count()).where(EventRow.id.in_(ended))
                                                .group_by(EventRow.id)).all())

            wait_until(lambda: set(stored()) == set(ended), 20, "the events of the outage to be stored")
            stored_after = time.time() - back_at
            received = lambda: [r.headers.get("x-trustcam-alert-id") for r in receiver.of_type("alert")]  # noqa: E731
            wait_until(lambda: {a.id for a in raised} <= set(received()), 30,
                       "the alerts of the outage to reach the webhook")
            delivered_after = time.time() - back_at
            time.sleep(1.0)  # a second delivery, if any, would come now
        print(f"\noutage: server down {outage_s:.1f} s (stop returned to start returned), "
              f"{frames_in_outage} frames analysed meanwhile, {len(ended)} event(s) ended, {len(raised)} alert(s); "
              f"stored {stored_after:.1f} s and delivered {delivered_after:.1f} s after the server was back")
        assert frames_in_outage >= 5 * MIN_OUTAGE_S * 0.5, "analysis stalled while the database was down"
        assert worker.is_alive() and worker.restarts == 0
        assert stored() == {event_id: 1 for event_id in ended}  # each exactly once
        counts = received()
        assert all(counts.count(alert.id) == 1 for alert in raised), "an outage alert was delivered twice"
        rows = {d.alert.id: d.state for d in service.alerts.outbox.rows(sink="webhook:ops")}
        assert all(rows.get(alert.id) == "delivered" for alert in raised)
        assert [json.loads(r.body)["id"] for r in receiver.of_type("alert") if
                json.loads(r.body)["id"] in {a.id for a in raised}] == [a.id for a in raised], "out of order"
        assert service.store.writes.lost == 0 and service.alerts.writes.lost == 0
        if leased:  # the lease outlived the outage: same token, never lost
            assert worker.lease is not None and worker.lease_lost is None and worker.lease.lease is not None
            assert worker.lease.lease.token == 1
        assert "NOT QUEUED" not in caplog.text
    finally:
        service.stop()
        receiver.stop()
    recorder = worker.recorder
    assert recorder is not None and service.vault is not None
    print(f"recording: {recorder.stats.stored} segments stored, {recorder.stats.retries} store attempts repeated "
          f"during the outage, {recorder.stats.failed} lost")
    assert recorder.stats.failed == 0 and recorder.stats.retries >= 1 and recorder.stats.dropped == 0
    assert service.vault.segments_between("cam", down_at + 1, up_at - 1), "no footage of the outage in the vault"
    assert service.vault.verify_chain() == [], "footage or a seal of the outage is missing from the chain"
    # and every event of the whole run is in the database once (those after the outage too)
    with Session(service.engine) as session:
        ids = list(session.scalars(select(EventRow.id)))
    assert sorted(ids) == sorted({event_id for _, event_id in seen.ended})
