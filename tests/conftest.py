"""Shared fixtures: the real shared data and real, hash-checked models (installed from local sources)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trustcam.vision import catalog
from trustcam.vision.detectors import Detector, load_detector

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HOME in a temporary directory: keys that default to ~/.config/trustcam (vault, signing, TOTP) never land in
    the real home of whoever runs the tests, nor leak from one run into the next. Subprocesses inherit it."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        yield home


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


class RunningTrustcam:
    """A real `trustcam run` subprocess whose stderr is collected as it comes, so a test can wait for the
    cameras to start (start-up time varies with the machine) instead of guessing it."""

    def __init__(self, config: Path, *options: str) -> None:
        self.process = subprocess.Popen([*CLI, *options, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._running = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("running "):
                self._running.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_running(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self._running.wait(0.2):
            assert self.process.poll() is None, f"trustcam run exited early:\n{self.stderr}"
            assert time.monotonic() < deadline, f"trustcam run did not start in {timeout} s:\n{self.stderr}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
        """Send ``sig`` (SIGTERM: stop like a service; SIGKILL: a crash) and return (returncode, stderr)."""
        try:
            self.process.send_signal(sig)
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        return self.process.returncode, self.stderr


def _run_then_sigterm(config: Path, seconds: float) -> tuple[int, str]:
    """Start `trustcam run`, let the cameras run for ``seconds``, check it is still running, stop it with SIGTERM."""
    run = RunningTrustcam(config)
    try:
        run.wait_running()
        time.sleep(seconds)
        assert run.process.poll() is None, run.stderr
    finally:
        returncode, stderr = run.stop()
    return returncode, stderr


@pytest.fixture(scope="session")
def run_then_sigterm() -> Callable[[Path, float], tuple[int, str]]:
    """``run_then_sigterm(config, seconds) -> (returncode, stderr)``: a real `trustcam run`, stopped like a service."""
    return _run_then_sigterm


@pytest.fixture(scope="session")
def trustcam_run() -> type[RunningTrustcam]:
    """``trustcam_run(config, *global_options)`` starts a real `trustcam run`; see :class:`RunningTrustcam`."""
    return RunningTrustcam
