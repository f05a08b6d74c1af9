"""``trustcam keys`` and ``trustcam evidence``: KEK rotation, evidence export, verification, chain checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from trustcam.cli.common import error, say, settings_from, user_errors
from trustcam.config import ConfigError

keys_app = typer.Typer(help="Manage the vault's key-encryption key.", no_args_is_help=True)
evidence_app = typer.Typer(help="Export and verify tamper-evident evidence bundles.", no_args_is_help=True)

RequiredConfig = Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file.")]
SIGNER_UNCONFIRMED = 3  # `evidence verify`: intact and validly signed, but by a key nobody confirmed


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(evidence_app, name="evidence")


@contextmanager
def _vault_errors() -> Iterator[None]:
    """VaultError is a runtime failure: one line, exit 1 (``user_errors`` handles config and database)."""
    from trustcam.storage.vault import VaultError

    try:
        yield
    except VaultError as exc:
        error(exc)
        raise typer.Exit(1) from None


@keys_app.command("rotate")
def keys_rotate(config: RequiredConfig) -> None:
    """Replace the KEK and re-wrap every data key; video files are not re-encrypted."""
    from functools import partial

    from trustcam.storage.database import open_database
    from trustcam.storage.faces import rewrap_face_keys
    from trustcam.storage.keys import rotate_kek

    with user_errors(), _vault_errors():
        settings = settings_from(config)
        report = rotate_kek(settings.vault, open_database(settings.resolved_database_url),
                            also=[partial(rewrap_face_keys, settings.data_dir)])
        typer.echo(f"KEK rotated to {report.new_id} (previous: {', '.join(report.old_ids) or 'none'}): "
                   f"{report.segments} segment key(s) and {report.blobs} snapshot and face key(s) re-wrapped")
        for path in report.removed:
            typer.echo(f"removed retired KEK {path}")
        for key_id, count in report.kept.items():
            typer.echo(f"kept retired KEK {key_id}: {count} data key(s) still use it")
        for problem in report.problems:
            error(problem)
        if report.problems:
            raise typer.Exit(1)


@evidence_app.command("export")
def evidence_export(
    event_id: Annotated[str, typer.Argument(help="Event id (from the database).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle to write (a .zip file).")],
    config: RequiredConfig,
    margin: Annotated[float, typer.Option(help="Seconds of footage before and after the event.")] = 5.0,
) -> None:
    """Write an event's evidence bundle (mode 0600, built in memory, written atomically): clips, manifest, hash-chain
    excerpt, the checkpoints signed while recording, public key. Refuses footage no checkpoint covers yet."""
    from trustcam.storage.database import open_database
    from trustcam.storage.evidence import export_event
    from trustcam.storage.vault import Vault, public_key_fingerprint

    with user_errors(), _vault_errors():
        settings = settings_from(config)
        engine = open_database(settings.resolved_database_url)
        vault = Vault(settings.vault, engine)
        path = export_event(vault, engine, event_id, out, margin_s=margin)
        typer.echo(f"{path}: evidence bundle written and verified")
        typer.echo(f"public key fingerprint: {public_key_fingerprint(vault.public_key)}")


def _instant(value: str, option: str) -> float:
    """ISO 8601 (no zone: UTC) or epoch seconds → epoch seconds; a ConfigError naming the option otherwise."""
    from datetime import UTC, datetime

    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{option} {value!r}: not a time; use ISO 8601 such as 2024-05-01T22:00:00 (UTC unless "
                          "it names a zone, e.g. +02:00) or epoch seconds") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@evidence_app.command("export-range")
def evidence_export_range(
    camera: Annotated[str, typer.Argument(help="Camera name (as recorded in the vault).")],
    start: Annotated[str, typer.Option("--start", help="Range start: ISO 8601 (UTC unless a zone is given) or "
                                       "epoch seconds.")],
    end: Annotated[str, typer.Option("--end", help="Range end, same format.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle to write (a .zip file).")],
    config: RequiredConfig,
) -> None:
    """Write the evidence bundle of a camera's footage between --start and --end (mode 0600, built in memory,
    written atomically): the same signed bundle as an event export, its manifest marked as a range export."""
    from trustcam.storage.database import open_database
    from trustcam.storage.evidence import build_range_bundle, write_private
    from trustcam.storage.vault import Vault, public_key_fingerprint

    with user_errors(), _vault_errors():
        begin, finish = _instant(start, "--start"), _instant(end, "--end")
        if finish <= begin:
            raise ConfigError(f"--end {end} is not after --start {start}; pass a range that ends after it starts")
        settings = settings_from(config)
        engine = open_database(settings.resolved_database_url)
        vault = Vault(settings.vault, engine)
        write_private(out, build_range_bundle(vault, engine, camera, begin, finish))
        typer.echo(f"{out}: evidence bundle of camera {camera} written and verified")
        typer.echo(f"public key fingerprint: {public_key_fingerprint(vault.public_key)}")


@evidence_app.command("verify")
def evidence_verify(
    bundle: Annotated[Path, typer.Argument(help="Evidence bundle (.zip).")],
    fingerprint: Annotated[str | None, typer.Option(help="The operator's published key fingerprint (sha256 hex).")]
    = None,
    any_key: Annotated[bool, typer.Option("--any-key", help="Accept a valid signature by any key (exit 0 without "
                                          "--fingerprint): only proves the bundle is unchanged since it was signed.")]
    = False,
    max_sign_delay: Annotated[float, typer.Option(
        "--max-sign-delay", min=0, help="Fail when footage was first signed more than this many seconds after it "
        "was recorded: a late signature (e.g. made at export) proves nothing about the time before it.")] = 3600.0,
) -> None:
    """Check a bundle using only its own contents. Exit 0 and VERIFIED (signed by the --fingerprint key, or any key
    with --any-key); exit 3 when it is intact and validly signed but no --fingerprint confirms who signed it (anyone
    can re-sign a forged bundle with their own key); exit 1 and each problem otherwise."""
    from trustcam.storage.evidence import verify_bundle

    if not bundle.is_file():
        error(f"{bundle}: not found; pass the evidence bundle (.zip) to verify")
        raise typer.Exit(1)
    report = verify_bundle(bundle, expected_fingerprint=fingerprint, max_sign_delay=max_sign_delay)
    if report.ok and fingerprint is None and not any_key:
        typer.echo("SIGNATURE VALID, SIGNER UNCONFIRMED")
        for fact in report.facts:
            typer.echo(f"  {fact}")
        error(f"the bundle is intact and signed by key {report.fingerprint}, but nothing says that key is the "
              "operator's: anyone can re-sign an altered bundle with a key of their own. Pass --fingerprint with "
              "the fingerprint the operator published (or --any-key to accept any signer)")
        raise typer.Exit(SIGNER_UNCONFIRMED)
    if report.ok:
        typer.echo("VERIFIED" if fingerprint is not None else "VERIFIED (signer not confirmed: --any-key)")
        for fact in report.facts:
            typer.echo(f"  {fact}")
        return
    typer.echo(f"NOT VERIFIED: {len(report.problems)} problem(s)")
    for problem in report.problems:
        typer.echo(f"  {problem}")
    raise typer.Exit(1)


@evidence_app.command("chain")
def evidence_chain(
    config: RequiredConfig,
    camera: Annotated[str | None, typer.Option(help="Only this camera (default: all).")] = None,
    deep: Annotated[bool, typer.Option(help="Also decrypt every segment and compare its sha256 (slow).")] = False,
    witness: Annotated[Path | None, typer.Option(
        help="Also compare with a witness kept outside the database (vault.witness_file, by default "
        "<vault.mirror>/witness.log; or a service log / journal dump): detects a database rolled back to an older "
        "state.")] = None,
) -> None:
    """Verify the hash chains, checkpoint signatures and files of the vault; exit 1 on any problem."""
    from trustcam.storage.database import open_database
    from trustcam.storage.vault import Vault

    with user_errors(), _vault_errors():
        settings = settings_from(config)
        vault = Vault(settings.vault, open_database(settings.resolved_database_url))
        cameras = [camera] if camera else vault.cameras()
        if camera and camera not in vault.cameras():
            raise ConfigError(f"--camera {camera}: no recording of this camera in the vault "
                              f"(cameras: {', '.join(vault.cameras()) or 'none'})")
        problems = vault.verify_chain(camera, deep=deep)
        if witness is not None:
            from trustcam.storage.witness import check_footage, read_witness

            read = read_witness(witness, bytes.fromhex(vault.public_key_hex))
            for untrusted in read.problems:  # reported, never used
                say(f"warning: {untrusted}")
            problems += check_footage(vault.engine, read, camera)
        for problem in problems:
            typer.echo(problem)
        if problems:
            say(f"chain verification failed: {len(problems)} problem(s)")
            raise typer.Exit(1)
        typer.echo(f"chain OK: {', '.join(cameras) or 'no recordings yet'}"
                   + (" (every segment decrypted and re-hashed)" if deep else ""))


@evidence_app.command("hold")
def evidence_hold(
    event_id: Annotated[str, typer.Argument(help="Event whose footage must be kept.")],
    config: RequiredConfig,
    release: Annotated[bool, typer.Option("--release", help="Lift the hold instead.")] = False,
) -> None:
    """Put an event's footage on legal hold (never expired, never evicted), or release it."""
    from trustcam.storage.database import open_database
    from trustcam.storage.retention import hold_event

    with user_errors(), _vault_errors():
        settings = settings_from(config)
        try:
            changed = hold_event(open_database(settings.resolved_database_url), event_id, held=not release)
        except KeyError:
            raise ConfigError(f"event {event_id}: no such event in {settings.resolved_database_url}") from None
        verb = "released" if release else "held"
        typer.echo(f"event {event_id} {verb}: {len(changed)} segment(s) changed")
