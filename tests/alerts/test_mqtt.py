"""MQTT delivery against a real Mosquitto: pipeline alerts, HA discovery, LWT, broker outage, heartbeats."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from alerts_infra import Broker, Subscriber, wait_until

from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert, AlertDelivered, Severity
from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.storage.database import open_database

CLI = [sys.executable, "-m", "trustcam.cli"]


def mqtt_settings(tmp_path: Path, port: int, heartbeat_s: float = 60) -> Settings:
    return Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "cameras": {"office": {"source": "unused.mp4", "objects": {"track": ["person"]}}},
        "alerts": {"mqtt": {"enabled": True, "port": port, "client_id": "trustcam-test"}, "heartbeat_s": heartbeat_s},
    })


def test_pipeline_rule_alerts_reach_mqtt_with_discovery_and_lwt(person_video: Path, installed_models: None,
                                                                tmp_path: Path, broker: Broker,
                                                                subscriber: Subscriber) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\ndetector: {{failover: []}}\nserver: {{enabled: false}}\n"
        f"alerts: {{mqtt: {{enabled: true, port: {broker.port}, client_id: trustcam-run}}}}\n"
        f"cameras:\n  office:\n    source: {person_video}\n    objects: {{track: [person]}}\n"
        "    tamper: {enabled: false}\n    drift: {enabled: false}\n    canary: {enabled: false}\n"
        "    zones: {table: {coordinates: [[0.40, 0.55], [0.90, 0.55], [0.90, 1.0], [0.40, 1.0]]}}\n"
        "    rules: [{name: at-table, type: enter_zone, zone: table, threat: high}]\n")
    process = subprocess.Popen([*CLI, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: subscriber.on("trustcam/office/rule") or process.poll() is not None, 40,
                   "a rule alert on trustcam/office/rule")
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        alert = subscriber.on("trustcam/office/rule")[0].json()
        assert alert["kind"] == "rule" and alert["severity"] == "high" and alert["camera"] == "office"
        assert alert["data"]["rule"] == "at-table" and alert["data"]["label"] == "person"
        assert alert["state"] == "ON" and alert["source_time"] <= alert["time"]  # the frame came first

        late = Subscriber(broker.port, client_id="late-joiner")  # retained: a new Home Assistant sees it all
        try:
            wait_until(lambda: late.on("trustcam/availability") and
                       late.on("homeassistant/binary_sensor/trustcam_office_person/config"), 5, "retained topics")
            availability = late.on("trustcam/availability")[0]
            assert availability.retain and availability.payload == b"online"
            person = late.on("homeassistant/binary_sensor/trustcam_office_person/config")[0]
            assert person.retain
            config_json = person.json()
            assert config_json["state_topic"] == "trustcam/office/rule"
            assert config_json["availability_topic"] == "trustcam/availability"
            for key in ("motion", "tamper", "health", "coverage"):
                assert late.on(f"homeassistant/binary_sensor/trustcam_office_{key}/config"), key
            assert late.on("homeassistant/sensor/trustcam_last_alert/config")
        finally:
            late.close()

        process.send_signal(signal.SIGKILL)  # a crash: only the broker's LWT can tell
        process.wait(10)
        wait_until(lambda: any(m.payload == b"offline" for m in subscriber.on("trustcam/availability")), 10,
                   "the LWT 'offline' on trustcam/availability")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_broker_outage_and_restart_lose_nothing_and_keep_order(tmp_path: Path, broker: Broker,
                                                               subscriber: Subscriber) -> None:
    settings = mqtt_settings(tmp_path, broker.port)
    engine = open_database(settings.resolved_database_url)
    bus = Bus()
    delivered: list[AlertDelivered] = []
    bus.subscribe(AlertDelivered, delivered.append)
    dispatcher = AlertDispatcher(settings, engine, bus)
    dispatcher.start()
    ids: list[str] = []

    def raise_alert(i: int, on: Bus) -> None:
        alert = Alert(kind="rule", severity=Severity.high, camera="office", message=f"alert {i}")
        ids.append(alert.id)
        on.publish(alert)

    for i in range(5):
        raise_alert(i, bus)
    wait_until(lambda: len(subscriber.on("trustcam/office/rule")) >= 5, 10, "the first 5 alerts")
    assert {d.sink for d in delivered} == {"log", "mqtt"}  # every sink reports delivery (the canary needs it)

    broker.stop()
    for i in range(5, 15):
        raise_alert(i, bus)
    wait_until(lambda: len(dispatcher.outbox.rows(state="pending", sink="mqtt")) == 10, 5, "10 pending rows")
    dispatcher.stop(drain_s=0.5)  # trustcam restarts while the broker is still down: the outbox is on disk

    restarted = AlertDispatcher(settings, open_database(settings.resolved_database_url), Bus())
    restarted.start()
    try:
        broker.start()
        wait_until(lambda: len({m.json()["id"] for m in subscriber.on("trustcam/office/rule")}) == 15, 30,
                   "all 15 alerts after the broker came back")
        first_seen: list[str] = []
        for message in subscriber.on("trustcam/office/rule"):
            if message.json()["id"] not in first_seen:
                first_seen.append(message.json()["id"])
        assert first_seen == ids  # none lost, none reordered
        wait_until(lambda: not restarted.outbox.rows(state="pending"), 5, "no pending rows")
        rows = restarted.outbox.rows(sink="mqtt")
        assert len(rows) == 15 and all(r.state == "delivered" and r.latency is not None for r in rows)
    finally:
        restarted.stop()


def test_mqtt_heartbeats_arrive_at_the_configured_interval(tmp_path: Path, broker: Broker,
                                                           subscriber: Subscriber) -> None:
    settings = mqtt_settings(tmp_path, broker.port, heartbeat_s=1)
    dispatcher = AlertDispatcher(settings, open_database(settings.resolved_database_url), Bus())
    dispatcher.start()
    try:
        wait_until(lambda: len(subscriber.on("trustcam/heartbeat")) >= 4, 8, "4 heartbeats")
    finally:
        dispatcher.stop()
    beats = subscriber.on("trustcam/heartbeat")
    gaps = [b.at - a.at for a, b in itertools.pairwise(beats)]
    assert all(0.7 < gap < 1.5 for gap in gaps), gaps
    payload = json.loads(beats[-1].payload)
    assert payload["cameras"] == {"office": {"state": "ok", "problems": []}}
    assert payload["pending"] == 0 and payload["dead"] == 0 and abs(payload["time"] - beats[-1].at) < 1
