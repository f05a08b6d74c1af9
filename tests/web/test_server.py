"""`trustcam run` serves HTTPS: generated certificate, public health only, the setup token, and live MJPEG
frames with real detections, from a real subprocess on a free port with a file camera."""

from __future__ import annotations

import hashlib
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from web_helpers import bearer, bootstrap, person_camera, write_config

from support import free_port

CLI = [sys.executable, "-m", "trustcam.cli"]
PUBLIC = {("get", "/api/health"), ("get", "/api/auth/setup"), ("post", "/api/auth/setup"), ("post", "/api/auth/login"),
          ("post", "/api/auth/mfa")}


@pytest.fixture
def server_config(tmp_path: Path, person_video: Path) -> Path:
    """One file camera (the person clip, looping, paced like a live camera) on a free loopback port."""
    return write_config(tmp_path, {"office": person_camera(person_video)}, detector={"failover": []})


def _mjpeg_frames(client: httpx.Client, path: str, count: int, timeout_s: float = 60.0) -> list[bytes]:
    """Read ``count`` JPEG parts from a multipart/x-mixed-replace stream, then disconnect."""
    frames: list[bytes] = []
    buffer = b""
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", path) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
        for chunk in response.iter_bytes():
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, rest = buffer.split(b"\r\n\r\n", 1)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                if len(rest) < length + 2:
                    break
                frames.append(rest[:length])
                buffer = rest[length + 2:]
            if len(frames) >= count or time.monotonic() > deadline:
                break
    return frames


def test_https_server_auth_and_live_view(running_server, person_video):
    server = running_server
    log = server.log_tail(20_000)
    port = yaml.safe_load(server.config.read_text())["server"]["port"]
    assert f"web UI and API: https://127.0.0.1:{port}/" in log

    cert = x509.load_pem_x509_certificate(server.cert.read_bytes())
    fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(cert.public_bytes(Encoding.DER)).digest())
    assert f"fingerprint (self-signed, {server.cert}): {fingerprint}" in log
    key = server.data_dir / "tls" / "server.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    token_file = server.data_dir / "setup-token"
    assert server.setup_token and f"setup token {server.setup_token} " in log
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    verify = ssl.create_default_context(cafile=str(server.cert))
    with pytest.raises(httpx.ConnectError):  # self-signed: not trusted without the certificate
        httpx.get(f"{server.url}/api/health", timeout=5)
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the HTTPS port is not served
        answer = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
        if answer.status_code == 200:
            pytest.fail("plain HTTP answered 200")
        raise httpx.HTTPError("refused")

    with httpx.Client(base_url=server.url, verify=verify, timeout=30) as anonymous:
        health = anonymous.get("/api/health")
        assert health.json() == {"status": "ok"}
        assert health.headers["strict-transport-security"].startswith("max-age=")
        assert health.headers["x-frame-options"] == "DENY" and health.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in health.headers["content-security-policy"]
        assert "unsafe-inline" not in health.headers["content-security-policy"]
        assert "access-control-allow-origin" not in health.headers
        for path in ("/api/openapi.json", "/api/docs", "/api/cameras", "/api/events", "/metrics", "/api/config",
                     "/api/cameras/office/live.mjpeg", "/api/cameras/office/snapshot.jpg", "/api/alerts"):
            answer = anonymous.get(path)
            assert answer.status_code == 401, path
            assert answer.json()["detail"].startswith("not signed in")
        assert anonymous.get("/").status_code == 200  # the static UI is public (it holds no data)

    tokens = bootstrap(server.url, verify, server.setup_token)
    assert not token_file.exists()  # used once, gone
    with httpx.Client(base_url=server.url, verify=verify, timeout=60, headers=bearer(tokens["admin"])) as admin:
        spec = admin.get("/api/openapi.json").json()
        assert admin.get("/api/docs").status_code == 200
        with httpx.Client(base_url=server.url, verify=verify, timeout=30) as anonymous:
            checked = 0
            for path, operations in spec["paths"].items():
                for method in operations:
                    if (method, path) in PUBLIC:
                        continue
                    url = path.replace("{name}", "office").replace("{event_id}", "0" * 32)
                    url = url.replace("{username}", "admin").replace("{token_id}", "x").replace("{row_id}", "1")
                    answer = anonymous.request(method.upper(), url, json={} if method != "get" else None)
                    assert answer.status_code == 401, (method, path, answer.text)
                    checked += 1
            assert checked >= 20

        deadline = time.monotonic() + 60
        while (camera := admin.get("/api/cameras").json()[0])["state"] != "connected" or camera["fps"] <= 0:
            assert time.monotonic() < deadline, camera
            time.sleep(0.5)
        assert camera["zones"] == {"table": [[0.4, 0.55], [0.9, 0.55], [0.9, 1.0], [0.4, 1.0]]}

        frames = _mjpeg_frames(admin, "/api/cameras/office/live.mjpeg", 3)
        assert len(frames) == 3
        width, height = (int(v) for v in (cv2.VideoCapture(str(person_video)).get(p) for p in (3, 4)))
        images = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames]
        assert all(image is not None and image.shape == (height, width, 3) for image in images)
        assert len({hashlib.sha256(f).hexdigest() for f in frames}) == 3  # a moving picture, not one frame resent
        assert images[0].std() > 10  # real video, not a blank frame

        snapshot = admin.get("/api/cameras/office/snapshot.jpg")
        assert snapshot.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR).shape == (height, width, 3)

        audit = admin.get("/api/audit", params={"action": "view_live"}).json()
        assert audit["entries"][0]["user"] == "admin" and audit["entries"][0]["target"] == "office"
    with httpx.Client(base_url=server.url, verify=verify, timeout=60, headers=bearer(tokens["viewer"])) as viewer:
        assert len(_mjpeg_frames(viewer, "/api/cameras/office/live.mjpeg", 1)) == 1  # all cameras granted


def test_port_in_use_is_one_clear_error(running_server):
    second = subprocess.run([*CLI, "run", "--config", str(running_server.config)], capture_output=True, text=True,
                            timeout=120)
    port = yaml.safe_load(running_server.config.read_text())["server"]["port"]
    assert second.returncode == 2
    assert f"port {port} is in use; set server.port" in second.stderr
    assert "Traceback" not in second.stderr


def test_plain_http_refused_off_loopback(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"server": {"host": "0.0.0.0", "port": free_port(), "insecure_http": True},
                                      "cameras": {"a": {"source": "/dev/null"}}}))
    result = subprocess.run([*CLI, "config", "check", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "insecure_http is allowed only on a loopback host" in result.stderr


def test_configured_certificate_problems_are_clear(tmp_path, person_video):
    from trustcam.web.tls import generate

    generate(tmp_path / "a.crt", tmp_path / "a.key")
    generate(tmp_path / "b.crt", tmp_path / "b.key")
    cases = {
        "mismatch": (tmp_path / "a.crt", tmp_path / "b.key", "does not belong to the certificate"),
        "missing": (tmp_path / "nope.crt", tmp_path / "a.key", "not found"),
        "garbage": (tmp_path / "a.key", tmp_path / "a.key", "is not a PEM certificate"),
    }
    for name, (cert, key, words) in cases.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(tmp_path / "data"), "detector": {"failover": []},
            "server": {"host": "127.0.0.1", "port": free_port(), "tls_cert": str(cert), "tls_key": str(key)},
            "cameras": {"a": {"source": str(person_video)}}}))
        result = subprocess.run([*CLI, "run", "--config", str(config)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (name, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
