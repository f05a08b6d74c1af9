"""``trustcam users`` and ``trustcam audit``: manage accounts from the server's shell, verify the audit log.

Whoever runs these has the server's files (database, key file), so they act as a local administrator; every
change is still written to the audit log, as done by ``cli:<os user>``.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from trustcam.cli.common import ConfigOption, error, say, settings_from, user_errors
from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role

if TYPE_CHECKING:
    from trustcam.security.access import AccessControl

users_app = typer.Typer(help="Manage user accounts (web UI and API).", no_args_is_help=True)
audit_app = typer.Typer(help="Read and verify the hash-chained audit log.", no_args_is_help=True)

UsernameArg = Annotated[str, typer.Argument(help="User name (lower-case letters, digits, . _ - @).")]


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(audit_app, name="audit")


def _service(config: ConfigOption) -> AccessControl:
    from trustcam.security.access import AccessControl
    from trustcam.storage.database import open_database

    settings = settings_from(config)
    return AccessControl(settings, open_database(settings.resolved_database_url))


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SecurityError(2, "the two passwords differ; nothing was changed")
    return first


@users_app.command("create")
def users_create(
    username: UsernameArg,
    config: ConfigOption = None,
    admin: Annotated[bool, typer.Option("--admin", help="Same as --role admin.")] = False,
    role: Annotated[Role | None, typer.Option("--role", help="viewer, operator, admin or auditor.")] = None,
    camera: Annotated[list[str] | None, typer.Option("--camera", help="Grant this camera (repeat); default all.")]
    = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    unmasked: Annotated[bool, typer.Option("--unmasked", help="May see behind cameras' privacy masks and export "
                                           "their evidence (no role implies it, admins included).")] = False,
    biometrics: Annotated[bool, typer.Option("--biometrics", help="May see faces unblurred and recognised "
                                             "identities, and export footage of face-recognition cameras (no role "
                                             "implies it, admins included).")] = False,
) -> None:
    """Create a user (the password is asked twice, or read from stdin)."""
    with user_errors():
        if (admin and role not in (None, Role.admin)) or (not admin and role is None):
            raise SecurityError(2, "give exactly one of --admin or --role ROLE")
        chosen: Role = role if role is not None else Role.admin
        service = _service(config)
        if camera and (unknown := sorted(set(camera) - set(service.settings.cameras))):
            raise SecurityError(2, f"unknown camera(s) {', '.join(unknown)}; configured: "
                                f"{', '.join(service.settings.cameras) or 'none'}")
        user = service.users.create(username.strip().lower(), _read_password(password_stdin), chosen, camera,
                                    unmasked=unmasked, biometrics=biometrics)
        service.record("user.create", username=_actor(), client="cli", target=user.username, role_set=chosen.value,
                       cameras=camera, unmasked=unmasked, biometrics=biometrics)
        service.close()
        mfa = " (must enrol TOTP at first login)" if service.mfa_required(user) else ""
        say(f"created {user.role.value} '{user.username}'{mfa}")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """List every user: role, cameras, MFA and disabled state."""
    with user_errors():
        for user in _service(config).users.all():
            cameras = "all" if user.cameras is None else ",".join(sorted(user.cameras)) or "none"
            flags = [f for f, on in (("mfa", user.mfa_enabled), ("unmasked", user.unmasked),
                                     ("biometrics", user.biometrics), ("DISABLED", user.disabled)) if on]
            typer.echo(f"{user.username}\t{user.role.value}\tcameras={cameras}\t{' '.join(flags)}".rstrip())


def _change(config: ConfigOption, username: str, action: str) -> None:
    with user_errors():
        service = _service(config)
        user = service.users.need(username)
        if action == "disable":
            service.users.update(user, disabled=True)
        elif action == "enable":
            service.users.update(user, disabled=False)
        elif action == "delete":
            service.users.delete(user)
        else:
            service.users.reset_mfa(user)
        service.record(f"user.{action}" if action != "reset-mfa" else "mfa.reset", username=_actor(), client="cli",
                       target=username)
        service.close()
        say(f"{username}: {action} done" + (" (every session ended)" if action != "enable" else ""))


@users_app.command("disable")
def users_disable(username: UsernameArg, config: ConfigOption = None) -> None:
    """Refuse the user's logins and end their sessions (their API tokens stop working too)."""
    _change(config, username, "disable")


@users_app.command("enable")
def users_enable(username: UsernameArg, config: ConfigOption = None) -> None:
    """Allow a disabled user to log in again."""
    _change(config, username, "enable")


@users_app.command("delete")
def users_delete(username: UsernameArg, config: ConfigOption = None) -> None:
    """Delete the user with their sessions and API tokens (their audit entries stay)."""
    _change(config, username, "delete")


@users_app.command("reset-mfa")
def users_reset_mfa(username: UsernameArg, config: ConfigOption = None) -> None:
    """Forget the user's TOTP and recovery codes (lost phone); they enrol again at the next login."""
    _change(config, username, "reset-mfa")


def _grant(config: Path | None, username: str, permission: Literal["unmasked", "biometrics"], revoke: bool,
           sees: str) -> None:
    """Give or take one of the user's viewing permissions, audit-logged as ``<permission>.grant|revoke``."""
    with user_errors():
        service = _service(config)
        user = service.users.update(service.users.need(username), **{permission: not revoke})
        service.record(f"{permission}.{'revoke' if revoke else 'grant'}", username=_actor(), client="cli",
                       target=user.username)
        service.close()
        say(f"{user.username}: {'no longer sees' if revoke else 'now sees'} {sees}")


@users_app.command("grant-unmasked")
def users_grant_unmasked(
    username: UsernameArg,
    config: ConfigOption = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the permission away instead.")] = False,
) -> None:
    """Let the user see behind cameras' privacy masks and export their evidence (--revoke: no longer). Open live
    views of a user who loses it end within seconds."""
    _grant(config, username, "unmasked", revoke, "behind privacy masks")


@users_app.command("grant-biometrics")
def users_grant_biometrics(
    username: UsernameArg,
    config: ConfigOption = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the permission away instead.")] = False,
) -> None:
    """Let the user see faces unblurred and recognised identities on face-recognition cameras, and export their
    evidence (--revoke: no longer). Open live views of a user who loses it end within seconds."""
    _grant(config, username, "biometrics", revoke, "faces unblurred and identities")


WitnessOption = Annotated[Path | None, typer.Option(
    "--witness", help="Also compare with a witness kept outside the database: the witness log "
    "(vault.witness_file, by default <vault.mirror>/witness.log), a service log or journal dump, or "
    "`mosquitto_sub -v -t '<prefix>/witness/#'` output. Detects a database rolled back to an older state.")]


@users_app.command("unlock")
def users_unlock(
    username: Annotated[str | None, typer.Argument(help="Lift this user name's lockouts (from every address).")]
    = None,
    config: ConfigOption = None,
    address: Annotated[str | None, typer.Option("--address", help="Lift the lockouts of this client address.")]
    = None,
    everything: Annotated[bool, typer.Option("--all", help="Forget every failed login and lockout.")] = False,
) -> None:
    """Lift login lockouts (the real user locked out by someone's guesses); lists the lockouts in force first."""
    with user_errors():
        if not (username or address or everything):
            raise SecurityError(2, "give a USER, --address ADDR, or --all (nothing was changed)")
        service = _service(config)
        for scope, name, client, seconds in service.lockout.locked():
            say(f"locked: {name + ' from ' if name else 'address '}{client or '?'} ({scope}), {seconds} s left")
        name = username.strip().lower() if username else None
        removed = service.lockout.unlock(None if everything else name, None if everything else address)
        service.record("lockout.unlock", username=_actor(), client="cli", target=name or address or "*",
                       address=address, everything=everything, records=removed)
        service.close()
        say(f"unlocked {'everything' if everything else ' and '.join(filter(None, (name, address)))} "
            f"({removed} failed-login records forgotten)")


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None, witness: WitnessOption = None) -> None:
    """Check the audit log's hash chain and its signed checkpoints (due every 20 entries and within
    server.audit_checkpoint_every_s); exit 1 naming the first edited, deleted, reordered, cut-off or unsigned
    entry, a forged checkpoint, or (--witness) a checkpoint the witness holds but the database lost."""
    from trustcam.storage.witness import check_audit, read_witness

    with user_errors():
        service = _service(config)
        result = service.audit_log.verify()
        say(f"checkpoint signing key (Ed25519, sha256 of the raw public key): {result.key_fingerprint}; compare it "
            "with the one you pinned")
        for note in result.notes[:5]:
            say(f"note: {note}")
        if len(result.notes) > 5:
            say(f"note: {len(result.notes) - 5} more late-signed ranges")
        problems = [] if result.ok else [result.describe()]
        if witness is not None:
            read = read_witness(witness, bytes.fromhex(service.audit_log.public_key_hex))
            for problem in read.problems:  # untrusted lines: reported, never used (the database is judged without them)
                say(f"warning: {problem}")
            problems += check_audit(service.engine, read)
            if not problems:
                say(f"witness {witness}: {sum(e.kind == 'audit' for e in read.entries)} audit checkpoint(s) agree "
                    "with the database")
        for problem in problems:
            error(problem)
        if problems:
            raise typer.Exit(1)
        say(result.describe())


@audit_app.command("show")
def audit_show(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(help="Newest entries to show.", min=1)] = 50,
    user: Annotated[str | None, typer.Option(help="Only this user's entries.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (e.g. login, view_live).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print audit entries, oldest of the selection first."""
    with user_errors():
        entries, total = _service(config).audit_log.query(user=user, action=action, limit=limit)
        for entry in reversed(entries):
            if as_json:
                typer.echo(json.dumps(entry, sort_keys=True))
                continue
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
            details = json.dumps(entry["details"], sort_keys=True) if entry["details"] else ""
            typer.echo(f"{entry['seq']:>6} {when} {entry['user'] or '-'} ({entry['role'] or '-'}) {entry['client']}"
                       f" {entry['action']} {entry['target']} {entry['outcome']} {details}".rstrip())
        say(f"{len(entries)} of {total} entries")
