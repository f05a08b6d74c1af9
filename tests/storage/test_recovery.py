"""Start-up recovery after a real kill -9 mid-write, and after the damage a crash or an operator can leave."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.recovery import LOST_REASON, recover
from trustcam.storage.schema import DeletionRow, SegmentRow
from trustcam.storage.vault import Vault

T0 = 1_750_000_000.0

# The recorder process: N small segments, then a big one fed slowly (a camera still producing it), during
# which the parent kills it with SIGKILL.
WRITER = r"""
import io, os, sys, time
from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.vault import Vault

root, url, keys, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
vault = Vault(VaultConfig(root=root, key_file=f"{keys}/vault.kek", signing_key_file=f"{keys}/signing.key",
                          checkpoint_every=4), open_database(url))
for i in range(n):
    vault.store_segment("front", os.urandom(256 * 1024), T0 + 10 * i, T0 + 10 * i + 10)
    print("stored", i + 1, flush=True)

class Trickle(io.RawIOBase):
    left = 256 * 1024 * 1024
    def readable(self):
        return True
    def readinto(self, buffer):
        time.sleep(0.01)
        n = min(len(buffer), self.left)
        buffer[:n] = b"\x07" * n
        self.left -= n
        return n

print("writing big", flush=True)
vault.store_segment("front", io.BufferedReader(Trickle()), T0 + 10 * n, T0 + 10 * n + 10)
print("finished", flush=True)
""".replace("T0", repr(T0))


def make_vault(tmp_path: Path, **config: object) -> Vault:
    cfg = VaultConfig(root=tmp_path / "rec", key_file=tmp_path / "keys" / "vault.kek",
                      signing_key_file=tmp_path / "keys" / "signing.key", checkpoint_every=4, **config)
    return Vault(cfg, open_database(f"sqlite:///{tmp_path / 'db' / 'trustcam.db'}"))


def rows(vault: Vault) -> list[SegmentRow]:
    with Session(vault.engine) as session:
        return list(session.scalars(select(SegmentRow).order_by(SegmentRow.camera, SegmentRow.seq)))


def deletions(vault: Vault) -> dict[str, str]:
    with Session(vault.engine) as session:
        return {d.segment_id: d.reason for d in session.scalars(select(DeletionRow))}


def assert_consistent(vault: Vault) -> None:
    """DB, files and chain agree: every live row has its file, every file has a live row, chains verify."""
    live = {r.path for r in rows(vault) if r.deleted_at is None}
    files = {p.relative_to(vault.root).as_posix() for p in vault.root.rglob("*") if p.is_file()}
    assert files == live
    assert vault.verify_chain(deep=True) == []


def test_kill_9_mid_write_loses_only_the_open_segment(tmp_path: Path) -> None:
    n = 6
    keys, url = tmp_path / "keys", f"sqlite:///{tmp_path / 'db' / 'trustcam.db'}"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "rec"), url, str(keys), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while (line := writer.stdout.readline()) and line.strip() != "writing big":
            lines.append(line.strip())
        assert lines == [f"stored {i}" for i in range(1, n + 1)], writer.stderr.read()
        deadline = time.monotonic() + 20
        parts: list[Path] = []
        while time.monotonic() < deadline:  # kill once a few MB of the big segment are on disk
            parts = list((tmp_path / "rec").rglob("*.part"))
            if parts and parts[0].stat().st_size > 4 * 1024 * 1024:
                break
            time.sleep(0.005)
        assert parts, "the big segment never started"
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL
    part = parts[0].relative_to(tmp_path / "rec").as_posix()

    vault = make_vault(tmp_path)
    started = time.perf_counter()
    report = recover(vault)
    elapsed = time.perf_counter() - started

    assert report.partial_removed == [part]
    assert report.orphans_removed == [] and report.missing == [] and report.warnings == []
    assert report.chain_problems == {"front": []} and not report.ok
    assert "1 unfinished segment(s) lost" in report.summary() and part in report.summary()
    assert [r.seq for r in rows(vault)] == list(range(1, n + 1))
    assert_consistent(vault)
    # recording goes on: the next segment continues the chain
    nxt = vault.store_segment("front", b"after the crash", T0 + 10 * n, T0 + 10 * n + 10)
    assert nxt.seq == n + 1 and nxt.prev_hash == rows(vault)[n - 1].chain_hash
    assert vault.verify_chain("front", deep=True) == []
    again = recover(vault)  # idempotent
    assert again.ok, again.summary()
    print(f"recovery after kill -9: {elapsed * 1000:.0f} ms; {report.summary()}")


LOOP_WRITER = r"""
import os, sys
from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.vault import Vault

root, url, keys = sys.argv[1], sys.argv[2], sys.argv[3]
vault = Vault(VaultConfig(root=root, key_file=f"{keys}/vault.kek", signing_key_file=f"{keys}/signing.key",
                          checkpoint_every=3), open_database(url))
t = 1_750_000_000.0
print("ready", flush=True)
first = True
while True:
    row = vault.store_segment("front", os.urandom(300 * 1024), t, t + 10)
    t += 10
    if first:
        print("stored", flush=True)  # this run's first segment is in: kills from now on hit a writing vault
        first = False
"""


def test_kill_9_at_random_moments_never_leaves_the_vault_inconsistent(tmp_path: Path) -> None:
    rng = random.Random(7)
    url = f"sqlite:///{tmp_path / 'db' / 'trustcam.db'}"
    stored, lost = 0, 0
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", LOOP_WRITER, str(tmp_path / "rec"), url,
                                   str(tmp_path / "keys")], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        assert writer.stdout.readline().strip() == "stored"  # a loaded machine may be slow to write the first one
        time.sleep(rng.uniform(0.05, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        vault = make_vault(tmp_path)
        report = recover(vault)
        assert len(report.partial_removed) + len(report.orphans_removed) <= 1, report.summary()  # the open one
        assert report.missing == [] and report.warnings == [] and report.chain_problems == {"front": []}
        assert_consistent(vault)
        seqs = [r.seq for r in rows(vault)]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > stored  # each run added to the chain
        stored = len(seqs)
        lost += len(report.partial_removed) + len(report.orphans_removed)
    print(f"4 kills at random moments: {stored} segments kept, {lost} open segment(s) lost")


def test_recovery_repairs_orphans_missing_files_and_interrupted_shreds(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    segs = [vault.store_segment("front" if i < 4 else "back", os.urandom(1000), T0 + 10 * i, T0 + 10 * i + 10)
            for i in range(6)]
    # a file renamed into place whose row never reached the database (crash between rename and commit)
    orphan = vault.root / "front" / "2025-06-15" / ("f" * 32 + ".seg")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(os.urandom(500))
    # a file that vanished (disk error, an operator's rm)
    (vault.root / segs[1].path).unlink()
    # a shred interrupted after the key was destroyed, before the file was removed
    vault.shred(segs[4].id, "test shred")
    (vault.root / segs[4].path).write_bytes(os.urandom(100))

    report = recover(vault)

    assert sorted(report.orphans_removed) == sorted([orphan.relative_to(vault.root).as_posix(), segs[4].path])
    assert report.missing == [segs[1].id]
    assert deletions(vault)[segs[1].id] == LOST_REASON
    lost = next(r for r in rows(vault) if r.id == segs[1].id)
    assert lost.deleted_at is not None and lost.deletion_reason == LOST_REASON and lost.wrapped_key is None
    assert report.chain_problems == {"back": [], "front": []}
    assert "1 segment(s) missing, marked lost" in report.summary()
    assert_consistent(vault)
    assert vault.read_segment(segs[0].id) and vault.read_segment(segs[2].id)
    assert recover(vault).ok


def test_unmounted_storage_is_not_written_off(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    for i in range(3):
        vault.store_segment("front", b"x" * 100, T0 + 10 * i, T0 + 10 * i + 10)
    shutil.move(vault.root, tmp_path / "elsewhere")  # the disk is not mounted: the mount point is empty
    vault.root.mkdir()
    report = recover(vault)
    assert report.missing == [] and "nothing was marked lost" in report.warnings[0]
    assert all(r.deleted_at is None for r in rows(vault))
    assert report.chain_problems["front"]  # verify_chain still says the files are missing


def test_missing_file_is_restored_from_the_mirror(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, mirror=tmp_path / "mirror")
    segs = [vault.store_segment("front", os.urandom(2000), T0 + 10 * i, T0 + 10 * i + 10) for i in range(3)]
    data = vault.read_segment(segs[1].id)
    (vault.root / segs[1].path).unlink()
    report = recover(vault)
    assert report.restored == [segs[1].id] and report.missing == []
    assert (vault.root / segs[1].path).is_file() and vault.read_segment(segs[1].id) == data
    assert_consistent(vault)


def test_a_foreign_database_does_not_wipe_the_storage(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    for i in range(3):
        vault.store_segment("front", b"x" * 100, T0 + 10 * i, T0 + 10 * i + 10)
    other = Vault(vault.config, open_database(f"sqlite:///{tmp_path / 'other.db'}"))  # a changed database_url
    report = recover(other)
    assert report.orphans_removed == [] and "wrong database_url" in report.warnings[0]
    assert len(list(vault.root.rglob("*.seg"))) == 3


def test_an_empty_root_is_not_refilled_from_the_mirror(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, mirror=tmp_path / "mirror")
    for i in range(3):
        vault.store_segment("front", b"x" * 100, T0 + 10 * i, T0 + 10 * i + 10)
    shutil.rmtree(vault.root)  # the root disk is not mounted: its mount point is bare
    vault.root.mkdir()
    report = recover(vault)
    assert report.restored == [] and report.missing == [] and "not mounted" in report.warnings[0]
    assert not any(vault.root.rglob("*")) and report.chain_problems == {"front": []}  # read from the mirror


def test_recovery_of_one_camera_leaves_the_other_cameras_files_alone(tmp_path: Path) -> None:
    """Under `trustcam cluster` another process may be writing camera b's segment on the same root while camera a's
    process recovers: only a's leftovers go, b's open ``.part`` and its not-yet-indexed ``.seg`` stay."""
    vault = make_vault(tmp_path)
    vault.store_segment("a", os.urandom(4096), T0, T0 + 10)
    vault.store_segment("b", os.urandom(4096), T0, T0 + 10)
    day = time.strftime("%Y-%m-%d", time.gmtime(T0))
    leftovers = {cam: (vault.root / cam / day / "open.seg.part", vault.root / cam / day / "renamed.seg")
                 for cam in ("a", "b")}
    for part, seg in leftovers.values():
        part.write_bytes(b"\x01" * 100)
        seg.write_bytes(b"\x02" * 100)

    report = recover(vault, cameras=["a"])

    assert report.cameras == ["a"] and report.chain_problems == {"a": []}
    assert sorted(report.partial_removed) == [f"a/{day}/open.seg.part"]
    assert sorted(report.orphans_removed) == [f"a/{day}/renamed.seg"]
    assert not any(p.exists() for p in leftovers["a"])
    assert all(p.exists() for p in leftovers["b"])  # the other camera's writer is not a crash's leftover
    assert recover(vault).orphans_removed == [f"b/{day}/renamed.seg"]  # a whole-vault recovery still cleans it
