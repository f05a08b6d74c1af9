"""The vault as an operator uses it: `trustcam run` recording, kill -9, restart, hold, export, verify."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "trustcam.cli"]


def config(tmp_path: Path, video: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\n"
        "vault:\n"
        f"  root: {tmp_path / 'rec'}\n"
        f"  key_file: {tmp_path / 'keys' / 'kek'}\n"
        f"  signing_key_file: {tmp_path / 'keys' / 'sign'}\n"
        "  checkpoint_every: 2\n"
        "cameras:\n"
        "  office:\n"
        f"    source: {video}\n"
        "    objects: {track: [person]}\n"
        "    record: {enabled: true, mode: continuous, segment_s: 3}\n"
    )
    return cfg


def segments(tmp_path: Path) -> list[tuple[int, str | None]]:
    with sqlite3.connect(tmp_path / "data" / "trustcam.db") as db:
        return db.execute("select seq, deleted_at from segments where camera = 'office' order by seq").fetchall()


def test_kill_9_while_recording_then_restart_keeps_the_chain_whole(person_video: Path, installed_models: None,
                                                                   tmp_path: Path, trustcam_run) -> None:
    cfg = config(tmp_path, person_video)
    first = trustcam_run(cfg, "-v")
    try:
        first.wait_running()
        time.sleep(9)  # a few 3 s segments stored, one open
        assert first.process.poll() is None
    finally:
        first.stop(signal.SIGKILL)
    before = segments(tmp_path)
    assert len(before) >= 2

    second = trustcam_run(cfg, "-v")
    try:
        second.wait_running()
        time.sleep(10)  # someone walks in at ~7 s: an event to hold and export
    finally:
        returncode, stderr = second.stop()
    assert returncode == 0, stderr
    assert "vault recovery:" in stderr
    after = segments(tmp_path)
    assert [seq for seq, _ in after] == list(range(1, len(after) + 1))  # the chain continues, no gap
    assert len(after) > len(before)
    chain = subprocess.run([*CLI, "evidence", "chain", "--config", str(cfg), "--deep"], capture_output=True,
                           text=True, timeout=120)
    assert chain.returncode == 0, chain.stdout + chain.stderr
    assert "chain OK: office" in chain.stdout

    with sqlite3.connect(tmp_path / "data" / "trustcam.db") as db:
        event_id = db.execute("select id from events order by start").fetchone()[0]
    held = subprocess.run([*CLI, "evidence", "hold", event_id, "--config", str(cfg)], capture_output=True,
                          text=True, timeout=60)
    assert held.returncode == 0 and "held" in held.stdout, held.stderr
    bundle = tmp_path / "event.zip"
    exported = subprocess.run([*CLI, "evidence", "export", event_id, "--out", str(bundle), "--config", str(cfg)],
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    verified = subprocess.run([*CLI, "evidence", "verify", str(bundle), "--any-key"], capture_output=True, text=True,
                              timeout=60)
    assert verified.returncode == 0 and "VERIFIED" in verified.stdout, verified.stdout + verified.stderr
