"""The dead-letter queue over the API: a real failing webhook receiver, the real dispatcher and the real app."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
from alerts_infra import Receiver, wait_until
from fastapi.testclient import TestClient

from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert, AlertDeliveryFailed, Severity
from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.security.access import AccessControl
from trustcam.security.roles import Role
from trustcam.storage.database import open_database
from trustcam.web.app import create_app
from trustcam.web.context import AppContext

PASSWORD = "correct horse battery staple 42"


def test_dead_letter_is_listed_and_replayed_by_an_admin(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 500
    receiver.start()
    secret = tmp_path / "hook.secret"
    secret.write_text("s3cret-for-tests\n")
    secret.chmod(0o600)
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"), "cameras": {"office": {"source": "unused.mp4"}},
        "alerts": {"webhooks": [{"name": "hook", "url": receiver.url, "secret_file": str(secret), "max_attempts": 2,
                                 "backoff_s": 0.1, "backoff_max_s": 0.2, "timeout_s": 2}]}})
    engine, bus = open_database(settings.resolved_database_url), Bus()
    ctx = AppContext(settings=settings, engine=engine, bus=bus)
    access = ctx.extras["access_control"] = AccessControl(settings, engine)
    users = {role: access.users.create(role.value, PASSWORD, role) for role in (Role.admin, Role.operator)}
    seed = access.users.start_enrolment(users[Role.admin])  # an admin token works only while its owner has MFA
    access.users.confirm_enrolment(users[Role.admin], pyotp.TOTP(seed).now())
    tokens = {role: access.credentials.create_token(user.id, role, "t", 1, 30)[0] for role, user in users.items()}
    client = TestClient(create_app(ctx), base_url="https://testserver")
    admin = {"Authorization": f"Bearer {tokens[Role.admin]}"}
    dispatcher = AlertDispatcher(settings, engine, bus)
    dead: list[AlertDeliveryFailed] = []
    bus.subscribe(AlertDeliveryFailed, lambda m: dead.append(m) if m.dead else None)
    dispatcher.start()
    try:
        alert = Alert(kind="tamper", severity=Severity.critical, camera="office", message="office covered")
        bus.publish(alert)
        wait_until(lambda: dead, 10, "the webhook to give up")
        listed = client.get("/api/alerts/dead-letters", headers=admin)
        assert listed.status_code == 200, listed.text
        [letter] = listed.json()
        assert (letter["sink"], letter["attempts"], letter["alert"]["id"]) == ("webhook:hook", 2, alert.id)
        assert "HTTP 500" in letter["last_error"]
        operator = {"Authorization": f"Bearer {tokens[Role.operator]}"}
        assert client.post(f"/api/alerts/dead-letters/{letter['id']}/replay", headers=operator).status_code == 403

        receiver.status = 200  # the receiver is fixed; the running dispatcher delivers the replayed alert
        replayed = client.post(f"/api/alerts/dead-letters/{letter['id']}/replay", headers=admin)
        assert replayed.status_code == 200 and replayed.json()["sink"] == "webhook:hook", replayed.text
        wait_until(lambda: dispatcher.outbox.rows(row_id=letter["id"])[0].state == "delivered", 5, "the replay")
        assert json.loads(receiver.requests[-1].body)["id"] == alert.id and len(receiver.requests) == 3
        assert client.get("/api/alerts/dead-letters", headers=admin).json() == []
        again = client.post(f"/api/alerts/dead-letters/{letter['id']}/replay", headers=admin)
        assert again.status_code == 404 and "no dead letter" in again.json()["detail"]
    finally:
        dispatcher.stop()
    entries, _ = access.audit_log.query(action="alert.replay")
    assert [(e["user"], e["outcome"], e["details"].get("sink")) for e in entries] == [
        ("admin", "refused", None), ("admin", "ok", "webhook:hook")]
