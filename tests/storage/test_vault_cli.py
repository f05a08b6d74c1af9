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
        f"data_dir: {tmp_path / 'data'}\n"
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


def start(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "-v", "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def segments(tmp_path: Path) -> list[tuple[int, str | None]]:
    with sqlite3.connect(tmp_path / "data" / "trustcam.db") as db:
        return db.execute("select seq, deleted_at from segments where camera = 'office' order by seq").fetchall()


def test_kill_9_while_recording_then_restart_keeps_the_chain_whole(person_video: Path, installed_models: None,
                                                                   tmp_path: Path) -> None:
    cfg = config(tmp_path, person_video)
    first = start(cfg)
    try:
        time.sleep(11)  # a few 3 s segments stored, one open
        assert first.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    before = segments(tmp_path)
    assert len(before) >= 2

    second = start(cfg)
    try:
        time.sleep(9)
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, stderr
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
    verified = subprocess.run([*CLI, "evidence", "verify", str(bundle)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and "VERIFIED" in verified.stdout, verified.stdout + verified.stderr
