"""Per-camera phases: cameras started together must not do their periodic heavy work in the same second.

A tiled whole-frame pass (~25 model calls at 1080p) or a canary probe made by every camera at once fills the node's
shared detector queue, and the cameras' one-second frame queues overflow with the CPU otherwise half idle. Each
camera's schedule is shifted by a fraction fixed by its name (stable across restarts, different between cameras).
"""

from __future__ import annotations

import hashlib


def camera_phase(camera: str) -> float:
    """A fraction in [0, 1), fixed per camera name, spread evenly over cameras."""
    return int.from_bytes(hashlib.sha256(camera.encode()).digest()[:4], "big") / 2**32
