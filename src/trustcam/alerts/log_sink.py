"""The sink that is always on: every alert becomes a log line (warnings and worse at WARNING level)."""

from __future__ import annotations

import logging

from trustcam.alerts.model import Alert, Severity
from trustcam.alerts.sink import Sink

log = logging.getLogger("trustcam.alerts")

LEVELS = {Severity.info: logging.INFO, Severity.warning: logging.WARNING, Severity.high: logging.WARNING,
          Severity.critical: logging.ERROR}


class LogSink(Sink):
    name = "log"

    def deliver(self, alert: Alert) -> None:
        level = logging.WARNING if alert.cleared else LEVELS[alert.severity]  # the end of a problem matters too
        test = " test" if alert.test else ""
        log.log(level, "%s%s alert: %s", "cleared" if alert.cleared else alert.severity.value, test, alert.message)
