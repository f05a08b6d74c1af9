"""Login latency through the real app (argon2id verification dominates): p50/p95 over N password logins.

    python bench/web_login.py [--n 30]

Runs ``create_app`` in-process (FastAPI TestClient) on a temporary SQLite database; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.security.access import AccessControl
from trustcam.security.roles import Role
from trustcam.storage.database import open_database
from trustcam.web.app import create_app
from trustcam.web.context import AppContext

PASSWORD = "correct horse battery staple 42"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="Logins to time.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"  # never the user's own ~/.config/trustcam
        settings = Settings.model_validate({
            "data_dir": str(Path(tmp) / "data"),
            "server": {"login_max_failures": 100, "address_max_failures": 1000,
                       "auth_key_file": str(keys / "auth.key")},
            "vault": {"key_file": str(keys / "vault.kek"), "signing_key_file": str(keys / "vault-signing.key")}})
        engine = open_database(settings.resolved_database_url)
        ctx = AppContext(settings=settings, engine=engine, bus=Bus())
        service = AccessControl(settings, engine)
        ctx.extras["access_control"] = service
        service.users.create("bench", PASSWORD, Role.viewer)
        client = TestClient(create_app(ctx), base_url="https://testserver")
        ok: list[float] = []
        wrong: list[float] = []
        for i in range(args.n):
            start = time.perf_counter()
            answer = client.post("/api/auth/login", json={"username": "bench", "password": PASSWORD})
            ok.append(time.perf_counter() - start)
            if answer.status_code != 200:
                raise SystemExit(f"login failed: {answer.status_code} {answer.text}")
            if i % 3 == 0:  # a few failed logins of an unknown user: should cost the same (no user enumeration)
                start = time.perf_counter()
                client.post("/api/auth/login", json={"username": f"nobody{i}", "password": "wrong password x"})
                wrong.append(time.perf_counter() - start)

    def pct(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[int(q) - 1] * 1000, 1) if len(values) > 1 else 0.0

    print(json.dumps({"logins": len(ok), "p50_ms": pct(ok, 50), "p95_ms": pct(ok, 95),
                      "unknown_user_p50_ms": pct(wrong, 50), "argon2": "id m=64MiB t=3 p=4"}))


if __name__ == "__main__":
    main()
