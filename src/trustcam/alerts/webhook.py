"""Signed webhooks: a JSON POST per alert, HMAC-SHA256 over ``"<timestamp>.<body>"`` so receivers can trust it.

Headers: ``X-Trustcam-Timestamp`` (unix seconds), ``X-Trustcam-Signature: sha256=<hex>``, ``X-Trustcam-Alert-Id``.
The timestamp is signed with the body, so a receiver that refuses stale timestamps (:func:`verify_signature`,
5 minutes by default) also refuses replayed requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from trustcam.alerts.model import Alert, Severity
from trustcam.alerts.secrets import read_secret_env, read_secret_file
from trustcam.alerts.sink import DeliveryError, Sink
from trustcam.config.schema import WebhookConfig
from trustcam.redaction import redact_url, redact_urls

log = logging.getLogger(__name__)


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Trustcam-Signature`` value for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str | bytes, timestamp: int | str, body: bytes | str, signature: str,
                     now: float | None = None, tolerance_s: float = 300.0) -> bool:
    """Receiver side: True only if ``signature`` matches and ``timestamp`` is within ``tolerance_s`` of ``now``."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - sent) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else body
    return hmac.compare_digest(sign(secret, sent, raw), signature or "")


def webhook_secret(config: WebhookConfig) -> str:
    what = f"alerts.webhooks '{config.name}'"
    if config.secret_env is not None:
        return read_secret_env(config.secret_env, what)
    assert config.secret_file is not None  # the schema requires exactly one
    return read_secret_file(config.secret_file, what)


class WebhookSink(Sink):
    """One configured webhook; retries with exponential backoff and full jitter, then dead-letters."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.name = f"webhook:{config.name}"
        self.secret = webhook_secret(config)
        self.max_attempts = config.max_attempts
        self.backoff_s = config.backoff_s
        self.backoff_max_s = config.backoff_max_s
        self._min_rank = Severity(config.min_severity).rank
        self._client = httpx.Client(timeout=config.timeout_s, follow_redirects=False,
                                    headers={"User-Agent": "trustcam-webhook"})

    def accepts(self, alert: Alert) -> bool:
        if alert.test:  # the canary and `alerts test` check every sink, whatever its filters
            return True
        if self.config.kinds is not None and alert.kind not in self.config.kinds:
            return False
        return alert.severity.rank >= self._min_rank

    def stop(self) -> None:
        self._client.close()

    def deliver(self, alert: Alert) -> None:
        self._post({"type": "alert", **alert.to_json()}, alert.id)

    def heartbeat(self, payload: dict[str, Any]) -> None:
        try:
            self._post({"type": "heartbeat", **payload}, None)
        except DeliveryError as exc:  # heartbeats are not queued: the next one will tell
            log.warning("webhook %s: heartbeat not delivered: %s", self.config.name, exc)

    def _post(self, payload: dict[str, Any], alert_id: str | None) -> None:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "X-Trustcam-Timestamp": str(timestamp),
                   "X-Trustcam-Signature": sign(self.secret, timestamp, body)}
        if alert_id is not None:
            headers["X-Trustcam-Alert-Id"] = alert_id
        try:
            response = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(redact_urls(f"{redact_url(self.config.url)}: {type(exc).__name__}: {exc}")) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"{redact_url(self.config.url)}: HTTP {response.status_code} {response.text[:200]!r}")
