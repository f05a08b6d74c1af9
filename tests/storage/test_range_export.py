"""Range exports: the signed evidence bundle of a camera's footage between two times, built by the same core as
event bundles and verified the same way; a range bundle that leaves out a segment of its range fails."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from trustcam.cli import app
from trustcam.config.schema import VaultConfig
from trustcam.storage.database import open_database
from trustcam.storage.evidence import build_bundle, build_range_bundle, verify_bundle
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.schema import EventRow, SegmentRow
from trustcam.storage.vault import Vault, VaultError, public_key_fingerprint

T0 = float(int(time.time()) - 600)  # ten minutes ago: verify checks how soon after recording it was signed
SEG = 4.8  # the car clip's keyframe interval: segments cut there without re-encoding


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, car_video: Path) -> list[bytes]:
    folder = tmp_path_factory.mktemp("range-clips")
    out = []
    for i in range(5):
        path = folder / f"seg{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{SEG * (i % 4)}", "-i", str(car_video), "-t",
                        f"{SEG}", "-c", "copy", str(path)], check=True, timeout=60)
        out.append(path.read_bytes())
    return out


@pytest.fixture
def recorded(tmp_path: Path, clips: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Vault, Engine, Path]:
    """Five segments of camera 'front' (seq 1-5, checkpoints at 3 and at the clean stop, 5); seq 2 shredded."""
    monkeypatch.delenv(ENV_KEK, raising=False)
    config = VaultConfig(root=tmp_path / "vault", key_file=tmp_path / "keys" / "vault.kek",
                         signing_key_file=tmp_path / "keys" / "signing.key", checkpoint_every=3)
    engine = open_database(f"sqlite:///{tmp_path / 'data' / 'trustcam.db'}")
    vault = Vault(config, engine)
    for i, clip in enumerate(clips):
        vault.store_segment("front", clip, T0 + SEG * i, T0 + SEG * (i + 1), labels=["car"])
    vault.close_camera("front")
    vault.shred(_segment(engine, 2).id, "shredded by hand: privacy request")
    return vault, engine, tmp_path


def _segment(engine: Engine, seq: int) -> SegmentRow:
    with Session(engine) as session:
        return session.scalars(select(SegmentRow).where(SegmentRow.seq == seq)).one()


def _entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_range_bundle_holds_exactly_the_range_and_verifies(recorded: tuple[Vault, Engine, Path],
                                                           clips: list[bytes]) -> None:
    vault, engine, _ = recorded
    data = build_range_bundle(vault, engine, "front", T0 + 6.0, T0 + 16.0)  # overlaps seq 2 (shredded), 3 and 4
    entries = _entries(data)
    manifest = json.loads(entries["manifest.json"])
    assert manifest["export"] == "range" and "event" not in manifest
    assert manifest["range"] == {**manifest["range"], "camera": "front", "start": T0 + 6.0, "end": T0 + 16.0}
    assert [s["seq"] for s in manifest["segments"]] == [2, 3, 4]
    assert manifest["segments"][0]["file"] is None and "privacy" in manifest["segments"][0]["shredded"]["reason"]
    assert sorted(n for n in entries if n.startswith("clip/")) == [
        "clip/range.mp4", "clip/segment-000003.mp4", "clip/segment-000004.mp4"]
    assert entries["clip/segment-000003.mp4"] == clips[2] and entries["clip/segment-000004.mp4"] == clips[3]
    assert manifest["clip"] == "clip/range.mp4" and manifest["snapshot"] is None

    report = verify_bundle(data, expected_fingerprint=public_key_fingerprint(vault.public_key))
    assert report.ok, report.problems
    facts = "\n".join(report.facts)
    assert "range export (no event): camera front" in facts and "seq 2 was deleted before export" in facts
    assert "detected by model" not in facts


def test_event_bundles_share_the_core_and_say_so(recorded: tuple[Vault, Engine, Path]) -> None:
    vault, engine, _ = recorded
    with Session(engine) as session, session.begin():
        session.add(EventRow(id="e1" * 16, camera="front", label="car", track_id=1, start=T0 + 15.0, end=T0 + 16.0,
                             best_score=0.9, box=[0, 0, 1, 1], zones=[], rules=[], threat="low", snapshot=None,
                             model_name="yolox-nano", model_sha256="ab" * 32))
    manifest = json.loads(_entries(build_bundle(vault, engine, "e1" * 16, margin_s=0.0))["manifest.json"])
    assert manifest["export"] == "event" and manifest["event"]["id"] == "e1" * 16 and "range" not in manifest
    assert manifest["clip"] == "clip/event.mp4"


def test_a_range_bundle_missing_a_segment_of_its_range_fails(recorded: tuple[Vault, Engine, Path]) -> None:
    """Even signed with the vault's own key (an export bug, or an insider trimming footage), a range bundle that
    leaves out the last segment of its range, or claims one outside it, does not verify."""
    vault, engine, _ = recorded
    entries = _entries(build_range_bundle(vault, engine, "front", T0 + 10.0, T0 + 16.0))  # seq 3 and 4

    def resigned(change: Callable[[dict], None]) -> bytes:
        """The bundle with its manifest changed and signed again by the vault's key; unlisted files dropped."""
        manifest = json.loads(entries["manifest.json"])
        change(manifest)
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("manifest.json", manifest_bytes)
            archive.writestr("manifest.sig", vault.signer.sign(manifest_bytes))
            for name in manifest["files"]:
                archive.writestr(name, entries[name])
        return buffer.getvalue()

    def drop_last(manifest: dict) -> None:
        manifest["segments"] = manifest["segments"][:-1]
        del manifest["files"]["clip/segment-000004.mp4"]

    def narrow(manifest: dict) -> None:
        manifest["range"]["end"] = T0 + 12.0  # seq 4 (from T0 + 14.4) is now outside the claimed range

    report = verify_bundle(resigned(drop_last))
    assert not report.ok
    assert "chain seq 4 overlaps the exported range but is not in the manifest (left out)" in report.problems
    report = verify_bundle(resigned(narrow))
    assert not report.ok and "segment seq 4 lies outside the exported range (added)" in report.problems


def test_refusals_name_the_problem(recorded: tuple[Vault, Engine, Path], clips: list[bytes]) -> None:
    vault, engine, _ = recorded
    with pytest.raises(VaultError, match="must be after the start"):
        build_range_bundle(vault, engine, "front", T0 + 10.0, T0 + 10.0)
    with pytest.raises(VaultError, match="no recorded footage of camera front"):
        build_range_bundle(vault, engine, "front", T0 + 1000.0, T0 + 2000.0)
    with pytest.raises(VaultError, match="no recorded footage of camera front"):
        build_range_bundle(vault, engine, "front", T0 + 5.0, T0 + 9.0)  # only the shredded seq 2
    with pytest.raises(VaultError, match="a bundle built in memory may hold; export a shorter range"):
        build_range_bundle(vault, engine, "front", T0, T0 + 30.0, max_bytes=len(clips[0]))
    vault.store_segment("front", clips[0], T0 + SEG * 5, T0 + SEG * 6)  # seq 6: no checkpoint covers it yet
    with pytest.raises(VaultError, match="range export: footage not yet covered by a checkpoint"):
        build_range_bundle(vault, engine, "front", T0 + 20.0, T0 + 30.0)


def test_cli_export_range(recorded: tuple[Vault, Engine, Path]) -> None:
    vault, _, tmp_path = recorded
    config = tmp_path / "trustcam.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nvault:\n  root: {tmp_path / 'vault'}\n"
                      f"  key_file: {tmp_path / 'keys' / 'vault.kek'}\n"
                      f"  signing_key_file: {tmp_path / 'keys' / 'signing.key'}\n  checkpoint_every: 3\n")
    out = tmp_path / "out" / "range.zip"
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + 10.0))  # ISO, UTC
    result = CliRunner().invoke(app, ["evidence", "export-range", "front", "--start", start, "--end",
                                      f"{T0 + 16.0}", "--out", str(out), "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert public_key_fingerprint(vault.public_key) in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and not list(out.parent.glob(".*.tmp"))
    assert verify_bundle(out, expected_fingerprint=public_key_fingerprint(vault.public_key)).ok
    manifest = json.loads(_entries(out.read_bytes())["manifest.json"])
    assert manifest["export"] == "range" and [s["seq"] for s in manifest["segments"]] == [3, 4]

    bad = CliRunner().invoke(app, ["evidence", "export-range", "front", "--start", "last night", "--end", start,
                                   "--out", str(tmp_path / "x.zip"), "-c", str(config)])
    assert bad.exit_code == 2 and "--start 'last night': not a time" in bad.output
    empty = CliRunner().invoke(app, ["evidence", "export-range", "back", "--start", start, "--end", f"{T0 + 16.0}",
                                     "--out", str(tmp_path / "y.zip"), "-c", str(config)])
    assert empty.exit_code == 1 and "no recorded footage of camera back" in empty.output
    assert not (tmp_path / "x.zip").exists() and not (tmp_path / "y.zip").exists()
