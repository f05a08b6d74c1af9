"""Helpers for the web tests: configs with file cameras, and users + API tokens created through the real auth API."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyotp
import yaml

from support import free_port

PASSWORD = "violet-harbour-47-quietly-zebra"


def write_config(tmp_path: Path, cameras: dict[str, dict[str, object]], **sections: object) -> Path:
    """A config on a free loopback port with data in tmp_path/data; ``sections`` adds/overrides top-level keys."""
    keys = tmp_path / "keys"  # never the real ~/.config/trustcam
    config: dict[str, object] = {
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": free_port(), "auth_key_file": str(keys / "auth.key")},
        "vault": {"key_file": str(keys / "vault.kek"), "signing_key_file": str(keys / "vault-signing.key")},
        "cameras": cameras,
    }
    config.update(sections)
    path = tmp_path / "trustcam.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def person_camera(video: Path, fps: float = 5.0) -> dict[str, object]:
    """The person clip (people walk one by one to a table) with a table zone and an enter_zone rule."""
    return {
        "source": str(video),
        "detect": {"fps": fps},
        "objects": {"track": ["person"], "filters": {"person": {"min_score": 0.3, "threshold": 0.6}}},
        "zones": {"table": {"coordinates": [[0.40, 0.55], [0.90, 0.55], [0.90, 1.0], [0.40, 1.0]],
                            "objects": ["person"]}},
        "rules": [{"name": "at-table", "type": "enter_zone", "zone": "table", "threat": "low"}],
    }


def _ok(response: httpx.Response, *codes: int) -> dict:
    assert response.status_code in (codes or (200,)), (response.status_code, response.text)
    return response.json() if response.content else {}


_TOTP: dict[tuple[str, str], tuple[str, int]] = {}  # (base url, user name) -> (TOTP secret, last step used)


def fresh_code(base: str, username: str) -> str | None:
    """A TOTP code the server has not accepted yet for this user (None: no MFA enrolled by these helpers)."""
    if (base, username) not in _TOTP:
        return None
    secret, last = _TOTP[base, username]
    current = int(time.time() // 30)
    step = max(current - 1, last + 1)
    if step > current + 1:
        time.sleep((step - 1) * 30 - time.time() + 0.2)
    _TOTP[base, username] = (secret, step)
    return pyotp.TOTP(secret).at(step * 30)


def session(base: str, verify: object, username: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
    """A logged-in client (cookie) and its CSRF token; enrols TOTP when the role requires it."""
    client = httpx.Client(base_url=base, verify=verify, timeout=30)
    answer = _ok(client.post("/api/auth/login", json={"username": username, "password": password}))
    assert not answer["mfa_required"], "helper only handles users without TOTP yet"
    csrf = answer["csrf_token"]
    if answer.get("mfa_enrolment_required"):
        enrol = _ok(client.post("/api/me/mfa/enroll", headers={"X-CSRF-Token": csrf}))
        _TOTP[base, username] = (enrol["secret"], int(time.time() // 30) - 2)
        _ok(client.post("/api/me/mfa/confirm", json={"code": fresh_code(base, username)},
                        headers={"X-CSRF-Token": csrf}))
    return client, csrf


def token_for(client: httpx.Client, csrf: str, name: str, username: str, password: str = PASSWORD) -> str:
    """An API token: the password again, and a fresh TOTP code for users enrolled by :func:`session`."""
    body = {"name": name, "days": 1, "password": password, "code": fresh_code(str(client.base_url).rstrip("/"),
                                                                             username)}
    answer = _ok(client.post("/api/me/tokens", json=body, headers={"X-CSRF-Token": csrf}), 201)
    return answer["token"]


def bootstrap(base: str, verify: object, setup_token: str, viewer_cameras: list[str] | None = None) -> dict[str, str]:
    """Create admin (setup token + TOTP), an operator and a viewer (granted ``viewer_cameras``); API tokens for each."""
    with httpx.Client(base_url=base, verify=verify, timeout=30) as anonymous:
        _ok(anonymous.post("/api/auth/setup", json={"setup_token": setup_token, "username": "admin",
                                                   "password": PASSWORD}), 201)
    admin, csrf = session(base, verify, "admin")
    tokens = {"admin": token_for(admin, csrf, "tests", "admin")}
    for role, cameras in (("operator", None), ("viewer", viewer_cameras)):
        _ok(admin.post("/api/users", json={"username": role, "password": PASSWORD, "role": role, "cameras": cameras},
                       headers={"X-CSRF-Token": csrf}), 201)
        client, user_csrf = session(base, verify, role)
        tokens[role] = token_for(client, user_csrf, "tests", role)
        client.close()
    admin.close()
    return tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class InProcessServer:
    """The real app on real uvicorn (HTTPS, generated certificate) in this process, for API tests that need to
    shape the database and vault directly."""

    def __init__(self, ctx: object) -> None:
        from trustcam.web.server import WebServer
        from trustcam.web.tls import ensure_certificate

        self.ctx = ctx
        tls = ensure_certificate(ctx.settings)  # type: ignore[attr-defined]
        self.cert = str(tls.cert)
        self.verify = ssl.create_default_context(cafile=self.cert)
        self.server = WebServer(ctx, tls)  # type: ignore[arg-type]
        self.url = f"https://127.0.0.1:{self.server.port}"

    def __enter__(self) -> InProcessServer:
        self.server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.stop()

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.verify, timeout=60,
                            headers=bearer(token) if token else None)


# --- browser tests (Playwright driving /usr/bin/chromium) ---------------------------------------------------------

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"  # screenshots, not committed


def shot(page: object, name: str) -> None:
    """A full-page screenshot into test-artifacts/ui/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def natural_width(locator: object, timeout_s: float = 30.0) -> int:
    """Wait until the image has decoded a picture (page.wait_for_function would need 'unsafe-eval' in the CSP)."""
    deadline = time.monotonic() + timeout_s
    while (width := locator.evaluate("img => img.naturalWidth")) == 0:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the image never decoded a picture"
        time.sleep(0.25)
    return int(width)


class Totp:
    """TOTP codes for one secret, never reusing a time step (the server refuses replays)."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step = 0

    def code(self) -> str:
        """The current step's code, or the next one (the server accepts ±1 step); waits when both are used."""
        current = int(time.time() // 30)
        step = max(current, self.last_step + 1)
        if step > current + 1:
            time.sleep((step - 1) * 30 - time.time() + 0.2)
        self.last_step = step
        return self.totp.at(step * 30)


def video_plays(video: object, timeout_s: float = 30.0) -> tuple[float, int]:
    """Wait until a <video> presents frames and its time advances by a second (a live stream may start at any
    time stamp); returns (currentTime, totalVideoFrames) then."""
    state = "v => [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames]"
    deadline = time.monotonic() + timeout_s
    first = None
    while True:
        now = video.evaluate(state)  # type: ignore[attr-defined]
        first = first if first is not None or now[1] == 0 else now
        if first is not None and now[0] >= first[0] + 1.0 and now[1] > first[1]:
            return float(now[0]), int(now[1])
        assert time.monotonic() < deadline, f"the video did not play in {timeout_s:.0f} s: {now}"
        time.sleep(0.5)


def first_mjpeg_jpeg(client: httpx.Client, camera: str) -> bytes:
    """The first whole JPEG part of ``camera``'s live MJPEG stream, as ``client`` is shown it."""
    from trustcam.web.routers.cameras import BOUNDARY

    with client.stream("GET", f"/api/cameras/{camera}/live.mjpeg") as stream:
        assert stream.status_code == 200
        buffer = b""
        for chunk in stream.iter_bytes():
            buffer += chunk
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if not sep or BOUNDARY.encode() not in head:
                continue
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            if len(rest) >= length:
                return rest[:length]
    raise AssertionError("the live stream ended before a whole frame")


def audit_entries(admin: httpx.Client, action: str) -> list[dict]:
    """The audit log's entries of one action (up to 500), as an admin or auditor reads them."""
    return admin.get("/api/audit", params={"action": action, "limit": 500}).json()["entries"]


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`trustcam ARGS --config CONFIG` in a subprocess, as an operator types it."""
    return subprocess.run([sys.executable, "-m", "trustcam.cli", *args, "--config", str(config)], input=stdin,
                          capture_output=True, text=True, timeout=120)
