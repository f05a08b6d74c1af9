"""Helpers shared by test modules (importable because pytest puts ``tests/`` on ``sys.path``, see pyproject)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on the loopback right now, for a real server started by a test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
