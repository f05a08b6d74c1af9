"""A witness outside the database: every signed checkpoint head, written where a database writer cannot rewrite it.

Someone who can write the database but holds no key cannot forge a checkpoint, but can roll the database back
to an older, consistent state (drop the newest segments or audit entries together with their checkpoints).
Only a record kept elsewhere shows that: each checkpoint is also appended to a witness log (on the mirror path
when configured), published retained on MQTT when configured, and always written to the service log.

Entries carry the exact signed message, so a verifier checks the signature without knowing its format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from trustcam.config.schema import Settings, VaultConfig
from trustcam.errors import UserError
from trustcam.storage.schema import CheckpointRow, SegmentRow


@dataclass(frozen=True)
class WitnessEntry:
    """One signed checkpoint head. ``camera`` is empty for the audit log."""

    kind: Literal["footage", "audit"]
    camera: str
    seq: int
    hash: str  # chain_hash (footage) or entry hash (audit) the checkpoint signs
    time: float  # when it was signed (seconds since 1970 UTC)
    message: str  # the exact bytes the signature covers, as UTF-8 text
    signature: str  # hex
    public_key: str  # hex of the raw Ed25519 public key


class CheckpointWitness(Protocol):
    def record(self, entry: WitnessEntry) -> None:
        """Write the entry everywhere configured; never raises (a witness failing must not stop recording)."""


log = logging.getLogger(__name__)
# The service log is a witness too, so its lines must appear even at the CLI's default WARNING level: this
# logger passes INFO on to the root handlers (they filter by their own level, which basicConfig leaves open).
log.setLevel(logging.INFO)

MARKER = "trustcam-witness"
TOPIC_AUDIT = "witness/audit"
# message formats a witness entry may carry, per kind (footage v2 also signs the policy and sealed events)
_TAGS = {"footage": ("trustcam-checkpoint-v1", "trustcam-checkpoint-v2"), "audit": ("trustcam-audit-checkpoint-v1",)}
_HASH_FIELD = {"footage": "chain_hash", "audit": "hash"}


class WitnessError(UserError):
    """The witness file given to a verify command cannot be used (missing, unreadable)."""

    exit_code = 2


def entry_json(entry: WitnessEntry) -> str:
    return json.dumps(asdict(entry), sort_keys=True, separators=(",", ":"))


def witness_topic(prefix: str, entry: WitnessEntry) -> str:
    """``<prefix>/witness/audit`` or ``<prefix>/witness/footage/<camera>`` (a camera may be named "audit")."""
    return f"{prefix}/{TOPIC_AUDIT}" if entry.kind == "audit" else f"{prefix}/witness/footage/{entry.camera}"


def witness_path(config: VaultConfig) -> Path | None:
    """``vault.witness_file``, else ``<vault.mirror>/witness.log`` when a mirror is configured, else None."""
    if config.witness_file is not None:
        return Path(os.path.expanduser(config.witness_file)).absolute()
    if config.mirror is not None:
        return Path(os.path.expanduser(config.mirror)).absolute() / "witness.log"
    return None


class Witness:
    """Writes every checkpoint to the service log (always), the witness file (when configured) and, through
    ``publish`` (the bus: the MQTT sink subscribes to :class:`WitnessEntry`), MQTT. Never raises."""

    def __init__(self, path: Path | None = None, publish: Callable[[object], None] | None = None) -> None:
        self.path = path
        self.publish = publish
        self._lock = threading.Lock()
        self.failures = 0  # witness writes that failed (each one logged)

    def record(self, entry: WitnessEntry) -> None:
        line = entry_json(entry)
        log.info("%s %s", MARKER, line)
        if self.path is not None:
            try:
                self._append(line)
            except OSError as exc:
                self.failures += 1
                log.error("witness file %s: checkpoint of %s seq %d not written (%s); recording goes on, but "
                          "this checkpoint is witnessed only by the service log%s", self.path,
                          f"camera {entry.camera}" if entry.camera else "the audit log", entry.seq,
                          exc.strerror or exc, " and MQTT" if self.publish else "")
        if self.publish is not None:
            try:
                self.publish(entry)
            except Exception:
                self.failures += 1
                log.exception("witness: publishing checkpoint seq %d failed", entry.seq)

    def _append(self, line: str) -> None:
        """One JSON line, appended (O_APPEND: never rewrites what is there) and fsynced before returning."""
        with self._lock:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)


def build_witness(settings: Settings, publish: Callable[[object], None] | None = None) -> Witness:
    return Witness(witness_path(settings.vault), publish)


# --- reading a witness back ------------------------------------------------------------------------------------


@dataclass
class WitnessRead:
    """The entries of a witness whose signature checks out, and every line that could not be trusted."""

    source: Path
    entries: list[WitnessEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _message_fields(message: str) -> tuple[str, dict[str, str]]:
    tag, *lines = message.rstrip("\n").split("\n")
    return tag, dict(line.split("=", 1) for line in lines if "=" in line)


def _fingerprint(raw_hex: str) -> str:
    """sha256 of the raw public key, as ``vault.public_key_fingerprint`` (not imported: the vault imports this)."""
    return hashlib.sha256(bytes.fromhex(raw_hex)).hexdigest()


def _entry_problem(entry: WitnessEntry, public_key_hex: str) -> str | None:
    """Why the entry cannot be trusted (None: its signature by ``public_key_hex`` covers exactly its fields)."""
    if entry.public_key != public_key_hex:
        try:
            other = _fingerprint(entry.public_key)[:16] + "…"
        except ValueError:
            other = "an unreadable key"
        return (f"signed by key {other}, not this server's signing key "
                f"{_fingerprint(public_key_hex)[:16]}…: not trusted")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry.public_key)).verify(
            bytes.fromhex(entry.signature), entry.message.encode())
    except (InvalidSignature, ValueError):
        return "its signature does not verify: forged or altered, not trusted"
    tag, fields = _message_fields(entry.message)
    try:
        agrees = (tag in _TAGS[entry.kind] and fields.get("camera", "") == entry.camera
                  and int(fields.get("seq", "-1")) == entry.seq and fields.get(_HASH_FIELD[entry.kind]) == entry.hash
                  and abs(float(fields.get("time", "nan")) - entry.time) < 1e-5)
    except ValueError:
        agrees = False
    if not agrees:
        return "its fields differ from the message its signature covers: altered, not trusted"
    return None


def _parse_line(text: str) -> dict[str, Any] | None:
    """The JSON object of a witness line (``trustcam-witness {...}`` anywhere in a log or journal line, a bare
    JSON line, or ``topic {...}`` from ``mosquitto_sub -v``); None for a line that is not one."""
    start = text.find(MARKER)
    start = text.find("{", start + len(MARKER)) if start >= 0 else text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        if MARKER in text:
            raise
        return None
    if isinstance(value, dict) and ("signature" in value or MARKER in text):
        return value
    return None


def read_witness(path: Path, public_key: Ed25519PublicKey | bytes) -> WitnessRead:
    """Read a witness file, a service log or a journal dump; keep the entries signed by ``public_key`` and
    report every other witness line (bad signature, other key, unreadable) as a problem, never trusting it."""
    raw = public_key if isinstance(public_key, bytes) else public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise WitnessError(f"--witness {path}: no such file; give the witness log (vault.witness_file, by default "
                           "<vault.mirror>/witness.log), a service log or `journalctl -u trustcam` output") from None
    except OSError as exc:
        raise WitnessError(f"--witness {path}: cannot read it ({exc.strerror or exc})") from None
    result = WitnessRead(path)
    for number, line in enumerate(text.splitlines(), 1):
        try:
            value = _parse_line(line)
            if value is None:
                continue
            entry = WitnessEntry(**{name: value[name] for name in WitnessEntry.__dataclass_fields__})
            if entry.kind not in _TAGS or not isinstance(entry.seq, int):
                raise ValueError(f"kind {entry.kind!r}")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            result.problems.append(f"{path}:{number}: unreadable witness line ({exc}): ignored")
            continue
        if (problem := _entry_problem(entry, raw.hex())) is not None:
            what = f"camera {entry.camera} seq {entry.seq}" if entry.kind == "footage" else f"audit entry {entry.seq}"
            result.problems.append(f"{path}:{number}: witness line for {what}: {problem}")
            continue
        result.entries.append(entry)
    return result


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _newest_first(entries: list[WitnessEntry]) -> list[WitnessEntry]:
    unique = {(e.camera, e.seq, e.hash, e.time): e for e in entries}
    return sorted(unique.values(), key=lambda e: (e.camera, -e.seq, -e.time))


# --- cross-checking the database against it --------------------------------------------------------------------


def check_footage(engine: Engine, witness: WitnessRead, camera: str | None = None) -> list[str]:
    """Problems where the database's footage chains disagree with the witness: rolled back (a witnessed
    checkpoint beyond the chain's end), rewritten (a different chain hash at a witnessed seq), or a witnessed
    checkpoint row deleted."""
    problems: list[str] = []
    entries = [e for e in witness.entries if e.kind == "footage" and (camera is None or e.camera == camera)]
    with Session(engine) as session:
        for name in sorted({e.camera for e in entries}):
            mine = _newest_first([e for e in entries if e.camera == name])
            end = session.scalar(select(func.max(SegmentRow.seq)).where(SegmentRow.camera == name)) or 0
            beyond = [e for e in mine if e.seq > end]
            if beyond:
                e = beyond[0]
                problems.append(f"camera {name}: the database was rolled back: the witness holds a checkpoint of "
                                f"camera {name} at seq {e.seq} signed {_utc(e.time)}, the database chain ends at seq "
                                f"{end}")
            for e in mine:
                if e.seq > end:
                    continue
                chain = session.scalar(select(SegmentRow.chain_hash).where(SegmentRow.camera == name,
                                                                            SegmentRow.seq == e.seq))
                if chain is None:
                    problems.append(f"camera {name} seq {e.seq}: witnessed (signed {_utc(e.time)}) but the chain row "
                                    "is missing from the database (segments removed)")
                elif chain != e.hash:
                    problems.append(f"camera {name} seq {e.seq}: the witness (signed {_utc(e.time)}) holds chain hash "
                                    f"{e.hash[:16]}…, the database {chain[:16]}…: the chain was rewritten")
                elif session.execute(select(CheckpointRow.id).where(
                        CheckpointRow.camera == name, CheckpointRow.seq == e.seq,
                        CheckpointRow.signature == e.signature).limit(1)).first() is None:
                    problems.append(f"camera {name} seq {e.seq}: the checkpoint signed {_utc(e.time)} is in the "
                                    "witness but gone from the database (checkpoints deleted)")
    return problems


def check_audit(engine: Engine, witness: WitnessRead) -> list[str]:
    """The same cross-check for the audit log (entries and ``audit_checkpoints``)."""
    from trustcam.security.tables import AuditCheckpointRow, AuditRow  # security builds on storage, not back

    problems: list[str] = []
    entries = _newest_first([e for e in witness.entries if e.kind == "audit"])
    with Session(engine) as session:
        end = session.scalar(select(func.max(AuditRow.seq))) or 0
        beyond = [e for e in entries if e.seq > end]
        if beyond:
            e = beyond[0]
            problems.append(f"audit log entry {end + 1}: the database was rolled back: the witness holds a checkpoint "
                            f"of the audit log at entry {e.seq} signed {_utc(e.time)}, the database's audit log ends "
                            f"at entry {end}")
        for e in entries:
            if e.seq > end:
                continue
            entry_hash = session.scalar(select(AuditRow.hash).where(AuditRow.seq == e.seq))
            checkpoint = session.get(AuditCheckpointRow, e.seq)
            if entry_hash is None:
                problems.append(f"audit log entry {e.seq}: witnessed (signed {_utc(e.time)}) but missing from the "
                                "database")
            elif entry_hash != e.hash:
                problems.append(f"audit log entry {e.seq}: the witness (signed {_utc(e.time)}) holds hash "
                                f"{e.hash[:16]}…, the database {entry_hash[:16]}…: the log was rewritten")
            elif checkpoint is None or checkpoint.signature != e.signature:
                problems.append(f"audit log entry {e.seq}: its checkpoint signed {_utc(e.time)} is in the witness but "
                                "gone from the database (checkpoints deleted)")
    return problems
