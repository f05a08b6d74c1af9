"""Server-side sessions, login challenges (second factor pending) and API tokens.

Only sha256 digests of the secrets are stored: a copy of the database cannot be replayed as a login.
A session's CSRF token is derived from its secret (HMAC), so it needs no storage and dies with the session.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, Row, bindparam, delete, select, update
from sqlalchemy.orm import Session

from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role
from trustcam.security.tables import ApiTokenRow, ChallengeRow, SessionRow

CHALLENGE_S = 300.0
CHALLENGE_ATTEMPTS = 5
LAST_USED_EVERY_S = 5.0  # a token's last_used is written at most this often: no database write per request
TOKEN_FORMAT = re.compile(r"^tc_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")

# Which token roles an owner may mint: never more than the owner's own rights.
TOKEN_ROLES: dict[Role, frozenset[Role]] = {
    Role.admin: frozenset({Role.admin, Role.operator, Role.viewer, Role.auditor}),
    Role.operator: frozenset({Role.operator, Role.viewer}),
    Role.viewer: frozenset({Role.viewer}),
    Role.auditor: frozenset({Role.auditor}),
}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(session_secret: str) -> str:
    return hmac.new(session_secret.encode(), b"trustcam csrf", hashlib.sha256).hexdigest()


def public_id(session_digest: str) -> str:
    """How audit entries name a session: a prefix of the stored digest (useless to an attacker)."""
    return f"session:{session_digest[:16]}"


@dataclass(frozen=True)
class SessionInfo:
    digest: str
    user_id: int
    created: float
    expires: float


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user_id: int
    name: str
    role: Role
    created: float
    expires: float
    last_used: float | None
    revoked: float | None


_TOKEN_BY_ID = select(ApiTokenRow.__table__).where(ApiTokenRow.id == bindparam("id"))  # built once, not per request


def _token(row: ApiTokenRow | Row[Any]) -> TokenInfo:
    return TokenInfo(row.id, row.user_id, row.name, Role(row.role), row.created, row.expires, row.last_used,
                     row.revoked)


class Credentials:
    def __init__(self, engine: Engine, idle_s: float, max_s: float) -> None:
        self.engine = engine
        self.idle_s = idle_s
        self.max_s = max_s

    # --- sessions -------------------------------------------------------------------------------------------

    def open_session(self, user_id: int, client: str) -> str:
        """A new session; returns the cookie value (256 random bits), never stored as such."""
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with Session(self.engine) as session, session.begin():
            session.add(SessionRow(id=digest(secret), user_id=user_id, created=now, last_seen=now,
                                   expires=now + self.max_s, client=client[:64]))
        return secret

    def session(self, secret: str) -> SessionInfo | None:
        """The live session for a cookie value (idle and absolute expiry enforced, last use refreshed)."""
        if not secret or len(secret) > 100:
            return None
        now = time.time()
        key = digest(secret)
        with Session(self.engine) as session, session.begin():
            row = session.get(SessionRow, key)
            if row is None:
                return None
            if now > row.expires or now - row.last_seen > self.idle_s:
                session.delete(row)
                return None
            if now - row.last_seen > 5:  # fewer writes: idle expiry has no need of sub-5 s precision
                row.last_seen = now
            return SessionInfo(row.id, row.user_id, row.created, row.expires)

    def close_session(self, key: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(SessionRow).where(SessionRow.id == key))

    def close_all_sessions(self, user_id: int) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(SessionRow).where(SessionRow.user_id == user_id))

    # --- login challenges (password OK, second factor pending) -----------------------------------------------

    def open_challenge(self, user_id: int) -> str:
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with Session(self.engine) as session, session.begin():
            session.execute(delete(ChallengeRow).where(ChallengeRow.expires < now))
            session.add(ChallengeRow(id=digest(secret), user_id=user_id, expires=now + CHALLENGE_S, attempts=0))
        return secret

    def use_challenge(self, secret: str) -> int:
        """The user id behind a challenge, counting one attempt; 401 when unknown, expired or used up."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ChallengeRow, digest(secret)) if 0 < len(secret) <= 100 else None
            if row is None or row.expires < time.time() or row.attempts >= CHALLENGE_ATTEMPTS:
                if row is not None:
                    session.delete(row)
                raise SecurityError(401, "login challenge unknown, expired or used up; log in again with the "
                                    "password")
            row.attempts += 1
            return row.user_id

    def close_challenge(self, secret: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(ChallengeRow).where(ChallengeRow.id == digest(secret)))

    # --- API tokens -----------------------------------------------------------------------------------------

    @staticmethod
    def check_token_request(owner_role: Role, name: str, days: int, max_days: int, role: Role | None = None
                            ) -> tuple[Role, str]:
        """The token's role and name, or the reason it cannot be made: checked before the password is asked for,
        so a malformed request neither costs an argon2 check nor uses up a TOTP code."""
        role = role or owner_role
        if role not in TOKEN_ROLES[owner_role]:
            allowed = ", ".join(sorted(TOKEN_ROLES[owner_role]))
            raise SecurityError(403, f"a {owner_role.value} cannot create a token with role {role.value} "
                                f"(allowed: {allowed})")
        if not 1 <= days <= max_days:
            raise SecurityError(422, f"days must be between 1 and {max_days} (server.api_token_max_days)")
        name = name.strip()
        if not 1 <= len(name) <= 64:
            raise SecurityError(422, "name the token (1-64 characters), e.g. 'prometheus scraper'")
        return role, name

    def create_token(self, user_id: int, owner_role: Role, name: str, days: int, max_days: int,
                     role: Role | None = None) -> tuple[str, TokenInfo]:
        """A new token ``tc_<id>_<secret>`` (returned once) with a role no higher than its owner's."""
        role, name = self.check_token_request(owner_role, name, days, max_days, role)
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = time.time()
        row = ApiTokenRow(id=token_id, user_id=user_id, name=name, role=role.value, secret_sha256=digest(secret),
                          created=now, expires=now + days * 86400.0, last_used=None, revoked=None)
        with Session(self.engine) as session, session.begin():
            session.add(row)
            session.flush()
            info = _token(row)
        return f"tc_{token_id}_{secret}", info

    def token(self, value: str) -> TokenInfo | None:
        """The live token for a bearer value (constant-time secret check; expiry and revocation enforced)."""
        match = TOKEN_FORMAT.match(value)
        if not match:
            return None
        now = time.time()
        # Core, not the ORM: this runs on every API request, and a mapped row cost more than the lookup itself.
        with self.engine.connect() as connection:
            row = connection.execute(_TOKEN_BY_ID, {"id": match.group(1)}).first()
            if row is None or not hmac.compare_digest(row.secret_sha256, digest(match.group(2))):
                return None
            if row.revoked is not None or row.expires < now:
                return None
            info = _token(row)
            if row.last_used is None or now - row.last_used > LAST_USED_EVERY_S:
                connection.execute(update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(last_used=now))
                connection.commit()
                info = replace(info, last_used=now)
            return info

    def tokens(self, user_id: int | None = None) -> list[TokenInfo]:
        query = select(ApiTokenRow).order_by(ApiTokenRow.created)
        if user_id is not None:
            query = query.where(ApiTokenRow.user_id == user_id)
        with Session(self.engine) as session:
            return [_token(r) for r in session.scalars(query)]

    def revoke_token(self, token_id: str, user_id: int | None = None) -> TokenInfo:
        """Revoke (``user_id``: only if it is theirs); 404 otherwise, so ids of others' tokens are not confirmed."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ApiTokenRow, token_id)
            if row is None or (user_id is not None and row.user_id != user_id):
                raise SecurityError(404, f"no API token with id '{token_id[:16]}'")
            if row.revoked is None:
                session.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(revoked=time.time()))
            session.flush()
            session.refresh(row)
            return _token(row)
