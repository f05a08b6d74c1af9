"""A real ``trustcam run`` server for web tests: subprocess on a free port, file cameras, HTTPS, stopped by SIGTERM.

Other web tests may override ``server_config`` (a function returning the config YAML path) in their own module,
or call :func:`start_server` directly.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from web_helpers import person_camera, write_config

START_TIMEOUT_S = 90.0


@dataclass
class RunningServer:
    url: str  # https://127.0.0.1:PORT (no trailing slash)
    setup_token: str | None  # None once a user exists
    cert: Path  # the server's (self-signed) certificate
    data_dir: Path
    config: Path
    log: Path  # stdout + stderr of the server
    process: subprocess.Popen[bytes]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client to the server trusting its certificate."""
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.cert)), timeout=30,
                            **kwargs)  # type: ignore[arg-type]


def _setup_token(data_dir: Path, log: Path, wait_s: float = 10.0) -> str | None:
    """The first-start token: from <data_dir>/setup-token, or the line `trustcam run` prints (None: users exist)."""
    deadline = time.monotonic() + wait_s
    while True:
        token_file = data_dir / "setup-token"
        if token_file.exists() and token_file.read_text().strip():
            return token_file.read_text().strip()
        text = log.read_text(errors="replace")
        found = re.search(r"setup token (\S+)", text)
        if found:
            return found.group(1)
        if "running " in text or time.monotonic() > deadline:  # started without printing one
            return None
        time.sleep(0.2)


@contextlib.contextmanager
def start_server(config: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """Start ``trustcam run --config config``; yield once /api/health answers over HTTPS; SIGTERM at the end."""
    settings = yaml.safe_load(config.read_text())
    data_dir = Path(settings["data_dir"])
    server = settings.get("server") or {}
    url = f"https://{server.get('host', '127.0.0.1')}:{server.get('port', 8443)}"
    cert = Path(server["tls_cert"]) if server.get("tls_cert") else data_dir / "tls" / "server.crt"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "trustcam.cli", "run", "--config", str(config)],
                                   stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    running = RunningServer(url, None, cert, data_dir, config, log, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"trustcam run exited with {process.returncode} before serving:\n{running.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"trustcam run did not answer {url}/api/health within {START_TIMEOUT_S:.0f}s:\n"
                            f"{running.log_tail()}")
            if cert.exists():
                try:
                    context = ssl.create_default_context(cafile=str(cert))
                    if httpx.get(f"{url}/api/health", verify=context, timeout=2).status_code == 200:
                        break
                except (httpx.HTTPError, OSError):
                    pass
            time.sleep(0.3)
        running.setup_token = _setup_token(data_dir, log)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def server_config(tmp_path: Path, person_video: Path, car_video: Path) -> Path:
    """Two file cameras: 'office' (person clip, zone 'table', enter_zone rule 'at-table') and 'yard' (car clip)."""
    return write_config(tmp_path, {
        "office": person_camera(person_video),
        "yard": {"source": str(car_video), "detect": {"fps": 2}, "objects": {"track": ["car", "person"]}},
    })


@pytest.fixture
def running_server(tmp_path: Path, server_config: Path, installed_models: None) -> Iterator[RunningServer]:
    with start_server(server_config, tmp_path / "server.log") as server:
        yield server


@pytest.fixture
def browser() -> Iterator[object]:
    """Chromium from the system package, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()
