"""Tables of the access-control area (users, sessions, MFA challenges, API tokens, login attempts, audit log
and its signed checkpoints).

They share ``trustcam.storage.schema.Base`` so one Alembic history covers the whole database (migrations 0004,
0006). No secret is stored in a form that can be used: passwords as argon2id hashes, session ids, challenges and
token secrets as sha256, recovery codes as sha256 of 80-bit random codes, TOTP secrets encrypted (AES-GCM).
"""

from __future__ import annotations

from sqlalchemy import JSON, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trustcam.storage.schema import Base


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    cameras: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None: every camera
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)  # encrypted, active
    totp_pending: Mapped[str | None] = mapped_column(String(255), nullable=True)  # encrypted, not yet confirmed
    totp_last_step: Mapped[int] = mapped_column(Integer, default=0)  # a code is never accepted twice
    mfa_enabled: Mapped[int] = mapped_column(Integer, default=0)
    recovery_codes: Mapped[list[str]] = mapped_column(JSON, default=list)  # sha256 hex of the unused ones
    disabled: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)
    unmasked: Mapped[int] = mapped_column(Integer, default=0)  # sees behind privacy masks (migration 0008)
    biometrics: Mapped[int] = mapped_column(Integer, default=0)  # sees faces unblurred and identities (0012)


class SessionRow(Base):
    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie value
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    created: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float)  # absolute end
    client: Mapped[str] = mapped_column(String(64))


class ChallengeRow(Base):
    """Password accepted, second factor pending (short-lived, few attempts)."""

    __tablename__ = "auth_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the challenge
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    expires: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public part of tc_<id>_<secret>
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float)
    last_used: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked: Mapped[float | None] = mapped_column(Float, nullable=True)


class LoginAttemptRow(Base):
    """Failed logins and lockouts, per user name and per client address (what lockout decisions read)."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float, index=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "failure" | "lockout"
    scope: Mapped[str] = mapped_column(String(16), default="")  # lockout rows: "user" | "client"


class AuditRow(Base):
    """One audit entry; ``hash`` = sha256 over the canonical JSON of every other field (``prev_hash`` included)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[float] = mapped_column(Float, index=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    credential: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    """A signed statement "the audit log had entry ``seq`` with ``hash``" (Ed25519, the vault's signing key).

    Written every ``audit.CHECKPOINT_EVERY`` entries and at clean shutdown, so a log cut short or rebuilt
    from scratch no longer matches what was signed (migration 0006).
    """

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[float] = mapped_column(Float)
    signature: Mapped[str] = mapped_column(String(128))  # hex
    public_key: Mapped[str] = mapped_column(String(64))  # hex, raw Ed25519
