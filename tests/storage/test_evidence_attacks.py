"""Attacks by someone who can write the SQLite database but holds no key, each performed for real on a real vault
with real MP4 segments: segments moved in time with recomputed hashes, checkpoints deleted, the signed policy
weakened, an event record edited, the database rolled back; plus export signing nothing, late signatures caught
by ``--max-sign-delay``, checkpoints by time, the clean stop, and a web export that writes no file."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from trustcam.bus import Bus
from trustcam.cli import app
from trustcam.config.schema import RecordConfig, Settings
from trustcam.events.model import Event, EventEnded
from trustcam.ingest.source import VideoSource
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.storage.evidence import build_bundle, export_event, verify_bundle
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.recorder import Recorder
from trustcam.storage.schema import CheckpointRow, EventRow, SegmentRow
from trustcam.storage.vault import Vault, VaultError, chain_hash, public_key_fingerprint
from trustcam.storage.witness import Witness

T0 = float(int(time.time()) - 600)  # footage from ten minutes ago, signed as it was stored
SEG = 4.8  # the car clip's keyframe interval: every clip is one GOP


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> list[bytes]:
    """Three real MP4 segments cut at the source's keyframes without re-encoding."""
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for i in range(3):
        path = folder / f"seg{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{SEG * i}", "-i", str(car_video), "-t", f"{SEG}",
                        "-c", "copy", str(path)], check=True, timeout=60)
        out.append(path.read_bytes())
    return out


@dataclass
class Site:
    """A recording installation: its config file, database file, vault, the bus wiring of `trustcam run`."""

    config: Path
    db: Path
    witness: Path
    vault: Vault
    bus: Bus

    def record(self, clips: list[bytes], count: int, first: int = 0) -> None:
        for i in range(first, first + count):
            self.vault.store_segment("front", clips[i % len(clips)], T0 + SEG * i, T0 + SEG * (i + 1), labels=["car"])

    def event(self, event_id: str, start: float, end: float, score: float = 0.91) -> None:
        """End an event as the pipeline does: EventEnded on the bus, saved by the event store, sealed by the vault."""
        self.bus.publish(EventEnded(Event(id=event_id, camera="front", label="car", track_id=7, start=start, end=end,
                                          best_score=score, best_box=(10.0, 20.0, 110.0, 220.0), best_time=start,
                                          zones=["drive"], model_name="yolox-nano", model_sha256="ab" * 32)))

    def sql(self, *statements: str) -> None:
        with sqlite3.connect(self.db) as conn:
            for statement in statements:
                conn.execute(statement)

    def checkpoints(self) -> list[int]:
        with Session(self.vault.engine) as session:
            return list(session.scalars(select(CheckpointRow.seq).where(CheckpointRow.camera == "front")
                                        .order_by(CheckpointRow.id)))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """checkpoint_every 3 (and 60 s, the default); the witness file kept on the mirror, as configured there."""
    monkeypatch.delenv(ENV_KEK, raising=False)
    raw = {"data_dir": str(tmp_path / "data"), "server": {"enabled": False},
           "vault": {"root": str(tmp_path / "rec"), "mirror": str(tmp_path / "mirror"),
                     "key_file": str(tmp_path / "keys" / "vault.kek"),
                     "signing_key_file": str(tmp_path / "keys" / "signing.key"), "checkpoint_every": 3}}
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump(raw))
    settings = Settings.model_validate(raw)
    engine = open_database(settings.resolved_database_url)
    witness = tmp_path / "mirror" / "witness.log"
    vault = Vault(settings.vault, engine, witness=Witness(witness))
    bus = Bus()
    store = EventStore(engine)  # as `trustcam run` wires it (service.py): saved first, then sealed
    store.seal = vault.seal_event
    store.attach(bus)
    return Site(config, Path(settings.resolved_database_url.removeprefix("sqlite:///")), witness, vault, bus)


def cli(site: Site, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--config", str(site.config)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def rewrite_history(site: Site, from_seq: int, shift_s: float) -> None:
    """Move segments ``from_seq``… later in time and recompute every chain hash from there (the formula is
    public), then drop the checkpoints that no longer match: a self-consistent chain, only unsigned."""
    with sqlite3.connect(site.db) as conn:
        rows = conn.execute("SELECT seq, id, start, end, size, sha256, prev_hash FROM segments "
                            "WHERE camera = 'front' ORDER BY seq").fetchall()
        prev = None
        for seq, seg_id, start, end, size, sha, prev_hash in rows:
            if seq >= from_seq:
                start, end, prev_hash = start + shift_s, end + shift_s, prev
                new = chain_hash("front", seq, seg_id, start, end, size, sha, prev_hash)
                conn.execute("UPDATE segments SET start = ?, end = ?, prev_hash = ?, chain_hash = ? "
                             "WHERE camera = 'front' AND seq = ?", (start, end, prev_hash, new, seq))
                prev = new
            else:
                prev = conn.execute("SELECT chain_hash FROM segments WHERE camera = 'front' AND seq = ?",
                                    (seq,)).fetchone()[0]
        conn.execute("DELETE FROM checkpoints WHERE camera = 'front' AND seq >= ?", (from_seq,))


# --- (a) history rewritten: segments moved in time, hashes recomputed, later checkpoints deleted ---------------


def test_moved_segments_with_recomputed_hashes_are_caught(site: Site, clips: list[bytes], tmp_path: Path) -> None:
    site.record(clips, 9)
    site.event("ev" * 16, T0 + SEG * 3 + 1, T0 + SEG * 4 + 2)  # in seq 4-5; sealed at the head (9)
    assert site.checkpoints() == [3, 6, 9, 9]
    assert site.vault.verify_chain() == []
    rewrite_history(site, 5, 3600.0)  # seq 5… "happened" an hour later
    site.vault.close_camera("front")  # the service stops cleanly: it signs whatever head it finds
    problems = site.vault.verify_chain()
    # seq 5, an hour after seq 4, is where a checkpoint was due by time; none until the forged head at 9
    assert problems == [f"camera front seq 4 ({utc(T0 + SEG * 3)}): footage not covered by a checkpoint in time: "
                        "one was due at seq 5 (every 3 segments or 60 s after the checkpoint at seq 3) but the next "
                        "one is at seq 9 (checkpoints deleted, or history rewritten after recording)"], problems
    code, output = cli(site, "evidence", "chain", "--deep")
    assert code == 1 and "camera front seq 4 (" in output and "one was due at seq 5" in output
    with pytest.raises(VaultError, match=r"not exported: .*camera front seq 4 .*one was due at seq 5"):
        export_event(site.vault, site.vault.engine, "ev" * 16, tmp_path / "forged.zip")
    assert not (tmp_path / "forged.zip").exists()


def test_history_rewritten_in_the_open_tail_is_caught_beyond_one_interval(site: Site, clips: list[bytes]) -> None:
    """No clean stop after the rewrite: the tail after the last checkpoint may hold at most one interval."""
    site.record(clips, 8)
    rewrite_history(site, 2, -30.0)
    assert site.checkpoints() == []
    problems = site.vault.verify_chain()
    assert len(problems) == 1 and problems[0].startswith(f"camera front seq 1 ({utc(T0)}): footage not covered")
    assert "one was due at seq 3 (every 3 segments or 60 s after the start of the chain) but none was signed" \
        in problems[0]


# --- (b) every checkpoint but the first deleted ----------------------------------------------------------------


def test_deleting_all_checkpoints_but_the_first_is_caught(site: Site, clips: list[bytes]) -> None:
    site.record(clips, 9)
    site.sql("DELETE FROM checkpoints WHERE camera = 'front' AND seq > 3")
    problems = site.vault.verify_chain()
    assert len(problems) == 1 and problems[0].startswith(f"camera front seq 4 ({utc(T0 + SEG * 3)})")
    assert "one was due at seq 6" in problems[0] and "none was signed after it" in problems[0]
    code, output = cli(site, "evidence", "chain")
    assert code == 1 and "camera front seq 4" in output


# --- (c) export signs nothing; a late signature is reported and refused by --max-sign-delay ---------------------


def test_export_never_signs(site: Site, clips: list[bytes], tmp_path: Path) -> None:
    site.record(clips, 4)
    with Session(site.vault.engine) as session, session.begin():  # an old event (no seal required)
        session.add(EventRow(id="ab" * 16, camera="front", label="car", track_id=1, start=T0 + 10.0, end=T0 + 13.0,
                             best_score=0.9, box=[0.0, 0.0, 1.0, 1.0], zones=[], rules=[], threat="none",
                             snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32))
    before = site.checkpoints()
    assert before == [3]
    # seq 4 (inside the margin) is in the unsigned tail: refused, and nothing is signed to make it exportable
    with pytest.raises(VaultError, match=r"footage not yet covered by a checkpoint .* Wait about \d+ s .* stop the "
                                         r"camera cleanly"):
        build_bundle(site.vault, site.vault.engine, "ab" * 16)
    assert site.checkpoints() == before
    assert build_bundle(site.vault, site.vault.engine, "ab" * 16, margin_s=0.0)  # seq 3-ish only: covered
    assert site.checkpoints() == before
    site.vault.close_camera("front")  # the clean stop covers the tail; export still signs nothing
    code, output = cli(site, "evidence", "export", "ab" * 16, "--out", str(tmp_path / "e.zip"))
    assert code == 0, output
    assert site.checkpoints() == [3, 4]
    assert (tmp_path / "e.zip").stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_footage_signed_late_fails_max_sign_delay(site: Site, clips: list[bytes], tmp_path: Path) -> None:
    """Footage stored with times ten minutes in the past gets a checkpoint signed now, as a forger's or an export's
    late signature would be: verify reports each segment's delay and refuses it under a small --max-sign-delay."""
    site.record(clips, 6)
    with Session(site.vault.engine) as session, session.begin():
        session.add(EventRow(id="cd" * 16, camera="front", label="car", track_id=1, start=T0 + 5.0, end=T0 + 6.0,
                             best_score=0.9, box=[0.0, 0.0, 1.0, 1.0], zones=[], rules=[], threat="none",
                             snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32))
    bundle = export_event(site.vault, site.vault.engine, "cd" * 16, tmp_path / "late.zip")
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        listed = json.loads(archive.read("checkpoints.json"))["checkpoints"]
    assert [s["seq"] for s in manifest["segments"]] == [1, 2, 3] and [c["seq"] for c in listed] == [3]
    assert all(s["signed"] - s["recorded"] > 500 for s in manifest["segments"])
    assert verify_bundle(bundle).ok
    report = verify_bundle(bundle, max_sign_delay=60)
    assert not report.ok and len(report.problems) == 3
    assert "segment seq 1 (recorded until " in report.problems[0] and "more than --max-sign-delay 60 s" in \
        report.problems[0]
    fingerprint = public_key_fingerprint(site.vault.public_key)
    result = CliRunner().invoke(app, ["evidence", "verify", str(bundle), "--fingerprint", fingerprint])
    assert result.exit_code == 0 and "segment seq 2: recorded until" in result.output and "s later)" in result.output
    result = CliRunner().invoke(app, ["evidence", "verify", str(bundle), "--fingerprint", fingerprint,
                                      "--max-sign-delay", "60"])
    assert result.exit_code == 1 and "NOT VERIFIED: 3 problem(s)" in result.output


# --- (d) an event record edited after it ended ------------------------------------------------------------------


def test_edited_event_record_is_caught(site: Site, clips: list[bytes], tmp_path: Path) -> None:
    site.record(clips, 3)
    site.event("ee" * 16, T0 + 5.0, T0 + 9.0, score=0.62)
    site.record(clips, 3, first=3)  # the head moves on; the seal stays at seq 3
    site.vault.close_camera("front")
    with Session(site.vault.engine) as session:
        sealed = [cp for cp in session.scalars(select(CheckpointRow)) if cp.events]
    assert [(cp.seq, cp.events[0][0]) for cp in sealed] == [(3, "ee" * 16)]
    genuine = export_event(site.vault, site.vault.engine, "ee" * 16, tmp_path / "genuine.zip")
    report = verify_bundle(genuine)
    assert report.ok, report.problems
    assert any(f.startswith("event record sealed by the checkpoint at seq 3") for f in report.facts)

    site.sql(f"UPDATE events SET best_score = 0.97, label = 'person' WHERE id = '{'ee' * 16}'")
    problems = site.vault.verify_chain()
    assert len(problems) == 1 and problems[0].startswith(f"event {'ee' * 16} record edited after it was sealed")
    assert "field label (sealed 'car', now 'person')" in problems[0]
    assert "field best_score (sealed 0.62, now 0.97)" in problems[0]
    code, output = cli(site, "evidence", "chain")
    assert code == 1 and "record edited after it was sealed" in output
    with pytest.raises(VaultError, match=r"record edited after it was sealed .*: field label"):
        export_event(site.vault, site.vault.engine, "ee" * 16, tmp_path / "edited.zip")

    # the copy kept beside the digest cannot be edited along with it: the signature covers the digest
    site.sql("UPDATE checkpoints SET events = json_set(events, '$[0][2].label', 'person') "
             "WHERE json_array_length(events) > 0")
    assert "fields unknown (the stored copy of the sealed record was altered too)" in site.vault.verify_chain()[0]


def test_an_event_never_sealed_is_reported(site: Site, clips: list[bytes]) -> None:
    """An event row written straight into the database (or one whose seal was deleted with its checkpoint)."""
    site.record(clips, 3)
    now = time.time()
    with Session(site.vault.engine) as session, session.begin():
        session.add(EventRow(id="ff" * 16, camera="front", label="person", track_id=3, start=now, end=now + 1.0,
                             best_score=0.99, box=[0.0, 0.0, 1.0, 1.0], zones=[], rules=[], threat="high",
                             snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32))
    problems = site.vault.verify_chain()
    assert len(problems) == 1 and problems[0].startswith(f"event {'ff' * 16} (person on camera front, ended ")
    assert "was never sealed into the chain" in problems[0]


# --- (e) the database rolled back, caught by the witness --------------------------------------------------------


def test_rollback_is_caught_by_the_witness(site: Site, clips: list[bytes]) -> None:
    site.record(clips, 9)
    site.vault.close_camera("front")  # head already signed: nothing to add
    lines = [json.loads(line) for line in site.witness.read_text().splitlines()]
    assert [(e["seq"], e["message"].split("\n")[0]) for e in lines] == [(s, "trustcam-checkpoint-v2")
                                                                          for s in (3, 6, 9)]
    assert cli(site, "evidence", "chain", "--witness", str(site.witness))[0] == 0
    site.sql("DELETE FROM segments WHERE camera = 'front' AND seq > 6",
             "DELETE FROM checkpoints WHERE camera = 'front' AND seq > 6")
    assert site.vault.verify_chain() == []  # consistent on its own
    code, output = cli(site, "evidence", "chain", "--witness", str(site.witness))
    assert code == 1
    assert "camera front: the database was rolled back: the witness holds a checkpoint of camera front at seq 9" \
        in output and "the database chain ends at seq 6" in output


# --- (f) the signed policy weakened -----------------------------------------------------------------------------


@pytest.mark.parametrize("edit", [
    "UPDATE checkpoints SET every = 1000, every_s = 1000000 WHERE seq = 3",
    "UPDATE checkpoints SET every = NULL, every_s = NULL WHERE seq = 3",  # posing as a v1 checkpoint
], ids=["laxer-policy", "posing-as-v1"])
def test_weakened_policy_breaks_the_signature(site: Site, clips: list[bytes], edit: str) -> None:
    site.record(clips, 9)
    site.sql(edit, "DELETE FROM checkpoints WHERE camera = 'front' AND seq > 3")
    problems = site.vault.verify_chain()
    assert problems[0] == ("camera front checkpoint at seq 3: signature is not valid (its fields, policy or sealed "
                           "events were altered)")
    assert f"camera front seq 1 ({utc(T0)}): footage not covered by a checkpoint in time" in problems[1]


# --- the time rule, and the clean stop --------------------------------------------------------------------------


def test_checkpoints_are_due_by_time_too(tmp_path: Path, clips: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEK, raising=False)
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "kek"),
                  "signing_key_file": str(tmp_path / "keys" / "sign"), "checkpoint_every": 1000,
                  "checkpoint_every_s": 10}})
    vault = Vault(settings.vault, open_database(settings.resolved_database_url))
    for i in range(7):  # 4.8 s each: 10 s of footage is reached at seq 3 and, counted from there, at seq 6
        vault.store_segment("front", clips[i % 3], T0 + SEG * i, T0 + SEG * (i + 1))
    with Session(vault.engine) as session:
        rows = list(session.scalars(select(CheckpointRow).order_by(CheckpointRow.id)))
    assert [r.seq for r in rows] == [3, 6]
    assert all((r.every, r.every_s) == (1000, 10.0) for r in rows)
    assert vault.verify_chain() == []
    with sqlite3.connect(settings.resolved_database_url.removeprefix("sqlite:///")) as conn:
        conn.execute("DELETE FROM checkpoints WHERE seq = 6")
    problems = vault.verify_chain()
    assert len(problems) == 1 and "one was due at seq 6 (every 1000 segments or 10 s after the checkpoint at seq 3)" \
        in problems[0]


def test_recorder_close_signs_the_head(tmp_path: Path, car_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real recording of the car clip (about six 4.8 s segments): the clean stop leaves no unsigned tail."""
    monkeypatch.delenv(ENV_KEK, raising=False)
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "vault": {"root": str(tmp_path / "rec"), "key_file": str(tmp_path / "keys" / "kek"),
                  "signing_key_file": str(tmp_path / "keys" / "sign"), "checkpoint_every": 4}})
    vault = Vault(settings.vault, open_database(settings.resolved_database_url))
    recorder = Recorder("road", RecordConfig(enabled=True, mode="continuous", segment_s=4.0), vault, clock=None)
    source = VideoSource(str(car_video), packet_tap=recorder.on_packet, connection_tap=recorder.on_connection)
    for _frame in source.frames():
        pass
    recorder.close()
    with Session(vault.engine) as session:
        head = session.scalar(select(func.max(SegmentRow.seq)))
        signed = list(session.scalars(select(CheckpointRow.seq).order_by(CheckpointRow.id)))
    assert head is not None and head > 4 and signed == [4, head]
    assert vault.verify_chain() == []


# --- the web export streams the bundle and writes no file -------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path, clips: list[bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, str, Path]]:
    from support import free_port
    from trustcam.config.loader import parse_settings
    from trustcam.security.setup import ensure_setup_token
    from trustcam.web.context import AppContext
    from web.web_helpers import InProcessServer, bootstrap  # tests/ is on sys.path (pyproject)

    monkeypatch.delenv(ENV_KEK, raising=False)
    settings = parse_settings({
        "data_dir": str(tmp_path / "data"), "server": {"host": "127.0.0.1", "port": free_port()},
        "vault": {"root": str(tmp_path / "vault"), "key_file": str(tmp_path / "keys" / "kek"),
                  "signing_key_file": str(tmp_path / "keys" / "signing"), "checkpoint_every": 3},
        "cameras": {"back": {"source": "rtsp://10.0.0.9/stream"}}})
    engine = open_database(settings.resolved_database_url)
    vault = Vault(settings.vault, engine)
    for i in range(3):
        vault.store_segment("back", clips[i], T0 + SEG * i, T0 + SEG * (i + 1), labels=["car"])
    with Session(engine) as session, session.begin():
        session.add(EventRow(id="0b" * 16, camera="back", label="car", track_id=1, start=T0 + 5.0, end=T0 + 8.0,
                             best_score=0.9, box=[0.0, 0.0, 1.0, 1.0], zones=[], rules=[], threat="none",
                             snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32))
    with InProcessServer(AppContext(settings=settings, engine=engine, bus=Bus(), vault=vault)) as server:
        tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "")
        yield server, tokens["operator"], settings.data_dir


def test_web_export_streams_and_writes_no_file(web: tuple[object, str, Path]) -> None:
    server, token, data_dir = web
    with server.client(token) as client:  # type: ignore[attr-defined]
        answer = client.post(f"/api/events/{'0b' * 16}/export")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"].startswith(f'attachment; filename="{"0b" * 16}-')
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert "checkpoints.json" in archive.namelist()
    assert verify_bundle(answer.content).ok
    assert not (data_dir / "exports").exists() or not any((data_dir / "exports").iterdir())
    leftovers = [p for p in data_dir.rglob("*") if p.suffix in (".zip", ".mp4", ".part", ".tmp")]
    assert leftovers == []


def test_keys_does_not_import_the_vault() -> None:
    """Rotation re-wraps keys with the binding helpers in keys.py: no import cycle keys <-> vault."""
    code = ("import sys, trustcam.storage.keys as k; assert 'trustcam.storage.vault' not in sys.modules; "
            "import trustcam.storage.vault as v; assert v.segment_key_aad is k.segment_key_aad "
            "and v.rewrap_blobs is k.rewrap_blobs")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
