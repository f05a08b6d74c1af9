"""`trustcam evidence verify` must not say VERIFIED for a bundle anyone could have signed: a real bundle, re-signed
by an attacker with their own key (self-consistent, every signature valid), checked with the real CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.evidence import export_event
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import EventRow
from trustcam.storage.vault import Vault, public_key_fingerprint

T0 = float(int(time.time()) - 600)  # recent: verify checks how soon footage was signed
CLI = [sys.executable, "-m", "trustcam.cli"]
EVENT = "e2" * 16
SIGNER_UNCONFIRMED = 3


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> tuple[Path, Path, str]:
    """The genuine bundle of an event recorded in three real MP4 segments, the same bundle re-signed by a
    forger, and the genuine key's fingerprint."""
    tmp = tmp_path_factory.mktemp("bundles")
    config = VaultConfig(root=tmp / "vault", key_file=tmp / "keys" / "vault.kek",
                         signing_key_file=tmp / "keys" / "signing.key", checkpoint_every=3)
    engine = open_database(f"sqlite:///{tmp / 'data' / 'trustcam.db'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(ENV_KEK, raising=False)
        vault = Vault(config, engine)
        for i in range(3):
            clip = tmp / f"seg{i}.mp4"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{4.8 * i}", "-i", str(car_video), "-t", "4.8",
                            "-c", "copy", str(clip)], check=True, timeout=60)
            vault.store_segment("front", clip.read_bytes(), T0 + 4.8 * i, T0 + 4.8 * (i + 1), labels=["car"])
        with Session(engine) as session, session.begin():
            session.add(EventRow(id=EVENT, camera="front", label="car", track_id=1, start=T0 + 5.0, end=T0 + 9.0,
                                 best_score=0.9, box=[0.1, 0.2, 0.3, 0.4], zones=[], rules=[], threat="high",
                                 snapshot=None, model_name="yolox-nano", model_sha256="ab" * 32))
        genuine = export_event(vault, engine, EVENT, tmp / "genuine.zip")
    return genuine, resign(genuine, tmp / "forged.zip"), public_key_fingerprint(vault.public_key)


def resign(source: Path, target: Path) -> Path:
    """What a forger does after altering a bundle: sign the checkpoint and the manifest again with a key of their
    own and put that key in; every signature inside is then valid."""
    forger = Ed25519PrivateKey.generate()
    public = forger.public_key()
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    checkpoint = json.loads(entries["checkpoint.json"])
    checkpoint["signature"] = forger.sign(entries["checkpoint.msg"]).hex()
    checkpoint["public_key"] = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    entries["checkpoint.json"] = json.dumps(checkpoint, indent=2).encode()
    entries["checkpoint.sig"] = bytes.fromhex(checkpoint["signature"])
    listed = json.loads(entries["checkpoints.json"])
    for entry in listed["checkpoints"]:
        entry["signature"] = forger.sign(entry["message"].encode()).hex()
        entry["public_key"] = checkpoint["public_key"]
    entries["checkpoints.json"] = json.dumps(listed, indent=2).encode()
    entries["public_key.pem"] = public.public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    manifest = json.loads(entries["manifest.json"])
    manifest["public_key_sha256"] = public_key_fingerprint(public)
    for name in ("checkpoint.json", "checkpoints.json", "checkpoint.sig", "public_key.pem"):
        manifest["files"][name] = hashlib.sha256(entries[name]).hexdigest()
    entries["manifest.json"] = json.dumps(manifest, indent=2).encode()
    entries["manifest.sig"] = forger.sign(entries["manifest.json"])
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return target


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, "evidence", "verify", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_re_signed_bundle_without_fingerprint_is_not_verified(bundles: tuple[Path, Path, str]) -> None:
    _genuine, forged, _fingerprint = bundles
    result = verify(str(forged))
    assert result.returncode == SIGNER_UNCONFIRMED, result.stdout + result.stderr
    assert result.stdout.startswith("SIGNATURE VALID, SIGNER UNCONFIRMED\n")
    assert "VERIFIED\n" not in result.stdout
    assert "nothing says that key is the operator's" in result.stderr and "--fingerprint" in result.stderr


def test_genuine_bundle_without_fingerprint_is_unconfirmed_too(bundles: tuple[Path, Path, str]) -> None:
    """The CLI cannot tell the two apart without the published fingerprint: same answer, same exit code."""
    genuine, _forged, fingerprint = bundles
    result = verify(str(genuine))
    assert result.returncode == SIGNER_UNCONFIRMED and fingerprint in result.stderr


def test_fingerprint_decides(bundles: tuple[Path, Path, str]) -> None:
    genuine, forged, fingerprint = bundles
    ok = verify(str(genuine), "--fingerprint", fingerprint)
    assert ok.returncode == 0 and ok.stdout.startswith("VERIFIED\n"), ok.stdout + ok.stderr
    wrong = verify(str(forged), "--fingerprint", fingerprint)
    assert wrong.returncode == 1 and wrong.stdout.startswith("NOT VERIFIED")
    assert "not by the expected key" in wrong.stdout


def test_any_key_is_an_explicit_choice(bundles: tuple[Path, Path, str]) -> None:
    _genuine, forged, _fingerprint = bundles
    result = verify(str(forged), "--any-key")
    assert result.returncode == 0 and result.stdout.startswith("VERIFIED (signer not confirmed: --any-key)\n")


def test_broken_bundle_still_exits_1(bundles: tuple[Path, Path, str], tmp_path: Path) -> None:
    _genuine, forged, _fingerprint = bundles
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(forged) as source, zipfile.ZipFile(broken, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data[:-1] + bytes([data[-1] ^ 1]) if name == "clip/segment-000002.mp4" else data)
    for extra in ((), ("--any-key",)):
        result = verify(str(broken), *extra)
        assert result.returncode == 1 and result.stdout.startswith("NOT VERIFIED"), result.stdout
