"""Events API throughput: GET /api/events (page of 50, newest first, with review state) against 10k events in
SQLite, over real HTTPS (uvicorn in a thread of this process), authenticated with an admin API token, from
concurrent httpx clients in a separate process (``--same-process``: in this one, sharing the server's GIL as the
first version of this benchmark did). Prints requests/s and latency percentiles for a few query shapes.

    python bench/web_api.py [--events 10000] [--seconds 10] [--concurrency 8] [--same-process]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing
import os
import socket
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import pyotp
from sqlalchemy.orm import Session

from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.storage.schema import EventRow
from trustcam.web.context import AppContext
from trustcam.web.server import WebServer
from trustcam.web.tls import ensure_certificate

PASSWORD = "violet-harbour-47-quietly-zebra"
GOAL = 300.0  # requests/s on a 2-core machine (issue 15)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _stack() -> str:
    """The HTTP parser and event loop uvicorn picks ("auto"): httptools + uvloop when they import."""
    return f"{'httptools' if _importable('httptools') else 'h11'} + {'uvloop' if _importable('uvloop') else 'asyncio'}"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin_token(base: str, verify: ssl.SSLContext, setup_token: str) -> str:
    with httpx.Client(base_url=base, verify=verify, timeout=30) as client:
        client.post("/api/auth/setup", json={"setup_token": setup_token, "username": "admin",
                                             "password": PASSWORD}).raise_for_status()
        login = client.post("/api/auth/login", json={"username": "admin", "password": PASSWORD}).json()
        csrf = {"X-CSRF-Token": login["csrf_token"]}
        secret = client.post("/api/me/mfa/enroll", headers=csrf).json()["secret"]
        confirm = client.post("/api/me/mfa/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=csrf)
        confirm.raise_for_status()
        recovery = confirm.json()["recovery_codes"][0]  # the TOTP code just used may not be used twice
        answer = client.post("/api/me/tokens", json={"name": "bench", "days": 1, "password": PASSWORD,
                                                     "code": recovery}, headers=csrf)
        answer.raise_for_status()
        return str(answer.json()["token"])


async def _load(base: str, cafile: str, token: str, params: dict[str, object], seconds: float,
                concurrency: int) -> list[float]:
    verify = ssl.create_default_context(cafile=cafile)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base, verify=verify, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.get("/api/events", params=params)
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _run_load(args: tuple[str, str, str, dict[str, object], float, int]) -> list[float]:
    """One load run (in a child process unless --same-process: the client then does not compete with the server
    for this process's GIL, so the figure is the server's)."""
    return asyncio.run(_load(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--same-process", action="store_true", help="clients in the server's process (old figure)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"  # never the user's ~/.config/trustcam keys
        settings = parse_settings({"data_dir": str(Path(tmp) / "data"),
                                   "vault": {"key_file": str(keys / "vault.kek"),
                                             "signing_key_file": str(keys / "vault-signing.key")},
                                   "server": {"host": "127.0.0.1", "port": _port(),
                                              "auth_key_file": str(keys / "auth.key")},
                                   "cameras": {f"cam{i}": {"source": f"rtsp://10.0.0.{i}/s"} for i in range(4)}})
        engine = open_database(settings.resolved_database_url)
        t0 = 1_700_000_000.0
        with Session(engine) as session, session.begin():
            session.add_all(EventRow(id=f"{i:032x}", camera=f"cam{i % 4}", label=("person", "car")[i % 2], track_id=i,
                                     start=t0 + 6.0 * i, end=t0 + 6.0 * i + 4, best_score=0.7, box=[1.0, 2.0, 3.0, 4.0],
                                     zones=["door"], rules=[], threat="none", snapshot=None, model_name="yolox-nano",
                                     model_sha256="ab" * 32) for i in range(args.events))
        tls = ensure_certificate(settings)
        verify = ssl.create_default_context(cafile=str(tls.cert))
        server = WebServer(AppContext(settings=settings, engine=engine, bus=Bus()), tls)
        server.start()
        base = f"https://127.0.0.1:{settings.server.port}"
        try:
            token = _admin_token(base, verify, ensure_setup_token(settings, engine) or "")
            shapes = {"newest 50": {}, "camera+label": {"camera": "cam1", "label": "car"},
                      "deep page": {"offset": args.events // 2},
                      "time window": {"since": t0 + 6000, "until": t0 + 9000}}
            where = "in the server's process" if args.same_process else "in another process"
            print(f"GET /api/events, {args.events} events, {args.concurrency} concurrent clients {where}, "
                  f"{args.seconds:.0f} s each, HTTPS + bearer token, uvicorn with {_stack()}; goal >= {GOAL:.0f} req/s")
            for name, params in shapes.items():
                load = (base, str(tls.cert), token, params, args.seconds, args.concurrency)
                cpu = time.process_time()
                if args.same_process:
                    latencies = _run_load(load)
                else:
                    with multiprocessing.get_context("spawn").Pool(1) as pool:
                        latencies = pool.apply(_run_load, (load,))
                cpu_ms = (time.process_time() - cpu) / len(latencies) * 1000  # the server alone, unless --same-process
                q = statistics.quantiles(latencies, n=100)
                rate = len(latencies) / args.seconds
                print(f"  {name:<13} {rate:7.1f} req/s   p50 {q[49] * 1000:6.1f} ms   p95 {q[94] * 1000:6.1f} ms   "
                      f"CPU {cpu_ms:5.2f} ms/req   {'meets' if rate >= GOAL else 'below'} goal")
            print(f"  (machine load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs: other work lowers the "
                  "figures)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
