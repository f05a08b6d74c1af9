"""Signed webhooks against a real HTTP receiver: retries while it is down, DLQ, replay, heartbeats, secrets."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from alerts_infra import Broker, Receiver, wait_until

from trustcam.alerts.dispatcher import AlertDispatcher, build_sinks
from trustcam.alerts.model import Alert, AlertDelivered, AlertDeliveryFailed, Severity
from trustcam.alerts.webhook import verify_signature
from trustcam.bus import Bus
from trustcam.config import ConfigError, load_settings
from trustcam.storage.database import open_database

CLI = [sys.executable, "-m", "trustcam.cli"]
SECRET = "s3cret-for-tests"


def write_config(tmp_path: Path, receiver: Receiver, *, max_attempts: int = 50, heartbeat_s: float = 60,
                 mqtt_port: int | None = None, mode: int = 0o600) -> Path:
    secret = tmp_path / "hook.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(mode)
    mqtt = f"  mqtt: {{enabled: true, port: {mqtt_port}}}\n" if mqtt_port else ""
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "cameras: {office: {source: unused.mp4}}\n"
        f"alerts:\n  heartbeat_s: {heartbeat_s}\n{mqtt}"
        f"  webhooks:\n    - {{name: hook, url: '{receiver.url}', secret_file: {secret}, max_attempts: {max_attempts},"
        " backoff_s: 0.1, backoff_max_s: 0.4, timeout_s: 2}\n")
    return config


def start(config: Path) -> tuple[AlertDispatcher, Bus, list[object]]:
    settings = load_settings(config)
    bus = Bus()
    reports: list[object] = []
    bus.subscribe(AlertDelivered, reports.append)
    bus.subscribe(AlertDeliveryFailed, reports.append)
    dispatcher = AlertDispatcher(settings, open_database(settings.resolved_database_url), bus)
    dispatcher.start()
    return dispatcher, bus, reports


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_receiver_down_then_up_gets_every_alert_signed(tmp_path: Path, receiver: Receiver) -> None:
    dispatcher, bus, reports = start(write_config(tmp_path, receiver))
    try:
        alerts = [Alert(kind="tamper", severity=Severity.critical, camera="office", message=f"covered {i}")
                  for i in range(3)]
        for alert in alerts:
            bus.publish(alert)
        # the log sink is not held up by the webhook that cannot connect (one worker per sink)
        wait_until(lambda: sum(isinstance(r, AlertDelivered) and r.sink == "log" for r in reports) == 3, 2,
                   "the log sink")
        wait_until(lambda: all(r.attempts >= 2 for r in dispatcher.outbox.rows(sink="webhook:hook")), 10,
                   "two failed attempts per alert while the receiver is down")
        rows = dispatcher.outbox.rows(sink="webhook:hook")
        assert all(r.state == "pending" and "ConnectError" in (r.last_error or "") for r in rows)
        assert any(isinstance(r, AlertDeliveryFailed) and not r.dead for r in reports)
        receiver.start()
        wait_until(lambda: all(r.state == "delivered" for r in dispatcher.outbox.rows(sink="webhook:hook")), 10,
                   "delivery once the receiver is up")
    finally:
        dispatcher.stop()
    assert sorted(json.loads(r.body)["id"] for r in receiver.requests) == sorted(a.id for a in alerts)
    for request in receiver.requests:
        h = request.headers
        assert h["content-type"] == "application/json"
        assert h["x-trustcam-alert-id"] == json.loads(request.body)["id"]
        assert abs(int(h["x-trustcam-timestamp"]) - request.at) < 5
        assert verify_signature(SECRET, h["x-trustcam-timestamp"], request.body, h["x-trustcam-signature"])
    request = receiver.requests[0]
    ts, sig = request.headers["x-trustcam-timestamp"], request.headers["x-trustcam-signature"]
    tampered = request.body.replace(b"critical", b"info")
    assert tampered != request.body
    assert not verify_signature(SECRET, ts, tampered, sig)  # a changed body is refused
    assert not verify_signature(SECRET, int(ts) + 1, request.body, sig)  # a changed timestamp too
    assert not verify_signature("wrong secret", ts, request.body, sig)
    assert not verify_signature(SECRET, ts, request.body, sig, now=int(ts) + 301)  # a replay after 5 min
    assert verify_signature(SECRET, ts, request.body, sig, now=int(ts) + 299)


def test_failing_receiver_goes_to_dlq_and_replay_delivers_it(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 500
    receiver.start()
    config = write_config(tmp_path, receiver, max_attempts=3)
    dispatcher, bus, reports = start(config)
    alert = Alert(kind="health", severity=Severity.high, camera="office", message="camera health: office offline")
    try:
        bus.publish(alert)
        wait_until(lambda: any(isinstance(r, AlertDeliveryFailed) and r.dead for r in reports), 10, "a dead letter")
    finally:
        dispatcher.stop()
    assert len(receiver.requests) == 3  # exactly max_attempts tries
    dead = dispatcher.outbox.rows(state="dead")
    assert [(r.alert.id, r.sink, r.attempts) for r in dead] == [(alert.id, "webhook:hook", 3)]
    assert "HTTP 500" in (dead[0].last_error or "")

    listed = cli("alerts", "dlq", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert f"{dead[0].id}\twebhook:hook" in listed.stdout and "HTTP 500" in listed.stdout
    assert "1 dead letter(s)" in listed.stderr

    missing = cli("alerts", "replay", "9999", "--config", str(config))
    assert missing.returncode == 1 and "no dead letter with ID 9999" in missing.stderr

    receiver.status = 200  # the receiver is fixed
    replayed = cli("alerts", "replay", "--all", "--config", str(config))
    assert replayed.returncode == 0, replayed.stderr
    assert "webhook:hook\tdelivered" in replayed.stdout
    last = receiver.requests[-1]
    assert json.loads(last.body)["id"] == alert.id and len(receiver.requests) == 4
    assert verify_signature(SECRET, last.headers["x-trustcam-timestamp"], last.body,
                            last.headers["x-trustcam-signature"])
    assert dispatcher.outbox.rows(state="dead") == []
    assert dispatcher.outbox.rows(sink="webhook:hook")[0].state == "delivered"


def test_webhook_heartbeats_are_signed_and_periodic(tmp_path: Path, receiver: Receiver) -> None:
    receiver.start()
    dispatcher, _, _ = start(write_config(tmp_path, receiver, heartbeat_s=1))
    try:
        wait_until(lambda: len(receiver.of_type("heartbeat")) >= 3, 6, "3 heartbeats")
    finally:
        dispatcher.stop()
    beats = receiver.of_type("heartbeat")
    assert all(0.7 < b.at - a.at < 1.5 for a, b in itertools.pairwise(beats))
    body = json.loads(beats[-1].body)
    assert body["cameras"]["office"]["state"] == "ok" and body["pending"] == 0 and body["dead"] == 0
    assert all(verify_signature(SECRET, b.headers["x-trustcam-timestamp"], b.body,
                                b.headers["x-trustcam-signature"]) for b in beats)
    assert all("x-trustcam-alert-id" not in b.headers for b in beats)


def test_alerts_test_reports_each_sink(tmp_path: Path, receiver: Receiver, broker: Broker) -> None:
    config = write_config(tmp_path, receiver, mqtt_port=broker.port)
    down = cli("alerts", "test", "--config", str(config))  # the receiver is not listening yet
    assert down.returncode == 1
    assert "log: delivered" in down.stdout and "mqtt: delivered" in down.stdout
    assert "webhook:hook: FAILED" in down.stdout and "ConnectError" in down.stdout
    assert "test alert not delivered to webhook:hook" in down.stderr
    receiver.start()
    settings = load_settings(config)
    up = AlertDispatcher(settings, open_database(settings.resolved_database_url), Bus()).send_test()
    assert up == {"log": None, "mqtt": None, "webhook:hook": None}
    body = json.loads(receiver.requests[-1].body)
    assert body["test"] is True and body["type"] == "alert"


def test_unsafe_or_missing_secrets_are_refused_clearly(tmp_path: Path, receiver: Receiver) -> None:
    config = write_config(tmp_path, receiver, mode=0o644)
    result = cli("alerts", "test", "--config", str(config))
    assert result.returncode == 2
    assert "readable by group or others (mode 0644)" in result.stderr and "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr
    config.write_text(config.read_text().replace(f"secret_file: {tmp_path / 'hook.secret'}",
                                                 "secret_env: TRUSTCAM_TEST_NO_SUCH_SECRET"))
    with pytest.raises(ConfigError, match="TRUSTCAM_TEST_NO_SUCH_SECRET is not set or empty; export it"):
        build_sinks(load_settings(config))
