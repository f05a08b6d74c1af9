"""What the dispatcher needs of a sink (log, MQTT, a webhook), and how a sink says a delivery failed."""

from __future__ import annotations

import random
from typing import Any

from trustcam.alerts.model import Alert


class DeliveryError(Exception):
    """One delivery attempt failed; ``str()`` is stored as the row's ``last_error``.

    ``counts=False`` means the sink was not reachable at all (MQTT broker down): the row waits for the
    connection instead of using up an attempt.
    """

    def __init__(self, message: str, counts: bool = True) -> None:
        super().__init__(message)
        self.counts = counts


class Sink:
    """Base: accepts everything, is always ready, never gives up (``max_attempts`` None)."""

    name: str = "sink"
    max_attempts: int | None = None
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    last_error: str | None = None  # why the sink is not ready (e.g. the broker refused the login), for the user

    def accepts(self, alert: Alert) -> bool:
        return True

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def wait_ready(self, timeout: float) -> bool:
        return True

    def deliver(self, alert: Alert) -> None:
        raise NotImplementedError

    def heartbeat(self, payload: dict[str, Any]) -> None:
        return None

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff with full jitter: uniform(0, min(max, base * 2^(attempts-1)))."""
        return random.uniform(0.0, min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempts - 1)))
