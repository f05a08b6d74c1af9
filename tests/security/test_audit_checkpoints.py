"""Signed checkpoints make a cut-off or rebuilt audit log visible: a real SQLite file edited with sqlite3, as an
intruder with write access to the database would, then ``trustcam audit verify`` as the auditor runs it. The
time rule and the witness (``--witness``) close the delete-only attack: entries cut off with their checkpoints."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustcam.config.schema import Settings
from trustcam.security.access import AccessControl
from trustcam.security.audit import CHECKPOINT_EVERY, AuditLog, canonical, checkpoint_message, entry_hash
from trustcam.storage.database import open_database
from trustcam.storage.keys import load_signing_key
from trustcam.storage.witness import build_witness

ENTRIES = 45  # checkpoints at 20 and 40 while appending, and at 45 on clean shutdown


@pytest.fixture
def logged(tmp_path):
    """A config, its database with 45 audit entries closed cleanly, and the signing key's fingerprint."""
    config = tmp_path / "trustcam.yaml"
    key = tmp_path / "keys" / "signing.key"
    raw = {"data_dir": str(tmp_path / "data"),
           "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "vault.kek"),
                     "signing_key_file": str(key)}}
    config.write_text(yaml.safe_dump(raw))
    settings = Settings.model_validate(raw)
    service = AccessControl(settings, open_database(settings.resolved_database_url))
    for i in range(ENTRIES):
        service.record("view_live", username="alice", role="viewer", client="10.0.0.7", target=f"cam{i}")
    service.close()
    assert key.stat().st_mode & 0o777 == 0o600  # the vault's key, created 0600 by the vault's key code
    public = Ed25519PrivateKey.from_private_bytes(key.read_bytes()).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    db = settings.resolved_database_url.removeprefix("sqlite:///")
    return config, db, hashlib.sha256(public).hexdigest()


def verify(config):
    return subprocess.run([sys.executable, "-m", "trustcam.cli", "audit", "verify", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def sql(db, *statements):
    with sqlite3.connect(db) as conn:
        for statement, *params in statements:
            conn.execute(statement, *params)


def test_untouched_log_verifies_and_prints_the_key_fingerprint(logged):
    config, db, fingerprint = logged
    with sqlite3.connect(db) as conn:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")]
    assert seqs == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY, ENTRIES]
    result = verify(config)
    assert result.returncode == 0, result.stderr
    assert f"audit log intact: {ENTRIES} entries, hash chain verified, 3 signed checkpoints verified" in result.stderr
    assert fingerprint in result.stderr


def test_deleting_the_newest_entries_is_named(logged):
    config, db, fingerprint = logged
    sql(db, ("DELETE FROM audit_log WHERE seq > 42",))
    result = verify(config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "audit log entry 43: the audit log ends at entry 42 but the checkpoint signed at" in result.stderr
    assert "covers entry 45: entries after 42 were removed" in result.stderr
    assert fingerprint in result.stderr


def test_checkpoint_forged_with_another_key_is_refused(logged):
    config, db, fingerprint = logged
    intruder = Ed25519PrivateKey.generate()
    other = intruder.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # cut the log to 30 entries and replace the later checkpoints by one the intruder signed for entry 30
    with sqlite3.connect(db) as conn:
        head = conn.execute("SELECT hash FROM audit_log WHERE seq = 30").fetchone()[0]
        conn.execute("DELETE FROM audit_log WHERE seq > 30")
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > 30")
        now = time.time()
        conn.execute("INSERT INTO audit_checkpoints VALUES (30, ?, ?, ?, ?)",
                     (head, now, intruder.sign(checkpoint_message(30, head, now)).hex(), other.hex()))
    result = verify(config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"audit log entry 30: its checkpoint is signed by key {hashlib.sha256(other).hexdigest()[:16]}…, not "
            f"this server's signing key {fingerprint[:16]}…: the checkpoint was forged") in result.stderr


def test_checkpoint_claiming_the_server_key_with_a_bad_signature_is_refused(logged):
    config, db, _ = logged
    sql(db, ("UPDATE audit_checkpoints SET time = time + 1 WHERE seq = 20",))
    result = verify(config)
    assert result.returncode == 1
    assert "audit log entry 20: its checkpoint's signature is not valid" in result.stderr


def rebuild_chain(db, edit_seq):
    """What an intruder with the database but not the key can do: change an entry and recompute every hash."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
        prev = "0" * 64
        for row in rows:
            if row["seq"] == edit_seq:
                row["target"] = "nothing-to-see"
            row["prev_hash"] = prev
            fields = {**row, "details": canonical(json.loads(row["details"]))}
            row["hash"] = prev = entry_hash(fields)
            conn.execute("UPDATE audit_log SET target = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                         (row["target"], row["prev_hash"], row["hash"], row["seq"]))


def test_rewritten_chain_no_longer_matches_the_signed_checkpoints(logged):
    config, db, _ = logged
    rebuild_chain(db, 5)
    result = verify(config)
    assert result.returncode == 1
    assert "audit log entry 20: the checkpoint signed at" in result.stderr and "the log was rewritten" in result.stderr


def test_rewritten_chain_with_its_checkpoints_deleted_is_found(logged):
    config, db, _ = logged
    rebuild_chain(db, 5)
    sql(db, ("DELETE FROM audit_checkpoints",))
    settings = Settings.model_validate(yaml.safe_load(config.read_text()))
    result = AccessControl(settings, open_database(settings.resolved_database_url)).audit_log.verify()
    assert not result.ok and result.first_bad == CHECKPOINT_EVERY
    assert "signed checkpoint (one every 20 entries) is missing: checkpoints were deleted" in (result.problem or "")


def test_cut_off_log_stays_detected_after_new_entries_pass_the_old_checkpoints(logged):
    config, db, _ = logged
    sql(db, ("DELETE FROM audit_log WHERE seq > 30",))
    settings = Settings.model_validate(yaml.safe_load(config.read_text()))
    service = AccessControl(settings, open_database(settings.resolved_database_url))
    for _ in range(20):  # entries 31..50 go on normally; the surviving checkpoints at 40 and 45 are kept
        service.record("login", username="bob", client="10.0.0.8")
    result = service.audit_log.verify()
    assert not result.ok and result.first_bad == 40 and "the log was rewritten" in (result.problem or "")


# --- the time rule and the witness: the delete-only attack -----------------------------------------------------


class Clock:
    """The log's clock, started an hour ago: the entries are as old as those an intruder finds on a real server."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def witnessed(tmp_path):
    """57 entries with checkpoints at 20 and 40 (count), 45 (time: entry 46 came 400 s after 41, unsigned) and 57
    (clean shutdown); every checkpoint also appended to the witness file."""
    witness = tmp_path / "elsewhere" / "witness.log"
    raw = {"data_dir": str(tmp_path / "data"),
           "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "vault.kek"),
                     "signing_key_file": str(tmp_path / "keys" / "signing.key"), "witness_file": str(witness)}}
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump(raw))
    settings = Settings.model_validate(raw)
    engine = open_database(settings.resolved_database_url)
    clock = Clock(time.time() - 3600)
    audit = AuditLog(engine, load_signing_key(settings.vault), witness=build_witness(settings),
                     checkpoint_every_s=settings.server.audit_checkpoint_every_s, clock=clock)
    for i in range(57):
        if i == 45:
            clock.now += 400  # > server.audit_checkpoint_every_s (300 s) since entry 41, the oldest unsigned
        audit.append("view_live", user="alice", role="viewer", client="10.0.0.7", target=f"cam{i}")
    audit.checkpoint()
    db = settings.resolved_database_url.removeprefix("sqlite:///")
    return config, db, witness


def verify_with(config, witness=None):
    extra = ["--witness", str(witness)] if witness is not None else []
    return subprocess.run([sys.executable, "-m", "trustcam.cli", "audit", "verify", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=120)


def test_untouched_log_agrees_with_its_witness(witnessed):
    config, db, witness = witnessed
    with sqlite3.connect(db) as conn:
        assert [s for (s,) in conn.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")] == [20, 40, 45, 57]
    assert [json.loads(line)["seq"] for line in witness.read_text().splitlines()] == [20, 40, 45, 57]
    assert verify_with(config).returncode == 0
    result = verify_with(config, witness)
    assert result.returncode == 0, result.stderr
    assert "4 audit checkpoint(s) agree with the database" in result.stderr
    assert "audit log intact: 57 entries" in result.stderr


def test_cut_inside_unsigned_entries_fails_by_time_and_by_witness(witnessed):
    config, db, witness = witnessed
    sql(db, ("DELETE FROM audit_log WHERE seq > 50",), ("DELETE FROM audit_checkpoints WHERE seq > 45",))
    result = verify_with(config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "audit log entry 46: entries 46–50 (the newest, written from" in result.stderr
    assert "are covered by no signed checkpoint, though one is due within server.audit_checkpoint_every_s (300 s)" \
        in result.stderr
    result = verify_with(config, witness)
    assert result.returncode == 1
    assert ("audit log entry 51: the database was rolled back: the witness holds a checkpoint of the audit log at "
            "entry 57 signed") in result.stderr
    assert "the database's audit log ends at entry 50" in result.stderr


def test_cut_at_a_checkpoint_passes_alone_but_not_against_the_witness(witnessed):
    """The limit of what the database can prove about itself: a cut exactly at a checkpoint leaves a consistent,
    older log. Only the witness shows it."""
    config, db, witness = witnessed
    sql(db, ("DELETE FROM audit_log WHERE seq > 45",), ("DELETE FROM audit_checkpoints WHERE seq > 45",))
    assert verify_with(config).returncode == 0
    result = verify_with(config, witness)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("audit log entry 46: the database was rolled back: the witness holds a checkpoint of the audit log at "
            "entry 57 signed") in result.stderr and "the database's audit log ends at entry 45" in result.stderr


def test_deleted_time_due_checkpoint_is_named(witnessed):
    config, db, witness = witnessed
    sql(db, ("DELETE FROM audit_checkpoints WHERE seq = 45",))
    result = verify_with(config)
    assert result.returncode == 1
    assert "audit log entry 41: no signed checkpoint covers it, yet entry 46 was written 4" in result.stderr
    result = verify_with(config, witness)
    assert result.returncode == 1
    assert "audit log entry 45: its checkpoint signed" in result.stderr and "gone from the database" in result.stderr


def test_rewritten_entry_contradicts_the_witness(witnessed):
    config, db, witness = witnessed
    sql(db, ("DELETE FROM audit_checkpoints",))
    rebuild_chain(db, 3)
    result = verify_with(config, witness)
    assert result.returncode == 1
    assert "audit log entry 20: the witness (signed" in result.stderr and "the log was rewritten" in result.stderr


def test_the_running_service_signs_unsigned_entries_on_its_timer(tmp_path):
    raw = {"data_dir": str(tmp_path / "data"), "server": {"audit_checkpoint_every_s": 1},
           "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "vault.kek"),
                     "signing_key_file": str(tmp_path / "keys" / "signing.key")}}
    settings = Settings.model_validate(raw)
    engine = open_database(settings.resolved_database_url)
    service = AccessControl(settings, engine)
    service.start()
    try:
        service.record("login", username="bob", client="10.0.0.8")
        deadline = time.monotonic() + 30
        while service.audit_log.verify().checkpoints == 0:  # signed by the timer, not by a shutdown
            assert time.monotonic() < deadline, "the timer never signed entry 1"
            time.sleep(0.05)
    finally:
        service.close()
    assert service.audit_log.verify().ok


def test_a_broken_witness_never_stops_logging_in(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the witness folder should be")
    raw = {"data_dir": str(tmp_path / "data"),
           "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "vault.kek"),
                     "signing_key_file": str(tmp_path / "keys" / "signing.key"),
                     "witness_file": str(blocker / "witness.log")}}
    settings = Settings.model_validate(raw)
    service = AccessControl(settings, open_database(settings.resolved_database_url))
    for _ in range(CHECKPOINT_EVERY):
        service.record("login", username="bob", client="10.0.0.8")
    assert service.audit_log.verify().checkpoints == 1
    assert f"witness file {blocker / 'witness.log'}: checkpoint of the audit log seq 20 not written" in caplog.text
    assert "trustcam-witness {" in caplog.text  # the service log still witnessed it
