"""The user store: accounts, roles, camera grants, passwords and the TOTP enrolment state."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Row, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from trustcam.security import passwords, totp
from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role
from trustcam.security.secretbox import SecretBox
from trustcam.security.tables import ApiTokenRow, ChallengeRow, SessionRow, UserRow

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    cameras: frozenset[str] | None
    mfa_enabled: bool
    disabled: bool
    created: float
    updated: float
    unmasked: bool = False  # sees behind cameras' privacy masks (granted per user by an admin, whatever the role)
    biometrics: bool = False  # sees faces unblurred and identities (granted like unmasked, whatever the role)


def _user(row: UserRow | Row[Any]) -> User:
    return User(row.id, row.username, Role(row.role), None if row.cameras is None else frozenset(row.cameras),
                bool(row.mfa_enabled), bool(row.disabled), row.created, row.updated, bool(row.unmasked),
                bool(row.biometrics))


_USER_BY_ID = select(UserRow.id, UserRow.username, UserRow.role, UserRow.cameras, UserRow.mfa_enabled, UserRow.disabled,
                     UserRow.created, UserRow.updated, UserRow.unmasked,
                     UserRow.biometrics).where(UserRow.id == bindparam("id"))


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise SecurityError(422, f"user name '{username[:64]}' is not valid: use 1-64 lower-case letters, digits, "
                            "'.', '_', '-' or '@', starting with a letter or digit")
    return username


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise SecurityError(422, f"unknown role '{value}'; roles: {', '.join(r.value for r in Role)}") from None


class UserStore:
    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box

    # --- reading --------------------------------------------------------------------------------------------

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(UserRow)) or 0)

    def get(self, username: str) -> User | None:
        with Session(self.engine) as session:
            row = session.scalar(select(UserRow).where(UserRow.username == username))
            return _user(row) if row else None

    def by_id(self, user_id: int) -> User | None:
        """Core, not the ORM, and only the columns a :class:`User` has: every API request reads its principal."""
        with self.engine.connect() as connection:
            row = connection.execute(_USER_BY_ID, {"id": user_id}).first()
        return _user(row) if row else None

    def need(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            raise SecurityError(404, f"no user named '{username}'")
        return user

    def all(self) -> list[User]:
        with Session(self.engine) as session:
            return [_user(r) for r in session.scalars(select(UserRow).order_by(UserRow.username))]

    def active_admins(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(UserRow).where(
                UserRow.role == Role.admin.value, UserRow.disabled == 0)) or 0)

    # --- passwords ------------------------------------------------------------------------------------------

    def check_password(self, username: str, password: str) -> User | None:
        """The user if the password is right and the account enabled; always costs one argon2 verification."""
        with Session(self.engine) as session:
            row = session.scalar(select(UserRow).where(UserRow.username == username))
            stored = row.password_hash if row is not None else None
        if not passwords.verify_password(stored, password) or row is None or row.disabled:
            return None
        if passwords.needs_rehash(row.password_hash):
            with Session(self.engine) as session, session.begin():
                session.execute(update(UserRow).where(UserRow.id == row.id)
                                .values(password_hash=passwords.hash_password(password)))
        return _user(row)

    def verify(self, user: User, password: str) -> bool:
        """Re-check a signed-in user's password (e.g. before changing it)."""
        with Session(self.engine) as session:
            stored = session.scalar(select(UserRow.password_hash).where(UserRow.id == user.id))
        return passwords.verify_password(stored, password)

    def create(self, username: str, password: str, role: Role, cameras: list[str] | None = None,
               unmasked: bool = False, biometrics: bool = False) -> User:
        check_username(username)
        passwords.check_policy(password, username)
        now = time.time()
        hashed = passwords.hash_password(password)
        with Session(self.engine) as session, session.begin():
            if session.scalar(select(UserRow.id).where(UserRow.username == username)) is not None:
                raise SecurityError(409, f"user '{username}' already exists; pick another name or change that user")
            row = UserRow(username=username, role=role.value, cameras=None if cameras is None else sorted(cameras),
                          password_hash=hashed, recovery_codes=[], created=now,
                          updated=now, totp_last_step=0, mfa_enabled=0, disabled=0, unmasked=int(unmasked),
                          biometrics=int(biometrics))
            session.add(row)
            session.flush()
            return _user(row)

    @staticmethod
    def _end_credentials(session: Session, user_id: int) -> None:
        """End every session, pending login and API token of the user: after a password change or MFA reset, nothing
        obtained with the old secrets (perhaps by whoever made the change necessary) keeps working."""
        session.execute(delete(SessionRow).where(SessionRow.user_id == user_id))
        session.execute(delete(ChallengeRow).where(ChallengeRow.user_id == user_id))
        session.execute(update(ApiTokenRow).where(ApiTokenRow.user_id == user_id, ApiTokenRow.revoked.is_(None))
                        .values(revoked=time.time()))

    def set_password(self, user: User, new_password: str) -> None:
        """Set a new password (policy checked); every session and API token of the user ends."""
        passwords.check_policy(new_password, user.username)
        hashed = passwords.hash_password(new_password)
        with Session(self.engine) as session, session.begin():
            session.execute(update(UserRow).where(UserRow.id == user.id).values(
                password_hash=hashed, updated=time.time()))
            self._end_credentials(session, user.id)

    # --- changes by an admin --------------------------------------------------------------------------------

    def update(self, user: User, *, role: Role | None = None, cameras: list[str] | bool | None = False,
               disabled: bool | None = None, unmasked: bool | None = None,
               biometrics: bool | None = None) -> User:
        """Change role / cameras (``False``: unchanged, ``None``: all) / disabled / the ``unmasked`` and
        ``biometrics`` permissions (``None``: unchanged); disabling ends every session."""
        values: dict[str, object] = {"updated": time.time()}
        if role is not None:
            values["role"] = role.value
        if cameras is not False:
            values["cameras"] = None if cameras is None else sorted(cameras)  # type: ignore[arg-type]
        if disabled is not None:
            values["disabled"] = int(disabled)
        if unmasked is not None:
            values["unmasked"] = int(unmasked)
        if biometrics is not None:
            values["biometrics"] = int(biometrics)
        demoting = (role is not None and role != Role.admin) or bool(disabled)
        if user.role == Role.admin and not user.disabled and demoting and self.active_admins() <= 1:
            raise SecurityError(409, f"'{user.username}' is the last active admin; create or enable another admin "
                                "first (otherwise nobody could manage users)")
        with Session(self.engine) as session, session.begin():
            session.execute(update(UserRow).where(UserRow.id == user.id).values(**values))
            if disabled:
                session.execute(delete(SessionRow).where(SessionRow.user_id == user.id))
                session.execute(delete(ChallengeRow).where(ChallengeRow.user_id == user.id))
        return self.by_id(user.id)  # type: ignore[return-value]

    def delete(self, user: User) -> None:
        if user.role == Role.admin and not user.disabled and self.active_admins() <= 1:
            raise SecurityError(409, f"'{user.username}' is the last active admin; create another admin first")
        with Session(self.engine) as session, session.begin():
            for table in (SessionRow, ChallengeRow, ApiTokenRow):
                session.execute(delete(table).where(table.user_id == user.id))
            session.execute(delete(UserRow).where(UserRow.id == user.id))

    # --- MFA ------------------------------------------------------------------------------------------------

    def _aad(self, user: User) -> str:
        return f"totp:{user.id}:{user.username}"

    def start_enrolment(self, user: User) -> str:
        """A new TOTP secret, stored encrypted as *pending*; the active one (if any) stays until confirmed."""
        if user.mfa_enabled:
            raise SecurityError(409, "MFA is already active for this account; an admin can reset it "
                                f"(`trustcam users reset-mfa {user.username}`) if the device was lost")
        secret = totp.new_secret()
        with Session(self.engine) as session, session.begin():
            session.execute(update(UserRow).where(UserRow.id == user.id)
                            .values(totp_pending=self.box.seal(secret, self._aad(user))))
        return secret

    def confirm_enrolment(self, user: User, code: str) -> list[str]:
        """Activate the pending secret if ``code`` matches it; returns the new recovery codes (shown once)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(UserRow, user.id)
            if row is None or row.totp_pending is None:
                raise SecurityError(409, "no MFA enrolment in progress; call POST /api/me/mfa/enroll first")
            step = totp.matching_step(self.box.open(row.totp_pending, self._aad(user)), code, 0)
            if step is None:
                raise SecurityError(400, "the code does not match: check the authenticator app's clock and enter the "
                                    "current 6-digit code")
            codes = totp.new_recovery_codes()
            row.totp_secret, row.totp_pending, row.totp_last_step = row.totp_pending, None, step
            row.mfa_enabled, row.recovery_codes, row.updated = 1, [totp.recovery_hash(c) for c in codes], time.time()
            return codes

    def check_second_factor(self, user: User, code: str) -> str | None:
        """``"totp"`` or ``"recovery_code"`` if ``code`` is valid (and now used up), else None."""
        with Session(self.engine) as session, session.begin():
            row = session.get(UserRow, user.id)
            if row is None or not row.mfa_enabled or row.totp_secret is None:
                return None
            if totp.looks_like_recovery_code(code):
                digest = totp.recovery_hash(code)
                if digest in row.recovery_codes:
                    row.recovery_codes = [c for c in row.recovery_codes if c != digest]
                    return "recovery_code"
                return None
            step = totp.matching_step(self.box.open(row.totp_secret, self._aad(user)), code, row.totp_last_step)
            if step is None:
                return None
            done = session.execute(update(UserRow).where(UserRow.id == user.id, UserRow.totp_last_step < step)
                                   .values(totp_last_step=step))
            return "totp" if done.rowcount == 1 else None  # a concurrent login used the same code first

    def recovery_codes_left(self, user: User) -> int:
        with Session(self.engine) as session:
            row = session.get(UserRow, user.id)
            return len(row.recovery_codes) if row else 0

    def reset_mfa(self, user: User) -> None:
        """Forget the second factor and end every session and API token: the user enrols again at the next login."""
        with Session(self.engine) as session, session.begin():
            session.execute(update(UserRow).where(UserRow.id == user.id).values(
                totp_secret=None, totp_pending=None, totp_last_step=0, mfa_enabled=0, recovery_codes=[],
                updated=time.time()))
            self._end_credentials(session, user.id)
