"""Inputs of the 500-camera arithmetic (docs/scale.md): database writes, MQTT messages and bytes per camera, measured.

Run ``python bench/scale_inputs.py [--seconds 150] [--record-mode continuous] [--database-url URL]``. It

1. ``ffprobe``s the sample clips (``$TRUSTCAM_DATA_DIR/videos``): codec, size, frame rate, video bitrate;
2. starts a private Mosquitto and subscribes to every topic (``#``), counting messages and bytes per kind of topic;
3. runs one :class:`trustcam.service.Service` with both clips as live cameras (a file camera plays at its own speed
   and loops, frames carry wall-clock times), exactly as a cluster camera actor runs one: under a camera lease
   (``lease_holder``, TTL 15 s, so every event, segment and checkpoint write is fenced), recording into the vault
   (root + mirror, ``--record-mode``, 10 s segments), rules that raise alerts, MQTT and the log sink, default
   detector, tamper, drift and canary settings. SQLite in a temporary folder unless ``--database-url``;
4. counts every INSERT / UPDATE / DELETE statement the service sends (SQLAlchemy ``before_cursor_execute``, all
   engines; an executemany counts one per row), per table, with the bytes of its bound parameters (the payload
   sent; a row on disk adds headers and index entries), the transactions that wrote, and the engine's open
   connections (sampled); on PostgreSQL also the WAL bytes the run generated (``pg_current_wal_lsn``, on a server
   nothing else writes to).

Counting starts after ``Service.start()`` and ends before ``Service.stop()``: one-off work (migrations, lease
release, the last checkpoint of a clean stop) is left out, steady state is what 500 cameras add up to. Then it
prints rows per camera-hour, per event, per alert and per segment, the vault's stored bytes per recorded second
(what the mirror carries over the network when it is a network share), and MQTT messages per camera-hour.
Asserts nothing. Last line: ``db_writes_per_camera_s=X`` (statements per second per camera). About ``--seconds``
+ 30 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alerts import start_broker
from trustcam.config.schema import Settings
from trustcam.events.model import EventEnded
from trustcam.service import Service
from trustcam.storage.database import engine_url
from trustcam.storage.leases import DEFAULT_TTL_S, holder_id
from trustcam.vision import catalog

ROOT = Path(__file__).resolve().parents[1]
WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.IGNORECASE)
CLIPS = {"car": "car-detection.mp4", "person": "one-by-one-person-detection.mp4"}


def probe(clip: Path) -> dict[str, Any]:
    """The clip's video stream as ffprobe reports it (bitrate in bit/s)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,width,height,avg_frame_rate,bit_rate:format=duration,bit_rate,size",
                          "-of", "json", str(clip)], check=True, capture_output=True, text=True).stdout
    info = json.loads(out)
    stream, fmt = info["streams"][0], info["format"]
    num, den = (int(x) for x in stream["avg_frame_rate"].split("/"))
    return {"codec": stream["codec_name"], "size": f"{stream['width']}x{stream['height']}", "fps": num / den,
            "video_bps": int(stream["bit_rate"]), "file_bps": int(fmt["bit_rate"]),
            "duration_s": float(fmt["duration"])}


class WriteCounter:
    """Write statements per (verb, table), rows, parameter bytes and commits, while ``on`` is set."""

    def __init__(self) -> None:
        self.on = threading.Event()
        self.lock = threading.Lock()
        self.rows: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[tuple[str, str]] = Counter()
        self.commits = 0
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        event.listen(Engine, "rollback", lambda conn: conn.info.pop("scale_wrote", None))

    def _statement(self, conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                   executemany: bool) -> None:
        match = WRITE.match(statement)
        if match is None or not self.on.is_set():
            return
        key = (match.group(1).split()[0].upper(), match.group(2).lower())
        batch = list(parameters) if executemany else [parameters]
        conn.info["scale_wrote"] = True
        with self.lock:
            self.rows[key] += len(batch)
            self.bytes[key] += sum(payload_bytes(p) for p in batch)

    def _commit(self, conn: Any) -> None:
        """Counts transactions that wrote (read-only ones cost the server no WAL flush)."""
        if conn.info.pop("scale_wrote", None) and self.on.is_set():
            with self.lock:
                self.commits += 1


def payload_bytes(parameters: Any) -> int:
    """Bytes of a statement's bound values: text/blob lengths, 8 per number, 0 per NULL. On PostgreSQL a JSON
    column's value is a psycopg adapter object and counts 8: read the payload figures of a SQLite run."""
    values = parameters.values() if isinstance(parameters, dict) else parameters or ()
    total = 0
    for value in values:
        if isinstance(value, (bytes, bytearray, memoryview)):
            total += len(value)
        elif isinstance(value, str):
            total += len(value.encode())
        elif value is not None:
            total += 8
    return total


class MqttCounter:
    """Every message the broker routes, by kind of topic (alert, last_alert, heartbeat, witness, availability...)."""

    def __init__(self, port: int) -> None:
        self.on = threading.Event()
        self.count: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="scale-inputs")
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    @staticmethod
    def kind(topic: str) -> str:
        parts = topic.split("/")
        if parts[0] == "homeassistant":
            return "discovery (retained, on connect)"
        if parts[1] in ("heartbeat", "last_alert", "availability"):
            return parts[1]
        if parts[1] == "witness":
            return f"witness/{parts[2]}"
        return f"alert: {parts[-1]}"  # <prefix>/<camera>/<kind>

    def _message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if self.on.is_set():
            kind = self.kind(message.topic)
            self.count[kind] += 1
            self.bytes[kind] += len(message.payload) + len(message.topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def settings_for(tmp: Path, data: Path, port: int, mode: str, database_url: str | None) -> Settings:
    """Two live cameras (the sample clips) with rules, recording, MQTT; everything else at its default."""
    videos = data / "videos"
    record = {"enabled": True, "mode": mode}
    return Settings.model_validate({
        "data_dir": str(tmp / "data"), "database_url": database_url,
        "vault": {"root": str(tmp / "root"), "mirror": str(tmp / "mirror"), "key_file": str(tmp / "keys" / "kek"),
                  "signing_key_file": str(tmp / "keys" / "signing.key")},
        "alerts": {"mqtt": {"enabled": True, "port": port, "client_id": "trustcam-scale"}},
        "cameras": {
            "person": {"source": str(videos / CLIPS["person"]), "objects": {"track": ["person"]}, "record": record,
                       "zones": {"table": {"coordinates": [[0.40, 0.55], [0.90, 0.55], [0.90, 1.0], [0.40, 1.0]]}},
                       "rules": [{"name": "at-table", "type": "enter_zone", "zone": "table", "threat": "high"},
                                 {"name": "loitering", "type": "loiter", "zone": "table", "seconds": 8},
                                 {"name": "walked-in", "type": "cross_line", "line": [[0.0, 0.9], [1.0, 0.9]]}]},
            "car": {"source": str(videos / CLIPS["car"]), "objects": {"track": ["person", "car"]}, "record": record,
                    "zones": {"lot": {"coordinates": [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]}},
                    "rules": [{"name": "in-lot", "type": "enter_zone", "zone": "lot", "threat": "low"}]},
        },
    })


@contextmanager
def wal_bytes(database_url: str | None) -> Iterator[dict[str, int]]:
    """WAL bytes written on a PostgreSQL server during the block ({} on SQLite)."""
    out: dict[str, int] = {}
    if database_url is None or not database_url.startswith("postgres"):
        yield out
        return
    engine = create_engine(engine_url(database_url))
    with engine.connect() as conn:
        start = conn.execute(text("SELECT pg_current_wal_lsn()")).scalar()
    try:
        yield out
    finally:
        with engine.connect() as conn:
            out["wal"] = int(conn.execute(text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), :s)"),
                                          {"s": start}).scalar())
        engine.dispose()


class PoolWatch:
    """Largest number of database connections the service's engine held open, and checked out at once (sampled every
    0.2 s): what one camera process asks of PostgreSQL's ``max_connections``."""

    def __init__(self, engine: Engine) -> None:
        self.pool = engine.pool
        self.open = self.busy = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            busy = self.pool.checkedout()  # type: ignore[attr-defined]
            self.busy = max(self.busy, busy)
            self.open = max(self.open, busy + self.pool.checkedin())  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def alert_kinds(engine: Engine, since: float) -> Counter[str]:
    """Outbox rows created since ``since``, per alert kind and sink."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, sink, count(*) FROM alert_outbox WHERE created >= :t "
                                 "GROUP BY kind, sink"), {"t": since}).all()
    return Counter({f"{kind} -> {sink}": int(n) for kind, sink, n in rows})


def stored_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def report(args: argparse.Namespace, probes: dict[str, dict[str, Any]], seconds: float, writes: WriteCounter,
           broker: MqttCounter, events: Counter[str], vault: dict[str, int], wal: dict[str, int],
           kinds: Counter[str], pool: PoolWatch) -> None:
    cams = len(CLIPS)
    per_h = 3600.0 / (seconds * cams)  # per camera-hour
    print("\n== clips (ffprobe) ==")
    for name, p in probes.items():
        print(f"{name:7} {p['codec']} {p['size']} {p['fps']:.1f} fps, {p['duration_s']:.1f} s, video "
              f"{p['video_bps'] / 1e6:.3f} Mb/s (file {p['file_bps'] / 1e6:.3f} Mb/s)")
    rows = writes.rows
    total = sum(rows.values())
    n_events = sum(events.values())
    print(f"\n== database writes: {seconds:.0f} s x {cams} cameras, record {args.record_mode}, "
          f"{'SQLite' if not args.database_url else 'PostgreSQL'} ==")
    print(f"{'table':22} {'verb':7} {'rows':>6} {'per cam-h':>10} {'B/row':>6}")
    for (verb, table), n in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{table:22} {verb:7} {n:6d} {n * per_h:10.0f} {writes.bytes[(verb, table)] / n:6.0f}")
    payload = sum(writes.bytes.values())
    print(f"{'all':30} {total:6d} {total * per_h:10.0f}   ({payload * per_h / 3600:.0f} B/s of parameters "
          f"per camera; {writes.commits} transactions that wrote = {writes.commits * per_h:.0f} per camera-hour)")
    print(f"database connections of the service process ({cams} cameras): at most {pool.open} open, {pool.busy} in use "
          f"at once")
    if wal:
        print(f"PostgreSQL WAL: {wal['wal']} B = {wal['wal'] / (seconds * cams):.0f} B/s per camera")

    def of(table: str, verb: str | None = None) -> int:
        return sum(n for (v, t), n in rows.items() if t == table and (verb is None or v == verb))

    alerts = of("alert_outbox", "INSERT")
    segments = of("segments", "INSERT")
    print(f"\nevents ended: {n_events} ({dict(events)}) = {n_events * per_h:.1f} per camera-hour")
    if n_events:
        print(f"per event: events rows written {of('events') / n_events:.2f} "
              f"(INSERT {of('events', 'INSERT') / n_events:.2f}, UPDATE {of('events', 'UPDATE') / n_events:.2f})")
    if alerts:
        print(f"outbox rows inserted: {alerts} ({alerts * per_h:.1f} per camera-hour); outbox writes per row "
              f"{of('alert_outbox') / alerts:.2f}; by kind and sink (the car clip loops, which tamper rightly "
              f"reports as 'looped': a live camera would not): {dict(sorted(kinds.items()))}")
    if segments:
        print(f"segments: {segments} ({segments * per_h:.0f} per camera-hour), checkpoints "
              f"{of('checkpoints', 'INSERT')} ({of('checkpoints', 'INSERT') / segments:.2f} per segment), "
              f"data keys/blobs and seals as listed above")
    print(f"camera_leases writes: {of('camera_leases')} = {of('camera_leases') * per_h:.0f} per camera-hour "
          f"(renewals every {DEFAULT_TTL_S / 3:.0f} s = {3600 / (DEFAULT_TTL_S / 3):.0f}/h, plus one fence check "
          f"per fenced write)")
    rec_s = seconds * cams
    print(f"\nvault: root {vault['root']} B, mirror {vault['mirror']} B = {vault['root'] * 8 / rec_s / 1e6:.3f} "
          f"Mb/s per camera into each copy ({args.record_mode})")
    print("\n== MQTT messages (all topics, broker side) ==")
    for kind, n in sorted(broker.count.items()):
        print(f"{kind:34} {n:5d} {n * per_h:9.1f} per camera-hour  {broker.bytes[kind] / n:6.0f} B")
    mqtt_total = sum(broker.count.values())
    print(f"{'all':34} {mqtt_total:5d} {mqtt_total * per_h:9.1f} per camera-hour")
    print(f"db_writes_per_camera_s={total / (seconds * cams):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="seconds counted, after start (live pace)")
    parser.add_argument("--record-mode", default="continuous", choices=["continuous", "motion", "events"])
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL of an otherwise idle server "
                        "(default: SQLite in the temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("trustcam.storage.witness").setLevel(logging.ERROR)  # one line per checkpoint: figures only
    data = Path(os.environ.get("TRUSTCAM_DATA_DIR", ROOT.parent / "shared" / "data"))
    probes = {name: probe(data / "videos" / clip) for name, clip in CLIPS.items()}
    for spec in catalog.CATALOG.values():
        catalog.install(spec, allow_download=False)
    writes = WriteCounter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker_process, port = start_broker(tmp)
        broker = MqttCounter(port)
        try:
            service = Service(settings_for(tmp, data, port, args.record_mode, args.database_url),
                              lease_holder=holder_id(), lease_ttl_s=DEFAULT_TTL_S)
            events: Counter[str] = Counter()
            service.bus.subscribe(EventEnded, lambda m: events.update([m.event.camera]) if writes.on.is_set()
                                  else None)
            service.start()
            pool = PoolWatch(service.engine)
            with wal_bytes(args.database_url) as wal:
                writes.on.set()
                broker.on.set()
                started, wall_start = time.monotonic(), time.time()
                time.sleep(args.seconds)
                writes.on.clear()
                broker.on.clear()
                seconds = time.monotonic() - started
                pool.stop()
            vault = {"root": stored_bytes(tmp / "root"), "mirror": stored_bytes(tmp / "mirror")}
            kinds = alert_kinds(service.engine, wall_start)
            service.stop()
        finally:
            broker.close()
            broker_process.terminate()
            broker_process.wait(10)
    report(args, probes, seconds, writes, broker, events, vault, wal, kinds, pool)


if __name__ == "__main__":
    main()
