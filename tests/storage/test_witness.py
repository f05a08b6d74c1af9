"""The witness outside the database: a real vault rolled back with sqlite3 (newest segments and checkpoints deleted
consistently), forged witness lines, and the retained MQTT witness seen by a real Mosquitto subscriber."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alerts.alerts_infra import Broker, Subscriber, wait_until  # tests/ is on sys.path (pyproject)
from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.security.audit import CHECKPOINT_EVERY, AuditLog
from trustcam.security.audit import checkpoint_message as audit_message
from trustcam.storage.database import open_database
from trustcam.storage.keys import ENV_KEK, load_signing_key
from trustcam.storage.vault import Vault, checkpoint_message
from trustcam.storage.witness import MARKER, Witness, WitnessEntry, build_witness, entry_json, read_witness

T0 = 1_700_000_000.0
CLI = [sys.executable, "-m", "trustcam.cli"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> list[bytes]:
    """Three real MP4 segments cut at the source's keyframes (every 4.8 s) without re-encoding."""
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for i in range(3):
        path = folder / f"seg{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{4.8 * i}", "-i", str(car_video), "-t", "4.8",
                        "-c", "copy", str(path)], check=True, timeout=60)
        out.append(path.read_bytes())
    return out


@pytest.fixture
def recorded(tmp_path: Path, clips: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path, Vault]:
    """A config with a mirror, six segments of camera front (checkpoints at 2, 4, 6), the witness on the mirror."""
    monkeypatch.delenv(ENV_KEK, raising=False)
    raw = {"data_dir": str(tmp_path / "data"), "server": {"enabled": False},
           "vault": {"root": str(tmp_path / "rec"), "mirror": str(tmp_path / "mirror"),
                     "key_file": str(tmp_path / "keys" / "vault.kek"),
                     "signing_key_file": str(tmp_path / "keys" / "signing.key"), "checkpoint_every": 2}}
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump(raw))
    settings = Settings.model_validate(raw)
    vault = Vault(settings.vault, open_database(settings.resolved_database_url), witness=build_witness(settings))
    for i in range(6):
        vault.store_segment("front", clips[i % 3], T0 + 4.8 * i, T0 + 4.8 * (i + 1), labels=["car"])
    return config, Path(settings.resolved_database_url.removeprefix("sqlite:///")), tmp_path / "mirror", vault


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto, as in tests/alerts (whose conftest does not reach this folder)."""
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


def chain(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, "evidence", "chain", "--config", str(config), *extra], capture_output=True,
                            text=True, timeout=120)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_witness_file_is_written_on_the_mirror_path(recorded: tuple[Path, Path, Path, Vault]) -> None:
    _config, _db, mirror, vault = recorded
    lines = (mirror / "witness.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["kind"], e["camera"], e["seq"]) for e in entries] == [("footage", "front", s) for s in (2, 4, 6)]
    assert (mirror / "witness.log").stat().st_mode & 0o777 == 0o600
    read = read_witness(mirror / "witness.log", bytes.fromhex(vault.public_key_hex))
    assert read.problems == [] and len(read.entries) == 3


def test_rolled_back_vault_passes_alone_but_fails_against_the_witness(recorded: tuple[Path, Path, Path, Vault]) -> None:
    config, db, mirror, _vault = recorded
    untouched = chain(config, "--witness", str(mirror / "witness.log"))
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr
    with sqlite3.connect(db) as conn:  # back to the consistent state after segment 4
        conn.execute("DELETE FROM segments WHERE camera = 'front' AND seq > 4")
        conn.execute("DELETE FROM checkpoints WHERE camera = 'front' AND seq > 4")
    assert chain(config).returncode == 0  # the database alone is consistent
    result = chain(config, "--witness", str(mirror / "witness.log"))
    assert result.returncode == 1
    assert ("camera front: the database was rolled back: the witness holds a checkpoint of camera front at seq 6 "
            "signed ") in result.stdout
    assert "the database chain ends at seq 4" in result.stdout


def test_deleted_checkpoint_row_is_named(recorded: tuple[Path, Path, Path, Vault]) -> None:
    config, db, mirror, _vault = recorded
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM checkpoints WHERE camera = 'front' AND seq = 4")
    result = chain(config, "--witness", str(mirror / "witness.log"))
    assert result.returncode == 1
    assert "camera front seq 4: the checkpoint signed" in result.stdout
    assert "is in the witness but gone from the database (checkpoints deleted)" in result.stdout


def test_forged_witness_lines_are_reported_and_not_trusted(recorded: tuple[Path, Path, Path, Vault]) -> None:
    """An intruder who can write the witness file adds a head the database never had, once with the signature
    of a real line and once signed by a key of their own: neither is trusted, so neither fails the chain."""
    config, _db, mirror, vault = recorded
    real = json.loads((mirror / "witness.log").read_text().splitlines()[-1])
    copied = {**real, "seq": 9, "message": checkpoint_message("front", 9, real["hash"], real["time"]).decode()}
    intruder = Ed25519PrivateKey.generate()
    message = checkpoint_message("front", 12, "ab" * 32, T0)
    own = WitnessEntry(kind="footage", camera="front", seq=12, hash="ab" * 32, time=T0, message=message.decode(),
                       signature=intruder.sign(message).hex(),
                       public_key=intruder.public_key().public_bytes_raw().hex())
    journal = mirror / "journal.txt"  # as `journalctl -u trustcam` prints it
    journal.write_text(
        "Jan 01 00:00:00 host systemd[1]: Started trustcam.\n"
        + "".join(f"Jan 01 00:00:01 host trustcam[7]: INFO trustcam.storage.witness: {line}\n"
                  for line in (mirror / "witness.log").read_text().splitlines())
        + f"Jan 01 00:00:02 host trustcam[7]: INFO trustcam.storage.witness: {MARKER} {json.dumps(copied)}\n"
        + f"Jan 01 00:00:03 host trustcam[7]: INFO trustcam.storage.witness: {MARKER} {entry_json(own)}\n"
        + f"Jan 01 00:00:04 host trustcam[7]: {MARKER} {{not json\n")
    read = read_witness(journal, bytes.fromhex(vault.public_key_hex))
    assert [e.seq for e in read.entries] == [2, 4, 6]
    assert len(read.problems) == 3
    assert "witness line for camera front seq 9: its signature does not verify: forged or altered" in read.problems[0]
    assert "witness line for camera front seq 12: signed by key" in read.problems[1]
    assert "unreadable witness line" in read.problems[2]
    result = chain(config, "--witness", str(journal))
    assert result.returncode == 0, result.stdout + result.stderr  # the database is judged by trusted lines only
    assert "camera front seq 9: its signature does not verify" in result.stderr


def test_missing_witness_file_is_a_clear_error(recorded: tuple[Path, Path, Path, Vault]) -> None:
    config, _db, mirror, _vault = recorded
    result = chain(config, "--witness", str(mirror / "nope.log"))
    assert result.returncode == 2 and f"--witness {mirror / 'nope.log'}: no such file" in result.stderr


def test_audit_checkpoint_is_retained_on_mqtt(tmp_path: Path, broker: Broker) -> None:
    """Published through the bus and the alert dispatcher's MQTT sink; a subscriber connecting afterwards still
    gets it (retained), and its `mosquitto_sub -v` line is a witness that verifies."""
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "alerts": {"mqtt": {"enabled": True, "port": broker.port, "client_id": "trustcam-witness"}},
        "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "vault.kek"),
                  "signing_key_file": str(tmp_path / "keys" / "signing.key")}})
    engine = open_database(settings.resolved_database_url)
    bus = Bus()
    dispatcher = AlertDispatcher(settings, engine, bus)
    dispatcher.start()
    try:
        assert dispatcher.sinks[-1].wait_ready(10)
        audit = AuditLog(engine, load_signing_key(settings.vault), witness=Witness(publish=bus.publish))
        for i in range(CHECKPOINT_EVERY):
            audit.append("login", user="bob", client="10.0.0.8", target=str(i))
        late = Subscriber(broker.port, client_id="auditor-later")
        try:
            wait_until(lambda: late.on("trustcam/witness/audit"), 10, "the retained witness on trustcam/witness/audit")
            message = late.on("trustcam/witness/audit")[0]
        finally:
            late.close()
    finally:
        dispatcher.stop()
    assert message.retain
    entry = message.json()
    assert entry["kind"] == "audit" and entry["seq"] == CHECKPOINT_EVERY
    assert entry["message"] == audit_message(CHECKPOINT_EVERY, entry["hash"], entry["time"]).decode()
    dump = tmp_path / "mqtt.txt"
    dump.write_text(f"{message.topic} {message.payload.decode()}\n")
    read = read_witness(dump, bytes.fromhex(audit.public_key_hex))
    assert read.problems == [] and [e.seq for e in read.entries] == [CHECKPOINT_EVERY]
