"""Helpers shared by test modules (importable because pytest puts ``tests/`` on ``sys.path``, see pyproject)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on the loopback right now, for a real server started by a test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
