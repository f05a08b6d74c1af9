"""Password hashing (argon2id) and the password policy (length, zxcvbn strength, not the user name).

Verification always runs one argon2 computation, even for an unknown user (against a dummy hash), so the
answer time does not reveal which user names exist.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

from trustcam.security.errors import SecurityError

MIN_LENGTH = 12
MAX_LENGTH = 256  # zxcvbn cost grows with length; nobody types more
MIN_SCORE = 3  # zxcvbn: "safely unguessable: moderate protection from offline slow-hash scenario"

# argon2id, RFC 9106 "second recommended option" (64 MiB, 3 passes, 4 lanes): ~0.1-0.3 s per login on a small
# server, which bounds online guessing; hashes made under other parameters are upgraded at the next login.
HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16)
_DUMMY_HASH = HASHER.hash("not a password: only makes unknown users cost the same time")


def check_policy(password: str, username: str) -> None:
    """Raise 422 naming why ``password`` is refused (and how to choose a better one)."""
    if len(password) < MIN_LENGTH:
        raise SecurityError(422, f"password too short: {len(password)} characters, at least {MIN_LENGTH} needed "
                            "(a few unrelated words make a long, memorable password)")
    if len(password) > MAX_LENGTH:
        raise SecurityError(422, f"password too long: at most {MAX_LENGTH} characters")
    if username and username.lower() in password.lower():
        raise SecurityError(422, "password must not contain the user name")
    result = zxcvbn(password[:100], user_inputs=[username, "trustcam"])
    if result["score"] < MIN_SCORE:
        feedback = result.get("feedback") or {}
        reasons = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
        why = " ".join(r.strip() for r in reasons if r and r.strip()) or "It is easy to guess."
        raise SecurityError(422, f"password too weak (strength {result['score']}/4, at least {MIN_SCORE} needed): "
                            f"{why}")


class PasswordGate:
    """At most ``slots`` argon2 computations at once, at most ``queue`` more waiting (each up to ``wait_s``);
    beyond that a 503 with Retry-After at once, without running argon2.

    Why: each check takes 64 MiB and a CPU for ~0.2 s on the web server's shared thread pool. Unbounded, a flood of
    logins takes every pool thread (health and signed-in pages stop answering) and 64 MiB per thread of memory.
    """

    def __init__(self, slots: int, queue: int, wait_s: float = 2.0, retry_after: int = 2) -> None:
        self.slots, self.queue, self.wait_s, self.retry_after = slots, queue, wait_s, retry_after
        self._running = threading.BoundedSemaphore(slots)
        self._admitted = threading.BoundedSemaphore(slots + queue)

    @contextmanager
    def slot(self) -> Iterator[None]:
        busy = SecurityError(503, f"the server is busy checking other passwords; try again in {self.retry_after} s",
                             retry_after=self.retry_after)
        if not self._admitted.acquire(blocking=False):
            raise busy
        try:
            if not self._running.acquire(timeout=self.wait_s):
                raise busy
            try:
                yield
            finally:
                self._running.release()
        finally:
            self._admitted.release()


def _default_slots() -> int:
    """2-4 parallel checks: one per CPU, and no more than a quarter of the memory at 64 MiB each."""
    cpus = os.cpu_count() or 2
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 1 << 30
    return max(1, min(4, max(2, cpus), memory // 4 // (HASHER.memory_cost * 1024)))


GATE = PasswordGate(_default_slots(), queue=2 * _default_slots())


def hash_password(password: str) -> str:
    with GATE.slot():
        return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; with ``stored_hash`` None a dummy hash is checked (same cost).
    503 (:class:`SecurityError`) when too many checks are already running or waiting (see :class:`PasswordGate`)."""
    with GATE.slot():
        try:
            return HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def needs_rehash(stored_hash: str) -> bool:
    """The hash was made with other parameters than today's: replace it after a successful login."""
    try:
        return HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
