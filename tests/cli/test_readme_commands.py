"""README's first-run command works verbatim after `make demo`: from .venv/bin, with no TRUSTCAM_* variable set.

`make` installs the models into ./var and records that folder in the virtualenv (``.venv/trustcam-home``); without
it the CLI looked in ~/.local/share/trustcam and a new user got "model 'yolox-nano' is not installed"."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def readme_commands(program: str) -> list[str]:
    """The ``$ <program> ...`` lines of README's code blocks, as printed."""
    return [m.group(1) for m in re.finditer(rf"^\$ ({program} .+)$", README.read_text(), re.MULTILINE)]


@pytest.mark.slow
def test_the_readme_analyze_command_works_verbatim_without_variables() -> None:
    [command] = [c for c in readme_commands("trustcam") if c.startswith("trustcam analyze")]
    marker = Path(sys.prefix) / "trustcam-home"
    assert marker.is_file(), f"{marker} missing: run `make setup models` (it records where models are installed)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTCAM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # as with an activated venv
    done = subprocess.run(shlex.split(command), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [line for line in done.stdout.splitlines() if re.match(r"\s*[\d.]+s-\s*[\d.]+s\s+person", line)]
    assert len(events) == 6, done.stdout  # README: "6 people walk in, 6 events"
    assert "analysed 697 of 1394 decoded frames" in done.stderr  # the summary goes to stderr


def test_the_readme_config_check_example_says_what_readme_shows(tmp_path: Path) -> None:
    [command] = [c for c in readme_commands("trustcam") if c.startswith("trustcam config check")]
    (tmp_path / "bad.yaml").write_text("cameras:\n  front:\n    source: rtsp://cam/stream\n    zones:\n      door:\n"
                                       "        coordinates: [[0.1, 0.1], [0.5, 0.5]]\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "cameras.front.zones.door.coordinates: polygon needs ≥ 3 points, got 2" in done.stderr + done.stdout
