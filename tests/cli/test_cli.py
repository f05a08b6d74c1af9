"""The commands a user types: analyze, run (with SIGTERM), models; real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "trustcam.cli"]


def test_help_lists_commands() -> None:
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60).stdout
    for command in ("detect", "analyze", "run", "models", "config"):
        assert command in out


def test_analyze_json_prints_one_line_per_event(person_video: Path, installed_models: None,
                                                tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "analyze", str(person_video), "--config", str(REPO / "examples" / "demo.yaml"), "--json",
         "--snapshots", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 6
    for event in events:
        assert event["label"] == "person" and event["camera"] == "office"
        assert set(event) >= {"id", "start", "end", "best_score", "box", "zones", "rules", "threat", "snapshot",
                              "model"}
        assert Path(event["snapshot"]).is_file() and event["model"]["name"] == "yolox-nano"
    assert "analysed 697 of 1394 decoded frames" in result.stderr


def test_analyze_missing_file_is_one_clear_line(installed_models: None, tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "analyze", str(tmp_path / "nope.mp4")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "nope.mp4: file not found" in result.stderr and "Traceback" not in result.stderr


def test_run_stores_events_and_stops_cleanly_on_sigterm(person_video: Path, installed_models: None,
                                                        tmp_path: Path, run_then_sigterm) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\n"
        "cameras:\n"
        "  office:\n"
        f"    source: {person_video}\n"
        "    objects: {track: [person]}\n"
    )
    returncode, stderr = run_then_sigterm(config, 12)  # plays at real speed: someone walks in at ~7 s
    assert returncode == 0, stderr
    assert "stopping: finishing open events" in stderr
    with sqlite3.connect(tmp_path / "data" / "trustcam.db") as db:
        rows = db.execute("select label, camera, snapshot from events").fetchall()
    # the person still in view when SIGTERM arrived is stored too: open events are finished, not lost
    assert rows and rows[0][:2] == ("person", "office") and os.path.isfile(rows[0][2])


def test_run_refuses_config_without_cameras(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("detector: {model: yolox-nano}\n")
    result = subprocess.run([*CLI, "run", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no enabled camera" in result.stderr


@pytest.mark.parametrize("command", [["models", "list"], ["models", "verify"]])
def test_models_commands(command: list[str], installed_models: None) -> None:
    result = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "yolox-nano" in result.stdout and "nanodet-m-320" in result.stdout


def test_run_survives_an_unreachable_camera(installed_models: None, tmp_path: Path,
                                           run_then_sigterm) -> None:
    config = tmp_path / "dead.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\n"
        "cameras:\n"
        "  gate:\n"
        "    source: rtsp://admin:hunter2@127.0.0.1:1/stream\n"
        "    timeout_s: 1\n"
    )
    returncode, stderr = run_then_sigterm(config, 12)  # still running, retrying, when SIGTERM comes
    assert returncode == 0, stderr
    assert "camera health: gate: never connected" in stderr  # the health monitor raised it
    status = next(line for line in stderr.splitlines() if line.startswith("gate:"))
    assert "disconnected" in status and "Connection refused" in status
    reconnects = int(status.split(" reconnects")[0].rsplit(" ", 1)[1])
    assert reconnects >= 2
    assert "hunter2" not in stderr  # credentials never leak into messages


def test_run_fails_over_when_the_detector_process_dies(person_video: Path, installed_models: None,
                                                       tmp_path: Path, trustcam_run) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\n"
                      f"cameras:\n  office:\n    source: {person_video}\n")
    run = trustcam_run(config, "-v")
    try:
        run.wait_running()
        time.sleep(3)
        children = subprocess.run(["pgrep", "-P", str(run.process.pid), "-f", "spawn_main"], capture_output=True,
                                  text=True).stdout.split()
        assert children, "the primary detector runs in its own process"
        os.kill(int(children[0]), signal.SIGKILL)
        time.sleep(4)
        assert run.process.poll() is None  # the camera carries on
    finally:
        returncode, stderr = run.stop()
    assert returncode == 0, stderr
    assert "AI coverage degraded" in stderr and "now nanodet-m-320" in stderr
    assert "AI coverage restored" in stderr  # the primary was restarted and took over again


def test_run_reports_a_covered_lens(person_video: Path, installed_models: None, tmp_path: Path,
                                    run_then_sigterm) -> None:
    covered = tmp_path / "covered.mp4"  # the real clip, with the lens covered (black) from 8 s on
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(person_video), "-t", "16", "-vf",
                    "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='gte(t,8)'", "-an", "-c:v", "libx264",
                    "-preset", "ultrafast", str(covered)], check=True, timeout=120)
    config = tmp_path / "run.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\ndetector: {{failover: []}}\n"
                      f"cameras:\n  office:\n    source: {covered}\n    tamper: {{confirm_s: 2}}\n")
    returncode, stderr = run_then_sigterm(config, 16)
    assert returncode == 0, stderr
    assert "camera office tampered (covered)" in stderr
    assert "tampered (moved)" not in stderr and "tampered (frozen)" not in stderr


def test_run_reports_drift_after_learning_a_baseline(person_video: Path, installed_models: None,
                                                      tmp_path: Path, run_then_sigterm) -> None:
    dark = tmp_path / "dark.mp4"  # the real clip; from 12 s on the lights go out (night without IR)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(person_video), "-t", "26", "-vf",
                    "eq=brightness=-0.45:contrast=0.5:enable='gte(t,12)'", "-an", "-c:v", "libx264",
                    "-preset", "ultrafast", str(dark)], check=True, timeout=120)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\ndetector: {{failover: []}}\n"
        f"cameras:\n  office:\n    source: {dark}\n"
        "    tamper: {enabled: false}\n"
        "    drift: {learn_s: 8, window_s: 6, check_every_s: 2, min_samples: 20}\n")
    returncode, stderr = run_then_sigterm(config, 26)
    assert returncode == 0, stderr
    assert "camera office drift:" in stderr and "brightness" in stderr, stderr[-2000:]
    assert (tmp_path / "data" / "drift" / "office.json").is_file()  # the baseline survives a restart
