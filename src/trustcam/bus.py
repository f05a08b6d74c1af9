"""The one way parts of trustcam talk: a small in-process publish/subscribe bus.

Publishers do not know who listens (storage, the CLI printer, later MQTT and webhooks). Handlers run in
the publisher's thread; one that raises is logged and the others still run, so a broken sink cannot stop
a camera.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

M = TypeVar("M")


class Bus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, message_type: type[M], handler: Callable[[M], None]) -> None:
        with self._lock:
            self._handlers[message_type].append(handler)

    def publish(self, message: object) -> None:
        with self._lock:
            handlers = [h for t, hs in self._handlers.items() if isinstance(message, t) for h in hs]
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                log.exception("handler %r failed on %s", handler, type(message).__name__)
