"""Evidence bundles: export real footage, verify with nothing but the bundle, detect every kind of tampering."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.evidence import export_event, verify_bundle
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import CheckpointRow, EventRow
from trustcam.storage.vault import Vault, VaultError, checkpoint_message, public_key_fingerprint

T0 = float(int(time.time()) - 600)  # recorded ten minutes ago: `evidence verify` checks how soon it was signed
CLI = [sys.executable, "-m", "trustcam.cli"]
EVENT = "e1" * 16


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> list[bytes]:
    """Five real MP4 segments of 4.8 s (the source's keyframe interval), cut without re-encoding."""
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for i in range(5):
        path = folder / f"seg{i}.mp4"
        start, length = (4.8 * i, 4.8) if i < 4 else (0, 4.8)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{start}", "-i", str(car_video), "-t", f"{length}",
                        "-c", "copy", str(path)], check=True, timeout=60)
        out.append(path.read_bytes())
    return out


@pytest.fixture
def recorded(tmp_path: Path, clips: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Vault, Engine, Path]:
    """Five segments (seq 1-5, checkpoints signed at 3 and, at the clean stop, 5) and an event inside seq 3 whose
    margin reaches 2 and 4."""
    monkeypatch.delenv(ENV_KEK, raising=False)
    config = VaultConfig(root=tmp_path / "vault", key_file=tmp_path / "keys" / "vault.kek",
                         signing_key_file=tmp_path / "keys" / "signing.key", checkpoint_every=3)
    db = tmp_path / "data" / "trustcam.db"
    engine = open_database(f"sqlite:///{db}")
    vault = Vault(config, engine)
    for i, clip in enumerate(clips):
        vault.store_segment("front", clip, T0 + 4.8 * i, T0 + 4.8 * (i + 1), labels=["car"])
    vault.close_camera("front")
    with Session(engine) as session, session.begin():
        session.add(EventRow(id=EVENT, camera="front", label="car", track_id=7, start=T0 + 10.0, end=T0 + 13.0,
                             best_score=0.91, box=[0.1, 0.2, 0.3, 0.4], zones=["drive"], rules=[], threat="high",
                             snapshot=vault.store_blob("front", b"\xff\xd8\xff\xe0 jpeg"), model_name="yolox-nano",
                             model_sha256="ab" * 32))
    return vault, engine, tmp_path


@pytest.fixture
def bundle(recorded: tuple[Vault, Engine, Path]) -> Path:
    vault, engine, tmp_path = recorded
    return export_event(vault, engine, EVENT, tmp_path / "out" / "evidence.zip")


def rewrite(source: Path, target: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy a bundle entry by entry through ``edit`` (what an attacker with a ZIP tool can do)."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    edit(entries)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return target


def edit_manifest(entries: dict[str, bytes], change: Callable[[dict], None]) -> None:
    manifest = json.loads(entries["manifest.json"])
    change(manifest)
    entries["manifest.json"] = json.dumps(manifest, indent=2).encode()


def test_export_then_verify(bundle: Path, recorded: tuple[Vault, Engine, Path], clips: list[bytes]) -> None:
    vault, engine, _ = recorded
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        chain = json.loads(archive.read("chain.json"))
        segment3 = archive.read("clip/segment-000003.mp4")
        assert archive.read("snapshot.jpg") == b"\xff\xd8\xff\xe0 jpeg"
    assert {"clip/segment-000002.mp4", "clip/segment-000003.mp4", "clip/segment-000004.mp4", "clip/event.mp4",
            "manifest.json", "manifest.sig", "chain.json", "checkpoints.json", "checkpoint.json", "checkpoint.msg",
            "checkpoint.sig",
            "public_key.pem", "README.txt", "snapshot.jpg"} == names
    assert segment3 == clips[2]
    assert [s["seq"] for s in manifest["segments"]] == [2, 3, 4]
    assert manifest["event"]["model"] == {"name": "yolox-nano", "sha256": "ab" * 32}
    assert manifest["public_key_sha256"] == public_key_fingerprint(vault.public_key)
    # seq 4 is covered by the checkpoint signed at the clean stop (5); the chain starts at seq 1, as no checkpoint
    # precedes seq 2; nothing was signed for the export
    assert [r["seq"] for r in chain["rows"]] == [1, 2, 3, 4, 5] and manifest["checkpoint"]["seq"] == 5
    with Session(engine) as session:
        assert sorted(session.scalars(select(CheckpointRow.seq))) == [3, 5]
    assert [s["signed"] >= s["recorded"] for s in manifest["segments"]] == [True] * 3

    report = verify_bundle(bundle, expected_fingerprint=public_key_fingerprint(vault.public_key))
    assert report.ok, report.problems
    facts = "\n".join(report.facts)
    assert "3 segment(s), seq 2 to 4" in facts and "hash chain intact from seq 1 to the checkpoint at seq 5" in facts
    assert "yolox-nano" in facts and report.fingerprint in facts

    with zipfile.ZipFile(bundle) as archive, archive.open("clip/event.mp4") as handle, av.open(handle) as joined:
        frames = sum(1 for _ in joined.decode(video=0))
        duration = joined.duration / 1e6
    assert frames >= 3 * 55 and 13.5 < duration < 15.5  # three 4.8 s segments at 12.5 fps, joined in order


def test_export_reuses_an_existing_checkpoint_and_refuses_unknown_events(
        recorded: tuple[Vault, Engine, Path]) -> None:
    vault, engine, tmp_path = recorded
    with Session(engine) as session, session.begin():
        session.add(EventRow(id="e2" * 16, camera="front", label="car", track_id=8, start=T0 + 5.0, end=T0 + 6.0,
                             best_score=0.8, box=[0, 0, 1, 1], zones=[], rules=[], threat="low", snapshot=None,
                             model_name="yolox-nano", model_sha256="ab" * 32))
    path = export_event(vault, engine, "e2" * 16, tmp_path / "e2.zip", margin_s=0.0)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("checkpoint.json"))["seq"] == 3  # seq 2 is covered by the checkpoint at 3
    assert verify_bundle(path).ok
    with pytest.raises(VaultError, match="no such event"):
        export_event(vault, engine, "0" * 32, tmp_path / "x.zip")


def test_the_readme_steps_work_by_hand(bundle: Path, tmp_path: Path) -> None:
    """A court expert without trustcam: unzip, sha256sum, printf, openssl."""
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(folder)

    def sh(command: str) -> str:
        return subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, check=True,
                              timeout=30).stdout

    manifest = json.loads((folder / "manifest.json").read_text())
    assert sh("openssl pkey -pubin -in public_key.pem -outform DER | tail -c 32 | sha256sum").split()[0] == \
        manifest["public_key_sha256"]
    for signed in ("manifest", "checkpoint"):
        ext = "json" if signed == "manifest" else "msg"
        assert "Signature Verified Successfully" in sh(
            f"openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in {signed}.{ext} -sigfile {signed}.sig")
    for line in sh("sha256sum clip/segment-*.mp4").splitlines():
        digest, name = line.split()
        seq = int(name.split("-")[1].split(".")[0])
        assert next(s for s in manifest["segments"] if s["seq"] == seq)["sha256"] == digest
    fmt = r"trustcam-chain-v1\ncamera=%s\nseq=%d\nsegment=%s\nstart=%.6f\nend=%.6f\nsize=%d\nsha256=%s\nprev=%s\n"
    for row in json.loads((folder / "chain.json").read_text())["rows"]:
        args = " ".join(str(row[k]) for k in ("seq", "segment", "start", "end", "size", "sha256", "prev_hash"))
        assert sh(f"f='{fmt}'; printf \"$f\" front {args} | sha256sum").split()[0] == row["chain_hash"]
    assert (folder / "README.txt").read_text().count("openssl") >= 3


def _flip_clip(entries: dict[str, bytes]) -> None:
    data = bytearray(entries["clip/segment-000003.mp4"])
    data[len(data) // 2] ^= 0x40
    entries["clip/segment-000003.mp4"] = bytes(data)


def _remove_segment(entries: dict[str, bytes]) -> None:
    del entries["clip/segment-000003.mp4"]

    def change(manifest: dict) -> None:
        manifest["segments"] = [s for s in manifest["segments"] if s["seq"] != 3]
        del manifest["files"]["clip/segment-000003.mp4"]

    edit_manifest(entries, change)


def _swap_segments(entries: dict[str, bytes]) -> None:
    a, b = "clip/segment-000002.mp4", "clip/segment-000003.mp4"
    entries[a], entries[b] = entries[b], entries[a]

    def change(manifest: dict) -> None:
        files = manifest["files"]
        files[a], files[b] = files[b], files[a]

    edit_manifest(entries, change)


def _replace_signature(entries: dict[str, bytes]) -> None:
    forger = Ed25519PrivateKey.generate()
    checkpoint = json.loads(entries["checkpoint.json"])
    message = checkpoint_message(checkpoint["camera"], checkpoint["seq"], checkpoint["chain_hash"],
                                 checkpoint["time"])
    checkpoint["signature"] = forger.sign(message).hex()
    entries["checkpoint.json"] = json.dumps(checkpoint, indent=2).encode()
    entries["checkpoint.sig"] = bytes.fromhex(checkpoint["signature"])


def _other_public_key(entries: dict[str, bytes]) -> None:
    entries["public_key.pem"] = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("edit", "expected"), [
    (_flip_clip, "clip/segment-000003.mp4: sha256 does not match chain seq 3"),
    (_remove_segment, "chain seq 3 lies between exported segments but is not in the manifest"),
    (_swap_segments, "clip/segment-000002.mp4: sha256 does not match chain seq 2"),
    (_replace_signature, "checkpoint at seq 5: signature is not valid"),
    (_other_public_key, "manifest.sig: the manifest's signature is not valid"),
], ids=["flipped-byte", "removed-segment", "swapped-segments", "forged-signature", "other-public-key"])
def test_tampering_is_detected(bundle: Path, tmp_path: Path, edit: Callable[[dict[str, bytes]], None],
                               expected: str) -> None:
    report = verify_bundle(rewrite(bundle, tmp_path / "tampered.zip", edit))
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems


def test_a_fully_re_signed_bundle_is_caught_by_the_fingerprint(bundle: Path, tmp_path: Path) -> None:
    """An attacker who re-signs everything with their own key makes a self-consistent bundle: only comparing the
    key's fingerprint with the operator's published one exposes it, so verify reports the fingerprint."""
    genuine = verify_bundle(bundle).fingerprint
    forger = Ed25519PrivateKey.generate()

    def resign(entries: dict[str, bytes]) -> None:
        _replace_signature(entries)
        checkpoint = json.loads(entries["checkpoint.json"])
        checkpoint["signature"] = forger.sign(entries["checkpoint.msg"]).hex()
        checkpoint["public_key"] = forger.public_key().public_bytes(serialization.Encoding.Raw,
                                                                    serialization.PublicFormat.Raw).hex()
        entries["checkpoint.json"] = json.dumps(checkpoint, indent=2).encode()
        entries["checkpoint.sig"] = bytes.fromhex(checkpoint["signature"])
        listed = json.loads(entries["checkpoints.json"])
        for entry in listed["checkpoints"]:
            entry["signature"] = forger.sign(entry["message"].encode()).hex()
            entry["public_key"] = checkpoint["public_key"]
        entries["checkpoints.json"] = json.dumps(listed, indent=2).encode()
        entries["public_key.pem"] = forger.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

        def change(manifest: dict) -> None:
            manifest["public_key_sha256"] = public_key_fingerprint(forger.public_key())
            for name in ("checkpoint.json", "checkpoints.json", "checkpoint.sig", "public_key.pem"):
                manifest["files"][name] = hashlib.sha256(entries[name]).hexdigest()

        edit_manifest(entries, change)
        entries["manifest.sig"] = forger.sign(entries["manifest.json"])

    forged = rewrite(bundle, tmp_path / "forged.zip", resign)
    assert verify_bundle(forged).ok and verify_bundle(forged).fingerprint != genuine
    report = verify_bundle(forged, expected_fingerprint=genuine)
    assert not report.ok and "not by the expected key" in report.problems[0]


def test_cli_export_verify_chain_rotate(recorded: tuple[Vault, Engine, Path], tmp_path: Path) -> None:
    vault, _, _ = recorded
    config = tmp_path / "trustcam.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nvault:\n  root: {tmp_path / 'vault'}\n"
                      f"  key_file: {tmp_path / 'keys' / 'vault.kek'}\n"
                      f"  signing_key_file: {tmp_path / 'keys' / 'signing.key'}\n  checkpoint_every: 3\n")
    env = {k: v for k, v in os.environ.items() if k != ENV_KEK}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    good = tmp_path / "cli.zip"
    result = cli("evidence", "export", EVENT, "--out", str(good), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert public_key_fingerprint(vault.public_key) in result.stdout

    result = cli("evidence", "verify", str(good), "--fingerprint", public_key_fingerprint(vault.public_key))
    assert result.returncode == 0 and result.stdout.startswith("VERIFIED\n"), result.stdout
    bad = rewrite(good, tmp_path / "bad.zip", _flip_clip)
    result = cli("evidence", "verify", str(bad))
    assert result.returncode == 1 and result.stdout.startswith("NOT VERIFIED")
    assert "  clip/segment-000003.mp4: sha256 does not match chain seq 3 (clip altered or swapped)" in \
        result.stdout.splitlines()
    result = cli("evidence", "verify", str(tmp_path / "missing.zip"))
    assert result.returncode == 1 and "not found" in result.stderr

    result = cli("keys", "rotate", "--config", str(config))
    assert result.returncode == 0 and "5 segment key(s) and 1 snapshot and face key(s) re-wrapped" in result.stdout
    result = cli("evidence", "chain", "--config", str(config), "--deep")
    assert result.returncode == 0 and "chain OK: front" in result.stdout, result.stdout + result.stderr
    (vault.root / vault.segments_between("front", T0, T0 + 1)[0].path).unlink()
    result = cli("evidence", "chain", "--config", str(config), "--camera", "front")
    assert result.returncode == 1 and "is missing from the root and the mirror" in result.stdout
    result = cli("evidence", "export", "0" * 32, "--out", str(tmp_path / "x.zip"), "--config", str(config))
    assert result.returncode == 1 and "error: event 00000000000000000000000000000000: no such event" in result.stderr
