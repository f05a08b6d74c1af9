"""``trustcam faces``: enrol with consent, list, erase, export (right of access), calibrate the match threshold.

Whoever runs these has the server's files, so they act as a local administrator; enrolment, erasure, export and
expiry shredding are written to the audit log as done by ``cli:<os user>`` (or ``--by``). No command prints a
template.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trustcam.cli.common import ConfigOption, error, say, settings_from, user_errors
from trustcam.errors import UserError

if TYPE_CHECKING:
    from trustcam.config import Settings
    from trustcam.storage.faces import FaceStore

faces_app = typer.Typer(help="Face recognition: enrol with consent, erase, export, calibrate.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The person's name as it will appear on events (sub_label).")]


class FaceCommandError(UserError):
    """A face command's input is wrong; exit 2."""

    exit_code = 2


def register(app: typer.Typer) -> None:
    app.add_typer(faces_app, name="faces")


def _store(settings: Settings) -> FaceStore:
    from trustcam.storage.database import open_database
    from trustcam.storage.faces import FaceStore
    from trustcam.storage.keys import Keyring

    return FaceStore(open_database(settings.resolved_database_url), Keyring(settings.vault), settings.data_dir)


def _audit(settings: Settings, store: FaceStore, action: str, actor: str, target: str, **details: object) -> None:
    from trustcam.security.access import AccessControl

    service = AccessControl(settings, store.engine)
    try:
        service.record(action, username=actor, client="cli", target=target, **details)
    finally:
        service.close()


def _actor(by: str | None = None) -> str:
    return by.strip() if by and by.strip() else f"cli:{getpass.getuser()}"


def _shred_expired(settings: Settings, store: FaceStore) -> None:
    """Every face command first shreds expired enrolments, so none outlives its date by more than a command."""
    for erased in store.shred_expired():
        _audit(settings, store, "faces.expire", "trustcam", erased.name, templates=erased.templates,
               events_relabelled=erased.events_relabelled)
        say(f"'{erased.name}': enrolment expired, templates shredded")


def parse_expiry(value: str) -> float:
    """``YYYY-MM-DD`` (00:00 UTC of that day) or an ISO 8601 date-time (UTC when it names no zone)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FaceCommandError(f"--expires {value!r}: give a date as YYYY-MM-DD (or an ISO 8601 date-time)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@faces_app.command("enroll")
def faces_enroll(
    name: NameArg,
    images: Annotated[list[Path], typer.Argument(help="Photos of this person alone (one face each).")],
    consent: Annotated[str, typer.Option("--consent", help="The legal basis or consent given, as stated.")],
    expires: Annotated[str | None, typer.Option("--expires", help="Shred the enrolment on this date "
                                                "(YYYY-MM-DD).")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who enrols (default: cli:<OS user>).")] = None,
    config: ConfigOption = None,
) -> None:
    """Enrol a person from photos with exactly one face each; every refused photo is named with the reason and
    nothing is stored unless all are usable."""
    from trustcam.storage.faces import Template
    from trustcam.vision.faces import FaceError, FaceRecognizer, load_image, single_face

    with user_errors():
        settings = settings_from(config)
        expires_at = parse_expiry(expires) if expires else None
        if not consent.strip():
            raise FaceCommandError("--consent is empty; state the legal basis or the person's consent")
        recognizer = FaceRecognizer()
        templates: list[Template] = []
        problems: list[str] = []
        for path in images:
            try:
                image = load_image(path)
                face = single_face(recognizer, image, str(path))
            except FaceError as exc:
                problems.append(str(exc))
                continue
            templates.append(Template(recognizer.embed(image, face), hashlib.sha256(path.read_bytes()).hexdigest(),
                                      face.quality.score))
        if problems:
            for problem in problems:
                error(problem)
            raise FaceCommandError(f"'{name}' not enrolled: {len(problems)} of {len(images)} image(s) refused; "
                                   "nothing was stored")
        store = _store(settings)
        _shred_expired(settings, store)
        actor = _actor(by)
        identity = store.enroll(name, templates, consent=consent, by=actor, expires_at=expires_at)
        _audit(settings, store, "faces.enroll", actor, identity.name, templates=identity.templates,
               expires_at=expires, consent_sha256=hashlib.sha256(identity.consent.encode()).hexdigest())
        until = f", expires {expires}" if expires else ""
        say(f"enrolled '{identity.name}' from {identity.templates} image(s){until}")


@faces_app.command("list")
def faces_list(config: ConfigOption = None) -> None:
    """Enrolled people: since when, by whom, until when, how many templates (never the templates)."""
    from trustcam.storage.faces import _iso

    with user_errors():
        settings = settings_from(config)
        store = _store(settings)
        _shred_expired(settings, store)
        for identity in store.identities():
            until = _iso(identity.expires_at) if identity.expires_at is not None else "no expiry"
            typer.echo(f"{identity.name}\ttemplates={identity.templates}\tenrolled={_iso(identity.created_at)}"
                       f"\tby={identity.created_by}\texpires={until}")


@faces_app.command("erase")
def faces_erase(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
) -> None:
    """Crypto-shred the person's templates (irreversible) and replace their name on past events with "erased"."""
    with user_errors():
        settings = settings_from(config)
        store = _store(settings)
        store.need(name)
        if not yes and not typer.confirm(f"erase '{name}' for good (templates cannot be recovered)?"):
            raise typer.Exit(1)
        erased = store.erase(name)
        _audit(settings, store, "faces.erase", _actor(), erased.name, templates=erased.templates,
               events_relabelled=erased.events_relabelled)
        say(f"erased '{erased.name}': {erased.templates} template(s) shredded, {erased.events_relabelled} "
            "event(s) relabelled 'erased'")


@faces_app.command("export")
def faces_export(
    name: NameArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the JSON here (0600) instead of "
                                             "stdout.")] = None,
    config: ConfigOption = None,
) -> None:
    """Print what is stored about a person as JSON (right of access): enrolment, consent, expiry, events."""
    with user_errors():
        settings = settings_from(config)
        store = _store(settings)
        _shred_expired(settings, store)
        record = store.export(name)
        _audit(settings, store, "faces.export", _actor(), record["identity"], events=len(record["events"]))
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        if out is None:
            typer.echo(text, nl=False)
            return
        from trustcam.storage.keys import write_secret

        out.unlink(missing_ok=True)
        write_secret(out, text.encode())
        say(f"{out}: export of '{record['identity']}' written")


@faces_app.command("shred-expired")
def faces_shred_expired(config: ConfigOption = None) -> None:
    """Shred every enrolment past its expiry date (every face command also does it first)."""
    with user_errors():
        settings = settings_from(config)
        store = _store(settings)
        before = len(store.identities())
        _shred_expired(settings, store)
        say(f"{before - len(store.identities())} expired enrolment(s) shredded")


@faces_app.command("calibrate")
def faces_calibrate(
    dataset: Annotated[Path, typer.Argument(help="Identity-labelled images: faces-id, or <person>/<images>.")],
    target_fmr: Annotated[float, typer.Option("--target-fmr", help="False-match rate to reach.")] = 1e-3,
    variant: Annotated[str, typer.Option("--variant", help="faces-id variant folder.")] = "lfw_deepfunneled_250",
    identities: Annotated[int | None, typer.Option("--identities", min=2, help="Use only the first N people "
                                                   "(a quick run).")] = None,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Record the threshold in "
                                       "<data_dir>/faces/calibration.json, where matching reads it.")] = True,
    config: ConfigOption = None,
) -> None:
    """Measure genuine and impostor distances on a labelled set and derive the threshold reaching the target FMR;
    prints the FNMR it costs and whether the set is large enough to support that FMR."""
    from trustcam.storage.faces import save_calibration
    from trustcam.vision.faces import FaceRecognizer, calibrate, embed_set, identity_set

    with user_errors():
        settings = settings_from(config)
        images = identity_set(dataset, variant, identities)
        embedded = embed_set(FaceRecognizer(), images)
        for path in embedded.missed:
            say(f"{path}: no face found, left out")
        result = calibrate(embedded.embeddings, embedded.identities, target_fmr)
        typer.echo(f"{result.images} images of {result.identities} people ({embedded.faces_per_second:.1f} faces/s "
                   "detected and embedded)")
        typer.echo(f"genuine pairs: {result.genuine_pairs}, impostor pairs: {result.impostor_pairs}")
        typer.echo(f"threshold at FMR {target_fmr:g}: {result.threshold:.4f} (measured FMR {result.fmr:.2e}, "
                   f"FNMR {result.fnmr:.2%})")
        if not result.supported:
            typer.echo(f"warning: the set is too small to support FMR {target_fmr:g}: {result.impostor_pairs} "
                       f"impostor pairs give {result.impostor_pairs * target_fmr:.1f} expected false matches; "
                       f"at least {result.needed_impostor_pairs} pairs (30 errors) are needed. Use more people.")
        if save:
            record = {**result.as_dict(), "dataset": str(dataset.resolve()), "variant": variant,
                      "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            path = save_calibration(settings.data_dir, record)
            typer.echo(f"saved to {path}")
        typer.echo("config suggestion (the threshold is read from the calibration for this target FMR):")
        typer.echo(f"  cameras:\n    <camera>:\n      faces: {{enabled: true, target_fmr: {target_fmr:g}}}"
                   f"  # threshold {result.threshold:.4f}")
