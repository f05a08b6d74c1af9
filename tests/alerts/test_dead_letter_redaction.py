"""A webhook URL often carries its credential in the query string (``?token=...``). When delivery fails, the error
names the URL: what is stored as ``last_error`` and what the API and ``trustcam alerts`` show must keep only the
scheme, host and port, like ``GET /api/config`` does (one helper: :mod:`trustcam.redaction`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyotp
import pytest
import yaml
from alerts_infra import wait_until
from fastapi.testclient import TestClient
from sqlalchemy import text

from support import free_port
from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert, AlertDeliveryFailed, Severity
from trustcam.alerts.outbox import Outbox
from trustcam.bus import Bus
from trustcam.config import load_settings
from trustcam.redaction import redact_url, redact_urls
from trustcam.security.access import AccessControl
from trustcam.security.roles import Role
from trustcam.storage.database import open_database
from trustcam.web.app import create_app
from trustcam.web.context import AppContext

CLI = [sys.executable, "-m", "trustcam.cli"]
SECRET = "SECRET-b7e1f0c2"
PASSWORD = "correct horse battery staple 42"


def test_redact_urls_in_text() -> None:
    message = (f"http://127.0.0.1:9/hook?token={SECRET}: ConnectError: refused; retry https://u:{SECRET}@h.example/p"
               f" and rtsp://[::1]:554/{SECRET}#x, bad http://h:notaport/{SECRET}")
    redacted = redact_urls(message)
    assert SECRET not in redacted
    assert redacted == ("http://127.0.0.1:9/…: ConnectError: refused; retry https://h.example/… and rtsp://[::1]:554/…,"
                        " bad <redacted>")
    assert redact_urls(redacted) == redacted  # idempotent: stored errors redacted again when shown stay the same
    assert redact_url("not a url") == "<redacted>"


@pytest.fixture
def dead_letter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> tuple[Path, str]:
    """A config whose webhook points at a real port nobody listens on, and an alert that died trying to reach it."""
    port = free_port()  # bound, then released: connections to it are refused
    secret = tmp_path / "hook.secret"
    secret.write_text("s3cret-for-tests\n")
    secret.chmod(0o600)
    url = f"http://127.0.0.1:{port}/hook/{SECRET}?token={SECRET}"
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "alerts": {"webhooks": [{"name": "hook", "url": url, "secret_file": str(secret), "max_attempts": 2,
                                 "backoff_s": 0.05, "backoff_max_s": 0.1, "timeout_s": 2}]}}))
    settings = load_settings(config)
    engine, bus = open_database(settings.resolved_database_url), Bus()
    dispatcher = AlertDispatcher(settings, engine, bus)
    dead: list[AlertDeliveryFailed] = []
    bus.subscribe(AlertDeliveryFailed, lambda m: dead.append(m) if m.dead else None)
    dispatcher.start()
    try:
        bus.publish(Alert(kind="tamper", severity=Severity.critical, camera="office", message="office covered"))
        wait_until(lambda: dead, 15, "the webhook to give up")
    finally:
        dispatcher.stop(drain_s=0)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT last_error FROM alert_outbox WHERE sink = 'webhook:hook'")).scalar()
    assert stored is not None and "ConnectError" in stored, stored  # it really failed on the unreachable port
    assert SECRET not in stored and f"http://127.0.0.1:{port}/…" in stored, stored
    assert "given up" in caplog.text and SECRET not in caplog.text  # nor in the service log
    return config, f"http://127.0.0.1:{port}/…"


def test_api_lists_the_dead_letter_without_the_token(dead_letter: tuple[Path, str]) -> None:
    config, shown = dead_letter
    settings = load_settings(config)
    engine = open_database(settings.resolved_database_url)
    ctx = AppContext(settings=settings, engine=engine, bus=Bus())
    access = ctx.extras["access_control"] = AccessControl(settings, engine)
    admin = access.users.create("admin", PASSWORD, Role.admin)
    enrolment = access.users.start_enrolment(admin)  # admins must have a second factor for their tokens to work
    access.users.confirm_enrolment(admin, pyotp.TOTP(enrolment).now())
    token, _ = access.credentials.create_token(admin.id, Role.admin, "t", 1, 30)
    client = TestClient(create_app(ctx), base_url="https://testserver")
    answer = client.get("/api/alerts/dead-letters", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    [letter] = answer.json()
    assert SECRET not in answer.text and shown in letter["last_error"]


def test_cli_shows_no_token(dead_letter: tuple[Path, str]) -> None:
    config, shown = dead_letter
    dlq = subprocess.run([*CLI, "alerts", "dlq", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert dlq.returncode == 0, dlq.stderr
    assert shown in dlq.stdout and SECRET not in dlq.stdout + dlq.stderr
    replay = subprocess.run([*CLI, "alerts", "replay", "--all", "--config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert replay.returncode == 1 and "not delivered" in replay.stdout, replay.stdout + replay.stderr
    assert shown in replay.stdout and SECRET not in replay.stdout + replay.stderr
    test = subprocess.run([*CLI, "alerts", "test", "--config", str(config)], capture_output=True, text=True,
                          timeout=60)
    assert test.returncode == 1 and "webhook:hook: FAILED" in test.stdout, test.stdout + test.stderr
    assert shown in test.stdout and SECRET not in test.stdout + test.stderr


def test_errors_stored_before_redaction_are_redacted_when_shown(tmp_path: Path) -> None:
    """A dead letter written by an older version (full URL in last_error) is redacted on the way out."""
    engine = open_database(f"sqlite:///{tmp_path / 'trustcam.db'}")
    outbox = Outbox(engine)
    outbox.add(Alert(kind="health", severity=Severity.warning, camera="c", message="m"), ["webhook:old"])
    [row] = outbox.rows()
    with engine.begin() as connection:
        connection.execute(text("UPDATE alert_outbox SET state = 'dead', last_error = :e"),
                           {"e": f"https://hooks.example/x?token={SECRET}: HTTP 500"})
    [shown] = outbox.rows(state="dead")
    assert shown.id == row.id and shown.last_error == "https://hooks.example/…: HTTP 500"
