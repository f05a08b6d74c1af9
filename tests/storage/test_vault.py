"""The evidence vault on real files, real crypto, real MP4 segments and a real SQLite database."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.keys import ENV_KEK, key_id_of, load_kek, load_signing_key, rotate_kek
from trustcam.storage.schema import CheckpointRow, DeletionRow, EventRow, SegmentRow
from trustcam.storage.vault import ZERO_HASH, Vault, VaultError, chain_hash

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> list[bytes]:
    """Four real MP4 segments cut at the source's keyframes (every 4.8 s) without re-encoding."""
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for i in range(4):
        path = folder / f"seg{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{4.8 * i}", "-i", str(car_video), "-t", "4.8",
                        "-c", "copy", str(path)], check=True, timeout=60)
        out.append(path.read_bytes())
    assert all(b"ftyp" in clip[:16] for clip in out)
    return out


def make_config(tmp_path: Path, **extra: object) -> VaultConfig:
    values: dict[str, object] = {"root": tmp_path / "vault", "key_file": tmp_path / "keys" / "vault.kek",
                                 "signing_key_file": tmp_path / "keys" / "signing.key", "checkpoint_every": 3}
    values.update(extra)
    return VaultConfig(**values)


@pytest.fixture
def engine(database_url: str) -> Engine:
    """The chain logic runs on SQLite and on PostgreSQL (the ``database_url`` fixture)."""
    return open_database(database_url)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    """SQLite only: for tests about files (keys, mirror, what is left in the database file itself)."""
    return open_database(f"sqlite:///{tmp_path / 'db' / 'trustcam.db'}")


@pytest.fixture
def vault(tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Vault:
    monkeypatch.delenv(ENV_KEK, raising=False)
    return Vault(make_config(tmp_path), engine)


def store_all(vault: Vault, clips: list[bytes], camera: str = "front") -> list[SegmentRow]:
    return [vault.store_segment(camera, clip, T0 + 4.8 * i, T0 + 4.8 * (i + 1), labels=["car"])
            for i, clip in enumerate(clips)]


def seg_file(vault: Vault, row: SegmentRow) -> Path:
    return vault.root / row.path


def test_round_trip_chain_and_no_plaintext_on_disk(vault: Vault, clips: list[bytes]) -> None:
    rows = store_all(vault, clips)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[0].prev_hash == ZERO_HASH and rows[1].prev_hash == rows[0].chain_hash
    assert rows[2].chain_hash == chain_hash("front", 3, rows[2].id, rows[2].start, rows[2].end, len(clips[2]),
                                            rows[2].sha256, rows[1].chain_hash)
    for row, clip in zip(rows, clips, strict=True):
        assert vault.read_segment(row.id) == clip
        assert row.size == len(clip) and row.path == f"front/2023-11-14/{row.id}.seg"
        on_disk = seg_file(vault, row).read_bytes()
        assert b"ftyp" not in on_disk and b"moov" not in on_disk and b"mdat" not in on_disk
        assert all(clip[i:i + 16] not in on_disk for i in range(0, len(clip) - 16, 4096))
        assert not list(seg_file(vault, row).parent.glob("*.part"))
    with Session(vault.engine) as session:  # a checkpoint every 3 segments, signed
        checkpoints = list(session.scalars(select(CheckpointRow)))
    assert [(c.camera, c.seq, c.chain_hash) for c in checkpoints] == [("front", 3, rows[2].chain_hash)]
    assert vault.verify_chain(deep=True) == []
    assert [r.id for r in vault.segments_between("front", T0 + 5, T0 + 9)] == [rows[1].id]


def test_stream_input_and_many_chunks(vault: Vault, clips: list[bytes]) -> None:
    vault.chunk_size = 64 * 1024
    row = vault.store_segment("front", io.BytesIO(clips[0]), T0, T0 + 4.8)
    pieces = list(vault.open_segment(row))
    assert len(pieces) == len(clips[0]) // (64 * 1024) + 1 and b"".join(pieces) == clips[0]
    empty = vault.store_segment("front", b"", T0 + 5, T0 + 6)
    assert vault.read_segment(empty) == b""


def test_tampering_is_detected(vault: Vault, clips: list[bytes]) -> None:
    vault.chunk_size = 64 * 1024
    rows = store_all(vault, clips)
    block = 64 * 1024 + 16
    header = 20

    def damage(row: SegmentRow, change: object) -> None:
        path = seg_file(vault, row)
        data = bytearray(path.read_bytes())
        path.write_bytes(change(data))  # type: ignore[operator]

    def flip(data: bytearray) -> bytes:
        data[len(data) // 2] ^= 0x01
        return bytes(data)

    damage(rows[0], flip)
    damage(rows[1], lambda d: bytes(d[:header + 2 * block]))  # cut at a chunk boundary: last chunk not final
    damage(rows[2], lambda d: bytes(d[:header] + d[header + block:header + 2 * block] + d[header:header + block]
                                    + d[header + 2 * block:]))  # two chunks swapped
    for row in rows[:3]:
        with pytest.raises(VaultError, match=f"segment {row.id} was altered or truncated"):
            vault.read_segment(row)
    a, b = seg_file(vault, rows[3]), seg_file(vault, store_all(vault, clips[:1])[0])
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)  # files swapped between two ids
    with pytest.raises(VaultError, match="altered or truncated"):
        vault.read_segment(rows[3])
    problems = vault.verify_chain("front", deep=True)
    assert len(problems) == 5 and all("altered or truncated" in p for p in problems)
    assert vault.verify_chain("front") == []  # files exist: only --deep decrypts


def test_database_tampering_breaks_the_chain(vault: Vault, clips: list[bytes]) -> None:
    rows = store_all(vault, clips)
    with Session(vault.engine) as session, session.begin():
        session.execute(update(SegmentRow).where(SegmentRow.id == rows[1].id).values(sha256="0" * 64))
        session.execute(delete(SegmentRow).where(SegmentRow.id == rows[3].id))
        session.execute(update(CheckpointRow).values(time=CheckpointRow.time + 1))
    problems = "\n".join(vault.verify_chain("front"))
    assert "seq 2" in problems and "row altered" in problems
    assert "signature is not valid" in problems
    with Session(vault.engine) as session, session.begin():
        session.execute(delete(SegmentRow).where(SegmentRow.id == rows[0].id))
    assert "seq jumps from 0 to 2" in "\n".join(vault.verify_chain("front"))


def test_rotation_rewraps_without_reencrypting(tmp_path: Path, vault: Vault, clips: list[bytes]) -> None:
    rows = store_all(vault, clips)
    ref = vault.store_blob("front", b"\xff\xd8 snapshot bytes")
    before = {r.id: seg_file(vault, r).read_bytes() for r in rows}
    old_id = rows[0].kek_id
    report = rotate_kek(vault.config, vault.engine)
    assert report.old_ids == [old_id] and report.new_id != old_id
    assert report.segments == 4 and report.blobs == 1 and not report.problems
    archived = tmp_path / "keys" / f"vault.kek.{old_id}"
    assert report.removed == [archived] and not archived.exists()
    with Session(vault.engine) as session:
        assert set(session.scalars(select(SegmentRow.kek_id))) == {report.new_id}
    for row, clip in zip(rows, clips, strict=True):
        assert seg_file(vault, row).read_bytes() == before[row.id]  # same ciphertext: no re-encryption
        assert vault.read_segment(row.id) == clip
    assert vault.read_blob(ref) == b"\xff\xd8 snapshot bytes"
    # the running vault (another process in real life) notices the new key file and wraps under it
    assert vault.store_segment("front", clips[0], T0 + 60, T0 + 65).kek_id == report.new_id
    assert load_kek(vault.config).key_id == report.new_id
    assert oct((tmp_path / "keys" / "vault.kek").stat().st_mode & 0o777) == "0o600"


def test_rotation_keeps_a_kek_still_in_use(tmp_path: Path, vault: Vault, clips: list[bytes]) -> None:
    rows = store_all(vault, clips[:2])
    old_id = rows[0].kek_id
    with Session(vault.engine) as session, session.begin():  # a wrapped key that no longer unwraps
        session.execute(update(SegmentRow).where(SegmentRow.id == rows[1].id)
                        .values(wrapped_key=base64.b64encode(os.urandom(60)).decode()))
    report = rotate_kek(vault.config, vault.engine)
    assert report.segments == 1 and report.kept == {old_id: 1} and "left as it was" in report.problems[0]
    assert (tmp_path / "keys" / f"vault.kek.{old_id}").exists()  # its segment may still be repaired
    assert vault.read_segment(rows[0].id) == clips[0]


def test_shred_destroys_the_key_and_keeps_the_chain(tmp_path: Path, sqlite_engine: Engine, clips: list[bytes],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEK, raising=False)
    vault = Vault(make_config(tmp_path, mirror=tmp_path / "mirror"), sqlite_engine)
    rows = store_all(vault, clips)
    victim = rows[1]
    assert (vault.mirror / victim.path).is_file()
    db_files = [tmp_path / "db" / name for name in ("trustcam.db", "trustcam.db-wal")]
    assert any(victim.wrapped_key.encode() in f.read_bytes() for f in db_files if f.exists())
    vault.shred(victim.id, "retention: no event for 24 h")
    assert not seg_file(vault, victim).exists() and not (vault.mirror / victim.path).exists()
    with Session(sqlite_engine) as session:
        row = session.get(SegmentRow, victim.id)
        deletions = list(session.scalars(select(DeletionRow)))
    assert row is not None and row.wrapped_key is None and row.deleted_at is not None
    assert row.chain_hash == victim.chain_hash  # the link stays
    assert [(d.segment_id, d.reason) for d in deletions] == [(victim.id, "retention: no event for 24 h")]
    with pytest.raises(VaultError, match=r"shredded.*cannot be recovered"):
        vault.read_segment(victim.id)
    assert vault.verify_chain(deep=True) == []
    for file in db_files:  # secure_delete + WAL truncate: the key is really gone from the database files
        assert not file.exists() or victim.wrapped_key.encode() not in file.read_bytes()
    vault.shred(victim.id, "again")  # idempotent
    with Session(sqlite_engine) as session:
        assert len(list(session.scalars(select(DeletionRow)))) == 1


def test_held_segments_are_refused(vault: Vault, clips: list[bytes]) -> None:
    rows = store_all(vault, clips)  # 4.8 s each from T0
    vault.hold_margin_s = 1.0
    with Session(vault.engine) as session, session.begin():
        session.execute(update(SegmentRow).where(SegmentRow.id == rows[0].id).values(held=1))
        session.add(EventRow(id="e" * 32, camera="front", label="person", track_id=1, start=T0 + 10, end=T0 + 10.2,
                             best_score=0.9, box=[0, 0, 1, 1], zones=[], rules=[], threat="high", snapshot=None,
                             model_name="yolox-nano", model_sha256="ab" * 32, held=1))
    for row in rows[:3]:  # held itself, a held event within the margin, a held event inside it
        assert vault.is_held(row)
        with pytest.raises(VaultError, match="legal hold"):
            vault.shred(row.id, "retention")
    vault.shred(rows[3].id, "retention")
    vault.shred(rows[0].id, "court order", force=True)
    assert [r.seq for r in vault.segments_between("front", 0, T0 * 2)] == [2, 3]


def test_key_files_are_checked(tmp_path: Path, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEK, raising=False)
    inside = make_config(tmp_path, key_file=tmp_path / "vault" / "keys" / "vault.kek")
    with pytest.raises(VaultError, match=r"inside the vault's storage root.*Move it outside"):
        load_kek(inside)
    in_mirror = make_config(tmp_path, mirror=tmp_path / "mirror", signing_key_file=tmp_path / "mirror" / "s.key")
    with pytest.raises(VaultError, match="inside the vault's mirror"):
        load_signing_key(in_mirror)
    config = make_config(tmp_path)
    kek = load_kek(config)  # created 0600 in a 0700 folder
    key_path = tmp_path / "keys" / "vault.kek"
    assert key_path.stat().st_mode & 0o777 == 0o600 and key_path.parent.stat().st_mode & 0o777 == 0o700
    assert load_kek(config).key_id == kek.key_id == key_id_of(key_path.read_bytes())
    key_path.chmod(0o644)
    with pytest.raises(VaultError, match=r"readable or writable by group/others \(mode 0644\); run `chmod 600"):
        Vault(config, sqlite_engine)
    key_path.chmod(0o600)
    key_path.write_bytes(b"short")
    with pytest.raises(VaultError, match="must be exactly 32 bytes, found 5"):
        load_kek(config)


def test_environment_kek_wins(tmp_path: Path, sqlite_engine: Engine, clips: list[bytes],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    secret = os.urandom(32)
    monkeypatch.setenv(ENV_KEK, base64.b64encode(secret).decode())
    vault = Vault(make_config(tmp_path), sqlite_engine)
    row = vault.store_segment("front", clips[0], T0, T0 + 4.8)
    assert row.kek_id == key_id_of(secret) and not (tmp_path / "keys" / "vault.kek").exists()
    assert vault.read_segment(row) == clips[0]
    monkeypatch.setenv(ENV_KEK, "not base64!")
    with pytest.raises(VaultError, match="TRUSTCAM_VAULT_KEK is not valid base64"):
        load_kek(make_config(tmp_path))
    # rotating an environment KEK: new key in TRUSTCAM_VAULT_KEK, the old one in TRUSTCAM_VAULT_KEK_OLD
    fresh = os.urandom(32)
    monkeypatch.setenv(ENV_KEK, base64.b64encode(fresh).decode())
    monkeypatch.setenv("TRUSTCAM_VAULT_KEK_OLD", base64.b64encode(secret).decode())
    report = rotate_kek(make_config(tmp_path), sqlite_engine)
    assert report.segments == 1 and report.new_id == key_id_of(fresh)
    monkeypatch.delenv("TRUSTCAM_VAULT_KEK_OLD")
    assert Vault(make_config(tmp_path), sqlite_engine).read_segment(row.id) == clips[0]


def test_mirror_takes_over_when_the_root_fails(tmp_path: Path, sqlite_engine: Engine, clips: list[bytes],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEK, raising=False)
    blocker = tmp_path / "not-a-disk"
    blocker.write_text("a file where the root folder should be: mkdir fails, even as root")
    alerts: list[str] = []
    vault = Vault(make_config(tmp_path, root=blocker / "rec", mirror=tmp_path / "mirror"), sqlite_engine,
                  on_alert=alerts.append)
    rows = store_all(vault, clips[:3])
    assert len(alerts) == 1 and "storage root" in alerts[0] and "continues on the mirror" in alerts[0]
    assert [f.object_id for f in vault.failovers] == [f"segment {r.id}" for r in rows]
    assert all((tmp_path / "mirror" / r.path).is_file() for r in rows)
    assert vault.read_segment(rows[2].id) == clips[2] and vault.verify_chain(deep=True) == []
    ref = vault.store_blob("front", b"snapshot")
    assert vault.read_blob(ref) == b"snapshot"

    broken = Vault(make_config(tmp_path, root=blocker / "a", mirror=blocker / "b"), sqlite_engine)
    with pytest.raises(VaultError, match=r"no storage path is writable .*not-a-disk/a: .*not-a-disk/b: "):
        broken.store_segment("front", clips[0], T0, T0 + 1)


def test_cameras_record_concurrently(vault: Vault, clips: list[bytes]) -> None:
    cameras = ["front", "back", "garage"]
    errors: list[BaseException] = []

    def record(camera: str) -> None:
        try:
            for i in range(5):
                vault.store_segment(camera, clips[i % len(clips)], T0 + 10 * i, T0 + 10 * (i + 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(c,)) for c in cameras]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Session(vault.engine) as session:
        for camera in cameras:
            assert list(session.scalars(select(SegmentRow.seq).where(SegmentRow.camera == camera)
                                        .order_by(SegmentRow.seq))) == [1, 2, 3, 4, 5]
    assert vault.verify_chain() == [] and vault.cameras() == sorted(cameras)


def test_snapshots_are_encrypted_and_bound_to_their_reference(vault: Vault) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(5000)
    ref = vault.store_blob("front", jpeg)
    camera, kind, _, name = ref.split("/")
    assert (camera, kind) == ("front", "snapshot") and name.endswith(".blob")
    assert vault.read_blob(ref) == jpeg and jpeg[4:40] not in (vault.root / ref).read_bytes()
    other = vault.store_blob("front", b"another")
    (vault.root / other).write_bytes((vault.root / ref).read_bytes())  # moved onto another reference
    with pytest.raises(VaultError, match="altered or moved"):
        vault.read_blob(other)
    data = bytearray((vault.root / ref).read_bytes())
    data[-1] ^= 1
    (vault.root / ref).write_bytes(bytes(data))
    with pytest.raises(VaultError, match="altered or truncated"):
        vault.read_blob(ref)
    with pytest.raises(VaultError, match="not a vault snapshot reference"):
        vault.read_blob("../../etc/passwd")
    vault.delete_blob(other)
    assert not (vault.root / other).exists()


def test_recorders_on_one_database_keep_one_chain_per_camera(tmp_path: Path, engine: Engine,
                                                              database_url: str) -> None:
    """Four vaults on one database (four `trustcam run` processes sharing PostgreSQL; each has its own in-process
    camera locks and connections) append to the same camera at once: the chain stays whole, nothing is refused."""
    vaults = [Vault(make_config(tmp_path), engine if n == 0 else open_database(database_url)) for n in range(4)]
    errors: list[BaseException] = []
    each = 15
    start = threading.Barrier(len(vaults))

    def record(vault: Vault, offset: int) -> None:
        try:
            start.wait()
            for i in range(each):
                vault.store_segment("front", b"x" * 100, T0 + 10 * i + offset, T0 + 10 * i + offset + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(v, n)) for n, v in enumerate(vaults)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Session(engine) as session:
        seqs = list(session.scalars(select(SegmentRow.seq).where(SegmentRow.camera == "front")
                                    .order_by(SegmentRow.seq)))
    assert seqs == list(range(1, len(vaults) * each + 1))
    assert all(vault.verify_chain("front") == [] for vault in vaults)
