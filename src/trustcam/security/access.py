"""The access-control service: one object that logs people in and knows every credential, shared by the web
layer, the CLI and the benchmark. Every security-relevant outcome is written to the audit log here."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from trustcam.config.schema import Settings
from trustcam.security import setup
from trustcam.security.audit import AuditLog
from trustcam.security.credentials import TOKEN_ROLES, Credentials, SessionInfo, TokenInfo, digest, public_id
from trustcam.security.errors import SecurityError
from trustcam.security.lockout import Lockout
from trustcam.security.roles import Role
from trustcam.security.secretbox import SecretBox
from trustcam.security.users import User, UserStore
from trustcam.storage.keys import load_signing_key
from trustcam.storage.witness import CheckpointWitness, build_witness

log = logging.getLogger(__name__)

WRONG_LOGIN = "wrong user name or password"


@dataclass(frozen=True)
class LoginResult:
    user: User
    session: str | None = None  # cookie value when the login is complete
    challenge: str | None = None  # when a second factor is still needed


class AccessControl:
    """``witness`` receives every audit checkpoint; by default the service log and the witness file (a CLI command
    has no MQTT connection: `trustcam run` passes the service's witness, which also publishes on MQTT)."""

    def __init__(self, settings: Settings, engine: Engine, witness: CheckpointWitness | None = None) -> None:
        server = settings.server
        self.settings = settings
        self.engine = engine
        self.box = SecretBox(server.auth_key_file, settings.data_dir)
        self.users = UserStore(engine, self.box)
        self.credentials = Credentials(engine, server.session_idle_minutes * 60.0, server.session_max_hours * 3600.0)
        self.lockout = Lockout(engine, server.login_max_failures, server.lockout_minutes * 60.0,
                               server.address_max_failures)
        self.audit_log = AuditLog(engine, load_signing_key(settings.vault),  # the vault's key signs checkpoints
                                  witness=witness if witness is not None else build_witness(settings),
                                  checkpoint_every_s=server.audit_checkpoint_every_s)
        self._setup_lock = threading.Lock()

    def start(self) -> None:
        """`trustcam run`: sign the audit log's head on a timer, so no entry stays unsigned longer than
        ``server.audit_checkpoint_every_s`` (CLI commands sign at exit instead)."""
        self.audit_log.start_timer()

    def close(self) -> None:
        """Clean shutdown: stop the timer and sign the audit log's head, so every entry written is covered."""
        self.audit_log.stop_timer()
        self.audit_log.checkpoint()

    def mfa_required(self, user: User) -> bool:
        return user.role in self.settings.server.mfa_required_for

    def mfa_pending(self, user: User) -> bool:
        """The user must still enrol TOTP: their sessions may do nothing else until they do."""
        return self.mfa_required(user) and not user.mfa_enabled

    def record(self, action: str, *, user: User | None = None, username: str = "", credential: str = "",
               client: str = "", target: str = "", outcome: str = "ok", role: str = "", **details: Any) -> None:
        self.audit_log.append(action, user=user.username if user else username,
                              role=user.role.value if user else role, credential=credential, client=client,
                              target=target, outcome=outcome, details=details)

    # --- first start ----------------------------------------------------------------------------------------

    def setup(self, token: str, username: str, password: str, client: str) -> User:
        with self._setup_lock:
            if self.users.count():
                raise SecurityError(409, "setup is already done (a user exists); log in instead")
            if not setup.check_setup_token(self.settings, token):
                self.record("setup", username=username, client=client, outcome="failed", reason="wrong token")
                raise SecurityError(403, f"wrong setup token; use the one printed by `trustcam run` (also in "
                                    f"{setup.token_path(self.settings)})")
            user = self.users.create(username, password, Role.admin)
            setup.consume_setup_token(self.settings)
        self.record("setup", user=user, client=client, target=user.username)
        return user

    # --- login ----------------------------------------------------------------------------------------------

    def _refuse_if_locked(self, username: str, client: str) -> None:
        if (wait := self.lockout.retry_after(username, client)) is not None:
            self.record("login", username=username if self.users.get(username) else "", client=client,
                        outcome="locked", retry_after_s=wait)
            raise SecurityError(429, f"too many failed logins; try again in {wait} s", retry_after=wait)

    def _fail(self, username: str, client: str, action: str, known: bool) -> None:
        self.record(action, username=username if known else "", client=client, outcome="failed",
                    **({} if known else {"unknown_user": True}))
        for scope, seconds in self.lockout.failure(username, client):
            self.record("lockout", username=username if known else "", client=client, outcome="locked",
                        scope=scope, seconds=seconds)

    def login(self, username: str, password: str, client: str) -> LoginResult:
        """Step 1: the password. Returns a session, or a challenge when the user has MFA; 401/429 otherwise."""
        username = username.strip().lower()
        self._refuse_if_locked(username, client)
        user = self.users.check_password(username, password)  # one argon2 verification, known user or not
        if user is None:
            self._fail(username, client, "login", self.users.get(username) is not None)
            raise SecurityError(401, WRONG_LOGIN)
        if user.mfa_enabled:
            return LoginResult(user, challenge=self.credentials.open_challenge(user.id))
        return self._complete(user, client, factor="password")

    def second_factor(self, challenge: str, code: str, client: str) -> LoginResult:
        """Step 2: a TOTP code or a recovery code for the challenge from step 1."""
        user = self.users.by_id(self.credentials.use_challenge(challenge))
        if user is None or user.disabled:
            raise SecurityError(401, "login challenge unknown, expired or used up; log in again with the password")
        self._refuse_if_locked(user.username, client)
        factor = self.users.check_second_factor(user, code)
        if factor is None:
            self._fail(user.username, client, "login.mfa", True)
            raise SecurityError(401, "wrong or already used code; enter the current 6-digit code (or a recovery code)")
        self.credentials.close_challenge(challenge)
        if factor == "recovery_code":
            self.record("mfa.recovery_code_used", user=user, client=client,
                        codes_left=self.users.recovery_codes_left(user))
        return self._complete(user, client, factor=factor)

    def _complete(self, user: User, client: str, factor: str) -> LoginResult:
        secret = self.credentials.open_session(user.id, client)
        self.lockout.success(user.username, client)
        self.record("login", user=user, client=client, credential=public_id(digest(secret)), factor=factor,
                    mfa_enrolment_required=self.mfa_pending(user))
        return LoginResult(user, session=secret)

    def reauthenticate(self, user: User, password: str, code: str | None, client: str, action: str,
                       need_code: bool = True) -> None:
        """Prove, before minting a credential or changing the password, that the caller is still the user and not
        someone holding a stolen session: the password again and, with MFA (``need_code``), a current TOTP or
        recovery code. A wrong answer is audited and counts like a failed login (lockout applies)."""
        self._refuse_if_locked(user.username, client)
        ok = self.users.verify(user, password)
        if ok and need_code and user.mfa_enabled:
            ok = code is not None and self.users.check_second_factor(user, code) is not None
        if not ok:
            self._fail(user.username, client, action, True)
            what = "password or code" if need_code and user.mfa_enabled else "password"
            raise SecurityError(403, f"wrong {what}: send your current password"
                                + (" and a current 6-digit code from your authenticator app (or a recovery code)"
                                   if need_code and user.mfa_enabled else "") + " to confirm it is you")

    # --- authenticating requests ----------------------------------------------------------------------------

    def by_session(self, secret: str) -> tuple[User, SessionInfo] | None:
        info = self.credentials.session(secret)
        if info is None:
            return None
        user = self.users.by_id(info.user_id)
        if user is None or user.disabled:
            self.credentials.close_session(info.digest)
            return None
        return user, info

    def by_token(self, value: str) -> tuple[User, TokenInfo] | None:
        token = self.credentials.token(value)
        if token is None:
            return None
        user = self.users.by_id(token.user_id)
        if user is None or user.disabled or token.role not in TOKEN_ROLES[user.role]:
            return None  # the owner left, was disabled or lost the rights the token was made with
        if token.role in self.settings.server.mfa_required_for and not user.mfa_enabled:
            return None  # a role that needs MFA, owned by someone without it (e.g. after an MFA reset)
        return user, token
