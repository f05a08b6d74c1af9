"""Shared fixtures: the real shared data and real, hash-checked models (installed from local sources)."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import free_port
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


# --- PostgreSQL: a real server for the tests that run on both database back-ends ----------------------------------

def _pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                                                                 reverse=True)), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} not found: install the Debian package postgresql (make setup does)")
    return found


class PostgresServer:
    """A throw-away PostgreSQL cluster in a temporary folder, on a free loopback port, trust authentication.

    initdb refuses to run as root, so under root the cluster belongs to the ``postgres`` system user (created by
    the Debian package) and its folder lives in /tmp, which that user can reach (pytest's folders are 0700)."""

    USER = "trustcam"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="trustcam-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", self.USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, statement: str) -> None:
        """One statement outside a transaction (CREATE/DROP DATABASE cannot run inside one)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(statement)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test session (per xdist worker), started on first use, stopped at the end."""
    server = PostgresServer()
    try:
        server.start()
    except Exception:
        log = server.root / "server.log"
        detail = log.read_text() if log.exists() else ""
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start as {getpass.getuser()}:\n{detail}") from None
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the test server (``postgresql://…``): tests never see each other's rows."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    postgres_server.admin(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # engines the test left open too


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The tests that exercise database logic run on both back-ends: SQLite (the default, a file in
    ``tmp_path/data``, where ``data_dir`` puts it) and PostgreSQL (a fresh database on a real server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'trustcam.db'}"
    return str(request.getfixturevalue("postgres_url"))
