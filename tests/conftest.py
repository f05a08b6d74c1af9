"""Shared fixtures: the real shared data and real, hash-checked models (installed from local sources)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trustcam.vision import catalog
from trustcam.vision.detectors import Detector, load_detector

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("TRUSTCAM_DATA_DIR", SHARED / "data"))
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}; set TRUSTCAM_DATA_DIR or put ../shared beside the repo")
    return path


@pytest.fixture(scope="session")
def person_video(data_dir: Path) -> Path:
    return data_dir / "videos" / "one-by-one-person-detection.mp4"


@pytest.fixture(scope="session")
def car_video(data_dir: Path) -> Path:
    return data_dir / "videos" / "car-detection.mp4"


@pytest.fixture(scope="session")
def installed_models() -> None:
    """Install the pinned models from TRUSTCAM_MODEL_SOURCES (offline) if they are not installed yet."""
    for spec in catalog.CATALOG.values():
        catalog.install(spec, allow_download=False)


@pytest.fixture(scope="session")
def yolox(installed_models: None) -> Detector:
    return load_detector("yolox-nano")


@pytest.fixture(scope="session")
def nanodet(installed_models: None) -> Detector:
    return load_detector("nanodet-m-320")


CLI = [sys.executable, "-m", "trustcam.cli"]


def _run_then_sigterm(config: Path, seconds: float) -> tuple[int, str]:
    """Start `trustcam run`, check it is still running after ``seconds``, stop it with SIGTERM."""
    process = subprocess.Popen([*CLI, "run", "--config", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(seconds)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


@pytest.fixture(scope="session")
def run_then_sigterm() -> Callable[[Path, float], tuple[int, str]]:
    """``run_then_sigterm(config, seconds) -> (returncode, stderr)``: a real `trustcam run`, stopped like a service."""
    return _run_then_sigterm
