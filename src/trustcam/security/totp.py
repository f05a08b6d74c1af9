"""TOTP second factor (RFC 6238, 30 s, ±1 step) with replay protection, and one-time recovery codes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno

STEP_S = 30
WINDOW = 1  # accept the previous and next step too (clock skew)
RECOVERY_CODES = 10
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: read off paper


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits


def provisioning(secret: str, username: str) -> tuple[str, str]:
    """The otpauth URI and the same as an inline SVG QR code (authenticator apps scan it)."""
    uri = pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=username, issuer_name="trustcam")
    return uri, segno.make(uri, error="m").svg_inline(scale=4)


def matching_step(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to (within ±WINDOW), if it is later than ``last_step`` (never reused)."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret, interval=STEP_S)
    current = int((time.time() if now is None else now) // STEP_S)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if step > last_step and hmac.compare_digest(totp.at(step * STEP_S), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Ten codes of 16 characters (80 bits each): high entropy, so an unsalted sha256 is enough to store them."""
    return ["-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(4))
            for _ in range(RECOVERY_CODES)]


def recovery_hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().replace("-", "").replace(" ", "").encode()).hexdigest()


def looks_like_recovery_code(code: str) -> bool:
    return len(code.strip().replace("-", "").replace(" ", "")) == 16
