"""A local flood of parallel logins against a real ``trustcam run``: memory stays bounded, health and signed-in
pages keep answering.

    python bench/web_login_flood.py [--logins 200] [--parallel 200]

Each login costs an argon2id check (64 MiB, ~0.2 s of a CPU). The server runs at most a few at once and answers
503 + Retry-After beyond its queue (``trustcam.security.passwords.PasswordGate``), so a flood neither takes every
web thread nor 64 MiB per thread. Starts the server in a subprocess on a loopback port with its data in a
temporary directory, signs an admin in, fires ``--logins`` wrong-password logins from ``--parallel`` threads while
the admin polls ``/api/health`` and ``/api/me``, and prints one JSON line: answers by status, the server's peak
RSS before and after (VmHWM), and the slowest health / signed-in answer during the flood.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

DATA = Path(os.environ.get("TRUSTCAM_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
PASSWORD = "violet-harbour-47-quietly-zebra"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _start(tmp: Path, video: Path) -> tuple[subprocess.Popen[bytes], str, ssl.SSLContext]:
    port = _free_port()
    keys = tmp / "keys"
    config = tmp / "trustcam.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp / "data"), "cameras": {"bench": {"source": str(video), "detect": {"fps": 2}}},
        "server": {"host": "127.0.0.1", "port": port, "auth_key_file": str(keys / "auth.key"),
                   "mfa_required_for": [], "login_max_failures": 100, "address_max_failures": 10_000},
        "vault": {"key_file": str(keys / "vault.kek"), "signing_key_file": str(keys / "vault-signing.key")}}))
    log = (tmp / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "trustcam.cli", "run", "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url, cert = f"https://127.0.0.1:{port}", tmp / "data" / "tls" / "server.crt"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"trustcam run exited: {(tmp / 'server.log').read_text()[-2000:]}")
        if cert.exists():
            context = ssl.create_default_context(cafile=str(cert))
            try:
                if httpx.get(f"{url}/api/health", verify=context, timeout=2).status_code == 200:
                    return process, url, context
            except (httpx.HTTPError, OSError):
                pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"trustcam run did not answer within 90 s: {(tmp / 'server.log').read_text()[-2000:]}")


def _setup_token(path: Path, wait_s: float = 30.0) -> str:
    """The first-start token; written right after the server starts answering, so wait for it."""
    deadline = time.monotonic() + wait_s
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path}: no setup token {wait_s:.0f} s after start")
        time.sleep(0.2)
    return path.read_text().strip()


def signed_in_admin(tmp: Path, url: str, context: ssl.SSLContext) -> tuple[httpx.Client, httpx.Response]:
    """The first admin, created with the setup token and signed in: the client (session cookie) and the login
    answer (its CSRF token, whether TOTP enrolment is still due)."""
    token = _setup_token(tmp / "data" / "setup-token")
    admin = httpx.Client(base_url=url, verify=context, timeout=60)
    admin.post("/api/auth/setup", json={"setup_token": token, "username": "admin", "password": PASSWORD}
               ).raise_for_status()
    login = admin.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
    login.raise_for_status()
    return admin, login


def flood(logins: int, parallel: int, video: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        process, url, context = _start(tmp, video)
        try:
            admin, _ = signed_in_admin(tmp, url, context)
            before = _peak_rss_mib(process.pid)
            stop = threading.Event()
            slowest = {"health": 0.0, "me": 0.0}
            failures: list[str] = []

            def watch() -> None:  # the admin's pages while the flood runs
                with httpx.Client(base_url=url, verify=context, timeout=30) as health:
                    while not stop.is_set():
                        for what, client, path in (("health", health, "/api/health"), ("me", admin, "/api/me")):
                            start = time.perf_counter()
                            try:
                                status = str(client.get(path).status_code)
                            except httpx.HTTPError as exc:
                                status = repr(exc)
                            slowest[what] = max(slowest[what], time.perf_counter() - start)
                            if status != "200":
                                failures.append(f"{path}: {status}")
                        time.sleep(0.1)

            def attempt(i: int) -> int:
                with httpx.Client(base_url=url, verify=context, timeout=60) as client:
                    try:
                        return client.post("/api/auth/login", json={"username": f"guess{i % 50}",
                                                                    "password": f"wrong-{i}"}).status_code
                    except httpx.HTTPError:
                        return 0

            watcher = threading.Thread(target=watch)
            watcher.start()
            start = time.perf_counter()
            with ThreadPoolExecutor(parallel) as pool:
                statuses = Counter(pool.map(attempt, range(logins)))
            seconds = time.perf_counter() - start
            stop.set()
            watcher.join()
            admin.close()
            return {"logins": logins, "parallel": parallel, "seconds": round(seconds, 1),
                    "answers": {str(k): v for k, v in sorted(statuses.items())},
                    "peak_rss_mib_before": before, "peak_rss_mib_after": _peak_rss_mib(process.pid),
                    "slowest_health_s": round(slowest["health"], 2), "slowest_signed_in_s": round(slowest["me"], 2),
                    "page_failures": failures[:5]}
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=200, help="Wrong-password logins to send.")
    parser.add_argument("--parallel", type=int, default=200, help="Of them at once (at most 200: loopback only).")
    parser.add_argument("--video", type=Path, default=DATA / "videos" / "one-by-one-person-detection.mp4",
                        help="The camera the server runs meanwhile (a file source).")
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: no such video; pass --video or set TRUSTCAM_DATA_DIR to ../shared/data")
    print(json.dumps(flood(args.logins, min(args.parallel, 200), args.video)))


if __name__ == "__main__":
    main()
